"""Laws of the coefficient matrix H of the statistical feature model X = H V
(docs/papers.md#gba-model).

Two independent choices make up the law of H (N, n):

* a **support law** says which features fire in a row: :class:`Balanced` (exactly ``s`` on a
  uniformly random support, f = s/n for every feature), :class:`MixedSparsity` (the row sparsity
  itself is random, e.g. the GBA imbalanced toy: half the rows s=3, half s=20), or per-feature
  Bernoulli frequencies (:class:`Bernoulli`, :class:`Zipf`);
* a **coefficient law** gives the positive value of every active entry: :class:`Constant`,
  :class:`Uniform` on [a, b] with a > 0, or :class:`LogNormal`.

Supports are produced as COO triplets ``(rows, cols)`` of a chunk, so nothing of size N x n is
built unless the law needs it for a small n. Every sampler draws from an explicit
``torch.Generator`` that lives on the sampling device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from .._checks import SAFE_NORMAL_Z, check_fits_dtype, check_int, check_positive

__all__ = [
    "Balanced",
    "Bernoulli",
    "CoefficientLaw",
    "Constant",
    "LogNormal",
    "MixedSparsity",
    "SupportLaw",
    "Uniform",
    "Zipf",
]

# Rows whose support is drawn by rejection (draw s indices, redraw rows with a repeat) accept
# with probability about exp(-s^2 / 2n); below s^2 <= n that is >= 0.6 and a few passes suffice.
# Otherwise a row's support is the top-s of n uniform keys, which costs n per row.
_KEYS_BLOCK_ELEMENTS = 1 << 24
# Bernoulli features at or above this frequency are drawn densely (one uniform per row); below
# it the active rows are a Binomial count placed on distinct random rows.
_DENSE_FREQUENCY = 0.05


# --------------------------------------------------------------------------------------------
# support laws
# --------------------------------------------------------------------------------------------


def _distinct_rows_support(n_rows: int, s: int, n: int, generator: torch.Generator, device) -> torch.Tensor:
    """Uniformly random s-subsets of range(n), one per row, as an (n_rows, s) long tensor."""
    if s == 0 or n_rows == 0:
        return torch.empty(n_rows, s, dtype=torch.long, device=device)
    if s * s <= n:
        out = torch.randint(n, (n_rows, s), generator=generator, device=device)
        todo = torch.arange(n_rows, device=device)
        while True:
            srt = out[todo].sort(dim=1).values
            bad = (srt[:, 1:] == srt[:, :-1]).any(dim=1)
            if not bool(bad.any()):
                return out
            todo = todo[bad]
            # Rejection sampling: redraw the whole row, so accepted rows stay uniform s-subsets.
            out[todo] = torch.randint(n, (todo.numel(), s), generator=generator, device=device)
    rows_per_block = max(1, _KEYS_BLOCK_ELEMENTS // n)
    blocks = []
    for start in range(0, n_rows, rows_per_block):
        m = min(rows_per_block, n_rows - start)
        keys = torch.rand(m, n, generator=generator, device=device)
        blocks.append(keys.topk(s, dim=1).indices)
    return torch.cat(blocks)


class SupportLaw:
    """Base class of the support laws. Subclasses implement :meth:`frequencies`,
    :meth:`pair_probability` and :meth:`sample_support`."""

    def validate(self, n: int) -> None:  # pragma: no cover - overridden where needed
        """Raise if the law cannot be used with ``n`` features."""

    def frequencies(self, n: int) -> torch.Tensor:
        """Population frequency f_i = P(H_li > 0) of every feature, float64 (n,)."""
        raise NotImplementedError

    def expected_support(self, n: int) -> float:
        """Expected number of active features per row, E[|supp(h)|] = sum_i f_i."""
        return float(self.frequencies(n).sum())

    def pair_probability(self, n: int, i: int, j: int) -> float:
        """P(features i and j both active in a row), i != j."""
        raise NotImplementedError

    def sample_support(self, n_rows: int, n: int, generator: torch.Generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """COO indices ``(rows, cols)`` of the active entries of an (n_rows, n) chunk."""
        raise NotImplementedError


@dataclass(frozen=True)
class Balanced(SupportLaw):
    """Exactly ``s`` active features per row on a uniformly random support: f_i = s/n."""

    s: int
    """Row sparsity, 1 <= s <= n."""

    def __post_init__(self):
        check_int("sparsity (s)", self.s, minimum=1)

    def validate(self, n: int) -> None:
        if self.s > n:
            raise ValueError(f"sparsity s={self.s} exceeds n_features={n}; choose s <= n_features.")

    def frequencies(self, n: int) -> torch.Tensor:
        return torch.full((n,), self.s / n, dtype=torch.float64)

    def pair_probability(self, n: int, i: int, j: int) -> float:
        return self.s * (self.s - 1) / (n * (n - 1)) if n > 1 else 0.0

    def triple_probability(self, n: int) -> float:
        """P(three given distinct features all active in a row)."""
        return self.s * (self.s - 1) * (self.s - 2) / (n * (n - 1) * (n - 2)) if n > 2 else 0.0

    def sample_support(self, n_rows, n, generator, device):
        cols = _distinct_rows_support(n_rows, self.s, n, generator, device)
        rows = torch.arange(n_rows, device=device).repeat_interleave(self.s)
        return rows, cols.reshape(-1)


@dataclass(frozen=True)
class MixedSparsity(SupportLaw):
    """Row sparsity drawn from ``sparsities`` with ``weights``; support uniform given its size.

    The GBA imbalanced toy (docs/papers.md#gba-imbalanced-toy) is
    ``MixedSparsity((3, 20), (0.5, 0.5))`` on n = 128: every feature has
    f = (0.5*3 + 0.5*20)/128 ~ 0.09, but rows differ sharply in sparsity.
    """

    sparsities: tuple[int, ...]
    """Possible row sparsities, each in [1, n]."""
    weights: tuple[float, ...] | None = None
    """Probabilities of each sparsity (normalised); ``None`` = equal weights."""

    def __post_init__(self):
        sp = tuple(check_int(f"sparsities[{i}]", s, minimum=1) for i, s in enumerate(self.sparsities))
        if not sp:
            raise ValueError("sparsities must name at least one row sparsity, e.g. (3, 20).")
        w = (1.0,) * len(sp) if self.weights is None else tuple(float(x) for x in self.weights)
        if len(w) != len(sp):
            raise ValueError(f"weights has {len(w)} entries but sparsities has {len(sp)}; give one weight per sparsity.")
        if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"weights must be finite, non-negative and not all zero, got {w}.")
        object.__setattr__(self, "sparsities", sp)
        object.__setattr__(self, "weights", tuple(x / sum(w) for x in w))

    def validate(self, n: int) -> None:
        if max(self.sparsities) > n:
            raise ValueError(f"a row sparsity {max(self.sparsities)} exceeds n_features={n}; choose sparsities <= n_features.")

    def frequencies(self, n: int) -> torch.Tensor:
        mean_s = sum(w * s for s, w in zip(self.sparsities, self.weights))
        return torch.full((n,), mean_s / n, dtype=torch.float64)

    def pair_probability(self, n: int, i: int, j: int) -> float:
        if n < 2:
            return 0.0
        return sum(w * s * (s - 1) for s, w in zip(self.sparsities, self.weights)) / (n * (n - 1))

    def triple_probability(self, n: int) -> float:
        """P(three given distinct features all active in a row)."""
        if n < 3:
            return 0.0
        return sum(w * s * (s - 1) * (s - 2) for s, w in zip(self.sparsities, self.weights)) / (n * (n - 1) * (n - 2))

    def sample_support(self, n_rows, n, generator, device):
        w = torch.tensor(self.weights, dtype=torch.float64, device=device)
        which = torch.multinomial(w, n_rows, replacement=True, generator=generator)
        rows, cols = [], []
        for k, s in enumerate(self.sparsities):
            idx = (which == k).nonzero().squeeze(1)
            c = _distinct_rows_support(idx.numel(), s, n, generator, device)
            rows.append(idx.repeat_interleave(s))
            cols.append(c.reshape(-1))
        return torch.cat(rows), torch.cat(cols)


@dataclass(frozen=True)
class Bernoulli(SupportLaw):
    """Features fire independently, feature i with probability f_i in (0, 1].

    Sampling is exact and sparse: features with f_i >= 0.05 draw one uniform per row; rarer ones
    draw their count of active rows from Binomial(N, f_i) and place it on distinct uniformly
    random rows (rejection of repeats), so the cost is O(N * sum_i f_i), not O(N n).
    """

    probabilities: tuple[float, ...]
    """Per-feature frequencies f_i, each in (0, 1]."""

    def __post_init__(self):
        f = tuple(float(x) for x in self.probabilities)
        for i, x in enumerate(f):
            if not (math.isfinite(x) and 0 < x <= 1):
                raise ValueError(f"frequencies[{i}] = {x} lies outside (0, 1]; every feature frequency must be in (0, 1].")
        object.__setattr__(self, "probabilities", f)

    def validate(self, n: int) -> None:
        if len(self.probabilities) != n:
            raise ValueError(f"frequencies has {len(self.probabilities)} entries but n_features={n}; give one per feature.")

    def frequencies(self, n: int) -> torch.Tensor:
        return torch.tensor(self.probabilities, dtype=torch.float64)

    def pair_probability(self, n: int, i: int, j: int) -> float:
        return self.probabilities[i] * self.probabilities[j]

    def sample_support(self, n_rows, n, generator, device):
        f = torch.tensor(self.probabilities, dtype=torch.float64, device=device)
        return _bernoulli_support(f, n_rows, generator, device)


def _bernoulli_support(f: torch.Tensor, n_rows: int, generator, device):
    rows_out, cols_out = [], []
    dense = (f >= _DENSE_FREQUENCY).nonzero().squeeze(1)
    if dense.numel():
        block = max(1, _KEYS_BLOCK_ELEMENTS // dense.numel())
        for start in range(0, n_rows, block):
            m = min(block, n_rows - start)
            hit = torch.rand(m, dense.numel(), generator=generator, device=device, dtype=torch.float64) < f[dense]
            r, c = hit.nonzero(as_tuple=True)
            rows_out.append(r + start)
            cols_out.append(dense[c])
    sparse = (f < _DENSE_FREQUENCY).nonzero().squeeze(1)
    if sparse.numel() and n_rows:
        counts = torch.binomial(
            torch.full((sparse.numel(),), float(n_rows), dtype=torch.float64, device=device), f[sparse], generator=generator
        ).long()
        cols = sparse.repeat_interleave(counts)
        rows = torch.randint(n_rows, (cols.numel(),), generator=generator, device=device)
        # Place each feature's count on distinct rows: redraw repeats until none remain. Redrawing
        # uniformly keeps every feature's row set a uniform subset of its size.
        while cols.numel():
            key = cols * n_rows + rows
            order = key.argsort()
            srt = key[order]
            dup = torch.zeros_like(key, dtype=torch.bool)
            dup[order[1:]] = srt[1:] == srt[:-1]
            if not bool(dup.any()):
                break
            rows[dup] = torch.randint(n_rows, (int(dup.sum()),), generator=generator, device=device)
        rows_out.append(rows)
        cols_out.append(cols)
    if not rows_out:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(rows_out), torch.cat(cols_out)


@dataclass(frozen=True)
class Zipf(SupportLaw):
    """Independent features with Zipf frequencies f_i = c * (i + 1)^(-exponent), i = 0..n-1,
    with c chosen so the expected row support sum_i f_i equals ``mean_support``."""

    exponent: float = 1.0
    """Zipf exponent a >= 0 (0 gives balanced frequencies)."""
    mean_support: float = 3.0
    """Expected number of active features per row."""

    def __post_init__(self):
        check_positive("exponent", self.exponent, allow_zero=True)
        check_positive("mean_support", self.mean_support)

    def frequencies(self, n: int) -> torch.Tensor:
        ranks = torch.arange(1, n + 1, dtype=torch.float64)
        weights = ranks ** (-float(self.exponent))
        return self.mean_support * weights / weights.sum()

    def validate(self, n: int) -> None:
        f_max = float(self.frequencies(n)[0])
        if f_max > 1:
            raise ValueError(
                f"Zipf(exponent={self.exponent}, mean_support={self.mean_support}) on n_features={n} gives the most "
                f"frequent feature f = {f_max:.3g} > 1; lower mean_support or exponent, or raise n_features."
            )

    def pair_probability(self, n: int, i: int, j: int) -> float:
        f = self.frequencies(n)
        return float(f[i] * f[j])

    def sample_support(self, n_rows, n, generator, device):
        return _bernoulli_support(self.frequencies(n).to(device), n_rows, generator, device)


SupportSpec = Union[int, SupportLaw]


def as_support_law(sparsity: SupportSpec | None, frequencies: Sequence[float] | torch.Tensor | None) -> SupportLaw:
    """Normalise the two constructor spellings (``sparsity=`` or ``frequencies=``) to one law."""
    if (sparsity is None) == (frequencies is None):
        raise ValueError(
            "give exactly one of sparsity= (an int s, or a law such as MixedSparsity/Zipf) or frequencies= "
            "(one frequency in (0, 1] per feature)."
        )
    if frequencies is not None:
        if isinstance(frequencies, torch.Tensor):
            frequencies = frequencies.detach().cpu().double().reshape(-1).tolist()
        return Bernoulli(tuple(frequencies))
    if isinstance(sparsity, SupportLaw):
        return sparsity
    try:
        s = check_int("sparsity", sparsity)
    except TypeError:
        raise TypeError(f"sparsity must be an int or a SupportLaw (Balanced, MixedSparsity, Bernoulli, Zipf), got {sparsity!r}.") from None
    return Balanced(s)


# --------------------------------------------------------------------------------------------
# coefficient laws
# --------------------------------------------------------------------------------------------


class CoefficientLaw:
    """Law of the (positive) value of an active entry of H."""

    mean: float
    """E[value], used by the population reading of H2."""

    def sample(self, k: int, generator: torch.Generator, dtype: torch.dtype, device) -> torch.Tensor:
        raise NotImplementedError

    def log_largest(self) -> float | None:
        """ln of the largest value the law can draw (for a law on normals, at
        :data:`~sae_theory._checks.SAFE_NORMAL_Z` standard deviations); a logarithm, so a bound
        beyond the float range is still a number. None (this default): unknown, not checked."""
        return None

    def check_dtype(self, dtype: torch.dtype, name: str | None = None) -> None:
        """Raise ValueError (naming ``name``, default the law) if draws in ``dtype`` can
        overflow to inf: :meth:`log_largest` against ln(finfo(dtype).max)."""
        bound = self.log_largest()
        if bound is not None:
            check_fits_dtype(name or repr(self), bound, dtype, fix="use smaller parameters or a wider dtype (e.g. dtype=torch.float64)")


@dataclass(frozen=True)
class Constant(CoefficientLaw):
    """Every active entry equals ``value`` (> 0). The default, with value 1."""

    value: float = 1.0

    def __post_init__(self):
        check_positive("Constant.value", self.value)

    @property
    def mean(self) -> float:
        return float(self.value)

    def log_largest(self) -> float:
        return math.log(self.value)

    def sample(self, k, generator, dtype, device):
        return torch.full((k,), float(self.value), dtype=dtype, device=device)


@dataclass(frozen=True)
class Uniform(CoefficientLaw):
    """Active entries uniform on [low, high], 0 < low <= high."""

    low: float = 0.5
    high: float = 1.5

    def __post_init__(self):
        check_positive("Uniform.low", self.low)
        check_positive("Uniform.high", self.high)
        if self.high < self.low:
            raise ValueError(f"Uniform needs low <= high, got low={self.low}, high={self.high}; swap them.")

    @property
    def mean(self) -> float:
        return 0.5 * (self.low + self.high)

    def log_largest(self) -> float:
        return math.log(self.high)

    def sample(self, k, generator, dtype, device):
        u = torch.rand(k, generator=generator, dtype=dtype, device=device)
        return self.low + (self.high - self.low) * u


@dataclass(frozen=True)
class LogNormal(CoefficientLaw):
    """Active entries exp(mu + sigma Z), Z ~ N(0, 1).

    Refused at construction when a draw or the mean could overflow float64: exp(mu + 10 sigma)
    (no normal draw reaches |Z| = 10, :data:`~sae_theory._checks.SAFE_NORMAL_Z`) or
    exp(mu + sigma^2 / 2) above the largest float64; a feature model refuses it for its own dtype
    the same way (float32: mu + 10 sigma <= 88.7)."""

    mu: float = 0.0
    sigma: float = 0.5

    def __post_init__(self):
        if not math.isfinite(self.mu):
            raise ValueError(f"LogNormal.mu must be finite, got {self.mu}.")
        check_positive("LogNormal.sigma", self.sigma, allow_zero=True)
        fix = "lower mu or sigma: exp(mu + 10 sigma) and the mean exp(mu + sigma^2 / 2) must stay below the largest float64"
        check_fits_dtype(repr(self), max(self.log_largest(), self.mu + 0.5 * self.sigma**2), torch.float64, fix=fix)

    @property
    def mean(self) -> float:
        return math.exp(self.mu + 0.5 * self.sigma**2)

    def log_largest(self) -> float:
        return self.mu + SAFE_NORMAL_Z * self.sigma

    def sample(self, k, generator, dtype, device):
        z = torch.randn(k, generator=generator, dtype=dtype, device=device)
        return torch.exp(self.mu + self.sigma * z)


def as_coefficient_law(spec: CoefficientLaw | str | float | None) -> CoefficientLaw:
    """``None`` -> Constant(1); a number -> Constant(number); a name -> that law with defaults."""
    if spec is None:
        return Constant(1.0)
    if isinstance(spec, CoefficientLaw):
        return spec
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return Constant(float(spec))
    names = {"constant": Constant, "uniform": Uniform, "lognormal": LogNormal, "log-normal": LogNormal}
    if isinstance(spec, str) and spec.lower() in names:
        return names[spec.lower()]()
    raise ValueError(f"coefficients={spec!r} is not a law; use Constant(v), Uniform(a, b) with a > 0, LogNormal(mu, sigma), or one of {sorted(names)}.")

