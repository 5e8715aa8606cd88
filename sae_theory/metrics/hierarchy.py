"""Metrics of the hierarchical study (docs/papers.md#mp-sae-hierarchical-toy,
docs/papers.md#mp-sae-babel): matching learned latents to true concepts, flat and hierarchical MSE,
absorption, the Babel function, effective rank.

The paper gives no formulas for flat/hierarchical MSE and the absorption score; the readings here
(docs/papers.md#mp-sae-hierarchical-toy, INFERRED) are stated in each docstring. Everything is
computed in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .._checks import check_index, check_int, check_levels, check_real
from .recovery import unit_rows

__all__ = ["COACTIVE_READINGS", "absorption", "babel", "babel_coactive", "coactive_readings", "effective_rank", "flat_mse", "hierarchical_mse", "match_latents"]


def _f64(name: str, t) -> Tensor:
    t = torch.as_tensor(t).detach().to("cpu", torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or Inf.")
    return t


def _same_shape(a_name: str, a: Tensor, b_name: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} has shape {tuple(a.shape)} but {b_name} has shape {tuple(b.shape)}; "
                         f"row i of {a_name} must be the atom matched to concept i of {b_name} (see match_latents).")


def _cosines(D: Tensor) -> Tensor:
    U = unit_rows(D)  # a zero atom has cosine 0 with everything
    return U @ U.T


def match_latents(learned_acts, true_acts) -> Tensor:
    """Index of the learned latent matched to each true concept (n,), by activation similarity and
    the Hungarian algorithm (the official notebook's ``get_latent_perm``).

    ``learned_acts`` (N, p) and ``true_acts`` (N, n), p >= n, on the same N inputs. Each column is
    divided by its largest absolute value (a latent that never fires stays 0), similarities are
    their inner products (p, n), and the assignment maximises the total similarity.
    """
    from scipy.optimize import linear_sum_assignment

    A, T = _f64("learned_acts", learned_acts), _f64("true_acts", true_acts)
    if A.shape[0] != T.shape[0]:
        raise ValueError(f"learned_acts has {A.shape[0]} rows but true_acts has {T.shape[0]}; use the same inputs.")
    if A.shape[1] < T.shape[1]:
        raise ValueError(f"{A.shape[1]} learned latents cannot be matched to {T.shape[1]} concepts; need at least as many latents.")

    def colnorm(X):
        m = X.abs().amax(0, keepdim=True)
        return X / torch.where(m > 0, m, torch.ones_like(m))

    sims = (colnorm(A).T @ colnorm(T)).numpy()  # (p, n)
    rows, cols = linear_sum_assignment(sims.max() - sims)
    out = np.empty(T.shape[1], dtype=np.int64)
    out[cols] = rows
    return torch.from_numpy(out)


def flat_mse(learned, true, levels) -> float:
    """Deviation from the true within-level geometry: mean over same-level pairs i != j of
    (cos(D^_i, D^_j) - cos(D_i, D_j))^2, on matched atoms (row i of ``learned`` matched to concept i)."""
    L, T = _f64("learned", learned), _f64("true", true)
    _same_shape("learned", L, "true", T)
    lv = check_levels("levels", levels, L.shape[0], "learned")
    same = (lv[:, None] == lv[None, :]) & ~torch.eye(len(lv), dtype=torch.bool)
    if not bool(same.any()):
        return math.nan
    return float(((_cosines(L) - _cosines(T))[same] ** 2).mean())


def hierarchical_mse(learned, levels) -> float:
    """Unintended cross-level correlation: mean over pairs of different levels of cos(D^_i, D^_j)^2
    (0 for a conditionally orthogonal dictionary), on matched atoms."""
    L = _f64("learned", learned)
    lv = check_levels("levels", levels, L.shape[0], "learned")
    cross = lv[:, None] != lv[None, :]
    if not bool(cross.any()):
        return math.nan
    return float((_cosines(L)[cross] ** 2).mean())


def absorption(learned, true, parent_of: dict[int, int], *, recovery_tau: float = 0.5) -> dict[int, float]:
    """Absorption per child (Table 1): cos(D^_child, D_parent), the learned child atom against its
    true parent's direction (0 when the child is learned apart; large when it has absorbed the
    parent). NaN where the child is not recovered: cos(D^_child, D_child) < ``recovery_tau``
    (the paper's "nan"; its criterion is not stated — this threshold is our reading)."""
    L, T = _f64("learned", learned), _f64("true", true)
    _same_shape("learned", L, "true", T)
    check_real("recovery_tau", recovery_tau, minimum=-1, maximum=1)
    n = T.shape[0]
    for child, parent in parent_of.items():
        check_index("a parent_of key", child, n, of="learned and true")
        check_index(f"parent_of[{child!r}]", parent, n, of="learned and true")
        for i in (child, parent):
            if bool((T[i] == 0).all()):
                raise ValueError(f"true row {i} (in parent_of) is zero; a zero atom has no direction.")
    Ln = L / L.norm(dim=1, keepdim=True).clamp(min=1e-300)
    Tn = T / T.norm(dim=1, keepdim=True)
    out = {}
    for child, parent in parent_of.items():
        if float(Ln[child] @ Tn[child]) < recovery_tau:
            out[child] = math.nan
        else:
            out[child] = float(Ln[child] @ Tn[parent])
    return out


def babel(D, r: int) -> float:
    """Babel function mu_1(r) (Tropp 2004) of the atoms (rows of D, normalised): the largest, over
    atoms j, of the sum of the r largest |cos(D_j, D_i)|, i != j. mu_1(1) is the mutual coherence."""
    U = _f64("D", D)
    p = U.shape[0]
    r = check_int("r", r)
    if not 1 <= r <= p - 1:
        raise ValueError(f"r must lie in [1, p - 1 = {p - 1}], got {r}.")
    C = _cosines(U).abs()
    C.fill_diagonal_(-1.0)  # never among the top r
    return float(C.topk(r, dim=1).values.sum(1).max())


#: Readings of "the coherence of the atoms an input uses" (:func:`babel_coactive`); the paper
#: gives no formula (docs/papers.md#mp-sae-babel), so the verdicts that rest on it show all three.
COACTIVE_READINGS = ("babel", "mean_pair", "max_pair")


def babel_coactive(D, codes, reading: str = "babel") -> float:
    """Babel on the atoms an input actually uses, averaged over inputs (docs/papers.md#mp-sae-babel,
    INFERRED): for each input with support S, |S| >= 2, mu_1(|S| - 1) of the atoms in S; the mean
    over those inputs (NaN when no input uses two atoms).

    ``reading`` picks what is read on each support (:data:`COACTIVE_READINGS`): ``"babel"`` the
    above (grows with |S|), ``"mean_pair"`` the mean |cos| over the pairs of S (free of |S|),
    ``"max_pair"`` the largest |cos| of a pair of S (mu_1(1) of the atoms in S).
    :func:`coactive_readings` gives all three from one pass."""
    if reading not in COACTIVE_READINGS:
        raise ValueError(f"reading must be one of {COACTIVE_READINGS}, got {reading!r}.")
    return coactive_readings(D, codes)[reading]


def coactive_readings(D, codes) -> dict[str, float]:
    """Every reading of :func:`babel_coactive` (keys :data:`COACTIVE_READINGS`) from one pass over
    the inputs' supports: the cosine matrix is built once and each support read once."""
    U = _f64("D", D)
    Z = _f64("codes", codes)
    if Z.shape[1] != U.shape[0]:
        raise ValueError(f"codes has {Z.shape[1]} columns but D has {U.shape[0]} atoms; codes must be (N, p) for D (p, d).")
    C = _cosines(U).abs()
    vals: dict[str, list[float]] = {r: [] for r in COACTIVE_READINGS}
    for row in Z:
        S = (row != 0).nonzero().squeeze(1)
        if len(S) < 2:
            continue
        sub = C[S][:, S].clone()
        sub.fill_diagonal_(0.0)
        vals["babel"].append(float(sub.sum(1).max()))  # r = |S| - 1: all the others
        vals["mean_pair"].append(float(sub.sum()) / (len(S) * (len(S) - 1)))
        vals["max_pair"].append(float(sub.max()))
    return {r: float(np.mean(v)) if v else math.nan for r, v in vals.items()}


def effective_rank(codes) -> float:
    """Effective rank of the codes (Roy & Vetterli 2007): exp of the entropy of the normalised
    eigenvalues of Z^T Z (0 log 0 = 0). Between 1 and the number of latents used; 0 for Z = 0."""
    Z = _f64("codes", codes)
    ev = torch.linalg.eigvalsh(Z.T @ Z).clamp(min=0)
    total = float(ev.sum())
    if total == 0:
        return 0.0
    p = ev / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
