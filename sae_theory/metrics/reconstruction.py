"""Reconstruction and activation metrics: L0, FVU, MSE, and per-neuron statistics
(docs/papers.md#gba-metrics, docs/papers.md#gba-author-code).

Pure functions of tensors plus one streaming accumulator, :class:`ActivationStats`. Inputs may
have any floating dtype and live on any device; the arithmetic is float64 on the input's device,
row block by row block, no block holding more than ``_CHUNK_ENTRIES`` = 2^25 entries. What comes
back: scalars as Python floats (``count`` as an int), per-neuron vectors (M,) as float64 tensors
on CPU.

Conventions
-----------
* A code is *active* when it is non-zero for :func:`l0` (an SAE's codes are non-negative, but a
  signed code also counts), and when it is > 0 for the activation frequency.
* ``mse`` is the GBA frontier's "L2 loss": the mean over rows of ||x - x_hat||^2, summed over
  d, with no factor 1/2 and no division by d.
* The Z-score is the author library's dominance metric (docs/papers.md#gba-author-code):
  (max - mean) / (std + 1e-8) per neuron over tokens, with the population std.
"""

from __future__ import annotations

import math

import torch

from .._checks import check_matrix, check_probability

__all__ = [
    "ActivationStats",
    "activation_frequency",
    "dead_fraction",
    "fraction_active",
    "fvu",
    "l0",
    "max_activation",
    "mse",
    "z_score",
]

#: Largest number of entries in any row block converted to float64 at once. Private; tests lower
#: it to force many small blocks.
_CHUNK_ENTRIES = 1 << 25

#: Added to the std in the Z-score denominator, as in the author library
#: (docs/papers.md#gba-author-code).
Z_SCORE_EPS = 1e-8


def _check_rows(name: str, t: torch.Tensor) -> None:
    if t.shape[0] == 0:
        raise ValueError(f"{name} has no rows (shape {tuple(t.shape)}), so the mean over rows is undefined.")


def _check_same_shape(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape; got {a_name} of shape {tuple(a.shape)} "
            f"and {b_name} of shape {tuple(b.shape)}."
        )


