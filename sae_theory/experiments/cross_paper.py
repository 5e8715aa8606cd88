"""Cross-paper questions (``notebooks/07_cross_paper.ipynb``): MP-SAE on GBA's statistical model.

:func:`mp_on_feature_model` trains, on the same balanced SparseFeatureModel data (n features in
R^d, exactly s active per row, the width sweep of ``notebooks/02_gba_resonance.ipynb``:
``profile.resonance``'s n, s and ``width_d``, M = 4n latents, rows scaled to unit norm):

* ``"BA"``: the tied SAE of the recovery theorem (regime "analysed" of
  :mod:`sae_theory.experiments.gba`) with one target frequency p = ``width_p_over_f`` x f;
* ``"GBA"``: the same SAE with 10 groups, targets from min(0.5, 10 f) down to f / 10;
* ``"MP-SAE k=s"``: :class:`~sae_theory.models.MPSAE` with M atoms and k = s pursuit steps (the
  true L0), Adam 3e-3 as in :mod:`sae_theory.experiments.mp`;
* ``"MP-SAE k=L0(BA)"``: the same with k = BA's measured held-out L0 (rounded): the matched-L0
  comparison.

and reports GBA's recovery criterion, FRR at tau = 0.9 (and 0.8), with L0 and FVU on held-out rows.
The other cross-paper question (does GBA absorb?) reuses :func:`~sae_theory.experiments.hierarchy`
and :func:`~sae_theory.experiments.absorption`, which include ``"GBA"``.
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import SparseFeatureModel
from ..metrics import babel, babel_coactive, feature_recovery_rate, fvu, l0, unit_rows
from ..profiles import Profile, ResonanceScale
from ..training import GBAConfig
from .cache import train_cached
from .gba import algorithm2_buffer, gba_spec, training_set
from .specs import MethodSpec, eval_generator

__all__ = ["FEATURE_MODEL_METHODS", "mp_on_feature_model"]

FEATURE_MODEL_METHODS = ("BA", "GBA", "MP-SAE k=s", "MP-SAE k=L0(BA)")
MP_LR = 3e-3
N_EVAL = 4096


def _eval(sae, X: torch.Tensor, V: torch.Tensor) -> dict:
    sae.eval()
    with torch.no_grad():
        codes = sae.encode(X)
        x_hat = sae.decode(codes)
    W = sae.dictionary.detach().double().cpu()
    return dict(frr=feature_recovery_rate(W, V, 0.9), frr_08=feature_recovery_rate(W, V, 0.8),
                l0=l0(codes), fvu=fvu(X, x_hat), babel_1=babel(W, 1), babel_coactive=babel_coactive(W, codes))


def _runs(R: ResonanceScale, seed: int, device: str) -> list[dict]:
    """The four runs of one seed, trained through the run cache (:func:`train_cached`)."""
    n, s, d = R.n, R.s, R.width_d
    M, f = 4 * n, s / n
    model = SparseFeatureModel(n, d, s, seed=seed, device=device)
    V = model.features.double().cpu()
    data_key = dict(model="SparseFeatureModel", n=n, d=d, s=s, seed=seed, n_samples=R.n_samples, law="balanced")
    data = lambda: training_set(n, d, s, R.n_samples, seed, device)[0]  # noqa: E731 - built only when a run is not cached
    Xe, He = model.sample(N_EVAL, eval_generator(seed, device), h_layout="sparse")
    Xe = unit_rows(Xe)
    run = dict(steps=R.steps, batch_size=R.batch_size, progress=False)
    buffer = algorithm2_buffer(R.batch_size)
    rows = [dict(method="truth", k=float("nan"), frr=1.0, frr_08=1.0, l0=float(s), fvu=0.0,
                 babel_1=babel(V, 1), babel_coactive=babel_coactive(V, He.to_dense()))]
    p = R.width_p_over_f * f
    for spec in (gba_spec("BA", "analysed", GBAConfig.bias_adaptation(p, buffer_size=buffer, dead_eps=min(1e-6, p / 10))),
                 gba_spec("GBA", "analysed", GBAConfig(n_groups=10, htf=min(0.5, 10 * f), ltf=f / 10, buffer_size=buffer))):
        fit = train_cached(spec, data, data_key=data_key, d=d, n_latents=M, seed=seed + 1, run=dict(seed=seed + 1, **run), device=device)
        rows.append(dict(method=spec.label, k=float("nan"), **_eval(fit.model, Xe, V)))
    k_ba = max(1, round(rows[1]["l0"]))
    for label, k in (("MP-SAE k=s", s), ("MP-SAE k=L0(BA)", k_ba)):
        spec = MethodSpec.make(label, "MP-SAE", k=min(k, M), train=dict(lr=MP_LR, input_norm="unit"))
        fit = train_cached(spec, data, data_key=data_key, d=d, n_latents=M, seed=seed + 1, run=dict(seed=seed, **run), device=device)
        rows.append(dict(method=label, k=float(k), **_eval(fit.model, Xe, V)))
    return rows


def mp_on_feature_model(profile: Profile, *, seeds: tuple[int, ...] | None = None, include_truth: bool = False,
                        progress: bool = True) -> pd.DataFrame:
    """MP-SAE against BA and GBA on GBA's statistical model, at matched L0 (module docstring).

    Returns
    -------
    DataFrame, one row per (method, seed): ``method`` (:data:`FEATURE_MODEL_METHODS`), ``seed``,
    ``n, d, s, M``, ``k`` (MP-SAE's pursuit steps; NaN for BA/GBA), ``frr`` (tau = 0.9),
    ``frr_08``, ``l0`` and ``fvu`` on held-out unit-norm rows, and the Babel contrast of the
    learned dictionary (docs/papers.md#mp-sae-babel): ``babel_1`` (mutual coherence of the whole
    dictionary) and ``babel_coactive`` (mu_1(|S| - 1) of the atoms each held-out row uses, averaged).
    ``include_truth`` adds a ``"truth"`` row per seed: the true features V with the true codes.
    Runs come from the run cache when stored (:func:`~sae_theory.experiments.cache.train_cached`).
    """
    R = profile.resonance
    seeds = profile.seeds if seeds is None else tuple(seeds)
    rows = []
    for seed in tqdm(seeds, desc="feature-model runs", disable=not progress):
        for r in _runs(R, seed, profile.device):
            if r["method"] == "truth" and not include_truth:
                continue
            rows.append(dict(seed=seed, n=R.n, d=R.width_d, s=R.s, M=4 * R.n, **r))
    cols = ["method", "seed", "n", "d", "s", "M", "k", "frr", "frr_08", "l0", "fvu", "babel_1", "babel_coactive"]
    return pd.DataFrame(rows)[cols]
