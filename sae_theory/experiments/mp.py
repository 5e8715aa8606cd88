"""Adaptive sparsity of MP-SAE at inference (docs/papers.md#mp-sae-adaptive-sparsity, paper Fig 8):
``notebooks/05_mp_adaptive_sparsity.ipynb``.

Three SAEs of the same width p are trained on the same SparseFeatureModel data (n features in R^d,
exactly s active per row, coefficients 1, every row scaled to unit norm) to the same training L0:

* ``"MP-SAE"``: :class:`~sae_theory.models.MPSAE` with k pursuit steps (relu selection, no
  pre-bias, the paper's defaults);
* ``"TopK"``: :class:`~sae_theory.models.TopKSAE` with the same k;
* ``"ReLU"``: :class:`~sae_theory.models.ReLUSAE` (decoder-norm-weighted L1) whose coefficient is
  steered during training by :class:`L1Controller` so that its mean L0 is k.

All three use Adam at a constant learning rate (per method, ``LEARNING_RATES``), the scale's
steps and batch size, and the same training rows for a given seed. Then, on held-out rows of the
same distribution, the reconstruction error is measured at inference k = 1 ..
``inference_k_max_multiple`` x k:

* MP-SAE: k pursuit steps, ``encode(x, k=k)``;
* TopK: the top k pre-activations, ``encode(x, k=k)``;
* ReLU: the k largest codes of its ReLU output, the others set to 0 (the "k largest latents"
  reading of the paper's Fig 20). It cannot use more latents than its ReLU keeps, so beyond its
  natural support the error is flat by construction.

Error metrics: ``nmse`` = mean_b ||x_b - x_hat_b||^2 / ||x_b||^2 (normalised MSE, the paper's
Fig 20 quantity; the rows have unit norm, so it is also the MSE) and ``fvu`` (fraction of variance
unexplained, :func:`~sae_theory.metrics.fvu`).

:func:`threshold_l0` runs the trained MP-SAE in threshold mode (stop once ||r|| < tau, with a cap
of ``inference_k_max_multiple`` x k steps) and returns per-input L0 and achieved error, on held-out
rows with s/2, s and 2s active features (the same features: a SparseFeatureModel's features
depend only on n, d and the seed). :func:`threshold_tradeoff` sets threshold mode against fixed k
at the same mean L0, per row sparsity and on the three pooled.

:func:`recovery_study` reads reconstruction against recovery of the true features on those runs;
:func:`superposition_recovery` asks the same on data of SynthSAEBench's kind instead (features
firing independently with Zipfian frequencies, magnitudes that vary), at several degrees of
superposition n / d.
"""

from __future__ import annotations

import functools
import itertools
import math

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data import SparseFeatureModel
from ..data.laws import Uniform, Zipf
from ..metrics import fvu as _fvu
from ..models import MPSAE
from ..models.base import SAE, unit_rows_
from ..profiles import MPScale, Profile
from ..training import SparsityController
from .._checks import check_real
from .cache import train_cached
from .gba_readings import zipf_exponent
from .specs import HookSpec, MethodSpec, eval_generator

__all__ = ["METHODS", "L1Controller", "adaptive_sparsity", "babel_study", "inference_codes", "method_spec", "recovery_claim_values", "recovery_study", "superposition_claim_values", "superposition_recovery", "threshold_l0", "threshold_tradeoff", "trained_sae"]

METHODS = ("MP-SAE", "TopK", "ReLU")

#: Held-out rows on which every error is measured.
N_EVAL = 4096

#: Default residual-norm targets tau of threshold mode (rows have unit norm: nmse <= tau^2).
THRESHOLD_TARGETS = (0.4, 0.3, 0.2, 0.1)

#: Adam learning rate per method: the best of {1e-3, 3e-3, 1e-2} by held-out nmse at the training
#: k (seed 0 of the quick scale; measured nmse at lr 1e-3 / 3e-3 / 1e-2: MP-SAE 0.032 / 0.022 /
#: 0.027, TopK 0.131 / 0.132 / 0.154, ReLU at L0 ~8 0.877 / 0.652 / 0.443).
LEARNING_RATES = {"MP-SAE": 3e-3, "TopK": 1e-3, "ReLU": 1e-2}
#: The ReLU's initial L1 coefficient (its controller's start).
RELU_L1_START = 0.1


def _feature_model(scale: MPScale, seed: int, device: str, dtype: torch.dtype, s: int | None = None) -> SparseFeatureModel:
    """The data of ``seed``; ``s`` changes only the row sparsity (the features stay the same)."""
    return SparseFeatureModel(scale.n, scale.d, scale.s if s is None else s, seed=seed, device=device, dtype=dtype)


