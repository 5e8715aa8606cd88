"""Feature recovery and cross-seed consistency: FRR and MCS (docs/papers.md#gba-metrics).

Every function here is a pure function of tensors. Inputs may have any floating dtype and live on
any device; the arithmetic is float64 throughout. What comes back:

==============================  =============================================================
function                        result
==============================  =============================================================
:func:`best_cosine`             float64 tensor (n,) on CPU
:func:`feature_recovery_rate`   Python float
:func:`max_cosine_similarity`   float64 tensor (M,) on CPU
:func:`mcs_fraction`            Python float
:func:`top_fraction`            int64 tensor (k,) on CPU
:func:`decoder_mcc`             Python float
==============================  =============================================================

Cosines are **signed** (except in :func:`decoder_mcc`, which follows SynthSAEBench and takes
their absolute value). An SAE direction has a sign (its code is non-negative), so a learned row
-v_i does not recover feature v_i: its cosine with v_i is -1, not 1.

Memory. The learned dictionary may have M = 262,144 rows and the true one n = 65,536, so the
(n, M) cosine matrix is never built. Rows are converted to float64 and normalised block by block,
and no block (of rows, or of cosines) has more than ``_CHUNK_ENTRIES`` = 2^25 entries. The
arithmetic runs on the device of the larger operand (``learned`` for :func:`best_cosine`, ``B``
for :func:`max_cosine_similarity`); the other operand is copied there once, in its own dtype.

Zero rows. A zero learned row (a dead neuron whose weight was zeroed, or never moved) has no
direction: it counts as cosine 0 with everything, never NaN. The consequence: when a dead row
exists, a best cosine is at least 0. A zero true feature has no direction either, and asking
whether it was recovered is a mistake in the input, so it raises.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch

from .._checks import check_matrix, check_probability

__all__ = ["best_cosine", "decoder_mcc", "feature_recovery_rate", "max_cosine_similarity", "mcs_fraction", "top_fraction", "unit_rows"]

#: Largest number of entries in any block built at once (float64 rows, or a block of cosines).
#: Private; tests lower it to force many small blocks.
_CHUNK_ENTRIES = 1 << 25


def unit_rows(X: torch.Tensor) -> torch.Tensor:
    """The rows of ``X`` (n, d) scaled to unit Euclidean norm, a zero row left zero (so it has
    cosine 0 with everything), in ``X``'s dtype: ``X / where(norm > 0, norm, 1)``. A new tensor;
    the models' in-place ``unit_rows_`` is the same operation on their own weights."""
    norms = X.norm(dim=1, keepdim=True)
    return X / torch.where(norms > 0, norms, torch.ones_like(norms))


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def _check_same_d(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{a_name} and {b_name} must have the same number of columns d; got {a_name} of shape "
            f"{tuple(a.shape)} and {b_name} of shape {tuple(b.shape)}."
        )


# ---------------------------------------------------------------------------------------------
# chunked internals
# ---------------------------------------------------------------------------------------------
def _block_rows(d: int) -> int:
    """Rows per block: r with r * r <= _CHUNK_ENTRIES (cosine block) and r * d <= _CHUNK_ENTRIES
    (float64 row block), at least 1."""
    c = max(1, int(_CHUNK_ENTRIES))
    return max(1, min(math.isqrt(c), c // max(1, d)))


def _inverse_row_norms(name: str, t: torch.Tensor, *, zero_rows: Literal["zero", "raise"]) -> torch.Tensor:
    """1 / ||t_i|| in float64, shape (rows,), on ``t.device``; 0 for a zero row (``"zero"``).

    Raises ValueError naming ``name`` if a row holds a NaN or an infinity, or if a row is zero and
    ``zero_rows="raise"``.
    """
    rows = _block_rows(t.shape[1])
    norms = torch.empty(t.shape[0], dtype=torch.float64, device=t.device)
    for start in range(0, t.shape[0], rows):
        norms[start : start + rows] = torch.linalg.vector_norm(t[start : start + rows].to(torch.float64), dim=1)
    bad = ~torch.isfinite(norms)
    if bool(bad.any()):
        first = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{name} contains NaN or infinite values in {int(bad.sum())} row(s) (first: {first}); "
            "clean the input before passing it."
        )
    zero = norms == 0
    if zero_rows == "raise" and bool(zero.any()):
        first = zero.nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"{name} has {int(zero.sum())} zero row(s) (first: {first}); a zero vector has no direction, "
            "so its cosine is undefined. Drop those rows."
        )
    return norms.reciprocal().masked_fill_(zero, 0.0)


