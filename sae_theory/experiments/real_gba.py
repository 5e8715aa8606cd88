"""GBA's natural-data checks on a real transformer (docs/papers.md#gba-llm-experiments; the
paper's loss-sparsity frontier, cross-seed consistency and neuron diagnostics):
``notebooks/08_gba_real_network.ipynb``.

Data: the activations of a transformer (:mod:`sae_theory.data.activations`) at the place of
``profile.real_gba`` (the paper's: the MLP output), one row per token, every row scaled to unit
norm (``ActivationCache.normalisation("gba")``: GBA's "sample and normalize X_t", our reading).
The last ``eval_tokens`` tokens are held out (:func:`~sae_theory.experiments.real_mp.split`); the
SAEs train on the tokens before them and every reading is on the held-out ones.

Every method is the paper's tied SAE (docs/papers.md#gba-architecture: one weight W encodes and
decodes, per-neuron output scale a, pre-bias; unit-norm rows), differing only in the activation
and the loss, as in the paper; all train with Adam at 1e-3 on ``steps`` batches of
``batch_size`` tokens (the paper: AdamW with the same settings for every method, values not in our
sources):

* ``"GBA"``: the deployed GBA (:data:`~sae_theory.experiments.gba.REGIMES` ``"deployed"``: a
  trained, pre-bias trained, bias moved only by Algorithm 2; the JumpReLU-threshold activation)
  with K = ``n_groups`` groups of targets from ``htf`` to ``ltf`` (the paper's 10, 0.1, 0.001),
  Algorithm 2 every ``buffer_steps`` steps, under each reading of ``readings``
  (:data:`~sae_theory.experiments.gba_readings.READINGS`: "printed" is Algorithms 1-2 as printed);
* ``"BA"``: the same model with one group of target p, for each p of ``ba_targets`` (the paper
  hand-tunes one p per run);
* ``"TopK"``: the paper's tied TopK (the K largest pre-activations kept, no bias adaptation), for
  each K of ``topk_ks``; its *post-act* fraction counts the K kept neurons, its *pre-act* fraction
  the neurons with a positive pre-activation (docs/papers.md#gba-metrics, our reading);
* ``"L1"``: the paper's tied ReLU SAE with the L1 penalty lambda sum_m ||w_m|| z_m, for each lambda
  of ``l1_coefficients``.

Readings, on the held-out tokens:

* :func:`frontier`: the L2 loss (mean ||x - x_hat||^2 on the unit-norm rows) against the fraction
  of active neurons (L0 / M), FVU, dead neurons, and whether the training loss settled;
* :func:`consistency`: cross-seed MCS (docs/papers.md#gba-metrics) of GBA (the first reading),
  TopK (``consistency_topk``) and L1 (``consistency_l1``) over ``consistency_seeds`` seeds, on the
  top alpha neurons by maximum activation and by Z-score, MCS reduced by the minimum over the
  other seeds (as notebook 03's toy study; the paper does not say);
* :func:`neuron_diagnostics`: per neuron of one run, maximum activation, Z-score (the first
  author's library's (max - mean) / (std + 1e-8)), firing frequency and MCS;
* :func:`training_curves`: the training loss and batch L0 against the step.

The models are far smaller than the paper's Qwen2.5-1.5B (width 66k, 100M tokens): a check here
is of the claims' shape, never of the paper's numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.activations import ActivationCache
from ..metrics import ActivationStats, fvu as _fvu, max_cosine_similarity, mse, plateaued, top_fraction
from ..models.base import SAE
from ..profiles import Profile, RealGBAScale
from ..training import GBAConfig
from .cache import CachedRun, train_cached
from .gba import REGIMES, tied_baseline_spec
from .gba_readings import READINGS
from .real_mp import data_key, scale_cache, split
from .specs import HookSpec, MethodSpec

__all__ = ["FAMILIES", "PAPER_CONSISTENCY", "PAPER_SOURCE", "activation_cache", "consistency", "consistency_claim_values", "consistency_settled", "frontier", "frontier_claim_values", "frontier_summary", "method_spec", "neuron_claim_values", "neuron_diagnostics", "paper_consistency",
           "readings_steps", "runs", "trained", "training_curves"]

FAMILIES = ("GBA", "BA", "TopK", "L1")

#: The paper's consistency figure (v1, Qwen2.5-1.5B, 3 seeds; values read off the plot,
#: docs/papers.md#gba-llm-experiments): the percentage of the top-alpha neurons with MCS >= 0.6 and
#: >= 0.9, by selection and method. Another model and width (66k): context, not a reference value.
PAPER_CONSISTENCY = (
    dict(selection="max activation", alpha=0.003, method="TopK", mcs_06=78, mcs_09=24),
    dict(selection="max activation", alpha=0.003, method="GBA", mcs_06=65, mcs_09=35),
    dict(selection="max activation", alpha=0.003, method="L1", mcs_06=81, mcs_09=55),
    dict(selection="max activation", alpha=0.0005, method="TopK", mcs_06=40, mcs_09=12),
    dict(selection="max activation", alpha=0.0005, method="GBA", mcs_06=94, mcs_09=70),
    dict(selection="max activation", alpha=0.0005, method="L1", mcs_06=85, mcs_09=62),
    dict(selection="Z-score", alpha=0.003, method="TopK", mcs_06=83, mcs_09=29),
    dict(selection="Z-score", alpha=0.003, method="GBA", mcs_06=85, mcs_09=48),
    dict(selection="Z-score", alpha=0.003, method="L1", mcs_06=88, mcs_09=80),
    dict(selection="Z-score", alpha=0.0005, method="TopK", mcs_06=97, mcs_09=39),
    dict(selection="Z-score", alpha=0.0005, method="GBA", mcs_06=92, mcs_09=58),
    dict(selection="Z-score", alpha=0.0005, method="L1", mcs_06=97, mcs_09=93),
)
PAPER_SOURCE = "GBA paper v1 consistency figure (Qwen2.5-1.5B MLP output, width 66k, 3 seeds), values read off the plot"


def paper_consistency() -> pd.DataFrame:
    """:data:`PAPER_CONSISTENCY` as a frame (percentages), with its ``source``."""
    return pd.DataFrame(PAPER_CONSISTENCY).assign(source=PAPER_SOURCE)


# --------------------------------------------------------------------------------------------
# data and runs
# --------------------------------------------------------------------------------------------


def activation_cache(profile: Profile, *, progress: bool = False) -> ActivationCache:
    """The profile's activation cache (``profile.real_gba``; :func:`~sae_theory.experiments.real_mp.scale_cache`):
    ``real_gba.activations`` when set, else extracted on first use, then opened."""
    return scale_cache(profile.real_gba, progress=progress)


def method_spec(family: str, value, scale: RealGBAScale) -> MethodSpec:
    """The spec of one run (module docstring): ``family`` GBA (``value`` a reading), BA (a target
    p, under the first reading), TopK (K) or L1 (lambda)."""
    if family in ("GBA", "BA"):
        reading = value if family == "GBA" else scale.readings[0]
        if reading not in READINGS:
            raise ValueError(f"unknown GBA reading {reading!r}; choose from {sorted(READINGS)}.")
        R, D = READINGS[reading], REGIMES["deployed"]
        common = dict(buffer_size=scale.buffer_steps * scale.batch_size, bias_init=R.bias_init, raise_below_target=R.raise_below_target)
        if family == "GBA":
            gba, label = GBAConfig(n_groups=scale.n_groups, htf=scale.htf, ltf=scale.ltf, **common), f"GBA ({reading})"
        else:
            gba, label = GBAConfig.bias_adaptation(float(value), **common), f"BA p={value:g}"
        return MethodSpec.make(label, "TiedSAE", output_scale_init=R.output_scale_init, train_output_scale=D.train_output_scale,
                               train_b_dec=D.train_b_dec, hooks=[HookSpec.gba(gba)],
                               train=dict(lr=D.lr, optimizer=D.optimizer, input_norm="unit"))
    if family == "TopK":
        return tied_baseline_spec("TopK", int(value))
    if family == "L1":
        return tied_baseline_spec("L1", float(value))
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}.")


def trained(family: str, value, profile: Profile, cache: ActivationCache, seed: int | None = None) -> CachedRun:
    """The run of ``family`` at ``value`` with ``seed`` (default: the profile's first), trained
    once and then loaded from the run cache; it keeps its model half-way (:func:`readings_steps`)."""
    S = profile.real_gba
    seed = profile.seeds[0] if seed is None else seed
    run = dict(steps=S.steps, batch_size=S.batch_size, seed=seed, progress=False, log_every=S.log_every)
    return train_cached(method_spec(family, value, S), lambda: split(cache, S.eval_tokens)[0], data_key=data_key(cache, S.eval_tokens),
                        d=cache.d, n_latents=S.expansion * cache.d, seed=seed + 1, run=run, device=profile.device, dtype=profile.dtype,
                        snapshots=readings_steps(S)[:-1])


def readings_steps(scale: RealGBAScale) -> tuple[int, ...]:
    """The steps at which the consistency study and the neuron diagnostics are read: half-way
    (a snapshot every run keeps) and the end, so that a verdict on MCS shows whether MCS itself
    has stopped moving (the training loss can settle long before the dictionaries do)."""
    return (scale.steps // 2, scale.steps)


def runs(profile: Profile) -> list[tuple[str, object]]:
    """The (family, value) of every frontier run: each GBA reading, BA target, TopK K and L1 lambda."""
    S = profile.real_gba
    return ([("GBA", r) for r in S.readings] + [("BA", p) for p in S.ba_targets] + [("TopK", k) for k in S.topk_ks]
            + [("L1", lam) for lam in S.l1_coefficients])


def _held_out(profile: Profile, cache: ActivationCache) -> Tensor:
    return split(cache, profile.real_gba.eval_tokens)[1].to(device=profile.device, dtype=profile.dtype)


def _settled(history) -> bool:
    losses = [r["loss"] for r in history.rows if "loss" in r]
    return len(losses) >= 10 and plateaued(losses)


@torch.no_grad()
def _read(sae: SAE, x: Tensor) -> dict:
    """Reconstruction and sparsity of ``sae`` on the raw held-out rows ``x`` (read in the model's
    unit-norm units)."""
    xn = sae.normalize_input(x)
    with sae.prepared_inputs():
        codes = sae.encode(xn)
        x_hat = sae.decode(codes)
        pre = sae.pre_activations(xn)
    M = codes.shape[1]
    active = (codes != 0).to(torch.float64)
    return dict(l2_loss=mse(xn, x_hat), fvu=_fvu(xn, x_hat), l0=float(active.sum(1).mean()), fraction_active=float(active.mean()),
                fraction_pre=float((pre > 0).to(torch.float64).mean()), dead_fraction=float((active.sum(0) == 0).to(torch.float64).mean()),
                n_latents=M)


# --------------------------------------------------------------------------------------------
# readings
# --------------------------------------------------------------------------------------------


def frontier(profile: Profile, *, cache: ActivationCache | None = None, progress: bool = True) -> pd.DataFrame:
    """The L2-loss against fraction-active frontier, one run per (family, value) of :func:`runs`
    (first seed), on the held-out tokens.

    Returns
    -------
    DataFrame with ``family, value, method, l2_loss, fvu, l0, fraction_active`` (post-act: L0 / M),
    ``fraction_pre`` (neurons with a positive pre-activation; the pre-act fraction of TopK),
    ``dead_fraction`` (silent on every held-out token), ``l2_loss_half`` and ``fraction_half`` (the
    same run half-way, :func:`readings_steps`), ``point_settled`` (from half-way to the end the loss
    moved by at most 5% and the fraction by at most 10%), ``settled`` (the training loss plateaued),
    ``seconds``.
    """
    cache = activation_cache(profile) if cache is None else cache
    x = _held_out(profile, cache)
    rows = []
    half = readings_steps(profile.real_gba)[0]
    for family, value in tqdm(runs(profile), desc="frontier", disable=not progress):
        run = trained(family, value, profile, cache)
        end, mid = _read(run.model, x), _read(run.at(half), x)
        moved = (abs(end["l2_loss"] - mid["l2_loss"]) <= 0.05 * mid["l2_loss"]
                 and abs(math.log(max(end["fraction_active"], 1e-12) / max(mid["fraction_active"], 1e-12))) <= math.log(1.1))
        rows.append(dict(family=family, value=str(value), method=method_spec(family, value, profile.real_gba).label, **end,
                         l2_loss_half=mid["l2_loss"], fraction_half=mid["fraction_active"], point_settled=bool(moved),
                         settled=_settled(run.history), seconds=run.seconds))
    return pd.DataFrame(rows)


def _interp(curve: pd.DataFrame, fraction: float, x: str) -> float:
    """The loss of ``curve`` (columns ``x`` and ``l2_loss``) at ``fraction``, linear in log
    fraction between its two neighbouring points; NaN outside the curve's range (no extrapolation)."""
    c = curve.sort_values(x)
    fx, fy = np.log(c[x].to_numpy(float)), c.l2_loss.to_numpy(float)
    if not fraction > 0 or len(c) < 2 or not fx[0] <= math.log(fraction) <= fx[-1]:
        return float("nan")
    return float(np.interp(math.log(fraction), fx, fy))


def _dominated(point: tuple[float, float], curve: pd.DataFrame, x: str) -> bool:
    """Whether some point of ``curve`` is at most as dense and at most as lossy as ``point``
    (``(fraction, loss)``), and better in one of them."""
    f, loss = point
    c = curve[[x, "l2_loss"]].to_numpy(float)
    return bool(((c[:, 0] <= f) & (c[:, 1] <= loss) & ((c[:, 0] < f) | (c[:, 1] < loss))).any())


def frontier_summary(front: pd.DataFrame) -> pd.DataFrame:
    """For each GBA and BA run of :func:`frontier`: its loss over the loss of each other curve
    (TopK post-act, TopK pre-act, L1, BA) interpolated at its fraction active (``ratio_*``; NaN
    where the fraction lies outside that curve's range: nothing is extrapolated), whether a point
    of the curve dominates it (``dominated_by_*``: at most as dense and as lossy, better in one),
    and whether it ``beats_*`` the curve: not dominated, and below it where the curve spans its
    fraction."""
    curves = {"topk_post": (front[front.family == "TopK"], "fraction_active"),
              "topk_pre": (front[front.family == "TopK"], "fraction_pre"),
              "l1": (front[front.family == "L1"], "fraction_active"),
              "ba": (front[front.family == "BA"], "fraction_active")}
    rows = []
    for _, r in front[front.family.isin(("GBA", "BA"))].iterrows():
        out = dict(family=r.family, method=r.method, value=r.value, fraction_active=r.fraction_active, l2_loss=r.l2_loss, settled=bool(r.settled))
        for name, (curve, x) in curves.items():
            curve = curve[curve.method != r.method]
            ref = _interp(curve, r.fraction_active, x)
            ratio = r.l2_loss / ref if ref > 0 else float("nan")
            dominated = _dominated((r.fraction_active, r.l2_loss), curve, x)
            out[f"ratio_{name}"] = ratio
            out[f"dominated_by_{name}"] = dominated
            out[f"beats_{name}"] = bool(len(curve)) and not dominated and not ratio >= 1
        rows.append(out)
    return pd.DataFrame(rows)


def frontier_claim_values(front: pd.DataFrame, main_reading: str) -> dict:
    """The values ``claims`` rule ``gba.real.frontier`` reads, from :func:`frontier`: GBA under
    ``main_reading`` against TopK post-act (``ratio_topk_post``, ``in_range``) and whether it beats
    TopK pre-act, L1 and BA; the reading with the smallest ratio (``best_*``); ``converged``: every
    run's training loss settled and its point stopped moving (``settled`` and ``point_settled``;
    the latter is taken as true for a frame without it)."""
    summ = frontier_summary(front)
    gba = summ[summ.family == "GBA"].set_index("value")
    if main_reading not in gba.index:
        raise ValueError(f"no GBA run under the reading {main_reading!r} in the frontier (readings: {list(gba.index)}).")
    g = gba.loc[main_reading]
    ranked = gba.ratio_topk_post.dropna().sort_values()
    in_range = bool(np.isfinite(g.ratio_topk_post))
    return dict(in_range=in_range, fraction=float(g.fraction_active), l2_loss=float(g.l2_loss),
                ratio_topk_post=float(g.ratio_topk_post) if in_range else 0.0,
                beats_topk_pre=bool(g.beats_topk_pre), beats_l1=bool(g.beats_l1), beats_ba=bool(g.beats_ba),
                best_reading=str(ranked.index[0]) if len(ranked) else main_reading,
                best_ratio_topk_post=float(ranked.iloc[0]) if len(ranked) else 0.0,
                converged=bool(front.settled.all()) and bool(front.get("point_settled", pd.Series([True])).all()))


def _codes_stats(sae: SAE, x: Tensor) -> ActivationStats:
    stats = ActivationStats()
    with torch.no_grad():
        xn = sae.normalize_input(x)
        with sae.prepared_inputs():
            for block in xn.split(4096):
                stats.update(sae.encode(block))
    return stats


def _consistency_methods(scale: RealGBAScale) -> dict[str, tuple[str, object]]:
    return {"GBA": ("GBA", scale.readings[0]), "TopK": ("TopK", scale.consistency_topk), "L1": ("L1", scale.consistency_l1)}


def consistency(profile: Profile, *, cache: ActivationCache | None = None, thresholds=(0.6, 0.7, 0.8, 0.9),
                progress: bool = True) -> pd.DataFrame:
    """Cross-seed consistency of GBA (the first reading), TopK and L1, read half-way and at the end
    of the runs (:func:`readings_steps`): for each of the first ``consistency_seeds`` seeds' run,
    the top alpha neurons by maximum activation and by Z-score on the held-out tokens (alpha in
    ``alphas``; neurons that never fire are not selectable), their median MCS (min over the other
    seeds' runs at the same step), and the fraction of them whose MCS is at least each threshold.

    Returns
    -------
    DataFrame with ``method, step, seed, selection, alpha, n_selected, median_mcs, threshold,
    fraction`` and ``settled`` (that run's training loss).
    """
    S = profile.real_gba
    seeds = profile.seeds[: S.consistency_seeds]
    if len(seeds) < 2:
        raise ValueError(f"consistency needs at least two seeds; the profile has {profile.seeds} and consistency_seeds={S.consistency_seeds}.")
    cache = activation_cache(profile) if cache is None else cache
    x = _held_out(profile, cache)
    rows = []
    for label, (family, value) in tqdm(_consistency_methods(S).items(), desc="consistency", disable=not progress):
        fitted = {s: trained(family, value, profile, cache, seed=s) for s in seeds}
        for step in readings_steps(S):
            models = {s: r.at(step) for s, r in fitted.items()}
            dicts = {s: m.W_dec.detach().to(torch.float64).cpu() for s, m in models.items()}
            for s in seeds:
                settled = _settled(fitted[s].history)
                stats = _codes_stats(models[s], x)
                mcs = torch.stack([max_cosine_similarity(dicts[s], dicts[o]) for o in seeds if o != s]).min(0).values
                alive = stats.frequency > 0
                for selection, score in (("max activation", stats.max), ("Z-score", stats.z_score)):
                    score = torch.where(alive, score, torch.full_like(score, -1e300))  # a silent neuron is never selected
                    for alpha in S.alphas:
                        chosen = top_fraction(score, alpha)
                        chosen = chosen[alive[chosen]]
                        median = float(mcs[chosen].median()) if len(chosen) else float("nan")
                        for t in thresholds:
                            frac = float((mcs[chosen] >= t).to(torch.float64).mean()) if len(chosen) else float("nan")
                            rows.append(dict(method=label, step=step, seed=s, selection=selection, alpha=alpha, n_selected=int(len(chosen)),
                                             median_mcs=median, threshold=t, fraction=frac, settled=settled))
    return pd.DataFrame(rows)


def consistency_settled(cons: pd.DataFrame, *, atol: float = 0.03) -> pd.DataFrame:
    """Whether MCS stopped moving: per method, selection and alpha, the median MCS of the selected
    neurons (mean over seeds) half-way and at the end of the runs, and ``settled`` when they
    differ by at most ``atol`` (``metrics.metric_settled``). A share at a high threshold can sit
    at 0 at both readings while the MCS below it still climbs, so the median is what is tested."""
    from ..metrics import metric_settled

    m = cons.drop_duplicates(["method", "step", "seed", "selection", "alpha"]).groupby(["method", "selection", "alpha", "step"]).median_mcs.mean()
    m = m.unstack("step")
    steps = sorted(m.columns)
    out = m.rename(columns={steps[0]: "median_mcs_half", steps[-1]: "median_mcs_end"})
    out["settled"] = [metric_settled([a, b], atol=atol) for a, b in zip(out.median_mcs_half, out.median_mcs_end)]
    return out.reset_index()


def neuron_diagnostics(profile: Profile, *, cache: ActivationCache | None = None, methods=("GBA", "TopK"),
                       step: int | None = None) -> pd.DataFrame:
    """Per neuron of the first seed's run of each method (of the consistency study), at ``step``
    (one of :func:`readings_steps`; default the end): maximum activation, Z-score, firing
    frequency on the held-out tokens, and MCS (min over the other consistency seeds' runs at the
    same step).

    Returns
    -------
    DataFrame with ``method, neuron, max_activation, z_score, frequency, mcs``.
    """
    S = profile.real_gba
    seeds = profile.seeds[: S.consistency_seeds]
    cache = activation_cache(profile) if cache is None else cache
    x = _held_out(profile, cache)
    table = _consistency_methods(S)
    frames = []
    for label in methods:
        family, value = table[label]
        models = [trained(family, value, profile, cache, seed=s).at(S.steps if step is None else step) for s in seeds]
        dicts = [m.W_dec.detach().to(torch.float64).cpu() for m in models]
        stats = _codes_stats(models[0], x)
        mcs = torch.stack([max_cosine_similarity(dicts[0], D) for D in dicts[1:]]).min(0).values if len(dicts) > 1 else torch.full((len(dicts[0]),), float("nan"))
        frames.append(pd.DataFrame(dict(method=label, neuron=np.arange(len(mcs)), max_activation=stats.max.numpy(), z_score=stats.z_score.numpy(),
                                        frequency=stats.frequency.numpy(), mcs=mcs.numpy())))
    return pd.concat(frames, ignore_index=True)


def consistency_claim_values(cons: pd.DataFrame, *, threshold: float = 0.9) -> dict:
    """The values ``claims`` rule ``gba.real.consistency`` reads, from :func:`consistency`: per
    selection (criterion, alpha) the share of selected neurons with MCS >= ``threshold``, averaged
    over seeds, at the end of the runs; in how many GBA is above TopK, and L1 above GBA;
    ``converged``: every run's training loss settled and every median MCS settled
    (:func:`consistency_settled`)."""
    converged = bool(cons.settled.all()) and bool(consistency_settled(cons).settled.all())
    c = cons[np.isclose(cons.threshold, threshold) & (cons.step == cons.step.max())]
    if c.empty:
        raise ValueError(f"the consistency frame has no threshold {threshold}; it has {sorted(cons.threshold.unique())}.")
    share = c.groupby(["selection", "alpha", "method"]).fraction.mean().unstack("method")
    return dict(n_selections=int(len(share)), gba_wins=int((share.GBA > share.TopK).sum()), l1_beats_gba=int((share.L1 > share.GBA).sum()),
                gba_min=float(share.GBA.min()), gba_max=float(share.GBA.max()), topk_min=float(share.TopK.min()), topk_max=float(share.TopK.max()),
                converged=converged)


def neuron_claim_values(diag: pd.DataFrame, method: str = "GBA", *, half: pd.DataFrame | None = None) -> dict:
    """The values ``claims`` rule ``gba.real.neuron_diagnostics`` reads, from
    :func:`neuron_diagnostics`, over ``method``'s neurons that fire on the held-out tokens: the
    Spearman correlation of Z-score with max activation (the same as with its log), and the median
    MCS and firing frequency of the top-decile Z-score neurons against the rest. With ``half`` (the
    diagnostics half-way through the runs), ``converged``: the correlation moved by at most 0.05
    and both medians of MCS by at most 0.03 between the two readings."""
    out = _neuron_values(diag, method)
    if half is not None:
        h = _neuron_values(half, method)
        out["converged"] = bool(abs(out["spearman_z_logmax"] - h["spearman_z_logmax"]) <= 0.05
                                and abs(out["mcs_top_z"] - h["mcs_top_z"]) <= 0.03 and abs(out["mcs_rest"] - h["mcs_rest"]) <= 0.03)
    return out


def _neuron_values(diag: pd.DataFrame, method: str) -> dict:
    d = diag[(diag.method == method) & (diag.frequency > 0)]
    if len(d) < 10:
        raise ValueError(f"{method} has {len(d)} neurons that fire on the held-out tokens; the diagnostics need at least 10.")
    top = d.z_score >= d.z_score.quantile(0.9)
    rho = d.z_score.rank().corr(d.max_activation.rank())
    return dict(spearman_z_logmax=float(rho), mcs_top_z=float(d.mcs[top].median()), mcs_rest=float(d.mcs[~top].median()),
                frequency_top_z=float(d.frequency[top].median()))


def training_curves(profile: Profile, *, cache: ActivationCache | None = None) -> pd.DataFrame:
    """The logged training loss and batch L0 of every frontier run (first seed).

    Returns
    -------
    DataFrame with ``family, method, step, loss, l0``.
    """
    cache = activation_cache(profile) if cache is None else cache
    rows = []
    for family, value in runs(profile):
        run = trained(family, value, profile, cache)
        label = method_spec(family, value, profile.real_gba).label
        rows += [dict(family=family, method=label, step=r["step"], loss=r["loss"], l0=r.get("l0", float("nan")))
                 for r in run.history.rows if "loss" in r]
    return pd.DataFrame(rows)