@functools.lru_cache(maxsize=1)  # runs loop seed-outer; a full-scale set is 2 GB
def _training_set(scale: MPScale, seed: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    X, _ = _feature_model(scale, seed, device, dtype).sample(scale.n_samples, torch.Generator(device=device).manual_seed(seed), h_layout="sparse")
    unit_rows_(X)
    return X


def _eval_set(scale: MPScale, seed: int, device: str, dtype: torch.dtype, s: int | None = None, n: int = N_EVAL) -> torch.Tensor:
    s = scale.s if s is None else s
    g = eval_generator(seed, device, stream=s)
    X, _ = _feature_model(scale, seed, device, dtype, s).sample(n, g, h_layout="sparse")
    unit_rows_(X)
    return X


# --------------------------------------------------------------------------------------------
# ReLU-L1 at a target L0
# --------------------------------------------------------------------------------------------


#: The ReLU's controller: :class:`~sae_theory.training.SparsityController` with its default
#: rule, lambda <- lambda exp(gain clip((l0 - target) / target, -1, 1)) after every step, written
#: into the ReLUSAE's ``l1_coefficient`` buffer (the final value is ``controller.coefficient``).
L1Controller = SparsityController


# --------------------------------------------------------------------------------------------
# training (cached per process)
# --------------------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def method_spec(method: str, k: int, lr: float) -> MethodSpec:
    """The spec of ``method`` ("MP-SAE" | "TopK" | "ReLU") with training k (the ReLU's target L0)
    and Adam learning rate ``lr`` (constant, raw unit-norm rows)."""
    _check_method(method)
    train = dict(lr=lr)
    if method == "ReLU":
        controller = HookSpec.controller(target_l0=float(k), coefficient=RELU_L1_START)
        return MethodSpec.make(method, "ReLU", l1_coefficient=RELU_L1_START, hooks=[controller], train=train)
    return MethodSpec.make(method, method, k=k, train=train)


def _trained(spec: MethodSpec, scale: MPScale, seed: int, device: str, dtype: torch.dtype) -> tuple[SAE, dict]:
    data_key = dict(model="SparseFeatureModel", n=scale.n, d=scale.d, s=scale.s, seed=seed, rows=scale.n_samples,
                    sample_seed=seed, unit_rows=True)

    def summarize(sae, hist, hooks) -> dict:
        return dict(train_loss=float(hist.last("loss")), train_batch_l0=float(hist.last("l0")),
                    l1_coefficient=hooks[0].coefficient if hooks else float("nan"))

    run = train_cached(spec, lambda: _training_set(scale, seed, device, dtype), data_key=data_key, d=scale.d, n_latents=scale.n_latents,
                       seed=seed + 1, run=dict(steps=scale.steps, batch_size=scale.batch_size, seed=seed, progress=False),
                       device=device, dtype=dtype, summarize=summarize, snapshots=(scale.steps // 2,))
    return run, dict(run.summary)


def trained_sae(method: str, profile: Profile, seed: int, lr: float | None = None, step: int | None = None) -> tuple[SAE, dict]:
    """The SAE of ``method`` ("MP-SAE" | "TopK" | "ReLU") trained on ``seed``'s data at the
    profile's MP scale with learning rate ``lr`` (default ``LEARNING_RATES[method]``), and a dict
    (``train_loss``, ``train_batch_l0``, ``l1_coefficient``: the ReLU's final coefficient, NaN
    otherwise). The ReLU is trained with an :class:`L1Controller` (target L0 = k, initial
    coefficient 0.1, gain 0.005). Runs are cached on disk (:mod:`sae_theory.experiments.cache`):
    :func:`adaptive_sparsity`, :func:`threshold_l0` and :func:`threshold_tradeoff` share them, and
    each call returns a freshly loaded model. Every run keeps its model half-way: ``step`` = half
    the profile's steps returns that model (a convergence check), None the final one."""
    _check_method(method)
    lr = LEARNING_RATES[method] if lr is None else float(lr)
    run, summary = _trained(method_spec(method, profile.mp.k, lr), profile.mp, seed, profile.device, profile.dtype)
    return (run.model if step is None else run.at(step)), summary


# --------------------------------------------------------------------------------------------
# inference at another k
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def inference_codes(method: str, sae: SAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """Codes of ``sae`` (trained as ``method``) on x at inference k (module docstring): k pursuit
    steps (MP-SAE), the top k pre-activations (TopK), the k largest ReLU codes (ReLU)."""
    _check_method(method)
    if method in ("MP-SAE", "TopK"):
        return sae.encode(x, k=k)
    codes = sae.encode(x)
    k = min(k, codes.shape[-1])
    top = codes.topk(k, dim=-1)
    return torch.zeros_like(codes).scatter_(-1, top.indices, top.values)


def _mp_prefix_codes(sae: MPSAE, x: torch.Tensor, k_max: int):
    """Yield the MP-SAE's codes at k = 1, 2, .., k_max from one pursuit of k_max steps: pursuit is
    greedy and deterministic, so its first k steps are the k-step pursuit (``encode(x, k=k)``,
    checked in the tests). The yielded tensor is updated in place."""
    out = sae.pursuit(x, k=k_max)
    codes = torch.zeros_like(out.codes)
    for t in range(k_max):
        codes.scatter_add_(1, out.indices[:, t : t + 1].clamp(min=0), out.alphas[:, t : t + 1])
        yield codes


def _nmse(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    x64, e64 = x.to(torch.float64), (x_hat - x).to(torch.float64)
    return float((e64.pow(2).sum(1) / x64.pow(2).sum(1)).mean())


def adaptive_sparsity(profile: Profile, *, methods: tuple[str, ...] = METHODS, learning_rates: dict[str, float] | None = None,
                      n_eval: int = N_EVAL, step: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Reconstruction error against inference k for MP-SAE, TopK and ReLU trained to the same L0.

    For every seed of the profile and every method, the SAE of :func:`trained_sae` is evaluated on
    ``n_eval`` held-out unit-norm rows at inference k = 1 .. ``inference_k_max_multiple`` x k.
    ``learning_rates`` overrides ``LEARNING_RATES`` for some methods (a sensitivity check);
    ``step`` (half the profile's steps) reads the runs half-way instead of at the end.

    Returns
    -------
    DataFrame with ``method, seed, train_k, inference_k, nmse`` (mean ||x - x_hat||^2 / ||x||^2),
    ``fvu``, ``l0`` (mean non-zero codes per row at that inference k), ``train_l0`` (the method's
    mean L0 on the held-out rows at its training setting: k steps, top k, the full ReLU output),
    ``dead_fraction`` (latents never active on the held-out rows at the training setting),
    ``l1_coefficient`` (ReLU's final coefficient; NaN for the others), ``lr``.
    """
    for m in methods:
        _check_method(m)
    lrs = {**LEARNING_RATES, **(learning_rates or {})}
    S = profile.mp
    ks = range(1, S.inference_k_max_multiple * S.k + 1)
    rows = []
    runs = [(seed, m) for seed in profile.seeds for m in methods]
    for seed, method in tqdm(runs, desc="SAE runs", disable=not progress):
        sae, info = trained_sae(method, profile, seed, lrs[method], step=step)
        x = _eval_set(S, seed, profile.device, profile.dtype, n=n_eval)
        with torch.no_grad():
            natural = sae.encode(x)
            train_l0 = float((natural != 0).sum(1).to(torch.float64).mean())
            dead = float((natural.amax(0) <= 0).to(torch.float64).mean())
            codes_at = _mp_prefix_codes(sae, x, ks[-1]) if method == "MP-SAE" else None
            for k in ks:
                codes = next(codes_at) if codes_at is not None else inference_codes(method, sae, x, k)
                x_hat = sae.decode(codes)
                rows.append(dict(method=method, seed=seed, train_k=S.k, inference_k=k, nmse=_nmse(x, x_hat), fvu=_fvu(x, x_hat),
                                 l0=float((codes != 0).sum(1).to(torch.float64).mean()), train_l0=train_l0, dead_fraction=dead,
                                 l1_coefficient=info["l1_coefficient"], lr=lrs[method]))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# threshold mode
# --------------------------------------------------------------------------------------------


def _sparsities(S: MPScale, sparsities: tuple[int, ...] | None) -> tuple[int, ...]:
    return sparsities if sparsities is not None else tuple(sorted({max(1, S.s // 2), S.s, min(S.n, 2 * S.s)}))


def _per_input(sae: SAE, x: torch.Tensor, codes: torch.Tensor) -> dict:
    """Per-input L0, residual norm and nmse of ``codes`` (numpy arrays)."""
    with torch.no_grad():
        sq = (sae.decode(codes) - x).to(torch.float64).pow(2).sum(1)
    return dict(l0=(codes != 0).sum(1).cpu().numpy(), residual_norm=sq.sqrt().cpu().numpy(),
                nmse=(sq / x.to(torch.float64).pow(2).sum(1)).cpu().numpy())


def threshold_l0(profile: Profile, *, targets: tuple[float, ...] = THRESHOLD_TARGETS, sparsities: tuple[int, ...] | None = None,
                 n_eval: int = 1024, step: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Per-input L0 of the trained MP-SAE in threshold mode, for residual-norm targets tau.

    Every input x (unit norm) is pursued until ||r|| < tau, with at most
    ``inference_k_max_multiple`` x k steps. Held-out rows (``n_eval`` per sparsity) with s_test
    active features for s_test in ``sparsities`` (default: s // 2, s, 2 s of the scale; the
    features of training). ``step`` (half the profile's steps) reads the runs half-way instead of
    at the end, as in :func:`adaptive_sparsity`.

    Returns
    -------
    DataFrame, one row per input, target and seed: ``seed, target`` (tau), ``target_nmse``
    (tau^2), ``true_s`` (active features of the row), ``train_s`` (s of the training data),
    ``input``, ``l0`` (distinct atoms used), ``steps`` (pursuit steps taken), ``residual_norm``
    (||x - x_hat||), ``nmse`` (||x - x_hat||^2 / ||x||^2), ``capped`` (the cap stopped it before
    reaching tau), ``cap``.
    """
    S = profile.mp
    sparsities = _sparsities(S, sparsities)
    for i, t in enumerate(targets):
        check_real(f"targets[{i}] (a residual norm)", t, minimum=0, include_minimum=False)
    cap = S.inference_k_max_multiple * S.k
    frames = []
    for seed in tqdm(profile.seeds, desc="threshold mode", disable=not progress):
        sae, _ = trained_sae("MP-SAE", profile, seed, step=step)
        for s_test in sparsities:
            x = _eval_set(S, seed, profile.device, profile.dtype, s=s_test, n=n_eval)
            for tau in targets:
                out = sae.pursuit(x, k=cap, threshold=float(tau))
                frames.append(pd.DataFrame(dict(
                    seed=seed, target=float(tau), target_nmse=float(tau) ** 2, true_s=s_test, train_s=S.s, input=range(x.shape[0]),
                    steps=out.steps.cpu().numpy(), **_per_input(sae, x, out.codes),
                    capped=((out.steps >= cap) & (out.residual.norm(dim=1) >= tau)).cpu().numpy(), cap=cap)))
    return pd.concat(frames, ignore_index=True)


def threshold_tradeoff(profile: Profile, l0_df: pd.DataFrame | None = None, *, sparsities: tuple[int, ...] | None = None,
                       n_eval: int = 1024, progress: bool = True) -> pd.DataFrame:
    """Mean error against mean L0 of the MP-SAE, fixed k against threshold mode, per population.

    Populations: the held-out rows of :func:`threshold_l0` with s_test active features
    (``"s=3"``, ...) and ``"mixed"``, all of them pooled (equal numbers of each s_test). Fixed k
    runs k = 1 .. ``inference_k_max_multiple`` x k steps on every row; threshold mode is
    ``l0_df`` (computed with the same ``sparsities`` and ``n_eval`` when not given).

    Returns
    -------
    DataFrame with ``seed, population, mode`` ("fixed k" | "threshold"), ``k`` (steps; the cap in
    threshold mode), ``target`` (tau; NaN for fixed k), ``l0`` (mean L0), ``nmse`` (mean),
    ``capped`` (fraction of inputs stopped by the cap; 0 for fixed k).
    """
    S = profile.mp
    sparsities = _sparsities(S, sparsities)
    if l0_df is None:
        l0_df = threshold_l0(profile, sparsities=sparsities, n_eval=n_eval, progress=progress)
    cap = S.inference_k_max_multiple * S.k
    rows = []
    for seed in tqdm(profile.seeds, desc="fixed k", disable=not progress):
        sae, _ = trained_sae("MP-SAE", profile, seed)
        for s_test in sparsities:
            x = _eval_set(S, seed, profile.device, profile.dtype, s=s_test, n=n_eval)
            for k, codes in enumerate(_mp_prefix_codes(sae, x, cap), 1):
                r = _per_input(sae, x, codes)
                rows.append(dict(seed=seed, true_s=s_test, mode="fixed k", k=k, target=float("nan"),
                                 l0=float(r["l0"].mean()), nmse=float(r["nmse"].mean()), capped=0.0))
    fixed = pd.DataFrame(rows)
    thr = l0_df[l0_df["true_s"].isin(sparsities) & l0_df["seed"].isin(profile.seeds)]
    thr = (thr.groupby(["seed", "true_s", "target"]).agg(l0=("l0", "mean"), nmse=("nmse", "mean"), capped=("capped", "mean"))
           .reset_index().assign(mode="threshold", k=cap))
    per_s = pd.concat([fixed, thr[fixed.columns]], ignore_index=True)
    # every population has the same number of rows, so the pooled mean is the mean over populations
    keys = ["seed", "mode", "k", "target"]
    mixed = per_s.groupby(keys, dropna=False)[["l0", "nmse", "capped"]].mean().reset_index().assign(population="mixed")
    per_s = per_s.assign(population=per_s.pop("true_s").map(lambda v: f"s={v}"))
    out = pd.concat([per_s, mixed], ignore_index=True)
    return out[["seed", "population", "mode", "k", "target", "l0", "nmse", "capped"]]


# --------------------------------------------------------------------------------------------
# Babel on overcomplete dictionaries (the MP-SAE paper's Babel contrast)
# --------------------------------------------------------------------------------------------


def babel_study(profile: Profile, *, methods: tuple[str, ...] = METHODS, n_eval: int = 1024, step: int | None = None,
                progress: bool = True) -> pd.DataFrame:
    """The Babel contrast (docs/papers.md#mp-sae-babel) on the overcomplete dictionaries of
    :func:`adaptive_sparsity` (p latents in R^d, p / d = 8 under quick): for every method and seed,
    the mutual coherence mu_1(1) and mu_1(2) of the whole learned dictionary and the co-active
    Babel (mu_1(|S| - 1) of the atoms each held-out row uses, averaged over rows), at the training
    setting; and the same three numbers for the true dictionary with the true codes (``method``
    ``"truth"``), so the learned values have a reference. ``step`` (half the profile's steps) reads
    the runs half-way instead of at the end.

    The paper gives no formula for the co-active reading, so two others come beside it:
    ``coactive_mean_pair`` (the mean |cos| over the pairs of each support) and
    ``coactive_max_pair`` (the largest), :func:`~sae_theory.metrics.babel_coactive`'s readings.

    Returns
    -------
    DataFrame with ``method, seed, babel_1, babel_2, babel_coactive, coactive_mean_pair,
    coactive_max_pair, l0`` (mean active atoms per held-out row).
    """
    from ..metrics import babel, coactive_readings

    def coactive(D, Z):
        got = coactive_readings(D, Z)
        return dict(babel_coactive=got["babel"], coactive_mean_pair=got["mean_pair"], coactive_max_pair=got["max_pair"])

    S = profile.mp
    rows = []
    for seed in tqdm(profile.seeds, desc="Babel", disable=not progress):
        model = _feature_model(S, seed, profile.device, profile.dtype)
        X, H = model.sample(n_eval, eval_generator(seed, profile.device, stream=S.s), h_layout="sparse")
        unit_rows_(X)
        H = H.to_dense()
        V = model.features
        rows.append(dict(method="truth", seed=seed, babel_1=babel(V, 1), babel_2=babel(V, 2), **coactive(V, H),
                         l0=float((H != 0).sum(1).to(torch.float64).mean())))
        for method in methods:
            sae, _ = trained_sae(method, profile, seed, step=step)
            with torch.no_grad():
                codes = sae.encode(X)  # the training setting: k steps / top k / the ReLU's own support
            D = sae.dictionary.detach()
            rows.append(dict(method=method, seed=seed, babel_1=babel(D, 1), babel_2=babel(D, 2), **coactive(D, codes),
                             l0=float((codes != 0).sum(1).to(torch.float64).mean())))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# reconstruction is not recovery (SynthSAEBench)
# --------------------------------------------------------------------------------------------


def recovery_study(profile: Profile, *, methods: tuple[str, ...] = METHODS, progress: bool = True) -> pd.DataFrame:
    """Reconstruction against recovery of the true features (docs/papers.md#mp-sae-replications:
    SynthSAEBench reports that MP-SAEs reconstruct better by using superposition noise without
    learning the true features), on the runs of :func:`adaptive_sparsity`: n > d features, no
    additive noise, so every error is interference between the features. For every method and
    seed, half-way through training and at the end: held-out FVU and nmse at the training setting,
    FRR at cosine 0.8 and 0.9 and the decoder MCC (one-to-one matching, ``metrics.decoder_mcc``)
    of the learned dictionary against the true features.

    Returns
    -------
    DataFrame with ``method, seed, step, fvu, nmse, l0, frr_08, frr_09, mcc``.
    """
    from ..metrics import decoder_mcc, feature_recovery_rate

    S = profile.mp
    rows = []
    for seed in tqdm(profile.seeds, desc="recovery", disable=not progress):
        X = _eval_set(S, seed, profile.device, profile.dtype)
        V = _feature_model(S, seed, profile.device, profile.dtype).features.detach().to(torch.float64).cpu()
        for method in methods:
            run, _ = _trained(method_spec(method, S.k, LEARNING_RATES[method]), S, seed, profile.device, profile.dtype)
            for step in (S.steps // 2, S.steps):
                sae = run.at(step)
                with torch.no_grad():
                    codes = sae.encode(X)  # the training setting
                    x_hat = sae.decode(codes)
                D = sae.dictionary.detach().to(torch.float64).cpu()
                rows.append(dict(method=method, seed=seed, step=step, fvu=_fvu(X, x_hat), nmse=_nmse(X, x_hat),
                                 l0=float((codes != 0).sum(1).to(torch.float64).mean()), frr_08=feature_recovery_rate(D, V, 0.8),
                                 frr_09=feature_recovery_rate(D, V, 0.9), mcc=decoder_mcc(D, V)))
    return pd.DataFrame(rows)


def recovery_claim_values(rec: pd.DataFrame) -> dict:
    """The values ``claims`` rule ``mp.synth.reconstruction_not_recovery`` reads, from
    :func:`recovery_study`: MP-SAE's and TopK's FVU, MCC and FRR at cosine 0.9 at the end of
    training (means over seeds), and ``converged``: every run's MCC moved by at most 0.03 and its
    FVU by at most 10% from half-way to the end."""
    from ..metrics import metric_settled

    end = rec[rec.step == rec.step.max()].groupby("method")[["fvu", "mcc", "frr_09"]].mean()
    for method in ("MP-SAE", "TopK"):
        if method not in end.index:
            raise ValueError(f"the recovery frame has no {method} runs (methods: {sorted(end.index)}).")
    converged = True
    for _, g in rec.groupby(["method", "seed"]):
        g = g.sort_values("step")
        f = g.fvu.to_numpy()
        converged &= metric_settled(g.mcc.tolist(), atol=0.03) and abs(f[-1] - f[-2]) <= 0.1 * f[-2]
    return dict(mp_fvu=float(end.fvu["MP-SAE"]), topk_fvu=float(end.fvu["TopK"]), mp_mcc=float(end.mcc["MP-SAE"]),
                topk_mcc=float(end.mcc["TopK"]), mp_frr_09=float(end.frr_09["MP-SAE"]), topk_frr_09=float(end.frr_09["TopK"]),
                converged=bool(converged))


#: Law of an active feature's magnitude in :func:`superposition_recovery` (our choice: SynthSAEBench's
#: magnitudes vary, its law is not in our sources).
SUPERPOSITION_COEFFICIENTS = Uniform(0.5, 1.5)
SUPERPOSITION_METHODS = ("MP-SAE", "TopK")


def _zipf_feature_model(S: MPScale, n: int, seed: int, device: str, dtype: torch.dtype) -> SparseFeatureModel:
    alpha = zipf_exponent(n, S.zipf_mean_support, S.zipf_max_frequency)
    return SparseFeatureModel(n, S.d, Zipf(exponent=alpha, mean_support=S.zipf_mean_support), coefficients=SUPERPOSITION_COEFFICIENTS,
                              seed=seed, device=device, dtype=dtype)


def superposition_recovery(profile: Profile, *, methods: tuple[str, ...] = SUPERPOSITION_METHODS, progress: bool = True) -> pd.DataFrame:
    """Reconstruction against recovery on data of SynthSAEBench's kind (docs/papers.md#mp-sae-replications).

    For each ratio r of ``profile.mp.superposition_ratios``: n = r d true features (Gaussian unit
    rows in R^d, d = ``profile.mp.d``) fire independently with Zipf frequencies (the most frequent
    at ``zipf_max_frequency``, ``zipf_mean_support`` active per row on average), each active one
    with a magnitude drawn from :data:`SUPERPOSITION_COEFFICIENTS`; rows scaled to unit norm, as
    in the rest of this module. Every method of ``methods`` (MP-SAE, TopK, ReLU: :func:`method_spec`,
    ``LEARNING_RATES``) is trained at each width of ``superposition_widths``: M = round(w n) latents
    (w = 1: a perfect dictionary is a permutation of the truth; w = 1/4: SynthSAEBench-16k's
    4,096 latents for 16,384 features) and k = round(the true mean L0 of the M most frequent
    features) (for w = 1, round(``zipf_mean_support``); SynthSAEBench likewise trains at the true L0
    of the features its width covers), the scale's steps, batch size and training rows, through the
    run cache. Read half-way through training and at the end, on ``N_EVAL`` held-out rows: FVU,
    nmse, L0, FRR at cosine 0.8 and 0.9, the decoder MCC with the true features over all n of them
    (``mcc``: the features the SAE has no latent for count 0) and over the matched pairs
    (``mcc_matched``: SynthSAEBench's reading, equal to ``mcc`` when M >= n). Features fire
    independently, so some rows have none active: they are dropped from the held-out rows (their
    normalised error is 0 / 0) and kept in the training rows.

    Returns
    -------
    DataFrame with ``method, ratio, n, width, n_latents, k, seed, step, fvu, nmse, l0, frr_08,
    frr_09, mcc, mcc_matched``.

    Raises
    ------
    ValueError
        A width of ``profile.mp.superposition_widths`` is not in (0, 1].
    """
    for method in methods:
        _check_method(method)
    S = profile.mp
    _check_widths(S)
    frame = pd.DataFrame(_superposition_rows(profile, methods, S.superposition_widths, (0.0,), progress, "superposition"))
    return frame.drop(columns=["noise", "fvu_signal"])


def _check_widths(S: MPScale) -> None:
    bad = [w for w in S.superposition_widths if not (isinstance(w, (int, float)) and 0 < w <= 1)]
    if bad or not S.superposition_widths:
        raise ValueError(f"profile.mp.superposition_widths must be fractions of n in (0, 1], got {S.superposition_widths}; "
                         "e.g. (1.0, 0.25).")


def _with_noise(X: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """X plus Gaussian noise of covariance (noise^2 / d) I (X itself when noise is 0)."""
    if noise == 0:
        return X
    eps = torch.randn(X.shape, generator=generator, device=X.device, dtype=X.dtype)
    return X + eps.mul_(noise / X.shape[1] ** 0.5)


def _superposition_rows(profile: Profile, methods, widths, noises, progress: bool, desc: str):
    """The runs and readings of :func:`superposition_recovery` and :func:`noisy_superposition_recovery`:
    for every (ratio, seed), noise level, width and method, one row half-way and one at the end. The
    data key of a noise-free run carries no noise field, so those runs are the same cache entries
    whichever of the two studies trains them first."""
    from ..metrics import decoder_mcc, feature_recovery_rate

    S = profile.mp
    rows = []
    cells = [(r, seed) for r in S.superposition_ratios for seed in profile.seeds]
    for ratio, seed in tqdm(cells, desc=desc, disable=not progress):
        n = ratio * S.d
        model = _zipf_feature_model(S, n, seed, profile.device, profile.dtype)
        V = model.features.detach().to(torch.float64).cpu()
        freq = model.support.frequencies(n).to(torch.float64).sort(descending=True).values
        X_eval, _ = model.sample(N_EVAL, eval_generator(seed, profile.device, stream=ratio), h_layout="sparse")
        X_eval = X_eval[X_eval.norm(dim=1) > 0]  # rows with no active feature (about e^-mean_support of them): nothing to read
        unit_rows_(X_eval)
        for noise in noises:
            # the held-out rows' noise: one draw per (ratio, seed) scaled by each level, on a held-out stream of its own
            X_in = _with_noise(X_eval, noise, eval_generator(seed, profile.device, stream=_NOISE_EVAL_STREAM))

            def data(model=model, seed=seed, noise=noise):
                X, _ = model.sample(S.n_samples, torch.Generator(device=profile.device).manual_seed(seed), h_layout="sparse")
                unit_rows_(X)
                return _with_noise(X, noise, torch.Generator(device=profile.device).manual_seed(_NOISE_SEED_OFFSET + seed))

            data_key = dict(model="SparseFeatureModel", law="Zipf", n=n, d=S.d, exponent=model.support.exponent,
                            mean_support=S.zipf_mean_support, coefficients=repr(SUPERPOSITION_COEFFICIENTS), seed=seed,
                            rows=S.n_samples, sample_seed=seed, unit_rows=True)
            if noise:
                data_key.update(noise=float(noise), noise_law="gaussian, covariance noise^2 / d I, after unit_rows",
                                noise_seed=_NOISE_SEED_OFFSET + seed)
            for width, method in itertools.product(widths, methods):
                M = max(1, round(width * n))
                k = max(1, round(float(freq[:M].sum())))  # the true mean L0 of the M most frequent features
                run = train_cached(method_spec(method, k, LEARNING_RATES[method]), data, data_key=data_key, d=S.d, n_latents=M,
                                   seed=seed + 1, run=dict(steps=S.steps, batch_size=S.batch_size, seed=seed, progress=False),
                                   device=profile.device, dtype=profile.dtype, snapshots=(S.steps // 2,))
                for step in (S.steps // 2, S.steps):
                    sae = run.at(step)
                    with torch.no_grad():
                        codes = sae.encode(X_in)
                        x_hat = sae.decode(codes)
                    D = sae.dictionary.detach().to(torch.float64).cpu()
                    rows.append(dict(method=method, ratio=ratio, n=n, width=float(width), n_latents=M, k=k, seed=seed, step=step,
                                     fvu=_fvu(X_in, x_hat), nmse=_nmse(X_in, x_hat),
                                     l0=float((codes != 0).sum(1).to(torch.float64).mean()), frr_08=feature_recovery_rate(D, V, 0.8),
                                     frr_09=feature_recovery_rate(D, V, 0.9), mcc=decoder_mcc(D, V),
                                     mcc_matched=decoder_mcc(D, V, mean_over="matched"), noise=float(noise),
                                     fvu_signal=_fvu(X_eval, x_hat)))
    return rows


#: The additive noise of :func:`noisy_superposition_recovery`: the training rows' noise is drawn with
#: seed ``_NOISE_SEED_OFFSET + seed`` (apart from the data's seed and the SAEs' seed + 1), the held-out
#: rows' on eval stream ``_NOISE_EVAL_STREAM`` (the other held-out streams of this module are the row
#: sparsities and the ratios n / d, all below it).
_NOISE_SEED_OFFSET = 7_000
_NOISE_EVAL_STREAM = 99


def noisy_superposition_recovery(profile: Profile, *, methods: tuple[str, ...] = SUPERPOSITION_METHODS,
                                 progress: bool = True) -> pd.DataFrame:
    """:func:`superposition_recovery` at SynthSAEBench's width with small additive noise (issue 14's
    "n > d with small noise"; SynthSAEBench's data carry none, so the levels are ours).

    The same Zipf data, ratios, seeds, methods, k and training, at the narrowest width of
    ``profile.mp.superposition_widths`` (1/4 by default: SynthSAEBench's), with noise level 0 (the
    runs :func:`superposition_recovery` trains, found in the run cache when it ran first) and every
    level nu of ``profile.mp.superposition_noise``: each unit-norm training and held-out row gets
    Gaussian noise of covariance (nu^2 / d) I, drawn once (the training set is fixed, as everywhere
    in this module). Read half-way and at the end on the noisy held-out rows (``fvu``, ``nmse``:
    what an SAE user measures) and against their clean signal (``fvu_signal``: FVU of the
    reconstruction of the noisy row against the noise-free row, so fitting the noise raises it).

    Returns
    -------
    DataFrame with the columns of :func:`superposition_recovery` plus ``noise`` and ``fvu_signal``.

    Raises
    ------
    ValueError
        A noise level is not a finite number > 0, or a width is not in (0, 1].
    """
    for method in methods:
        _check_method(method)
    S = profile.mp
    _check_widths(S)
    levels = tuple(S.superposition_noise)
    if not levels or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in levels):
        raise ValueError(f"profile.mp.superposition_noise must be finite noise levels > 0 (noise norm over signal norm), "
                         f"got {S.superposition_noise}; e.g. (0.1, 0.3).")
    return pd.DataFrame(_superposition_rows(profile, methods, (min(S.superposition_widths),), (0.0, *levels), progress,
                                            "noisy superposition"))


def _per_ratio(frame: pd.DataFrame, mcc: str) -> tuple[dict, int, bool]:
    """Per ratio n / d of a superposition frame, reading the MCC column ``mcc``: MP-SAE's and TopK's
    FVU and MCC at the end (means over seeds, :func:`recovery_claim_values`) keyed by the ratio as
    a string; the number of ratios where MP-SAE's FVU is below TopK's while its MCC is more than
    0.02 below; and whether every run there settled."""
    out, converged = {}, True
    for r in sorted(frame.ratio.unique()):
        at = frame[frame.ratio == r]
        vals = recovery_claim_values(at.assign(mcc=at[mcc]))
        out[str(int(r))] = {key: vals[key] for key in ("mp_fvu", "topk_fvu", "mp_mcc", "topk_mcc")}
        converged &= vals["converged"]
    holding = sum(v["mp_fvu"] < v["topk_fvu"] and v["mp_mcc"] < v["topk_mcc"] - 0.02 for v in out.values())
    return out, int(holding), converged


def superposition_claim_values(df: pd.DataFrame) -> dict:
    """The values ``claims`` rule ``mp.synth.zipf_superposition`` reads, from
    :func:`superposition_recovery`.

    At the width 1 (SAEs as wide as the truth; frames without a ``width`` column are all at it):
    MP-SAE's and TopK's FVU and decoder MCC at the end of training (means over seeds) at the
    largest ratio n / d; ``ratios`` and ``ratios_holding``, the number of ratios and of those where
    MP-SAE's FVU is below TopK's while its MCC is more than 0.02 below (the rule of
    ``mp.synth.reconstruction_not_recovery``); the four values at every ratio r as ``mp_fvu_r<r>``,
    ``topk_fvu_r<r>``, ... At the narrowest width below 1 when the frame has one (SynthSAEBench's
    setting, an SAE narrower than the truth): ``narrow_width``, ``narrow_ratios_holding`` and the
    same four values per ratio as ``mp_fvu_n<r>``, ... with the MCC over the matched pairs
    (``mcc_matched``, SynthSAEBench's reading), and the seeds' spread of the FVU there,
    ``mp_fvu_max_n<r>`` and ``topk_fvu_min_n<r>`` (MP-SAE's worst seed, TopK's best). ``converged``: every run's MCC moved by at most 0.03
    and its FVU by at most 10% from half-way to the end (:func:`recovery_claim_values`)."""
    if df.empty:
        raise ValueError("the superposition frame is empty; run superposition_recovery first.")
    widths = sorted(df.width.unique()) if "width" in df.columns else [1.0]
    if 1.0 not in widths:
        raise ValueError(f"the superposition frame has no runs at width 1 (as wide as the truth); its widths are {widths}.")

    full = df[df.width == 1.0] if "width" in df.columns else df
    by_ratio, holding, converged = _per_ratio(full, "mcc")
    flat = {f"{key}_r{r}": value for r, v in by_ratio.items() for key, value in v.items()}
    values = dict(ratios=len(by_ratio), ratios_holding=holding, **by_ratio[max(by_ratio, key=int)], **flat)
    if len(widths) > 1:
        w = widths[0]
        narrow, n_holding, n_converged = _per_ratio(df[df.width == w], "mcc_matched")
        converged &= n_converged
        at_end = df[(df.width == w) & (df.step == df.step.max())]
        spread = {}
        for r in narrow:
            g = at_end[at_end.ratio == int(r)]
            spread[f"mp_fvu_max_n{r}"] = float(g[g.method == "MP-SAE"].fvu.max())
            spread[f"topk_fvu_min_n{r}"] = float(g[g.method == "TopK"].fvu.min())
        values.update(narrow_width=float(w), narrow_ratios_holding=n_holding,
                      **{f"{key}_n{r}": value for r, v in narrow.items() for key, value in v.items()}, **spread)
    return dict(values, converged=bool(converged))


def noisy_superposition_claim_values(df: pd.DataFrame) -> dict:
    """The values ``claims`` rule ``mp.synth.noisy_superposition`` reads, from
    :func:`noisy_superposition_recovery`.

    For every noise level nu > 0 and ratio r, at the end of training (means over seeds):
    ``mp_fvu_nu<nu>_r<r>``, ``topk_fvu_...`` (held-out FVU on the noisy rows), ``mp_mcc_...``,
    ``topk_mcc_...`` (decoder MCC over the matched pairs, SynthSAEBench's reading) and
    ``mp_fvu_signal_...``, ``topk_fvu_signal_...`` (FVU against the clean rows); ``cells`` and
    ``cells_holding``, the number of (nu, r) and of those where MP-SAE's FVU is below TopK's while
    its MCC is more than 0.02 below (the rule of ``mp.synth.reconstruction_not_recovery``);
    ``noise_levels``, ``width``; the seeds' spread of the FVU per cell: ``mp_fvu_max_...`` and
    ``topk_fvu_min_...`` (MP-SAE's worst seed, TopK's best) and ``seeds_fvu_below_...`` of
    ``seeds_...`` (seeds where MP-SAE's FVU is below TopK's, paired by seed: the same data);
    ``clean_holding`` and ``ratios``, the same count at noise 0 when
    the frame has it. ``converged``: every noisy run's MCC moved by at most 0.03 and its FVU by at
    most 10% from half-way to the end (:func:`recovery_claim_values`)."""
    if df.empty or "noise" not in df.columns:
        raise ValueError("the frame is not from noisy_superposition_recovery (empty or without a 'noise' column).")
    levels = sorted(v for v in df.noise.unique() if v > 0)
    if not levels:
        raise ValueError("the noisy superposition frame has no noise level > 0.")
    widths = sorted(df.width.unique())
    if len(widths) != 1:
        raise ValueError(f"the noisy superposition frame mixes SAE widths {widths}; it reads one width.")
    values, holding, converged = {}, 0, True
    for nu in levels:
        at_nu = df[df.noise == nu]
        by_ratio, ok, settled = _per_ratio(at_nu, "mcc_matched")
        holding, converged = holding + ok, converged and settled
        end = at_nu[at_nu.step == at_nu.step.max()]
        for r, vals in by_ratio.items():
            at = end[end.ratio == int(r)]
            signal = at.groupby("method").fvu_signal.mean()
            paired = at.pivot_table(index="seed", columns="method", values="fvu")  # same data and seed for both methods
            tag = f"nu{nu:g}_r{r}"
            values.update({f"{key}_{tag}": value for key, value in vals.items()},
                          **{f"mp_fvu_signal_{tag}": float(signal["MP-SAE"]), f"topk_fvu_signal_{tag}": float(signal["TopK"]),
                             f"mp_fvu_max_{tag}": float(paired["MP-SAE"].max()), f"topk_fvu_min_{tag}": float(paired["TopK"].min()),
                             f"seeds_fvu_below_{tag}": int((paired["MP-SAE"] < paired["TopK"]).sum()), f"seeds_{tag}": len(paired)})
    values.update(noise_levels=len(levels), cells=len(levels) * df.ratio.nunique(), cells_holding=int(holding), width=float(widths[0]))
    clean = df[df.noise == 0]
    if not clean.empty:
        values.update(ratios=int(clean.ratio.nunique()), clean_holding=_per_ratio(clean, "mcc_matched")[1])
    return dict(values, converged=bool(converged))


def noisy_superposition_conditions(profile: Profile, df: pd.DataFrame) -> str:
    """The conditions notebook 05 records with ``mp.synth.noisy_superposition`` (one place, so a
    verdict recorded outside the notebook at the same profile carries the same words)."""
    S = profile.mp
    w = min(S.superposition_widths)
    return (f"profile {profile.name}: the Zipf data of mp.synth.zipf_superposition (d = {S.d}, n/d = "
            f"{', '.join(map(str, S.superposition_ratios))}) at SAE width {w:g} n (k = {', '.join(str(k) for k in sorted(df.k.unique()))}), "
            f"{S.steps} steps, seeds {list(profile.seeds)}; each unit-norm row plus Gaussian noise of covariance (nu^2 / d) I at nu = "
            f"{', '.join(f'{v:g}' for v in S.superposition_noise)} (ours: SynthSAEBench's data carry no additive noise); TopK, not BatchTopK")