def _learned_and_true(learned: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a (learned, true) pair of direction sets (2-D, same d, finite; no zero row in
    ``true``) and return ``true`` on ``learned``'s device with both inverse row norms (a zero
    learned row gets 0)."""
    check_matrix("learned", learned)
    check_matrix("true", true)
    _check_same_d("learned", learned, "true", true)
    true = true.to(learned.device)
    return true, _inverse_row_norms("learned", learned, zero_rows="zero"), _inverse_row_norms("true", true, zero_rows="raise")


def _max_cosine(
    A: torch.Tensor,
    inv_a: torch.Tensor,
    B: torch.Tensor,
    inv_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of A, the max signed cosine with any row of B, and the index of that row.

    Parameters
    ----------
    A : Tensor (m, d), B : Tensor (k, d)
        Checked, finite, same d, on the same device.
    inv_a : Tensor (m,), inv_b : Tensor (k,)
        float64 inverse row norms on that device (0 for a zero row, which makes its cosines 0).

    Returns
    -------
    values : Tensor (m,), float64 on CPU, clamped to [-1, 1]
    indices : Tensor (m,), int64 on CPU; the first maximising row of B
    """
    m, d = A.shape
    k = B.shape[0]
    rows = _block_rows(d)
    best = torch.full((m,), -math.inf, dtype=torch.float64, device=A.device)
    arg = torch.zeros(m, dtype=torch.int64, device=A.device)
    for i0 in range(0, m, rows):
        i1 = min(i0 + rows, m)
        a = A[i0:i1].to(torch.float64) * inv_a[i0:i1, None]
        best_i, arg_i = best[i0:i1], arg[i0:i1]  # views: updated in place
        for j0 in range(0, k, rows):
            j1 = min(j0 + rows, k)
            b = B[j0:j1].to(torch.float64) * inv_b[j0:j1, None]
            values, idx = (a @ b.T).max(dim=1)
            better = values > best_i  # strict: ties keep the earlier row of B
            best_i.copy_(torch.where(better, values, best_i))
            arg_i.copy_(torch.where(better, idx + j0, arg_i))
    return best.clamp_(-1.0, 1.0).cpu(), arg.cpu()