def _row_blocks(t: torch.Tensor):
    """Yield (start, block of rows) with block.numel() <= _CHUNK_ENTRIES (at least one row)."""
    rows = max(1, int(_CHUNK_ENTRIES) // max(1, t.shape[1]))
    for start in range(0, t.shape[0], rows):
        yield start, t[start : start + rows]


_NONFINITE = "contains NaN or infinite values (or float64 values so large that their sum overflows); clean it first."


def _finite64(name: str, block: torch.Tensor) -> torch.Tensor:
    """``block`` in float64; raise naming ``name`` if it holds NaN or infinity (checked through the
    block's sum, one reduction instead of an elementwise pass)."""
    block = block.to(torch.float64)
    if not bool(torch.isfinite(block.sum())):
        raise ValueError(f"{name} {_NONFINITE}")
    return block


# ---------------------------------------------------------------------------------------------
# sparsity
# ---------------------------------------------------------------------------------------------
def l0(codes: torch.Tensor) -> float:
    """Mean number of non-zero codes per row: L0 = (1/B) sum_b #{m : codes[b, m] != 0}.

    Parameters
    ----------
    codes : Tensor (B, M) or (..., M)
        SAE codes, any floating dtype and device, dense or sparse COO (densified), at least one
        row, finite. Leading axes are flattened into rows; gradients are not tracked. Negative
        codes count as active.

    Returns
    -------
    float
        In [0, M]; exact (integer counts divided by the number of rows).

    Raises
    ------
    ValueError
        If ``codes`` has fewer than 2 axes, no rows, or holds NaN/infinity.
    TypeError
        If ``codes`` is not a floating tensor (or has a sparse layout other than COO).
    """
    if isinstance(codes, torch.Tensor):
        codes = codes.detach()
        codes = codes.to_dense() if codes.is_sparse else codes
        codes = codes.flatten(0, -2) if codes.ndim > 2 else codes
    check_matrix("codes", codes, what="(B, M)", allow_no_rows=True)
    _check_rows("codes", codes)
    nonzero = 0
    for _, block in _row_blocks(codes):
        if not bool(torch.isfinite(block.sum(dtype=torch.float64))):  # NaN/inf reach the float64 sum
            raise ValueError(f"codes {_NONFINITE}")
        nonzero += int(torch.count_nonzero(block))
    return nonzero / codes.shape[0]


def fraction_active(codes: torch.Tensor) -> float:
    """Average fraction of activated neurons, L0 / M (the x-axis of the GBA frontier,
    docs/papers.md#gba-metrics).

    Parameters
    ----------
    codes : Tensor (B, M)
        As for :func:`l0`.

    Returns
    -------
    float
        In [0, 1].
    """
    return l0(codes) / codes.shape[-1]


# ---------------------------------------------------------------------------------------------
# reconstruction
# ---------------------------------------------------------------------------------------------
def _check_pair(x: torch.Tensor, x_hat: torch.Tensor) -> None:
    check_matrix("x", x, what="(B, d)", allow_no_rows=True)
    check_matrix("x_hat", x_hat, what="(B, d)", allow_no_rows=True)
    _check_same_shape("x", x, "x_hat", x_hat)
    _check_rows("x", x)


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Mean over rows of the squared reconstruction error: (1/B) sum_b ||x_b - x_hat_b||^2.

    This is the "L2 loss" of the GBA frontier (docs/papers.md#gba-metrics): summed over the d
    coordinates, no factor 1/2 and no division by d.

    Parameters
    ----------
    x : Tensor (B, d)
        Inputs, B >= 1, any floating dtype and device, finite.
    x_hat : Tensor (B, d)
        Reconstructions; moved to ``x``'s device.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If the shapes differ (both in the message), either is not 2-D, has no rows, or holds
        NaN/infinity.
    TypeError
        If either is not a dense floating tensor.
    """
    _check_pair(x, x_hat)
    total = 0.0
    for start, block in _row_blocks(x):
        xb = _finite64("x", block)
        xh = _finite64("x_hat", x_hat[start : start + block.shape[0]].to(x.device))
        total += float(((xb - xh) ** 2).sum())
    return total / x.shape[0]


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Fraction of variance unexplained: sum_b ||x_b - x_hat_b||^2 / sum_b ||x_b - mean_x||^2.

    mean_x (d,) is the mean of the rows of ``x``. FVU = 0 for a perfect reconstruction and 1 for
    x_hat = mean_x; 1 - FVU is SAEBench's explained variance. Two passes over row blocks, all float64.

    Parameters
    ----------
    x : Tensor (B, d)
        Inputs, any floating dtype and device, finite, not constant across rows.
    x_hat : Tensor (B, d)
        Reconstructions; moved to ``x``'s device.

    Returns
    -------
    float
        >= 0.

    Raises
    ------
    ValueError
        If every row of ``x`` equals the first (constant data, including B = 1): the denominator is
        then 0 and FVU is undefined, so we raise rather than return NaN or infinity. Also for
        mismatched shapes (both in the message), non-2-D or empty input, NaN/infinity.
    TypeError
        If either is not a dense floating tensor.
    """
    _check_pair(x, x_hat)
    first = x[:1]
    constant = True
    col_sum = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for _, block in _row_blocks(x):
        col_sum += _finite64("x", block).sum(dim=0)
        constant = constant and bool((block == first).all())
    if constant:
        raise ValueError(
            f"fvu is undefined for x: all {x.shape[0]} row(s) of x are equal, so the total variance "
            "sum ||x - mean_x||^2 (the denominator) is 0. Use mse(x, x_hat) instead, or pass more varied x."
        )
    mean_x = col_sum / x.shape[0]
    numerator = 0.0
    denominator = 0.0
    for start, block in _row_blocks(x):
        xb = block.to(torch.float64)
        xh = _finite64("x_hat", x_hat[start : start + block.shape[0]].to(x.device))
        numerator += float(((xb - xh) ** 2).sum())
        denominator += float(((xb - mean_x) ** 2).sum())
    return numerator / denominator


# ---------------------------------------------------------------------------------------------
# per-neuron activation statistics
# ---------------------------------------------------------------------------------------------
def _chan_merge(
    n_a: int, mean_a: torch.Tensor, m2_a: torch.Tensor, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor
) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Merge (count, mean (M,), M2 (M,)) of two disjoint sets of rows (Chan, Golub & LeVeque 1979):
    delta = mean_b - mean_a, mean = mean_a + delta n_b / n, M2 = M2_a + M2_b + delta^2 n_a n_b / n."""
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + delta**2 * (n_a * n_b / n)


class ActivationStats:
    """Streaming per-neuron statistics of codes over tokens (docs/papers.md#gba-metrics,
    docs/papers.md#gba-author-code).

    Feed batches of codes (B, M) with :meth:`update`; read per-neuron vectors (M,) as float64
    tensors on CPU. Accumulators live in float64 on the device of the first batch (later batches
    are moved there). Mean and variance are merged block by block with Chan et al.'s pairwise
    update (count, mean, sum of squared deviations M2): each block is two-pass, and merging never
    subtracts two large sums, so there is no sum/sumsq cancellation even over 10^8 tokens.

    A neuron whose codes were all equal (its running min equals its running max, e.g. a dead
    neuron, always 0) is reported exactly: mean = max and std = 0, hence Z-score 0, never a
    rounding residue like 1e-9 and never NaN.

    Examples
    --------
    >>> stats = ActivationStats()
    >>> for codes in batches:            # doctest: +SKIP
    ...     stats.update(codes)
    >>> stats.z_score, stats.dead_fraction()   # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._count = 0
        self._M: int | None = None
        self._active: torch.Tensor | None = None  # (M,) int64: #tokens with code > 0
        self._mean: torch.Tensor | None = None  # (M,) float64
        self._m2: torch.Tensor | None = None  # (M,) float64: sum of squared deviations
        self._max: torch.Tensor | None = None  # (M,) float64
        self._min: torch.Tensor | None = None  # (M,) float64

    def update(self, codes: torch.Tensor) -> "ActivationStats":
        """Add one batch of codes.

        Parameters
        ----------
        codes : Tensor (B, M)
            Any floating dtype and device, finite; M must match earlier batches. B = 0 is allowed
            and changes nothing.

        Returns
        -------
        ActivationStats
            ``self``, so ``ActivationStats().update(codes).z_score`` works.

        Raises
        ------
        ValueError
            If ``codes`` is not 2-D, its M differs from earlier batches, or it holds NaN/infinity.
        TypeError
            If ``codes`` is not a dense floating tensor.
        """
        check_matrix("codes", codes, what="(B, M)", allow_no_rows=True)
        M = codes.shape[1]
        if self._M is not None and M != self._M:
            raise ValueError(f"codes must have M = {self._M} columns like the earlier batches, got shape {tuple(codes.shape)}.")
        device = codes.device if self._mean is None else self._mean.device
        codes = codes.to(device)
        # the batch is summarised on its own first and merged at the end, so a bad block (NaN)
        # raises before any state changes
        n, mean, m2 = 0, torch.zeros(M, dtype=torch.float64, device=device), torch.zeros(M, dtype=torch.float64, device=device)
        active = torch.zeros(M, dtype=torch.int64, device=device)
        mx = torch.full((M,), -math.inf, dtype=torch.float64, device=device)
        mn = torch.full((M,), math.inf, dtype=torch.float64, device=device)
        for _, block in _row_blocks(codes):
            c = block.to(torch.float64)
            var_b, mean_b = torch.var_mean(c, dim=0, correction=0)
            if not bool(torch.isfinite(mean_b).all()):  # a NaN or infinity anywhere reaches its column mean
                raise ValueError(f"codes {_NONFINITE}")
            n, mean, m2 = _chan_merge(n, mean, m2, c.shape[0], mean_b, var_b * c.shape[0])
            active += (block > 0).sum(dim=0, dtype=torch.int32)  # the sign survives any cast; block rows < 2^31
            torch.maximum(mx, c.amax(dim=0), out=mx)
            torch.minimum(mn, c.amin(dim=0), out=mn)
        if self._M is None:
            self._M, self._active, self._mean, self._m2, self._max, self._min = M, active, mean, m2, mx, mn
            self._count = n
            return self
        self._count, self._mean, self._m2 = _chan_merge(self._count, self._mean, self._m2, n, mean, m2)
        self._active += active
        torch.maximum(self._max, mx, out=self._max)
        torch.minimum(self._min, mn, out=self._min)
        return self

    def _require(self) -> None:
        if self._count == 0:
            raise RuntimeError(
                "ActivationStats is empty: no token has been seen, so per-neuron statistics are undefined. "
                "Call update(codes) with at least one row first."
            )

    @property
    def count(self) -> int:
        """Number of tokens (rows) seen so far; 0 before any update."""
        return self._count

    @property
    def n_neurons(self) -> int | None:
        """M, fixed by the first update; None before it."""
        return self._M

    @property
    def frequency(self) -> torch.Tensor:
        """Tensor (M,), float64 on CPU: fraction of tokens with code > 0 (activation frequency)."""
        self._require()
        return (self._active.to(torch.float64) / self._count).cpu()

    def _constant(self) -> torch.Tensor:
        return self._min == self._max

    @property
    def mean(self) -> torch.Tensor:
        """Tensor (M,), float64 on CPU: mean code over tokens (exactly the value for a constant neuron)."""
        self._require()
        return torch.where(self._constant(), self._max, self._mean).cpu()

    @property
    def std(self) -> torch.Tensor:
        """Tensor (M,), float64 on CPU: population std (divides by count, not count - 1); exactly 0
        for a constant neuron."""
        self._require()
        std = torch.sqrt(self._m2 / self._count)
        return torch.where(self._constant(), torch.zeros_like(std), std).cpu()

    @property
    def max(self) -> torch.Tensor:
        """Tensor (M,), float64 on CPU: largest code over tokens."""
        self._require()
        return self._max.cpu()

    @property
    def min(self) -> torch.Tensor:
        """Tensor (M,), float64 on CPU: smallest code over tokens."""
        self._require()
        return self._min.cpu()

    @property
    def z_score(self) -> torch.Tensor:
        """Tensor (M,), float64 on CPU: (max - mean) / (std + 1e-8)
        (docs/papers.md#gba-author-code).

        The 1e-8 keeps the division finite; for a constant neuron max = mean exactly, so the
        Z-score is 0.
        """
        return (self.max - self.mean) / (self.std + Z_SCORE_EPS)

    def dead_fraction(self, eps: float = 0.0) -> float:
        """Fraction of neurons with activation frequency <= eps.

        Parameters
        ----------
        eps : float, default 0.0
            Frequency threshold in [0, 1); 0 means "never active on the tokens seen". The paper's
            dead threshold is unknown (docs/papers.md#gba-constants).

        Returns
        -------
        float
            In [0, 1].
        """
        eps = check_probability("eps", eps, allow_zero=True, allow_one=False)
        return float((self.frequency <= eps).to(torch.float64).mean())


def _one_shot(codes: torch.Tensor) -> ActivationStats:
    check_matrix("codes", codes, what="(B, M)", allow_no_rows=True)
    _check_rows("codes", codes)
    return ActivationStats().update(codes)


def activation_frequency(codes: torch.Tensor) -> torch.Tensor:
    """Fraction of rows with code > 0, per neuron.

    Parameters
    ----------
    codes : Tensor (B, M)
        B >= 1, any floating dtype and device, finite.

    Returns
    -------
    Tensor (M,)
        float64 on CPU. Same as ``ActivationStats().update(codes).frequency``.
    """
    return _one_shot(codes).frequency


def max_activation(codes: torch.Tensor) -> torch.Tensor:
    """Largest code over rows, per neuron.

    Parameters
    ----------
    codes : Tensor (B, M)
        B >= 1, any floating dtype and device, finite.

    Returns
    -------
    Tensor (M,)
        float64 on CPU.
    """
    return _one_shot(codes).max


def z_score(codes: torch.Tensor) -> torch.Tensor:
    """Per-neuron Z-score (max - mean) / (std + 1e-8) over rows, population std
    (docs/papers.md#gba-author-code).

    Parameters
    ----------
    codes : Tensor (B, M)
        B >= 1, any floating dtype and device, finite.

    Returns
    -------
    Tensor (M,)
        float64 on CPU; 0 for a neuron whose codes are all equal (see :class:`ActivationStats`).
    """
    return _one_shot(codes).z_score


def dead_fraction(codes: torch.Tensor, eps: float = 0.0) -> float:
    """Fraction of neurons whose activation frequency (code > 0) is <= eps.

    Parameters
    ----------
    codes : Tensor (B, M)
        B >= 1, any floating dtype and device, finite.
    eps : float, default 0.0
        Frequency threshold in [0, 1).

    Returns
    -------
    float
        In [0, 1].
    """
    return _one_shot(codes).dead_fraction(eps)
