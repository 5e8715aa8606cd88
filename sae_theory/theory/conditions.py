"""Identifiability conditions of the GBA statistical model, measured on data
(docs/papers.md#gba-identifiability).

V (n, d) is identifiable from X = H V, H (N, n) >= 0, when (Definition 5.2 of the paper, wording
EXACT from the authors' page, quantitative forms REPORTED):

* **H1** row-wise sparsity: every row of H has at most O(1) non-zeros;
* **H2** non-degeneracy: the mean size of the non-zero entries of every column of H is Theta(1);
* **H3** low co-occurrence: for any two features, #rows with both < n^(-1/2) * #rows with either;
* **V1** incoherence: max_{i != j} |cos(v_i, v_j)| = o(1).

The paper's constants behind O(1), Theta(1) and o(1) are not known (docs/papers.md#gba-constants).
The readings used here, each repeated in the condition's message and overridable by keyword:

* H1: "O(1)" read as max row support <= ceil(ln n) (``max_support=``);
* H2: "Theta(1)" read as: after rescaling column i of H by ||v_i|| (so the data X are unchanged
  and V has unit rows), no feature's mean non-zero coefficient is below ``h2_ratio`` (0.1) times
  the median over features; a feature that never fires fails H2 (its mean is an empty average);
* H3: exactly as stated, on the given H, threshold n^(-1/2);
* V1: "o(1)" made concrete as the mutual-coherence uniqueness bound mu < 1/(2 s - 1), s the
  max row support of H (Donoho & Elad 2003: below it every s-sparse code of X is unique), with
  the random-Gaussian baseline sqrt(log n / d) reported beside it (``max_coherence=``).

Everything is computed in float64. H3 uses a sparse product B^T B of the support pattern B, and
V1 a blockwise Gram matrix, so nothing of size n x n is ever dense: both run at n = 65,536.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import scipy.sparse as sp
import torch

from .._checks import check_int, check_levels, check_real

__all__ = ["ConditionResult", "IdentifiabilityReport", "as_csr", "check_conditional_orthogonality", "check_identifiability", "cosine_extremes", "mutual_coherence"]

_GRAM_BLOCK_ELEMENTS = 1 << 25


@dataclass(frozen=True)
class ConditionResult:
    """One measured condition: ``holds`` iff ``value`` is on the right side of ``threshold``."""

    name: str
    value: float
    threshold: float
    holds: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        mark = "holds" if self.holds else "FAILS"
        return f"{self.name}: {mark} (value={self.value:.4g}, threshold={self.threshold:.4g})"


class IdentifiabilityReport(Mapping):
    """The four conditions by name (``report["H3"].value``); ``report.holds`` is their conjunction."""

    def __init__(self, results: list[ConditionResult], n: int, d: int, N: int):
        self._results = {r.name: r for r in results}
        self.n, self.d, self.N = n, d, N

    def __getitem__(self, name: str) -> ConditionResult:
        try:
            return self._results[name]
        except KeyError:
            raise KeyError(f"no condition {name!r}; the report has {list(self._results)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def holds(self) -> bool:
        """True iff every condition holds."""
        return all(r.holds for r in self._results.values())

    def to_frame(self):
        """A tidy pandas DataFrame: one row per condition."""
        import pandas as pd

        return pd.DataFrame(
            [dict(condition=r.name, value=r.value, threshold=r.threshold, holds=r.holds, message=r.message) for r in self.values()]
        )

    def __repr__(self) -> str:
        lines = [f"IdentifiabilityReport(N={self.N}, n={self.n}, d={self.d}, holds={self.holds})"]
        lines += [f"  {r!r}" for r in self.values()]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# geometry of V
# --------------------------------------------------------------------------------------------


def _as_float64_tensor(name: str, A) -> torch.Tensor:
    if isinstance(A, np.ndarray):
        A = torch.from_numpy(A)
    if not isinstance(A, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(A).__name__}.")
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(A.shape)}.")
    A = A.detach().to(torch.float64)
    if not bool(torch.isfinite(A).all()):
        raise ValueError(f"{name} contains NaN or infinite values; clean it before checking conditions.")
    return A


def _unit_rows(name: str, V: torch.Tensor) -> torch.Tensor:
    norms = V.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        i = int((norms.squeeze(1) == 0).nonzero()[0])
        raise ValueError(f"{name} row {i} is zero; every feature needs a non-zero direction.")
    return V / norms


def cosine_extremes(V: torch.Tensor, block_rows: int | None = None) -> tuple[float, float]:
    """Largest and smallest off-diagonal cosine between rows of V (n, d), float64.

    Computed over the upper triangle in row blocks, never forming the n x n Gram matrix.
    Returns (0.0, 0.0) when n < 2.
    """
    V = _unit_rows("V", _as_float64_tensor("V", V))
    n = V.shape[0]
    if n < 2:
        return 0.0, 0.0
    block = block_rows or max(1, _GRAM_BLOCK_ELEMENTS // n)
    hi, lo = -math.inf, math.inf
    for r0 in range(0, n - 1, block):
        r1 = min(r0 + block, n)
        G = V[r0:r1] @ V[r0:].T  # (b, n - r0): pairs (r0 + k, r0 + j); j = k is a self-pair
        G.diagonal().fill_(-math.inf)
        hi = max(hi, float(G.max()))
        G.diagonal().fill_(math.inf)
        lo = min(lo, float(G.min()))
    return hi, lo


def mutual_coherence(V: torch.Tensor) -> float:
    """max_{i != j} |cos(v_i, v_j)| of the rows of V (n, d); 0 for n < 2."""
    hi, lo = cosine_extremes(V)
    return max(abs(hi), abs(lo))


# --------------------------------------------------------------------------------------------
# statistics of H
# --------------------------------------------------------------------------------------------


def as_csr(H, n_expected: int) -> sp.csr_matrix:
    """H (N, n) as a float64 scipy CSR matrix; dense and sparse torch tensors, numpy, scipy accepted."""
    if sp.issparse(H):
        M = sp.csr_matrix(H, dtype=np.float64, copy=True)  # eliminate_zeros below must not touch the caller's H
    elif isinstance(H, torch.Tensor) and H.layout in (torch.sparse_coo, torch.sparse_csr):
        if H.ndim != 2:
            raise ValueError(f"H must be 2-D, got shape {tuple(H.shape)}.")
        C = H.detach().to_sparse_coo().coalesce().cpu()
        idx = C.indices().numpy()
        M = sp.csr_matrix((C.values().double().numpy(), (idx[0], idx[1])), shape=tuple(C.shape))
    else:
        M = sp.csr_matrix(_as_float64_tensor("H", H).cpu().numpy())
    if M.ndim != 2:
        raise ValueError(f"H must be 2-D, got shape {M.shape}.")
    if not np.isfinite(M.data).all():
        raise ValueError("H contains NaN or infinite values; clean it before checking conditions.")
    if (M.data < 0).any():
        raise ValueError("H has negative entries; the model X = H V requires H >= 0.")
    if M.shape[1] != n_expected:
        raise ValueError(
            f"H has {M.shape[1]} columns but V has {n_expected} rows; H must be (N, n) and V (n, d) with the same n."
        )
    M.eliminate_zeros()
    return M


def check_identifiability(
    H,
    V,
    *,
    max_support: int | None = None,
    h2_ratio: float = 0.1,
    max_coherence: float | None = None,
    cosines: tuple[float, float] | None = None,
) -> IdentifiabilityReport:
    """Measure H1, H2, H3 and V1 of docs/papers.md#gba-identifiability on a factorisation X = H V.

    Parameters
    ----------
    H : (N, n) non-negative coefficients; torch (dense, COO or CSR), numpy or scipy.sparse.
    V : (n, d) features (rows); torch or numpy. Need not have unit rows.
    max_support : H1 threshold; default ceil(ln n) (reading of "O(1)").
    h2_ratio : H2 threshold as a fraction of the median per-feature mean coefficient.
    max_coherence : V1 threshold; default 1/(2 s - 1) with s the max row support of H.
    cosines : ``cosine_extremes(V)`` if already computed for this V; V1 then skips its
        O(n^2 d) Gram pass (useful when one V is checked against many H).

    Returns
    -------
    IdentifiabilityReport
        ``report["H1" | "H2" | "H3" | "V1"]`` with ``.value``, ``.threshold``, ``.holds``,
        ``.message``, ``.details``; ``report.holds`` for all four.
    """
    V64 = _as_float64_tensor("V", V)
    n, d = V64.shape
    if n < 1 or d < 1:
        raise ValueError(f"V must have at least one row and one column, got shape {(n, d)}.")
    V_norms = V64.norm(dim=1)
    if bool((V_norms == 0).any()):
        raise ValueError(f"V row {int((V_norms == 0).nonzero()[0])} is zero; every feature needs a non-zero direction.")
    check_real("h2_ratio", h2_ratio)
    if not 0 < h2_ratio <= 1:
        raise ValueError(f"h2_ratio must lie in (0, 1], got {h2_ratio}.")
    if max_support is not None:
        check_int("max_support", max_support, minimum=1)
    if max_coherence is not None:
        check_real("max_coherence", max_coherence, minimum=0)
    if cosines is not None:
        if len(cosines) != 2:
            raise ValueError(f"cosines must be the pair (largest, smallest) of cosine_extremes(V), got {cosines!r}.")
        for i, c in enumerate(cosines):
            check_real(f"cosines[{i}]", c)
    Hc = as_csr(H, n)
    N = Hc.shape[0]
    if N < 1:
        raise ValueError("H has no rows; sample at least one data point.")

    support = np.diff(Hc.indptr)
    s_max = int(support.max())
    results = [
        _h1(support, n, max_support),
        _h2(Hc, V_norms.cpu().numpy(), h2_ratio),
        _h3(Hc, n),
        _v1(cosines if cosines is not None else cosine_extremes(V64), n, d, s_max, max_coherence),
    ]
    return IdentifiabilityReport(results, n=n, d=d, N=N)


def _h1(support: np.ndarray, n: int, max_support: int | None) -> ConditionResult:
    s_max, s_mean = int(support.max()), float(support.mean())
    if max_support is None:
        threshold = max(1, math.ceil(math.log(n))) if n > 1 else 1
        reading = f'"O(1)" read as <= ceil(ln n) = {threshold} (paper constant unknown; pass max_support= to change)'
    else:
        threshold = int(max_support)
        reading = f"threshold max_support={threshold} given by the caller"
    holds = s_max <= threshold
    msg = f"max row support {s_max} (mean {s_mean:.3g}) {'<=' if holds else '>'} {threshold}; {reading}."
    return ConditionResult("H1", float(s_max), float(threshold), holds, msg, dict(max_support=s_max, mean_support=s_mean))


def _h2(Hc: sp.csr_matrix, v_norms: np.ndarray, ratio: float) -> ConditionResult:
    counts = np.bincount(Hc.indices, minlength=Hc.shape[1])
    sums = np.bincount(Hc.indices, weights=Hc.data, minlength=Hc.shape[1]) * v_norms
    active = counts > 0
    n_dead = int((~active).sum())
    if not active.any():
        return ConditionResult("H2", 0.0, math.nan, False, "H has no non-zero entry: every feature is degenerate.", dict(n_never_active=n_dead))
    means = sums[active] / counts[active]  # guarded: only features that fire at least once
    median = float(np.median(means))
    threshold = ratio * median
    value = 0.0 if n_dead else float(means.min())
    holds = n_dead == 0 and value >= threshold
    reading = f'"Theta(1)" read as min_i mean_i >= {ratio} x median_i mean_i (coefficients scaled by ||v_i||)'
    if n_dead:
        msg = f"{n_dead} feature(s) never fire in these N rows (their mean is an empty average, counted as 0); {reading}."
    else:
        msg = f"min per-feature mean non-zero coefficient {value:.4g} {'>=' if holds else '<'} {threshold:.4g}; {reading}."
    details = dict(min_mean=float(means.min()), median_mean=median, max_mean=float(means.max()), n_never_active=n_dead)
    return ConditionResult("H2", value, threshold, holds, msg, details)


def _h3(Hc: sp.csr_matrix, n: int) -> ConditionResult:
    B = sp.csr_matrix((np.ones_like(Hc.data, dtype=np.int64), Hc.indices, Hc.indptr), shape=Hc.shape)
    counts = np.bincount(B.indices, minlength=n)
    C = sp.triu(B.T @ B, k=1).tocoo()  # C_ij = #rows with both i and j, i < j
    threshold = n ** -0.5
    min_count = int(counts.min())
    if C.nnz == 0:
        value, pair, both, either = 0.0, None, 0, 0
    else:
        either = counts[C.row] + counts[C.col] - C.data
        ratios = C.data / either  # either >= both >= 1 here, so no division by zero
        k = int(ratios.argmax())
        value, pair, both, either = float(ratios[k]), (int(C.row[k]), int(C.col[k])), int(C.data[k]), int(either[k])
    holds = value < threshold
    msg = f"max_(i<j) #both/#either = {value:.4g} {'<' if holds else '>='} n^-1/2 = {threshold:.4g}"
    if pair is not None:
        msg += f" (pair {pair}: {both} of {either} rows)"
    if not holds and min_count > 0 and 1.0 / (2 * min_count) >= threshold:
        msg += (
            f"; note the rarest feature fires only {min_count} time(s), so one chance co-occurrence already exceeds "
            "n^-1/2: N is too small for H3 to hold on a finite sample"
        )
    msg += "; read exactly as stated, on the given rows."
    details = dict(pair=pair, both=both, either=either, min_feature_count=min_count, n_cooccurring_pairs=int(C.nnz))
    return ConditionResult("H3", value, threshold, holds, msg, details)


def _v1(cosines: tuple[float, float], n: int, d: int, s_max: int, max_coherence: float | None) -> ConditionResult:
    hi, lo = (float(c) for c in cosines)
    mu = max(abs(hi), abs(lo))
    baseline = math.sqrt(math.log(n) / d) if n > 1 else 0.0
    if max_coherence is None:
        threshold = 1.0 / (2 * max(s_max, 1) - 1)
        reading = f'"o(1)" made concrete as mu < 1/(2s-1) = {threshold:.4g} with s = {s_max} (uniqueness of s-sparse codes; paper constant unknown)'
    else:
        threshold = float(max_coherence)
        reading = f"threshold max_coherence={threshold} given by the caller"
    holds = mu < threshold
    ratio = mu / baseline if baseline > 0 else math.inf
    msg = (
        f"mutual coherence {mu:.4g} {'<' if holds else '>='} {threshold:.4g}; {reading}. "
        f"Random-Gaussian baseline sqrt(log n / d) = {baseline:.4g} (coherence / baseline = {ratio:.3g})."
    )
    details = dict(max_cos=hi, min_cos=lo, random_baseline=baseline, ratio_to_baseline=ratio)
    return ConditionResult("V1", mu, threshold, holds, msg, details)


def check_conditional_orthogonality(D, levels, *, tol: float | None = None) -> ConditionResult:
    """Conditional orthogonality (MP-SAE Def 2.3): atoms of different levels are orthogonal; atoms
    of the same level are unconstrained.

    ``D`` (p, d) atoms as rows (any norms; cosines are used), ``levels`` (p,) integer level of each
    atom. ``value`` = the largest |cos| over pairs of atoms of different levels, checked in float64
    against ``tol`` (default 64 x the machine epsilon of D's own dtype: the cosines of exactly
    orthogonal atoms stored in that dtype). ``details``: the largest within-level |cos| (free) and
    the worst cross-level pair. A zero atom raises (its direction is undefined).
    """
    V = _as_float64_tensor("D", D)
    src_dtype = D.dtype if isinstance(D, torch.Tensor) else torch.float64
    lv = check_levels("levels", levels, V.shape[0], "D")
    if tol is not None:
        check_real("tol", tol, minimum=0)
    U = _unit_rows("D", V)
    C = (U @ U.T).abs()
    same = lv[:, None] == lv[None, :]
    cross = C.masked_fill(same, 0.0)
    within = C.masked_fill(~same | torch.eye(len(lv), dtype=torch.bool), 0.0)
    tol = 64 * torch.finfo(src_dtype).eps if tol is None else float(tol)
    worst = int(cross.argmax())
    i, j = divmod(worst, C.shape[1])
    value = float(cross.max()) if cross.numel() else 0.0
    return ConditionResult(
        "conditional orthogonality", value, tol, value <= tol,
        f"max |cos| across levels = {value:.3g} (<= {tol:.3g} required); within levels up to {float(within.max()):.3g} (free)",
        dict(max_within_level=float(within.max()), worst_pair=(i, j)),
    )
