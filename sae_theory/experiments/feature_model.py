"""Experiments of ``notebooks/01_feature_model.ipynb``: the GBA statistical feature model and its
identifiability conditions, measured on data. Each function takes a :class:`Profile` and returns a
tidy DataFrame."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ..data import MixedSparsity, SparseFeatureModel, Zipf
from ..profiles import Profile
from ..theory import bounds
from ..theory.conditions import as_csr, check_identifiability, cosine_extremes

__all__ = ["frequency_check", "h3_sample_size", "identifiability_grid", "theorem_band", "wilson_interval"]

#: Two-sided normal quantile of the 99% confidence intervals.
Z99 = 2.5758293035489004


def wilson_interval(k: np.ndarray, N: int, z: float = Z99) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion k/N (vectorised over k)."""
    k = np.asarray(k, dtype=np.float64)
    phat = k / N
    denom = 1 + z**2 / N
    centre = (phat + z**2 / (2 * N)) / denom
    half = z * np.sqrt(phat * (1 - phat) / N + z**2 / (4 * N**2)) / denom
    return centre - half, centre + half


def _feature_counts(model: SparseFeatureModel, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature activation counts and the row-support histogram over N streamed rows."""
    counts = torch.zeros(model.n, dtype=torch.long)
    row_support = []
    for _, H in model.stream(N):
        rows, cols = H.indices().cpu()
        counts += torch.bincount(cols, minlength=model.n)
        row_support.append(torch.bincount(rows, minlength=H.shape[0]))
    return counts.numpy(), torch.cat(row_support).numpy()


def frequency_check(profile: Profile) -> pd.DataFrame:
    """Empirical feature frequencies against the model's f, with 99% Wilson intervals.

    Three laws: balanced s = 3 (f = s/n), the GBA two-population toy (n = 128, half the rows
    s = 3 and half s = 20, f = 11.5/128) and Zipf with exponent 1 and E|supp| = 3.

    Returns
    -------
    DataFrame with columns ``law, feature, rank, f, f_hat, ci_low, ci_high, inside, n_samples,
    mean_row_support, expected_row_support``.
    """
    S = profile.feature_model
    n, N = S.frequency_n_features, S.frequency_samples
    seed = profile.seeds[0]
    models = {
        "balanced (s=3)": SparseFeatureModel(n, 32, 3, seed=seed, device=profile.device),
        "two-population (s=3 | s=20)": SparseFeatureModel(
            128, 42, MixedSparsity((3, 20), (0.5, 0.5)), seed=seed, device=profile.device
        ),
        "Zipf (a=1, E|supp|=3)": SparseFeatureModel(n, 32, Zipf(1.0, 3.0), seed=seed, device=profile.device),
    }
    frames = []
    for law, model in models.items():
        counts, supp = _feature_counts(model, N)
        f = model.frequencies.numpy()
        lo, hi = wilson_interval(counts, N)
        frames.append(
            pd.DataFrame(
                dict(
                    law=law,
                    feature=np.arange(model.n),
                    rank=np.argsort(np.argsort(-f, kind="stable"), kind="stable") + 1,
                    f=f,
                    f_hat=counts / N,
                    ci_low=lo,
                    ci_high=hi,
                    inside=(lo <= f) & (f <= hi),
                    n_samples=N,
                    mean_row_support=supp.mean(),
                    expected_row_support=model.expected_support,
                )
            )
        )
    return pd.concat(frames, ignore_index=True)


def _sparse_h(model: SparseFeatureModel, N: int) -> sp.csr_matrix:
    """H of N streamed rows as one scipy CSR matrix (X is not kept)."""
    blocks = [as_csr(H, model.n) for _, H in model.stream(N)]
    return sp.vstack(blocks, format="csr")


def identifiability_grid(profile: Profile, *, n_planted_pairs: int = 4, progress: bool = True) -> pd.DataFrame:
    """The four conditions over the grid (n, d, s, planted co-occurrence probability q).

    Every cell samples ``grid_samples`` rows of a balanced model with Gaussian unit features
    (q = 0: no planting; q > 0: ``n_planted_pairs`` random disjoint pairs that fire together
    with probability q) and runs :func:`check_identifiability` in float64.

    Returns
    -------
    DataFrame with one row per (cell, condition): ``n, d, s, q, N, condition, value,
    threshold, holds``, plus ``population_h3`` (the model's H3 value) on every row.
    """
    S = profile.feature_model
    seed = profile.seeds[0]
    rows = []
    cells = list(itertools.product(S.grid_n, S.grid_d, S.grid_s, S.grid_planted))
    cosines: dict[tuple[int, int], tuple[float, float]] = {}
    for n, d, s, q in tqdm(cells, desc="conditions grid", disable=not progress):
        if s > n:
            continue
        model = SparseFeatureModel(
            n, d, s, planted_pairs=n_planted_pairs if q > 0 else None, planted_probability=q if q > 0 else 1.0,
            seed=seed, dtype=torch.float64, device=profile.device,
        )
        # V depends on (n, d, seed) only: its O(n^2 d) Gram pass is done once per (n, d).
        if (n, d) not in cosines:
            cosines[n, d] = cosine_extremes(model.features)
        report = check_identifiability(_sparse_h(model, S.grid_samples), model.features, cosines=cosines[n, d])
        pop_h3 = model.population_cooccurrence()
        for name, r in report.items():
            rows.append(dict(n=n, d=d, s=s, q=q, N=S.grid_samples, condition=name, value=r.value,
                             threshold=r.threshold, holds=r.holds, population_h3=pop_h3))
    return pd.DataFrame(rows)


def h3_sample_size(profile: Profile, *, s: int = 3, progress: bool = True) -> pd.DataFrame:
    """H3 measured on growing samples of one balanced model (no planting).

    The population value P(both)/P(either) = (s-1)/(2n - s + 1) is far below n^-1/2, yet the
    condition is stated on the finite H: a pair seen together once, among features seen only a
    few times, breaks it. This measures how many rows it takes.

    Returns
    -------
    DataFrame with ``n, s, N, h3, threshold, holds, population_h3, min_feature_count,
    mean_feature_count``.
    """
    S = profile.feature_model
    n = S.h3_n
    model = SparseFeatureModel(n, 8, s, seed=profile.seeds[0], dtype=torch.float64, device=profile.device)
    pop = model.population_cooccurrence()
    rows = []
    for N in tqdm(S.h3_samples, desc="H3 vs N", disable=not progress):
        model.reset()
        H = _sparse_h(model, N)
        r = check_identifiability(H, model.features)["H3"]
        counts = np.bincount(H.indices, minlength=n)
        rows.append(dict(n=n, s=s, N=N, h3=r.value, threshold=r.threshold, holds=r.holds, population_h3=pop,
                         min_feature_count=int(counts.min()), mean_feature_count=float(counts.mean())))
    return pd.DataFrame(rows)


def theorem_band(profile: Profile, *, sparsities: tuple[int, ...] = (2, 3, 4, 8), eps: float = 0.0, varsigma: float = 0.0) -> pd.DataFrame:
    """The recovery theorem's resonance band and width bound (as REPORTED, constants 1) over
    (n, d, s), from :mod:`sae_theory.theory.bounds`.

    Returns
    -------
    DataFrame with ``n, d, s, f, low, high, term_sqrt, term_s, term_d, binding, nonempty,
    log10_band_ratio, critical_d, width_at_low, width_at_mid, width_over_4n``.
    """
    S = profile.feature_model
    ds = np.unique(np.round(np.logspace(1, math.log10(max(S.band_n)), 25)).astype(int))
    names = ("sqrt", "s", "d")
    rows = []
    for n, s, d in itertools.product(S.band_n, sparsities, ds):
        terms = bounds.band_upper_terms(n, d, s, eps, varsigma)
        low, high = bounds.resonance_band(n, d, s, eps, varsigma)
        nonempty = high > low
        mid = math.sqrt(low * high) if nonempty else low
        rows.append(dict(
            n=n, d=int(d), s=s, f=s / n, low=low, high=high,
            term_sqrt=terms[0], term_s=terms[1], term_d=terms[2], binding=names[int(np.argmin(terms))],
            nonempty=nonempty, log10_band_ratio=math.log10(high / low),
            critical_d=bounds.critical_dimension(n, s, varsigma),
            width_at_low=bounds.width_lower_bound(n, low, s, eps),
            width_at_mid=bounds.width_lower_bound(n, mid, s, eps),
            width_over_4n=bounds.width_lower_bound(n, mid, s, eps) / (4 * n),
        ))
    return pd.DataFrame(rows)
