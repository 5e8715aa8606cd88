"""Experiments of ``notebooks/02_gba_resonance.ipynb`` and ``notebooks/03_gba_vs_topk.ipynb``:
Bias Adaptation's resonance and GBA against TopK and L1 on the paper's imbalanced toy.

Two regimes of the tied SAE are used (``REGIMES``):

* ``"analysed"`` — the algorithm of the recovery theorem (docs/papers.md#gba-recovery-theorem):
  output scale a -> 0 (fixed at 0.01), no pre-bias, spherical gradient descent (SGD on W followed by
  renormalisation). Small a decouples the neurons, so each follows the dominant direction of the
  inputs it fires on; that is the resonance mechanism the theorem analyses.
* ``"deployed"`` — the GBA of the experiments: a = 1 and b_dec trained, Adam.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from functools import lru_cache

import pandas as pd
import torch
from tqdm.auto import tqdm

from .._checks import check_bool, check_int
from ..data import SparseFeatureModel
from ..data.laws import Constant, LogNormal, Uniform
from ..metrics import best_cosine, feature_recovery_rate, fvu, fraction_active, max_cosine_similarity, mse, unit_rows
from ..models import TiedSAE
from ..profiles import Profile
from ..theory import bounds
from ..training import GBAConfig, TrainConfig, train
from ..training.bias_adaptation import group_assignment, target_frequencies
from .cache import train_cached
from .specs import HookSpec, MethodSpec, eval_generator

__all__ = [
    "REGIMES",
    "Regime",
    "TOY_METHODS",
    "COEFFICIENT_LAWS", "coefficient_laws", "curve_steps", "recovery_curves", "tied_baseline_spec", "tied_baselines", "truth_init",
    "algorithm2_buffer",
    "consistency",
    "consistency_settled",
    "consistency_specs",
    "frontier",
    "gba_spec",
    "gba_vs_topk",
    "l1_spec",
    "resonance",
    "tied_sae_and_config",
    "toy_spec",
    "topk_spec",
    "topk_sweep",
    "tied_topk_spec",
    "toy_loss_settled",
    "topk_convergence",
    "toy_curve",
    "recovering_groups",
    "training_set",
    "width_sweep",
]


@dataclass(frozen=True)
class Regime:
    """How a tied SAE is trained under bias adaptation."""

    output_scale: float
    train_output_scale: bool
    train_b_dec: bool
    optimizer: str
    lr: float


REGIMES = {
    "analysed": Regime(output_scale=0.01, train_output_scale=False, train_b_dec=False, optimizer="sgd", lr=20.0),
    "deployed": Regime(output_scale=1.0, train_output_scale=True, train_b_dec=True, optimizer="adam", lr=1e-3),
}


def gba_spec(label: str, regime: str, gba: GBAConfig) -> MethodSpec:
    """The tied SAE under ``regime`` ("analysed" | "deployed") with the bias-adaptation hook ``gba``
    (rows scaled to unit norm, as the paper's "sample and normalize X_t")."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {sorted(REGIMES)}, got {regime!r}.")
    R = REGIMES[regime]
    return MethodSpec.make(label, "TiedSAE", output_scale_init=R.output_scale, train_output_scale=R.train_output_scale,
                           train_b_dec=R.train_b_dec, hooks=[HookSpec.gba(gba)],
                           train=dict(lr=R.lr, optimizer=R.optimizer, input_norm="unit"))


def tied_sae_and_config(regime: str, d: int, n_latents: int, *, steps: int, batch_size: int, seed: int, device: str) -> tuple[TiedSAE, TrainConfig]:
    """A fresh :class:`TiedSAE` and its :class:`TrainConfig` under ``regime`` ("analysed" | "deployed"),
    without a hook (``gba_spec`` adds one)."""
    spec = gba_spec("GBA", regime, GBAConfig())
    sae, _ = spec.build(d=d, n_latents=n_latents, seed=seed, device=device)
    return sae, spec.train_config(steps=steps, batch_size=batch_size, seed=seed, progress=False)


@lru_cache(maxsize=8)
def training_set(n: int, d: int, sparsity, n_samples: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_samples`` rows (and the features V) of the balanced SparseFeatureModel(n, d, sparsity, seed);
    cached per process (the runs of a study share it)."""
    model = SparseFeatureModel(n, d, sparsity, seed=seed, device=device)
    X, _ = model.sample(n_samples, h_layout="sparse")
    return X, model.features


def algorithm2_buffer(batch_size: int) -> int:
    """Tokens between two Algorithm 2 updates in these studies: every 10 steps (the paper: every
    50 steps of a far longer run)."""
    return 10 * batch_size


def resonance(profile: Profile, *, regime: str = "analysed", progress: bool = True) -> pd.DataFrame:
    """BA's feature recovery over the target frequency p and the dimension d, and over the width M.

    Balanced s-sparse features (f = s/n), M = 4n neurons, one group with target p (BA). For each
    run: FRR at tau = 0.9 and 0.8, the FRR of the untrained dictionary (chance alignment), the
    final L0, and whether p lies in the theorem's band (constants 1); FRR at tau = 0.9 at 3/4 of
    the run and whether FRR has settled between there and the end
    (:func:`~sae_theory.metrics.metric_settled`).

    Returns
    -------
    DataFrame with ``kind`` ("phase" | "width"), ``n, s, f, d, M, p, p_over_f, seed, frr,
    frr_08, frr_three_quarters, settled, frr_init, l0, band_low, band_high, in_band, regime``.
    """
    from ..metrics import metric_settled

    R = profile.resonance
    n, s = R.n, R.s
    f = s / n
    seed = profile.seeds[0]
    runs = [("phase", d, pf, 4) for d, pf in itertools.product(R.grid_d, R.grid_p_over_f)]
    runs += [("width", R.width_d, R.width_p_over_f, m) for m in R.width_multiples]
    rows = []
    for kind, d, pf, mult in tqdm(runs, desc="BA runs", disable=not progress):
        X, V = training_set(n, d, s, R.n_samples, seed, profile.device)
        M, p = mult * n, pf * f
        spec = gba_spec("BA", regime, GBAConfig.bias_adaptation(p, buffer_size=algorithm2_buffer(R.batch_size), dead_eps=min(1e-6, p / 10)))
        sae, hooks = spec.build(d=d, n_latents=M, seed=seed + 1, device=profile.device)
        frr_init = feature_recovery_rate(sae.dictionary.detach(), V, 0.9)
        late = 3 * R.steps // 4
        reading = {}  # FRR@0.9 at 3/4 of the run, read by a hook: the convergence evidence

        def read(model, step, out, late=late, V=V, reading=reading):
            if step == late:
                reading["frr"] = feature_recovery_rate(model.dictionary.detach(), V, 0.9)

        hist = train(sae, X, spec.train_config(steps=R.steps, batch_size=R.batch_size, seed=seed + 1, progress=False), hooks=[*hooks, read])
        W = sae.dictionary.detach()
        low, high = bounds.resonance_band(n, d, s)
        frr = feature_recovery_rate(W, V, 0.9)
        before = reading.get("frr", frr)  # a run of fewer than 4 steps has no earlier reading
        rows.append(dict(kind=kind, n=n, s=s, f=f, d=d, M=M, p=p, p_over_f=pf, seed=seed,
                         frr=frr, frr_08=feature_recovery_rate(W, V, 0.8), frr_three_quarters=before,
                         settled=metric_settled([before, frr]),
                         frr_init=frr_init, l0=hist.last("l0"), band_low=low, band_high=high,
                         in_band=low < p < high, regime=regime))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the imbalanced toy (docs/papers.md#gba-imbalanced-toy)
# --------------------------------------------------------------------------------------------

#: The paper's values on the imbalanced toy (ICLR version, REPORTED by a paper note), percent.
PAPER_TOY = pd.DataFrame(
    [("TopK K=20", 0.8, 100.0), ("TopK K=20", 0.9, 98.4), ("TopK K=30", 0.8, 98.4), ("TopK K=30", 0.9, 24.2),
     ("TopK K=50", 0.8, 94.5), ("TopK K=50", 0.9, 23.4), ("GBA", 0.8, 100.0), ("GBA", 0.9, 100.0),
     ("GBA wrong range", 0.8, 38.3), ("GBA wrong range", 0.9, 3.9)],
    columns=["method", "tau", "paper_frr_percent"],
)

#: GBA target ranges on the toy (f ~ 0.09): one covering f, one entirely below it.
TOY_GBA = {"GBA": dict(n_groups=10, htf=0.5, ltf=1e-3), "GBA wrong range": dict(n_groups=10, htf=0.01, ltf=1e-4)}


def topk_spec(k: int) -> MethodSpec:
    """TopK with K = k on the toy (untied, Adam 1e-3, unit-norm rows)."""
    return MethodSpec.make(f"TopK K={k}", "TopK", k=k, train=dict(lr=1e-3, input_norm="unit"))


def tied_topk_spec(k: int) -> MethodSpec:
    """The paper's TopK baseline on its own tied model (docs/papers.md#gba-architecture): the
    deployed tied SAE (a = 1 trained, pre-bias trained, unit-norm rows) with the k largest
    pre-activations kept, no bias adaptation; Adam 1e-3 on unit-norm rows, like the untied TopK."""
    R = REGIMES["deployed"]
    return MethodSpec.make(f"TopK K={k} (tied)", "TiedSAE", activation="topk", k=k, output_scale_init=R.output_scale,
                           train_output_scale=R.train_output_scale, train_b_dec=R.train_b_dec,
                           train=dict(lr=1e-3, optimizer="adam", input_norm="unit"))


def l1_spec(l1_coefficient: float) -> MethodSpec:
    """The ReLU SAE with a fixed decoder-norm-weighted L1 coefficient on the toy (untied, Adam 1e-3)."""
    return MethodSpec.make(f"L1 lambda={l1_coefficient}", "ReLU", l1_coefficient=l1_coefficient,
                           train=dict(lr=1e-3, input_norm="unit"))


def toy_spec(method: str, scale, regime: str) -> MethodSpec:
    """The spec of one of the paper's toy methods (:data:`TOY_METHODS` or :data:`TOY_GBA`)."""
    if method in TOY_GBA:
        return gba_spec(method, regime, GBAConfig(buffer_size=algorithm2_buffer(scale.batch_size), **TOY_GBA[method]))
    if method in _TOY_TOPK:
        return topk_spec(_TOY_TOPK[method])
    raise ValueError(f"unknown toy method {method!r}; choose from {TOY_METHODS}.")


def _fit_toy(spec: MethodSpec, scale, seed: int, device: str):
    """Train one toy SAE, or load it from the run cache (:mod:`sae_theory.experiments.cache`):
    the FRR table, the consistency study and the frontier share runs, and a stopped study resumes.

    Returns (dictionary (M, d) float64 CPU, l2 loss, fraction active, fvu) on held-out rows."""
    run, data = _cached_toy_run(spec, scale, seed, device)
    sae = run.model
    X_test = _held_out(data, seed, device)
    with torch.no_grad():
        codes = sae.encode(X_test)
        x_hat = sae.decode(codes)
    return (sae.dictionary.detach().double().cpu(), mse(X_test, x_hat), fraction_active(codes), fvu(X_test, x_hat))


def toy_loss_settled(spec: MethodSpec, profile: Profile, seed: int, *, width: int | None = None) -> bool:
    """Whether the training loss of a toy run (from the run cache, trained if absent) has settled
    (:func:`~sae_theory.metrics.plateaued`): the convergence evidence a negative verdict needs.
    False when the run logged fewer than 10 steps (too short to show anything)."""
    scale = profile.toy if width is None else dataclasses.replace(profile.toy, n_latents=width)
    return _loss_settled(_cached_toy_run(spec, scale, seed, profile.device)[0].history)


def _loss_settled(history) -> bool:
    """:func:`~sae_theory.metrics.plateaued` on a run's logged losses; False with fewer than 10
    logged steps (too short to show anything)."""
    from ..metrics import plateaued

    losses = [row["loss"] for row in history.rows]
    return len(losses) >= 10 and plateaued(losses)


_TOY_TOPK = {f"TopK K={k}": k for k in (20, 30, 50)}
TOY_METHODS = ("TopK K=20", "TopK K=30", "TopK K=50", "GBA", "GBA wrong range")


def gba_vs_topk(profile: Profile, *, regime: str = "analysed", methods: tuple[str, ...] = TOY_METHODS, progress: bool = True) -> pd.DataFrame:
    """FRR on the imbalanced toy (n = 128, d = 42, half the rows s = 3, half s = 20) for the five
    methods of the paper's table, over ``profile.seeds``, at tau = 0.8 and 0.9. ``regime`` is how
    the two GBA runs train their tied SAE (``REGIMES``).

    Returns
    -------
    DataFrame with ``method, tau, seed, frr, paper_frr`` (paper values as fractions), ``regime``.
    """
    unknown = set(methods) - set(TOY_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {TOY_METHODS}.")
    V = SparseFeatureModel.imbalanced_toy(seed=0).features.double()
    rows = []
    for method, seed in tqdm(list(itertools.product(methods, profile.seeds)), desc="toy runs", disable=not progress):
        W = _fit_toy(toy_spec(method, profile.toy, regime), profile.toy, seed, profile.device)[0]
        for tau in (0.8, 0.9):
            rows.append(dict(method=method, tau=tau, seed=seed, frr=feature_recovery_rate(W, V, tau),
                             regime=regime if method in TOY_GBA else "-"))
    df = pd.DataFrame(rows).merge(PAPER_TOY, on=["method", "tau"], how="left")
    return df.assign(paper_frr=df.pop("paper_frr_percent") / 100)


def consistency_specs(scale, regime: str) -> dict[str, MethodSpec]:
    """The runs of the consistency study by its labels: GBA covering f, TopK K=20 and L1
    lambda=0.03 untied (ours), and the same two on the GBA paper's tied model ("Tied TopK",
    "Tied L1": :func:`tied_baseline_spec`, the runs of :func:`tied_baselines`), the baselines the
    paper's consistency claim is about."""
    return {"GBA": toy_spec("GBA", scale, regime), "TopK": topk_spec(20), "L1": l1_spec(TIED_BASELINE_L1),
            "Tied TopK": tied_baseline_spec("TopK", 20), "Tied L1": tied_baseline_spec("L1", TIED_BASELINE_L1)}


def consistency(profile: Profile, *, thresholds=(0.6, 0.7, 0.8, 0.9), regime: str = "analysed", progress: bool = True) -> pd.DataFrame:
    """Cross-seed consistency (MCS, docs/papers.md#gba-metrics) of GBA, TopK (K=20) and L1 on the
    toy, the baselines both untied and tied (:func:`consistency_specs`): for each seed's run,
    the fraction of its neurons whose max cosine with every other seed's run (min over runs) is at
    least the threshold. All neurons are used (the toy has no top-alpha selection).

    Consistent is not the same as right, and many consistent neurons may be copies of one
    direction, so each reading also says what the consistent neurons (MCS >= threshold) span:
    ``distinct``, the number of distinct directions among them (greedily, a neuron is new when its
    cosine with every direction counted before is below the threshold), and ``features``, the
    number of the toy's true features that one of them matches at cosine >= the threshold.

    Each quantity is read twice: at the end of the runs and half-way through them (the runs'
    snapshots at ``steps // 2``, the same runs; the learning rate is constant, so that snapshot is
    the model a run of half the length ends with). The two readings are the convergence evidence a
    verdict on consistency needs (:func:`consistency_settled`).

    Returns
    -------
    DataFrame with ``method, seed, threshold, fraction, median_mcs, distinct, features,
    fraction_half, median_mcs_half, distinct_half, features_half, half_step, n_features``:
    ``median_mcs`` is the median over the seed's neurons of their MCS (threshold-free);
    ``n_features`` is the number of the toy's true features.
    """
    if len(profile.seeds) < 2:
        raise ValueError("consistency needs at least two seeds in profile.seeds.")
    half = profile.toy.steps // 2
    if half < 1:
        raise ValueError(f"consistency reads the runs half-way through; profile.toy.steps = {profile.toy.steps} has no half-way step. "
                         "Use at least 2 steps.")
    rows = []
    for label, spec in tqdm(consistency_specs(profile.toy, regime).items(), desc="consistency", disable=not progress):
        fits = {seed: _cached_toy_run(spec, profile.toy, seed, profile.device) for seed in profile.seeds}
        runs = {seed: run for seed, (run, _) in fits.items()}
        V = fits[profile.seeds[0]][1].features.detach().double().cpu()  # the toy's features (data seed 0 for every run)
        readings = {when: {seed: run.at(step).dictionary.detach().double().cpu() for seed, run in runs.items()}
                    for when, step in (("end", profile.toy.steps), ("half", half))}
        mcs = {when: {seed: torch.stack([max_cosine_similarity(W, dicts[o]) for o in profile.seeds if o != seed]).min(0).values
                      for seed, W in dicts.items()} for when, dicts in readings.items()}
        for seed in profile.seeds:
            end, mid = mcs["end"][seed], mcs["half"][seed]
            W_end, W_mid = readings["end"][seed], readings["half"][seed]
            for t in thresholds:
                rows.append(dict(method=label, seed=seed, threshold=t, fraction=float((end >= t).double().mean()),
                                 median_mcs=float(end.median()), **_spanned(W_end, end >= t, V, t),
                                 fraction_half=float((mid >= t).double().mean()), median_mcs_half=float(mid.median()),
                                 **{f"{k}_half": v for k, v in _spanned(W_mid, mid >= t, V, t).items()}, half_step=half,
                                 n_features=len(V)))
    return pd.DataFrame(rows)


def _spanned(W: torch.Tensor, keep: torch.Tensor, V: torch.Tensor, t: float) -> dict:
    """What the neurons ``W[keep]`` span (:func:`consistency`): ``distinct``, the number of distinct
    directions among them (greedy: a neuron counts when its cosine with every one counted before
    is below ``t``), and ``features``, the number of rows of ``V`` one of them matches at cosine >= ``t``."""
    U = unit_rows(W[keep])
    if len(U) == 0:
        return dict(distinct=0, features=0)
    counted = U[:1]
    for u in U[1:]:
        if float((counted @ u).max()) < t:
            counted = torch.cat([counted, u[None]])
    return dict(distinct=len(counted), features=int((best_cosine(U, V) >= t).sum()))


def consistency_settled(cons: pd.DataFrame, *, threshold: float = 0.8, atol: float = 0.03) -> pd.Series:
    """Per method of :func:`consistency`'s frame, whether its consistency has settled between the
    half-way reading and the end: the fraction of neurons at MCS >= ``threshold``, the median MCS
    and the share of the true features the consistent neurons match (``features / n_features``),
    each a mean over seeds, all moved by at most ``atol`` (:func:`~sae_theory.metrics.metric_settled`).

    The third reading is there because the first two can settle while what the consistent neurons
    span still changes: many neurons may agree across seeds on a few directions first and on more
    of the true features later.

    Raises
    ------
    ValueError
        ``threshold`` is not one of the frame's thresholds, or the frame lacks a column
        :func:`consistency` writes.
    """
    from ..metrics import metric_settled

    needed = ["fraction_half", "fraction", "median_mcs_half", "median_mcs", "features_half", "features", "n_features"]
    missing = [c for c in needed + ["method", "threshold"] if c not in cons.columns]
    if missing:
        raise ValueError(f"the consistency frame lacks the columns {missing}; pass the frame experiments.gba.consistency returns "
                         "(recompute it if it was written by an older version).")
    if (cons.n_features <= 0).any():
        raise ValueError("n_features must be positive in every row of the consistency frame (the number of true features).")
    at = cons[(cons.threshold - threshold).abs() <= 1e-12]
    if at.empty:
        raise ValueError(f"threshold {threshold} is not in the consistency frame (it has {sorted(cons.threshold.unique())}); "
                         "pass one of those or recompute consistency with it.")
    at = at.assign(share=at.features / at.n_features, share_half=at.features_half / at.n_features)
    means = at.groupby("method")[["fraction_half", "fraction", "median_mcs_half", "median_mcs", "share_half", "share"]].mean()
    return pd.Series({m: all(metric_settled([r[f"{c}_half"], r[c]], atol=atol) for c in ("fraction", "median_mcs", "share"))
                      for m, r in means.iterrows()}, name="settled")


def frontier(profile: Profile, *, regime: str = "deployed", progress: bool = True) -> pd.DataFrame:
    """L2 loss against fraction of active neurons on held-out toy data (first seed): TopK over
    ``frontier_topk``, L1 over ``frontier_l1``, and the two GBA runs. The GBA runs default to the
    deployed regime (a = 1): with a -> 0 the analysed regime does not try to reconstruct.

    Returns
    -------
    DataFrame with ``family, method, fraction_active, l2_loss, fvu``.
    """
    seed = profile.seeds[0]
    S = profile.toy
    specs = [("TopK", topk_spec(k)) for k in S.frontier_topk] + [("L1", l1_spec(lam)) for lam in S.frontier_l1]
    specs += [("GBA", toy_spec(m, S, regime)) for m in TOY_GBA]
    rows = []
    for family, spec in tqdm(specs, desc="frontier", disable=not progress):
        _, l2, frac, fv = _fit_toy(spec, S, seed, profile.device)
        rows.append(dict(family=family, method=spec.label, fraction_active=frac, l2_loss=l2, fvu=fv))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# sensitivity: what the paper leaves unstated
# --------------------------------------------------------------------------------------------


def width_sweep(profile: Profile, *, widths: tuple[int, ...] | None = None,
                methods: tuple[str, ...] = ("GBA", "GBA wrong range", "TopK K=20"), regime: str = "analysed",
                seeds: tuple[int, ...] | None = None, progress: bool = True) -> pd.DataFrame:
    """FRR on the toy against the width M (default ``profile.toy.widths``; the paper does not
    state its width), for ``methods`` (labels of :data:`TOY_METHODS`), the first seed by default;
    with the FRR at 3/4 of the run (its snapshot, :func:`toy_curve`) and whether FRR has settled
    between there and the end (:func:`~sae_theory.metrics.metric_settled`).

    Returns
    -------
    DataFrame with ``method, width, seed, tau, frr, frr_three_quarters, settled``.
    """
    from ..metrics import metric_settled

    S = profile.toy
    widths = S.widths if widths is None else tuple(widths)
    seeds = profile.seeds[:1] if seeds is None else tuple(seeds)
    rows = []
    for width, method, seed in tqdm(list(itertools.product(widths, methods, seeds)), desc="width sweep", disable=not progress):
        scale = dataclasses.replace(S, n_latents=width)
        # the last two readings: the snapshot at 3/4 of the run (the last of curve_steps) and the end
        curve = toy_curve(toy_spec(method, scale, regime), scale, seed, profile.device, last=2)
        for tau, col in ((0.8, "frr_08"), (0.9, "frr_09")):
            c = curve[col]
            before = c.iloc[-2] if len(c) > 1 else c.iloc[-1]  # a run of one step has no snapshot
            rows.append(dict(method=method, width=width, seed=seed, tau=tau, frr=c.iloc[-1], frr_three_quarters=before,
                             settled=metric_settled([before, c.iloc[-1]])))
    return pd.DataFrame(rows)


def topk_sweep(profile: Profile, *, ks: tuple[int, ...] | None = None, seeds: tuple[int, ...] | None = None,
               tied: bool = False, progress: bool = True) -> pd.DataFrame:
    """FRR of TopK on the toy against K (default ``profile.toy.sweep_topk``) at the profile's
    width, the first seed by default; with held-out L2 loss and fraction of active neurons.
    ``tied=True`` trains the paper's tied TopK (:func:`tied_topk_spec`) instead of the untied one.

    Returns
    -------
    DataFrame with ``k, seed, tau, frr, l2_loss, fraction_active, tied``.
    """
    check_bool("tied", tied)
    S = profile.toy
    ks = S.sweep_topk if ks is None else tuple(ks)
    seeds = profile.seeds[:1] if seeds is None else tuple(seeds)
    V = SparseFeatureModel.imbalanced_toy(seed=0).features.double()
    rows = []
    for k, seed in tqdm(list(itertools.product(ks, seeds)), desc="TopK sweep", disable=not progress):
        W, l2, frac, _ = _fit_toy(tied_topk_spec(k) if tied else topk_spec(k), S, seed, profile.device)
        for tau in (0.8, 0.9):
            rows.append(dict(k=k, seed=seed, tau=tau, frr=feature_recovery_rate(W, V, tau), l2_loss=l2, fraction_active=frac, tied=tied))
    return pd.DataFrame(rows)


def topk_convergence(profile: Profile, *, ks: tuple[int, ...] = (20, 30, 50), seed: int | None = None,
                     progress: bool = True) -> pd.DataFrame:
    """The paper's TopK on the toy against training steps, tied (:func:`tied_topk_spec`; every K)
    and untied (:func:`topk_spec`; the first K): one run of ``profile.toy.long_steps`` each
    (first seed by default), read at snapshots (:func:`toy_curve`) at 1/4 and 1/2 of the
    profile's steps, at the profile's steps and at every doubling of it below ``long_steps``.
    The reading at the profile's steps is the run of that length (constant learning rate). A
    TopK verdict needs the long runs: at the profile's steps neither has converged.

    Returns
    -------
    DataFrame with ``k, tied, steps, seed, tau, frr, fvu, settled`` (training loss plateaued by
    that step), one row per reading and tau.
    """
    S = profile.toy
    seed = profile.seeds[0] if seed is None else seed
    if S.long_steps <= S.steps:
        raise ValueError(f"profile.toy.long_steps ({S.long_steps}) must exceed profile.toy.steps ({S.steps}) for a convergence study.")
    grid, n = {S.steps // 4, S.steps // 2}, S.steps
    while n < S.long_steps:
        grid.add(n)
        n *= 2
    grid = tuple(sorted(g for g in grid if g >= 1))
    long = dataclasses.replace(S, steps=S.long_steps)
    rows = []
    # tied at every K; untied at the first K only (the contrast; the untied K sweep is topk_sweep's)
    for k, tied in tqdm([(k, True) for k in ks] + [(ks[0], False)], desc="TopK convergence", disable=not progress):
        curve = toy_curve(tied_topk_spec(k) if tied else topk_spec(k), long, seed, profile.device, snapshots=grid)
        for r in curve.itertuples():
            for tau, frr in ((0.8, r.frr_08), (0.9, r.frr_09)):
                rows.append(dict(k=k, tied=tied, steps=r.step, seed=seed, tau=tau, frr=frr, fvu=r.fvu, settled=r.settled))
    return pd.DataFrame(rows)


def recovering_groups(profile: Profile, *, width: int | None = None, method: str = "GBA", regime: str = "analysed",
                      seed: int | None = None, tau: float = 0.9) -> pd.DataFrame:
    """Which GBA groups recover which features: for every true feature of the toy, the neuron
    with the largest cosine to it, that cosine, whether it reaches ``tau``, and the neuron's group
    and target frequency (contiguous assignment, as trained). The toy's features fire with
    frequency f = 11.5 / 128 ~ 0.09.

    Returns
    -------
    DataFrame with ``feature, neuron, cosine, recovered, group, target``.
    """
    if method not in TOY_GBA:
        raise ValueError(f"method must be one of {sorted(TOY_GBA)}, got {method!r}.")
    scale = profile.toy if width is None else dataclasses.replace(profile.toy, n_latents=width)
    seed = profile.seeds[0] if seed is None else seed
    spec = toy_spec(method, scale, regime)
    W = _fit_toy(spec, scale, seed, profile.device)[0]
    V = SparseFeatureModel.imbalanced_toy(seed=0).features.double()
    cos = (V / V.norm(dim=1, keepdim=True)) @ (W / W.norm(dim=1, keepdim=True).clamp_min(1e-300)).T
    best = cos.max(dim=1)
    gcfg = GBAConfig(**dict(spec.hooks[0].config))
    groups = group_assignment(scale.n_latents, gcfg)
    targets = target_frequencies(gcfg).double()
    neuron = best.indices
    return pd.DataFrame(dict(feature=range(V.shape[0]), neuron=neuron.tolist(), cosine=best.values.tolist(),
                             recovered=(best.values >= tau).tolist(), group=groups[neuron].tolist(),
                             target=targets[groups[neuron]].tolist()))


# --------------------------------------------------------------------------------------------
# the paper's tied baselines, and controls of what the toy leaves unstated
# --------------------------------------------------------------------------------------------

#: Laws of the toy's non-zero coefficients swept by :func:`coefficient_laws`. The paper does not
#: state its law (docs/papers.md#gba-imbalanced-toy); the analysis asks for positive Theta(1)
#: coefficients. The first is the toy's default, the one every other study here uses.
COEFFICIENT_LAWS = {"constant 1": Constant(1.0), "uniform [0.5, 1.5]": Uniform(0.5, 1.5), "lognormal (0, 0.5)": LogNormal(0.0, 0.5)}

#: The K of the paper's TopK rows and the lambda of the L1 baseline that :func:`tied_baselines`
#: trains tied and untied (lambda = 0.03 is the consistency study's L1).
TIED_BASELINE_K = (20, 30, 50)
TIED_BASELINE_L1 = 0.03


def tied_baseline_spec(family: str, value: float) -> MethodSpec:
    """The GBA paper's baseline on its own tied model (:mod:`sae_theory.models.tied_baselines`):
    ``family`` "TopK" (``value`` = K) or "L1" (``value`` = lambda); trained exactly as the untied
    :func:`topk_spec` / :func:`l1_spec` (Adam 1e-3, unit-norm rows of X), with the tied model's
    defaults: unit-norm W, output scale a = 1 trained, neuron bias and pre-bias trained."""
    if family == "TopK":
        return MethodSpec.make(f"Tied TopK K={int(value)}", "Tied TopK", k=int(value), train=dict(lr=1e-3, input_norm="unit"))
    if family == "L1":
        return MethodSpec.make(f"Tied L1 lambda={value}", "Tied L1", l1_coefficient=float(value), train=dict(lr=1e-3, input_norm="unit"))
    raise ValueError(f"family must be 'TopK' or 'L1', got {family!r}.")


def _toy_model(coefficients: str, device: str) -> tuple[SparseFeatureModel, dict]:
    """The imbalanced toy with the coefficient law ``COEFFICIENT_LAWS[coefficients]`` and the run
    cache's data key (the default law's key is :func:`_fit_toy`'s, so those runs are shared)."""
    if coefficients not in COEFFICIENT_LAWS:
        raise ValueError(f"coefficients must be one of {sorted(COEFFICIENT_LAWS)}, got {coefficients!r}.")
    law = COEFFICIENT_LAWS[coefficients]
    key = dict(model="SparseFeatureModel.imbalanced_toy", seed=0)
    if coefficients != "constant 1":
        key["coefficients"] = repr(law)
    return SparseFeatureModel.imbalanced_toy(seed=0, coefficients=law, device=device), key


@lru_cache(maxsize=2)
def _toy_rows(coefficients: str, n_samples: int, device: str) -> torch.Tensor:
    """The training rows of the toy under a coefficient law: the first ``n_samples`` draws of a
    fresh seed-0 model's stream, so the same rows at every call, which is what the run cache's
    data key says. Kept for the two latest (law, size, device): every cold toy run of a study
    trains on the same rows, and a draw of 200,000 takes about 0.85 s (64 cold runs in notebook
    03 at ``quick``). Training gathers its batches as copies (``TensorSource``), so the shared
    tensor is never written."""
    return _toy_model(coefficients, device)[0].sample(n_samples, h_layout="sparse")[0]


def _held_out(data: SparseFeatureModel, seed: int, device: str) -> torch.Tensor:
    """20,000 held-out rows of ``data`` for run ``seed``, scaled to unit norm (as training sees them)."""
    X = data.sample(20_000, eval_generator(seed, device), h_layout="sparse")[0]
    return unit_rows(X)


def _evaluate(sae, X_test: torch.Tensor, V: torch.Tensor) -> dict:
    """FRR at tau = 0.8 / 0.9 of the SAE's dictionary against V, and its held-out FVU and
    fraction of active neurons."""
    with torch.no_grad():
        codes = sae.encode(X_test)
        x_hat = sae.decode(codes)
    W = sae.dictionary.detach().double().cpu()
    return dict(frr_08=feature_recovery_rate(W, V, 0.8), frr_09=feature_recovery_rate(W, V, 0.9), fvu=fvu(X_test, x_hat),
                fraction_active=fraction_active(codes))


def curve_steps(steps: int) -> tuple[int, ...]:
    """The steps at which a toy run keeps a snapshot (:func:`~sae_theory.experiments.cache.train_cached`):
    1/8, 1/4, 1/2 and 3/4 of its length (those in [1, steps)); with the last step they give its
    metrics against training steps (:func:`toy_curve`)."""
    steps = check_int("steps", steps, minimum=1)
    return tuple(sorted({s for s in (steps // 8, steps // 4, steps // 2, 3 * steps // 4) if 1 <= s < steps}))


def _cached_toy_run(spec: MethodSpec, scale, seed: int, device: str, coefficients: str = "constant 1", snapshots=None):
    """One toy run from the run cache (trained if absent) under a coefficient law, with snapshots
    at ``snapshots`` (default :func:`curve_steps`, so every study reads the same runs): (CachedRun,
    the data model it trained on)."""
    data, key = _toy_model(coefficients, device)
    run = train_cached(spec, lambda: _toy_rows(coefficients, scale.n_samples, device), data_key=dict(key, rows=scale.n_samples),
                       d=42, n_latents=scale.n_latents, seed=seed,
                       run=dict(steps=scale.steps, batch_size=scale.batch_size, seed=seed, progress=False), device=device,
                       snapshots=curve_steps(scale.steps) if snapshots is None else snapshots)
    return run, data


def toy_curve(spec: MethodSpec, scale, seed: int, device: str, coefficients: str = "constant 1", snapshots=None,
              last: int | None = None) -> pd.DataFrame:
    """A toy run's held-out metrics against training steps, read from its snapshots (one run, not
    one run per length): FRR at tau = 0.8 / 0.9, FVU, fraction active, and whether the training
    loss had settled by that step (:func:`_loss_settled` on the losses logged up to it).
    ``last=n`` evaluates only the last n readings (each reading is an evaluation on 20,000 rows).

    Returns
    -------
    DataFrame with ``step, frr_08, frr_09, fvu, fraction_active, settled``, one row per snapshot
    and one for the last step.
    """
    run, data = _cached_toy_run(spec, scale, seed, device, coefficients, snapshots)
    X_test, V = _held_out(data, seed, device), data.features.double().cpu()
    rows = []
    steps = [*run.snapshots, run.steps]
    for step in steps if last is None else steps[-check_int("last", last, minimum=1):]:
        history = dataclasses.replace(run.history, rows=[r for r in run.history.rows if r["step"] <= step])
        rows.append(dict(step=step, **_evaluate(run.at(step), X_test, V), settled=_loss_settled(history)))
    return pd.DataFrame(rows)


def _toy_run(spec: MethodSpec, scale, seed: int, device: str, coefficients: str = "constant 1"):
    """One toy run from the run cache (trained if absent) under a coefficient law; returns
    (CachedRun, its evaluation :func:`_evaluate` on held-out rows, settled) where ``settled`` says
    whether the training loss plateaued (:func:`_loss_settled`)."""
    run, data = _cached_toy_run(spec, scale, seed, device, coefficients)
    ev = _evaluate(run.model, _held_out(data, seed, device), data.features.double().cpu())
    return run, ev, _loss_settled(run.history)


def tied_baselines(profile: Profile, *, ks: tuple[int, ...] = TIED_BASELINE_K, l1_coefficients: tuple[float, ...] = (TIED_BASELINE_L1,),
                   seeds: tuple[int, ...] | None = None, progress: bool = True) -> pd.DataFrame:
    """FRR on the toy of the paper's TopK (K in ``ks``) and L1 (lambda in ``l1_coefficients``)
    baselines, tied (:func:`tied_baseline_spec`, the paper's model) and untied (:func:`topk_spec`,
    :func:`l1_spec`, ours elsewhere), at the profile's width and steps, the first seed by default.
    The untied runs are the cached runs of :func:`gba_vs_topk` and :func:`frontier`.

    Returns
    -------
    DataFrame with ``family`` ("TopK" | "L1"), ``value`` (K or lambda), ``tied``, ``method``,
    ``seed``, ``tau``, ``frr``, ``fvu``, ``fraction_active``, ``settled`` (training loss plateaued).
    """
    seeds = profile.seeds[:1] if seeds is None else tuple(seeds)
    jobs = [("TopK", k) for k in ks] + [("L1", lam) for lam in l1_coefficients]
    rows = []
    for (family, value), tied, seed in tqdm(list(itertools.product(jobs, (False, True), seeds)), desc="tied baselines", disable=not progress):
        spec = tied_baseline_spec(family, value) if tied else (topk_spec(int(value)) if family == "TopK" else l1_spec(value))
        _, ev, settled = _toy_run(spec, profile.toy, seed, profile.device)
        for tau in (0.8, 0.9):
            rows.append(dict(family=family, value=value, tied=tied, method=spec.label, seed=seed, tau=tau,
                             frr=ev["frr_08" if tau == 0.8 else "frr_09"], fvu=ev["fvu"], fraction_active=ev["fraction_active"],
                             settled=settled))
    return pd.DataFrame(rows)


def _control_specs(scale, regime: str) -> dict[str, MethodSpec]:
    """The runs of the controls: GBA covering f (``regime``), the untied and the tied TopK K=20."""
    return {"GBA": toy_spec("GBA", scale, regime), "TopK K=20": topk_spec(20), "Tied TopK K=20": tied_baseline_spec("TopK", 20)}


class _Recorder:
    """Training hook: evaluates the SAE (:func:`_evaluate`) at the given steps, into ``rows``."""

    def __init__(self, steps, X_test: torch.Tensor, V: torch.Tensor):
        self.steps, self.X_test, self.V, self.rows = set(steps), X_test, V, []

    def record(self, model, step: int) -> None:
        self.rows.append(dict(step=step, **_evaluate(model, self.X_test, self.V)))

    def __call__(self, model, step: int, out) -> None:
        if step in self.steps:
            self.record(model, step)


def truth_init(profile: Profile, *, regime: str = "analysed", eval_every: int | None = None, seed: int | None = None,
               progress: bool = True) -> pd.DataFrame:
    """The truth-initialised control: GBA covering f (``regime``), the untied and the tied TopK K=20
    started with their dictionary at the true features V (width M = n = 128: the truth and
    nothing else; the untied TopK's encoder at V^T, biases 0, output scales at their initial
    value), trained at the profile's steps on the toy. FRR and held-out FVU every ``eval_every``
    steps (default steps / 8) and at step 0: does training keep the truth, or drift away?

    Not cached (the run cache keys a spec, and a spec has no initial dictionary); each run costs
    the profile's steps at width 128.

    Returns
    -------
    DataFrame with ``method, step, seed, tau, frr, fvu, fraction_active``.
    """
    S = profile.toy
    seed = profile.seeds[0] if seed is None else seed
    eval_every = max(1, S.steps // 8) if eval_every is None else check_int("eval_every", eval_every, minimum=1)
    data, _ = _toy_model("constant 1", profile.device)
    V = data.features.double().cpu()
    X_test = _held_out(data, seed, profile.device)
    X = data.sample(S.n_samples, h_layout="sparse")[0]
    rows = []
    for label, spec in tqdm(_control_specs(S, regime).items(), desc="truth init", disable=not progress):
        sae, hooks = spec.build(d=42, n_latents=V.shape[0], seed=seed, device=profile.device)
        with torch.no_grad():
            sae.dictionary.copy_(V.to(sae.dictionary))
            if isinstance(sae.W_enc, torch.nn.Parameter):  # untied; a tied W_enc is the view W_dec.T
                sae.W_enc.copy_(V.T.to(sae.W_enc))
        rec = _Recorder(range(eval_every, S.steps + 1, eval_every), X_test, V)
        rec.record(sae, 0)
        train(sae, X, spec.train_config(steps=S.steps, batch_size=S.batch_size, seed=seed, progress=False), hooks=[*hooks, rec])
        if rec.rows[-1]["step"] != S.steps:
            rec.record(sae, S.steps)
        for r in rec.rows:
            for tau in (0.8, 0.9):
                rows.append(dict(method=label, step=r["step"], seed=seed, tau=tau, frr=r["frr_08" if tau == 0.8 else "frr_09"],
                                 fvu=r["fvu"], fraction_active=r["fraction_active"]))
    return pd.DataFrame(rows)


def coefficient_laws(profile: Profile, *, laws: tuple[str, ...] | None = None, methods: tuple[str, ...] = ("GBA", "TopK K=20"),
                     regime: str = "analysed", seed: int | None = None, progress: bool = True) -> pd.DataFrame:
    """FRR on the toy under each law of its non-zero coefficients (``COEFFICIENT_LAWS``, all by
    default; the paper leaves it unstated) of ``methods``: "GBA" (covering f, ``regime``),
    "TopK K=20" (untied) and "Tied TopK K=20", at the profile's width and steps, first seed by
    default. The constant-1 runs are the cached runs of the other studies.

    Returns
    -------
    DataFrame with ``law, method, seed, tau, frr, fvu, settled``.
    """
    laws = tuple(COEFFICIENT_LAWS) if laws is None else tuple(laws)
    seed = profile.seeds[0] if seed is None else seed
    specs = _control_specs(profile.toy, regime)
    unknown = set(methods) - set(specs)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {sorted(specs)}.")
    rows = []
    for law, label in tqdm(list(itertools.product(laws, methods)), desc="coefficient laws", disable=not progress):
        spec = specs[label]
        _, ev, settled = _toy_run(spec, profile.toy, seed, profile.device, coefficients=law)
        for tau in (0.8, 0.9):
            rows.append(dict(law=law, method=label, seed=seed, tau=tau, frr=ev["frr_08" if tau == 0.8 else "frr_09"], fvu=ev["fvu"],
                             settled=settled))
    return pd.DataFrame(rows)


def recovery_curves(profile: Profile, *, regime: str = "analysed", seed: int | None = None, progress: bool = True) -> pd.DataFrame:
    """FRR against training steps of GBA covering f (``regime``) and the untied and tied TopK K=20
    on the toy, at the profile's width: the snapshots (:func:`toy_curve`, at 1/8, 1/4, 1/2, 3/4 of
    the run) and the end of the very runs the other studies read, first seed by default.
    ``settled`` says whether the training loss had plateaued by that step.

    Returns
    -------
    DataFrame with ``method, steps, seed, tau, frr, fvu, settled``.
    """
    S = profile.toy
    seed = profile.seeds[0] if seed is None else seed
    rows = []
    for label, spec in tqdm(list(_control_specs(S, regime).items()), desc="recovery curves", disable=not progress):
        for r in toy_curve(spec, S, seed, profile.device).itertuples():
            for tau, frr in ((0.8, r.frr_08), (0.9, r.frr_09)):
                rows.append(dict(method=label, steps=r.step, seed=seed, tau=tau, frr=frr, fvu=r.fvu, settled=r.settled))
    return pd.DataFrame(rows)
