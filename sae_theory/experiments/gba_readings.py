"""Readings of the *deployed* Group Bias Adaptation (issue 12): which reading of Algorithm 2 and of
the deployed tied SAE makes it train, on the imbalanced toy and on Zipf-frequency data, against
TopK at the same L0.

Every reading trains the deployed tied SAE of :mod:`sae_theory.experiments.gba` (``REGIMES["deployed"]``:
output scale a and pre-bias b_dec trained, Adam lr 1e-3, rows scaled to unit norm,
``"jumprelu_threshold"``) with the hook of that module's toy GBA (10 contiguous groups, targets
0.5 -> 1e-3, gamma = 0.01, an update every 10 steps) and changes one or two choices the sources
leave open (docs/papers.md#gba-architecture, #gba-algorithms, #gba-recovery-theorem; the reference
digest's section named in each :class:`Reading`):

========================  =====================================================================
``"printed"``             Algorithms 1-2 as printed: b starts at 0, a starts at 1 (the deployed
                          regime as it was).
``"two-sided"``           also raise neurons firing between eps and their target
                          (``GBAConfig.raise_below_target``).
``"target init"``         b starts where each neuron fires at its target frequency
                          (``GBAConfig.bias_init = "target_quantile"``).
``"small a"``             a starts at 0.01 and is trained: the analysed algorithm's a -> 0 at the
                          start, the experiments' trained a afterwards.
``"small a + target init"``  both.
========================  =====================================================================

The Zipf data: ``zipf_n`` features in R^``zipf_d`` (Gaussian unit rows) firing independently with
f_i proportional to (i + 1)^-alpha (:class:`~sae_theory.data.laws.Zipf`), alpha set so the most
frequent feature has ``zipf_max_frequency`` and rows have ``zipf_mean_support`` active features on
average (a SynthSAEBench-like benchmark: d = 64, 256 features, mean L0 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from .._checks import check_int, check_positive
from ..data import SparseFeatureModel
from ..data.laws import Zipf
from ..metrics import feature_recovery_rate, fvu, l0, plateaued, unit_rows
from ..profiles import Profile
from ..training import GBAConfig
from .cache import train_cached
from .gba import REGIMES, TOY_GBA, algorithm2_buffer, tied_baseline_spec, topk_spec
from .specs import HookSpec, MethodSpec, eval_generator

__all__ = ["DATA_SETS", "READINGS", "Reading", "deployed_readings", "frontier_ratios", "reading_spec", "readings_summary", "training_rows",
           "zipf_exponent", "zipf_model"]

DATA_SETS = ("toy", "zipf")


@dataclass(frozen=True)
class Reading:
    """One reading of the deployed GBA: what differs from Algorithms 1-2 as printed."""

    output_scale_init: float
    """Initial output scale a (trained in every reading)."""
    bias_init: str
    """``GBAConfig.bias_init``."""
    raise_below_target: bool
    """``GBAConfig.raise_below_target``."""
    source: str
    """The line of the sources the reading rests on."""


READINGS: dict[str, Reading] = {
    "printed": Reading(1.0, "zero", False, "digest §2.1: biases start at 0 (inferred), a = 1 (second-hand); §3.2 Algorithm 2 as printed"),
    "two-sided": Reading(1.0, "zero", True, "digest §3.4: the bias is shifted until the neuron reaches its TAF (authors' page)"),
    "target init": Reading(1.0, "target_quantile", False, "digest §4.1: the bias fixed or set to realise frequency p (secondary summary)"),
    "small a": Reading(0.01, "zero", False, "digest §4.1: output scale a -> 0 in the analysis, a trained in the experiments"),
    "small a + target init": Reading(0.01, "target_quantile", False, "digest §4.1: both of the above"),
}


def reading_spec(reading: str, batch_size: int) -> MethodSpec:
    """The deployed tied SAE under ``reading`` (a key of :data:`READINGS`) with its GBA hook."""
    if reading not in READINGS:
        raise ValueError(f"unknown reading {reading!r}; choose from {sorted(READINGS)}.")
    R, D = READINGS[reading], REGIMES["deployed"]
    gba = GBAConfig(buffer_size=algorithm2_buffer(batch_size), bias_init=R.bias_init, raise_below_target=R.raise_below_target,
                    **TOY_GBA["GBA"])
    return MethodSpec.make(f"GBA ({reading})", "TiedSAE", output_scale_init=R.output_scale_init, train_output_scale=D.train_output_scale,
                           train_b_dec=D.train_b_dec, hooks=[HookSpec.gba(gba)],
                           train=dict(lr=D.lr, optimizer=D.optimizer, input_norm="unit"))


def zipf_exponent(n: int, mean_support: float, max_frequency: float) -> float:
    """The exponent alpha of :class:`~sae_theory.data.laws.Zipf` on n features whose most frequent
    feature has ``max_frequency`` when rows have ``mean_support`` active features on average:
    f_1 = mean_support / sum_i i^-alpha is increasing in alpha, solved by bisection on [0, 8]."""
    n = check_int("n", n, minimum=2)
    mean_support = check_positive("mean_support", mean_support)
    max_frequency = check_positive("max_frequency", max_frequency)
    if not (mean_support / n < max_frequency <= 1):
        raise ValueError(f"max_frequency must lie in (mean_support / n = {mean_support / n:.3g}, 1], got {max_frequency}.")
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    lo, hi = 0.0, 8.0
    if mean_support / float((ranks ** -hi).sum()) < max_frequency:
        raise ValueError(f"no exponent <= {hi} gives max_frequency={max_frequency} with mean_support={mean_support} on n={n}.")
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mean_support / float((ranks ** -mid).sum()) < max_frequency:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def zipf_model(scale, *, device: str = "cpu") -> tuple[SparseFeatureModel, dict]:
    """The Zipf data of ``scale`` (a :class:`~sae_theory.profiles.GBAReadingsScale`) and its cache key."""
    alpha = zipf_exponent(scale.zipf_n, scale.zipf_mean_support, scale.zipf_max_frequency)
    model = SparseFeatureModel(scale.zipf_n, scale.zipf_d, Zipf(exponent=alpha, mean_support=scale.zipf_mean_support), seed=0, device=device)
    key = dict(model="SparseFeatureModel", law="Zipf", n=scale.zipf_n, d=scale.zipf_d, exponent=alpha,
               mean_support=scale.zipf_mean_support, seed=0, rows=scale.n_samples)
    return model, key


def _data(name: str, scale, device: str) -> tuple[SparseFeatureModel, dict]:
    if name == "toy":
        return SparseFeatureModel.imbalanced_toy(seed=0, device=device), dict(model="SparseFeatureModel.imbalanced_toy", seed=0, rows=scale.n_samples)
    return zipf_model(scale, device=device)


def training_rows(model: SparseFeatureModel, n_samples: int) -> torch.Tensor:
    """The first ``n_samples`` rows of ``model``'s own stream (restarted first), so every run of a
    data set trains on the same rows whatever ran before it: what its cache key says."""
    model.reset()
    return model.sample(n_samples, h_layout="sparse")[0]


def _fit(spec: MethodSpec, model: SparseFeatureModel, key: dict, scale, seed: int, device: str, X_test: torch.Tensor):
    run = train_cached(spec, lambda: training_rows(model, scale.n_samples), data_key=key, d=model.d,
                       n_latents=scale.n_latents, seed=seed,
                       run=dict(steps=scale.steps, batch_size=scale.batch_size, seed=seed, log_every=scale.log_every, progress=False),
                       device=device)
    sae = run.model
    with torch.no_grad():
        codes = sae.encode(X_test)
        x_hat = sae.decode(codes)
    W, V = sae.dictionary.detach().double().cpu(), model.features.double().cpu()
    final = dict(l0=l0(codes), fvu=fvu(X_test, x_hat), frr_08=feature_recovery_rate(W, V, 0.8), frr_09=feature_recovery_rate(W, V, 0.9))
    return run.history.rows, final


def deployed_readings(profile: Profile, *, progress: bool = True) -> pd.DataFrame:
    """Train every reading of ``profile.gba_readings.readings`` on the toy and the Zipf data, and
    TopK with K = round(final L0) of each reading in ``matched``, twice: untied ("TopK",
    :func:`~sae_theory.experiments.gba.topk_spec`, ours) and on the GBA paper's tied model ("Tied
    TopK", :func:`~sae_theory.experiments.gba.tied_baseline_spec`, the paper's baseline); first
    ``n_seeds`` seeds. Runs go through the run cache.

    Returns
    -------
    DataFrame, one row per logged training step (``final`` False: ``loss`` and the training batch's
    ``l0``; ``fvu``, ``frr_08``, ``frr_09`` NaN, not measured there) and one final row per run
    (``final`` True: held-out ``l0`` and ``fvu`` on ``eval_samples`` unit rows, FRR at tau = 0.8 and
    0.9, the last training ``loss``), with ``reading, data, method ("GBA" | "TopK" | "Tied TopK"), k`` (TopK's K;
    0 for GBA), ``seed, step, loss, l0, fvu, frr_08, frr_09, settled`` (the training loss has
    plateaued, :func:`~sae_theory.metrics.plateaued`; False with fewer than 10 logged losses), ``final``.
    """
    S = profile.gba_readings
    unknown = set(S.readings) - set(READINGS)
    if unknown:
        raise ValueError(f"unknown readings {sorted(unknown)} in profile.gba_readings; choose from {sorted(READINGS)}.")
    if not set(S.matched) <= set(S.readings):
        raise ValueError(f"profile.gba_readings.matched {S.matched} must be among its readings {S.readings}.")
    seeds = profile.seeds[: S.n_seeds]
    total = len(DATA_SETS) * len(seeds) * (len(S.readings) + 2 * len(S.matched))
    bar = tqdm(total=total, desc="GBA readings", disable=not progress)
    rows = []
    for name in DATA_SETS:
        model, key = _data(name, S, profile.device)
        for seed in seeds:
            X_test = unit_rows(model.sample(S.eval_samples, eval_generator(seed, profile.device), h_layout="sparse")[0])
            jobs = [(r, "GBA", 0) for r in S.readings]
            while jobs:
                reading, method, k = jobs.pop(0)
                spec = (reading_spec(reading, S.batch_size) if method == "GBA"
                        else topk_spec(k) if method == "TopK" else tied_baseline_spec("TopK", k))
                curve, final = _fit(spec, model, key, S, seed, profile.device, X_test)
                losses = [r["loss"] for r in curve]
                settled = len(losses) >= 10 and plateaued(losses)
                base = dict(reading=reading, data=name, method=method, k=k, seed=seed, settled=settled)
                rows += [dict(base, step=r["step"], loss=r["loss"], l0=r["l0"], fvu=math.nan, frr_08=math.nan, frr_09=math.nan, final=False)
                         for r in curve]
                rows.append(dict(base, step=curve[-1]["step"], loss=losses[-1], **final, final=True))
                if method == "GBA" and reading in S.matched:
                    k_matched = max(1, int(round(final["l0"])))
                    jobs += [(reading, "TopK", k_matched), (reading, "Tied TopK", k_matched)]
                bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def readings_summary(readings: pd.DataFrame) -> pd.DataFrame:
    """The final rows of :func:`deployed_readings` over its seeds: one row per (data, reading,
    method) with the means over seeds of ``fvu, l0, frr_08, frr_09``, ``k_min`` and ``k_max``
    (TopK's K = round(L0) of each seed's GBA run, which may differ between seeds; 0 for GBA),
    ``settled`` (the training loss plateaued in every seed's run) and ``n_seeds``."""
    final = readings[readings.final]
    if final.empty:
        raise ValueError("readings has no final rows (final == True); pass the frame deployed_readings returns.")
    g = final.groupby(["data", "reading", "method"], sort=False)
    return g.agg(fvu=("fvu", "mean"), l0=("l0", "mean"), frr_08=("frr_08", "mean"), frr_09=("frr_09", "mean"),
                 k_min=("k", "min"), k_max=("k", "max"), settled=("settled", "all"), n_seeds=("seed", "nunique"))


def frontier_ratios(readings: pd.DataFrame, data: str = "zipf") -> pd.DataFrame:
    """GBA's held-out FVU against TopK's at the same L0, per matched reading of ``data``: one row per
    reading with a TopK run, with ``gba_fvu``, ``gba_l0``, ``tied_topk_fvu``, ``topk_fvu`` (means over
    seeds), ``ratio_tied`` and ``ratio_untied`` (GBA's mean FVU over TopK's mean FVU: the paper's tied
    TopK, and ours untied), ``ratio_tied_min`` / ``ratio_tied_max`` (the same ratio seed by seed, each
    seed's GBA against the TopK matched to its own L0), ``settled`` (GBA's loss plateaued in every
    seed) and ``n_seeds``. A TopK FVU of 0 gives an infinite ratio (GBA cannot be within a factor of a
    perfect reconstruction unless it is one too: 0 / 0 is taken as 1)."""
    final = readings[readings.final & (readings.data == data)]
    if final.empty:
        raise ValueError(f"readings has no final rows for data {data!r}; choose from {sorted(set(readings.data))}.")
    per_seed = final.pivot_table(index=["reading", "seed"], columns="method", values="fvu", aggfunc="first")
    missing = {"GBA", "TopK", "Tied TopK"} - set(per_seed.columns)
    if missing:
        raise ValueError(f"readings of {data!r} lack the methods {sorted(missing)}; deployed_readings trains them for the matched readings.")
    per_seed = per_seed.dropna(subset=["TopK", "Tied TopK"])

    def ratio(num, den):
        num, den = pd.Series(num, dtype=float), pd.Series(den, dtype=float)
        out = num / den.where(den > 0)
        return out.where(den > 0, (num == 0).map({True: 1.0, False: math.inf}))

    seedwise = ratio(per_seed["GBA"], per_seed["Tied TopK"]).groupby(level="reading")
    means = per_seed.groupby(level="reading").mean()
    gba = final[final.method == "GBA"].groupby("reading")
    out = pd.DataFrame({
        "gba_fvu": means["GBA"], "gba_l0": gba.l0.mean(), "tied_topk_fvu": means["Tied TopK"], "topk_fvu": means["TopK"],
        "ratio_tied": ratio(means["GBA"], means["Tied TopK"]), "ratio_untied": ratio(means["GBA"], means["TopK"]),
        "ratio_tied_min": seedwise.min(), "ratio_tied_max": seedwise.max(),
        "settled": gba.settled.all(), "n_seeds": per_seed.groupby(level="reading").size(),
    })
    out = out.loc[means.index]
    return out.astype({"settled": bool, "n_seeds": int})