# ---------------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------------
def best_cosine(learned: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """For each true feature v_i, the largest signed cosine with any learned direction.

    best_i = max_j <v_i, w_j> / (||v_i|| ||w_j||).

    Parameters
    ----------
    learned : Tensor (M, d)
        Learned directions, one per row (e.g. ``W_dec`` of an SAE, or the rows of ``W_enc``).
        Any floating dtype and device. A zero row (a dead neuron) counts as cosine 0 with every
        feature, so it never yields NaN, and its presence makes every best cosine >= 0.
    true : Tensor (n, d)
        True features V, one per row. Any floating dtype and device; moved to ``learned``'s
        device. No row may be zero.

    Returns
    -------
    Tensor (n,)
        float64 on CPU, in [-1, 1]. Signed: a learned row -v_i gives cosine -1 with v_i, because
        an SAE direction has a sign.

    Raises
    ------
    ValueError
        If either argument is not 2-D with at least one row, if their d differ (the message gives
        both shapes), if either holds NaN or infinity, or if ``true`` has a zero row.
    TypeError
        If either argument is not a dense floating tensor.
    """
    true, inv_learned, inv_true = _learned_and_true(learned, true)
    values, _ = _max_cosine(true, inv_true, learned, inv_learned)
    return values


def feature_recovery_rate(learned: torch.Tensor, true: torch.Tensor, tau: float = 0.9) -> float:
    """FRR: the fraction of true features with some learned direction at cosine >= tau.

    FRR = (1/n) #{i : max_j cos(v_i, w_j) >= tau}   (docs/papers.md#gba-metrics; the paper writes
    cos > tau_align, we use >= so that tau = 1 counts exact recovery).

    Parameters
    ----------
    learned : Tensor (M, d)
        Learned directions (rows); zero rows count as cosine 0 (see :func:`best_cosine`).
    true : Tensor (n, d)
        True features V (rows), none zero.
    tau : float, default 0.9
        Alignment threshold in (0, 1]. The paper reports tau = 0.8 and 0.9. Cosines are computed
        in float64 and clamped to [-1, 1]; with tau = 1 a recovered feature must come out exactly 1,
        which rounding may prevent.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        If ``tau`` is outside (0, 1], or for any input error of :func:`best_cosine`.
    """
    tau = check_probability("tau", tau)
    best = best_cosine(learned, true)
    return float((best >= tau).to(torch.float64).mean())


def max_cosine_similarity(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """MCS: for each row of A, the largest signed cosine with any row of B
    (docs/papers.md#gba-metrics).

    MCS_j = max_k <a_j, b_k> / (||a_j|| ||b_k||), used for the consistency of the neurons of one run
    (A) against another run with a different seed (B).

    Parameters
    ----------
    A : Tensor (M, d)
        Directions of one run (rows). A zero row has MCS 0.
    B : Tensor (M', d)
        Directions of another run (rows); moved to A's device. A zero row counts as cosine 0.

    Returns
    -------
    Tensor (M,)
        float64 on CPU, in [-1, 1]; signed as in :func:`best_cosine`.

    Raises
    ------
    ValueError
        If either is not 2-D with a row, their d differ (both shapes in the message), or either
        holds NaN or infinity.
    TypeError
        If either is not a dense floating tensor.
    """
    check_matrix("A", A)
    check_matrix("B", B)
    _check_same_d("A", A, "B", B)
    B = B.to(A.device)
    values, _ = _max_cosine(A, _inverse_row_norms("A", A, zero_rows="zero"), B, _inverse_row_norms("B", B, zero_rows="zero"))
    return values


def _select_indices(select: object, M: int) -> torch.Tensor:
    """``select`` as int64 indices on CPU: a 1-D integer tensor/sequence of indices in [0, M), or a
    boolean mask of length M."""
    idx = select if isinstance(select, torch.Tensor) else torch.as_tensor(select)
    if idx.numel() == 0:
        raise ValueError("select picks no rows, so the fraction is undefined; pass at least one index.")
    if idx.ndim != 1:
        raise ValueError(f"select must be 1-D (indices or a boolean mask), got shape {tuple(idx.shape)}.")
    if idx.dtype == torch.bool:
        if idx.shape[0] != M:
            raise ValueError(f"select as a boolean mask must have length M = {M} (rows of run), got {idx.shape[0]}.")
        idx = idx.nonzero().flatten()
    elif idx.is_floating_point() or idx.is_complex():
        raise TypeError(f"select must hold integer indices or booleans, got dtype {idx.dtype}.")
    idx = idx.to(device="cpu", dtype=torch.int64)
    if idx.numel() == 0:
        raise ValueError("select (a boolean mask) picks no rows, so the fraction is undefined; select at least one.")
    if bool(((idx < 0) | (idx >= M)).any()):
        raise ValueError(f"select indices must lie in [0, {M}) (rows of run), got min {int(idx.min())}, max {int(idx.max())}.")
    return idx


def mcs_fraction(
    run: torch.Tensor,
    others: Sequence[torch.Tensor],
    threshold: float,
    *,
    select: torch.Tensor | Sequence[int] | None = None,
    reduce: Literal["min", "mean"] = "min",
) -> float:
    """Fraction of the neurons of ``run`` whose MCS against the other runs is >= threshold.

    For each selected row j of ``run``: MCS_j^(r) = :func:`max_cosine_similarity` against
    ``others[r]``; reduce over r by min or mean; report #{j : reduced_j >= threshold} / #selected
    (docs/papers.md#gba-metrics: percentages at thresholds 0.6 ... 0.9 over the top α neurons).

    Parameters
    ----------
    run : Tensor (M, d)
        Directions of one run (rows).
    others : sequence of Tensor (M', d)
        The other runs (different seeds), at least one; their row counts may differ.
    threshold : float
        In (0, 1].
    select : Tensor (k,) of int64 indices, boolean mask (M,), or None
        Rows of ``run`` to score, e.g. from :func:`top_fraction`; None scores all M rows.
        Duplicated indices count twice.
    reduce : {"min", "mean"}, default "min"
        How MCS is aggregated over ``others``. The paper does not say (docs/papers.md#gba-metrics,
        INFERRED); "min" asks a neuron to be found in every other run, "mean" on average.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    ValueError
        Bad ``threshold``, ``reduce``, ``select``; empty ``others``; a d that differs between
        ``run`` and ``others[r]`` (both shapes in the message); NaN or infinity anywhere.
    TypeError
        If ``others`` is a single tensor rather than a sequence of them, or an input is not a
        dense floating tensor.
    """
    check_matrix("run", run)
    if isinstance(others, torch.Tensor):
        raise TypeError("others must be a list of (M', d) tensors, got a single tensor; wrap one run as [other].")
    others = list(others)
    if not others:
        raise ValueError("others must hold at least one other run, got an empty sequence.")
    for r, other in enumerate(others):
        check_matrix(f"others[{r}]", other)
        _check_same_d("run", run, f"others[{r}]", other)
    threshold = check_probability("threshold", threshold)
    if reduce not in ("min", "mean"):
        raise ValueError(f"reduce must be 'min' or 'mean', got {reduce!r}.")
    rows = run if select is None else run[_select_indices(select, run.shape[0]).to(run.device)]
    inv_rows = _inverse_row_norms("run", rows, zero_rows="zero")
    mcs = []
    for r, other in enumerate(others):
        other = other.to(rows.device)
        values, _ = _max_cosine(rows, inv_rows, other, _inverse_row_norms(f"others[{r}]", other, zero_rows="zero"))
        mcs.append(values)
    stacked = torch.stack(mcs)  # (R, k)
    reduced = stacked.amin(dim=0) if reduce == "min" else stacked.mean(dim=0)
    return float((reduced >= threshold).to(torch.float64).mean())


def top_fraction(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    """Indices of the top α fraction of neurons by score (at least one).

    For the paper's filters "top 0.3% (or 0.05%) neurons by max activation / by Z-score"
    (docs/papers.md#gba-metrics); feed the result to ``mcs_fraction(..., select=...)``.

    Parameters
    ----------
    scores : Tensor (M,)
        One score per neuron, any floating dtype and device, finite.
    alpha : float
        Fraction in (0, 1]. The count is k = max(1, floor(alpha * M + 1/2)), i.e. alpha * M
        rounded half up, so 0.3 * 10 = 3.0000000000000004 gives 3, not 4.

    Returns
    -------
    Tensor (k,)
        int64 on CPU, ordered by decreasing score; ties are broken by ``torch.topk``.

    Raises
    ------
    ValueError
        If ``alpha`` is outside (0, 1], or ``scores`` is not 1-D, empty, or holds NaN/infinity.
    TypeError
        If ``scores`` is not a floating tensor.
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor of shape (M,), got {type(scores).__name__}.")
    if scores.ndim != 1 or scores.shape[0] == 0:
        raise ValueError(f"scores must be 1-D and non-empty, shape (M,), got shape {tuple(scores.shape)}.")
    if not scores.is_floating_point():
        raise TypeError(f"scores must have a floating dtype, got {scores.dtype}.")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contains NaN or infinite values; clean the input before passing it.")
    alpha = check_probability("alpha", alpha)
    M = scores.shape[0]
    k = min(M, max(1, math.floor(alpha * M + 0.5)))
    return torch.topk(scores, k, sorted=True).indices.to(device="cpu", dtype=torch.int64)


def decoder_mcc(learned: torch.Tensor, true: torch.Tensor, *, mean_over: str = "true") -> float:
    """Decoder-cosine MCC (the mean correlation coefficient of SynthSAEBench): the mean |cos|
    between true directions and the learned directions matched to them one to one.

    With C[i, j] = |<v_i, w_j>| / (||v_i|| ||w_j||) (n, M), the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``, maximising) picks the one-to-one matching pi of
    true directions to distinct learned ones with the largest total C, and

        MCC = (1/n) sum_{i matched} C[i, pi(i)].

    * More learned than true directions (M > n, the usual SAE): every true direction is matched
      to a distinct learned one; the M - n learned directions left over do not count.
    * Fewer learned than true (M < n): only M true directions can be matched; the n - M left
      over count as 0 in the mean over the n true directions, so MCC <= M / n.
    * ``mean_over="matched"`` divides by the number of matched pairs, min(n, M), instead: the
      reading of SAELens' ``mean_correlation_coefficient`` (``sae_lens.synthetic``), which
      SynthSAEBench reports for SAEs narrower than the number of true features (4,096 latents
      for 16,384 features). It asks how well the learned directions that exist match, not how
      many true directions are covered; for M >= n the two readings are equal.

    Unlike :func:`best_cosine`, two true directions cannot both claim the same learned one, and
    the sign is ignored (a learned row -v_i matches v_i with |cos| 1).

    Parameters
    ----------
    learned : Tensor (M, d)
        Learned directions, one per row (e.g. ``W_dec``); a zero row (a dead neuron) has |cos| 0
        with every true direction.
    true : Tensor (n, d)
        True directions V, one per row, none zero; moved to ``learned``'s device.
    mean_over : {"true", "matched"}
        The denominator: the n true directions (default) or the min(n, M) matched pairs
        (SynthSAEBench's reading).

    Returns
    -------
    float
        In [0, 1]: 1 exactly when every true direction has a distinct learned copy up to sign
        and scale (up to rounding), 0 when every learned direction is orthogonal to every true one.

    Raises
    ------
    ValueError
        Either is not 2-D with at least one row, their d differ (both shapes in the message),
        either holds NaN or infinity, ``true`` has a zero row, or ``mean_over`` is neither
        "true" nor "matched".
    TypeError
        Either is not a dense floating tensor.

    Notes
    -----
    Builds the (n, M) float64 matrix of |cos| (in blocks, but the matrix itself is whole:
    8 n M bytes) and solves the assignment in O(n^2 M) time: fine up to a few thousand
    directions on each side, not for M = 262,144.
    """
    from scipy.optimize import linear_sum_assignment

    if mean_over not in ("true", "matched"):
        raise ValueError(f"mean_over must be 'true' (divide by the true directions) or 'matched' (by the matched pairs, "
                         f"SynthSAEBench's reading), got {mean_over!r}.")
    true, inv_learned, inv_true = _learned_and_true(learned, true)
    n, M = true.shape[0], learned.shape[0]
    C = torch.empty(n, M, dtype=torch.float64)
    rows = _block_rows(true.shape[1])
    for i0 in range(0, n, rows):
        t = true[i0 : i0 + rows].to(torch.float64) * inv_true[i0 : i0 + rows, None]
        for j0 in range(0, M, rows):
            w = learned[j0 : j0 + rows].to(torch.float64) * inv_learned[j0 : j0 + rows, None]
            C[i0 : i0 + rows, j0 : j0 + rows] = (t @ w.T).abs_().clamp_(max=1.0).cpu()
    C_np = C.numpy()
    r, c = linear_sum_assignment(C_np, maximize=True)
    return float(C_np[r, c].sum() / (n if mean_over == "true" else len(r)))
