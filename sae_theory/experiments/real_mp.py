"""MP-SAE's natural-data checks on a real transformer (docs/papers.md#mp-sae-natural-data; the
paper's Figs 5-8 and 17): ``notebooks/09_mp_real_network.ipynb``.

Data: the activations of a transformer (:mod:`sae_theory.data.activations`; ``profile.real``
names the model, the place and the layer, with a fallback model when the first one's package is
not installed), one row per token. The last ``eval_tokens`` tokens of the extraction (later
documents of the corpus than every training token) are held out; the SAEs train on the tokens
before them, in random epochs over a tensor in memory, so that every batch draws uniformly from
all training tokens (:class:`~sae_theory.data.ActivationShards` with ``held_out_tokens`` streams the
same training tokens in bounded memory, but each batch from one shard's documents; at the ``full``
profile the training tokens take about 2.3 GB: 10^6 x 576 in float32). Every SAE carries MP-SAE's input
normalisation (``ActivationCache.normalisation("mp")``: every coordinate standardised with the
population mean and standard deviation of the extraction, App. B.5) and every metric is read in
those standardised units.

The methods (labels of :data:`METHODS`), one SAE per sparsity level k of ``profile.real.ks``, all
of width p = ``expansion`` x d:

* ``"MP-SAE"``: :class:`~sae_theory.models.MPSAE` with k pursuit steps (the paper's defaults:
  relu selection, unit-norm atoms, no pre-bias);
* ``"TopK"``: :class:`~sae_theory.models.TopKSAE` with k;
* ``"BatchTopK"``: :class:`~sae_theory.models.BatchTopKSAE` with k (inference: its learned
  threshold);
* ``"ReLU"`` (decoder-norm-weighted L1) and ``"JumpReLU"`` (L0 penalty, straight-through
  estimator), whose coefficients a :class:`~sae_theory.training.SparsityController` steers toward
  a mean L0 of k (rule ``"log-proportional"``, gain :data:`CONTROLLER_GAIN`, from
  :data:`CONTROLLER_START`), so that all five sit at comparable L0; JumpReLU's estimator bandwidth is
  scaled to the standardised inputs (:data:`JUMPRELU_CONFIG`) and its threshold starts where it
  gives L0 = 3k on the initial pre-activations (:func:`jumprelu_start`).

Training: AdamW at a constant learning rate ``profile.real.lr``, betas (0.9, 0.95), weight decay
1e-4, gradient-norm clip 1 (the paper's language runs, App. B.5, which use lr 1e-3 over about 40K
steps of 5,000 tokens; our runs are far shorter), ``steps`` steps of ``batch_size`` tokens. Runs go
through the run cache (:func:`~sae_theory.experiments.cache.train_cached`), keyed by the method's
spec and by the data: the cache manifest's request, the weights' sha256, the token count and the
split.

Readings, on the held-out tokens:

* :func:`frontier` (Fig 5): R^2 = 1 - sum ||x - x_hat||^2 / sum ||x - m||^2 with m the **global
  scalar** mean of x (docs/papers.md#mp-sae-natural-data: our reading of the paper's R^2), FVU
  (the per-coordinate mean), L0, the latents silent on every held-out token, and whether the
  training loss settled;
* :func:`inference_sweep` (Figs 6 and 8): error and effective rank of the codes against the
  inference k: k pursuit steps (MP-SAE, ``encode(x, k=k)``), the top k pre-activations (TopK), the
  k largest of its own codes (BatchTopK, ReLU, JumpReLU; as ``experiments.mp.inference_codes``);
* :func:`babel_scores` (Fig 7) and :func:`gram_histogram` (Fig 17): Babel of the whole dictionary
  and of the atoms each input co-activates, and the off-diagonal cosines of the atoms;
* :func:`training_curves`: loss and batch L0 against the step.

:data:`ELEUTHER_SMOLLM2_FVU` quotes EleutherAI's SmolLM2 FVU table (docs/papers.md#mp-sae-replications):
another model and scale, shown beside ours, never compared as equals.
"""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._checks import check_int
from ..data.activations import PACKAGED_MODELS, ActivationCache, ActivationRequest, extract_activations, open_cache
from ..metrics import babel_coactive, effective_rank, fvu as _fvu, plateaued
from ..models.base import SAE
from ..profiles import Profile, RealDataScale, RealScale
from .cache import CachedRun, train_cached
from .specs import HookSpec, MethodSpec

__all__ = ["CONTROLLER_GAIN", "CONTROLLER_START", "ELEUTHER_SMOLLM2_FVU", "JUMPRELU_CONFIG", "JUMPRELU_START_L0_MULTIPLE", "JUMPRELU_START_ROWS", "ELEUTHER_SETUP", "METHODS", "OPTIMIZER", "activation_cache", "data_label", "scale_cache",
           "activation_request", "babel_scores", "data_key", "eleuther_table", "frontier", "frontier_margins", "gram_histogram", "inference_codes",
           "READING_LARGEST", "READING_STEPS", "READING_TOPK", "inference_ks", "inference_over_training", "inference_sweep", "jumprelu_start", "method_spec", "r2_score", "resolve_model", "scale_gap", "snapshot_steps", "split", "trained", "training_curves"]

METHODS = ("MP-SAE", "TopK", "BatchTopK", "ReLU", "JumpReLU")

#: The optimiser of every run (the paper's language runs, App. B.5, but for the learning rate,
#: which is the scale's).
OPTIMIZER = dict(optimizer="adamw", betas=(0.9, 0.95), weight_decay=1e-4, grad_clip=1.0)

#: The controllers' starting coefficients (ours: the coefficient at which a run of the quick scale
#: starts near its target L0) and their gain (a coefficient can move by a factor e^(gain) a step).
CONTROLLER_START = {"ReLU": 2.0, "JumpReLU": 1.0}
CONTROLLER_GAIN = 0.03
#: JumpReLU's straight-through bandwidth in the standardised units (ours; the JumpReLU paper's
#: 0.001 suits inputs of about unit norm, these have E||x||^2 = d). Its initial threshold is
#: :func:`jumprelu_start`: from the paper's 0.001 the log-threshold, which Adam moves by about lr
#: a step, cannot reach the pre-activations' scale within the quick profile's steps, and the L0
#: penalty moves L0 only through the threshold.
JUMPRELU_CONFIG = dict(bandwidth=0.1)
#: Training tokens on which :func:`jumprelu_start` reads the initial pre-activations.
JUMPRELU_START_ROWS = 4096
#: :func:`jumprelu_start` sets the threshold that gives L0 = this multiple of k at initialisation:
#: the L0 penalty raises the threshold quickly but nothing lowers it quickly, and the first steps
#: of training cut L0 by 2-3x (measured at the quick scale within 10 steps: from 2k to 0.8k at
#: k = 8, 0.6k at k = 32), so the start errs on the high side and the controller brings it down.
JUMPRELU_START_L0_MULTIPLE = 3.0

#: EleutherAI's FVU of TopK and MP SAEs on SmolLM2-135M, residual stream of layer 10, expansion
#: 64 (Shabalin & Paulo, July 2025, blog post "Matching pursuit SAEs"; docs/papers.md#mp-sae-replications).
#: Another model, scale and training recipe than ours: context, not a reference value.
ELEUTHER_SMOLLM2_FVU = (
    dict(k=16, method="TopK", fvu=0.115), dict(k=16, method="MP-SAE", fvu=0.165),
    dict(k=32, method="TopK", fvu=0.088), dict(k=32, method="MP-SAE", fvu=0.119),
    dict(k=64, method="TopK", fvu=0.069), dict(k=64, method="MP-SAE", fvu=0.071),
    dict(k=128, method="TopK", fvu=0.051), dict(k=128, method="MP-SAE", fvu=0.042),
)
ELEUTHER_SOURCE = ("EleutherAI (Shabalin & Paulo, July 2025): SmolLM2-135M, residual stream layer 10, expansion 64, "
                   "untied MP; FVU quoted from their blog post")


#: What EleutherAI's table was trained on, as far as our sources state it (docs/papers.md#mp-sae-replications;
#: the blog's text, EXACT): SmolLM2-135M (d = 576), width 64 d, batches of 2^16 tokens of Adam at 1e-3; the
#: number of steps (so of tokens) is not stated (``None``).
ELEUTHER_SETUP = dict(model="SmolLM2-135M", layer=10, place="resid_post", d=576, expansion=64, batch_tokens=2**16, steps=None)


def scale_gap(scale: RealScale, d: int, train_tokens: int) -> str:
    """One sentence on how our run differs in scale from EleutherAI's (:data:`ELEUTHER_SETUP`):
    width, batch, tokens seen, with ``d`` and ``train_tokens`` those of our extraction."""
    E = ELEUTHER_SETUP
    seen = scale.steps * scale.batch_size
    theirs = E["d"] * E["expansion"]
    ours = d * scale.expansion
    return (f"EleutherAI: p = {E['expansion']} x {E['d']} = {theirs:,} latents, batches of {E['batch_tokens']:,} tokens (the number of "
            f"steps, so of tokens seen, is not stated in our sources); ours: p = {scale.expansion} x {d} = {ours:,} latents "
            f"({ours / theirs:.2g}x their width), {scale.steps:,} steps of {scale.batch_size:,} tokens = {seen:,} tokens seen "
            f"({seen / E['batch_tokens']:.2g} of their batches) over {train_tokens:,} distinct training tokens")


def eleuther_table() -> pd.DataFrame:
    """:data:`ELEUTHER_SMOLLM2_FVU` as a frame (``k, method, fvu, source``)."""
    return pd.DataFrame(ELEUTHER_SMOLLM2_FVU).assign(source=ELEUTHER_SOURCE)


def _check_methods(methods) -> tuple[str, ...]:
    methods = tuple(methods)
    if not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods!r}.")
    return methods


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def resolve_model(scale: RealDataScale) -> tuple[str, int, str]:
    """``(model, layer, note)``: the scale's model when its package is installed (or it is not a
    packaged model), else its fallback, with ``note`` saying why (empty when the first choice is
    used). With ``scale.activations`` (supplied activations): the model and layer its manifest
    names, and a note saying where they come from.

    Raises
    ------
    ModuleNotFoundError
        If the model's package is missing and the scale has no fallback.
    """
    if scale.activations:
        request = open_cache(scale.activations).manifest["request"]
        return (str(request["model"]), int(request["layer"]),
                f"supplied activations from {scale.activations} (not extracted here; the scale's model, layer, place and corpus are not used)")
    package = PACKAGED_MODELS.get(scale.model)
    if package is None or importlib.util.find_spec(package.replace("-", "_")) is not None:
        return scale.model, scale.layer, ""
    if not scale.fallback_model:
        raise ModuleNotFoundError(f"the real-network study needs the model {scale.model!r} from the package {package} "
                                  f"(pip install {package}), and its scale names no fallback.")
    return (scale.fallback_model, scale.fallback_layer,
            f"{scale.model} (layer {scale.layer}) needs the package {package}, which is not installed: "
            f"{scale.fallback_model} layer {scale.fallback_layer} instead")


def data_label(scale: RealDataScale) -> str:
    """How figures and verdicts name the data: ``"<model> layer <l> (<place>)"`` for an
    extraction, ``"<model> (supplied activations)"`` for ``scale.activations``."""
    model, layer, _ = resolve_model(scale)
    return f"{model} (supplied activations)" if scale.activations else f"{model} layer {layer} ({scale.place})"


def activation_request(scale: RealDataScale) -> ActivationRequest:
    """The extraction the scale asks for (after :func:`resolve_model`)."""
    if scale.activations:
        raise ValueError(f"the scale supplies its activations ({scale.activations}); there is nothing to extract: "
                         "use activation_cache(profile) or open_cache(folder).")
    model, layer, _ = resolve_model(scale)
    return ActivationRequest(model=model, place=scale.place, layer=layer, max_tokens=scale.tokens, corpus=scale.corpus)


def scale_cache(scale: RealDataScale, *, progress: bool = False) -> ActivationCache:
    """The activations of ``scale``: ``scale.activations`` opened when set (a finished cache), else
    the extraction of :func:`activation_request`, made on first use (minutes on a CPU), then opened."""
    if scale.activations:
        return open_cache(scale.activations)
    return extract_activations(activation_request(scale), progress=progress)


def activation_cache(profile: Profile, *, progress: bool = False) -> ActivationCache:
    """The profile's activation cache (:func:`scale_cache` of ``profile.real``)."""
    return scale_cache(profile.real, progress=progress)


@functools.lru_cache(maxsize=1)  # the runs of one study share one split; a full-scale cache is GBs
def _rows(folder: str, weights_sha: str, tokens: int) -> Tensor:
    from safetensors.torch import load_file

    cache = open_cache(folder)
    if cache.manifest["weights_sha256"] != weights_sha or cache.tokens != tokens:
        raise ValueError(f"{folder} changed while in use; open it again.")
    return torch.cat([load_file(str(cache.folder / s["file"]))["activations"].float() for s in cache.manifest["shards"]])


def split(cache: ActivationCache, eval_tokens: int) -> tuple[Tensor, Tensor]:
    """``(train, held_out)``: the raw activations (float32) of the tokens before the last
    ``eval_tokens``, and of those last tokens (later documents of the corpus).

    Raises
    ------
    ValueError
        If ``eval_tokens`` is not below half the cache's tokens.
    """
    n = cache.tokens
    eval_tokens = check_int("eval_tokens (at most half of the cache's tokens)", eval_tokens, minimum=1, maximum=max(1, n // 2))
    X = _rows(str(cache.folder), cache.manifest["weights_sha256"], n)
    return X[: n - eval_tokens], X[n - eval_tokens:]


def data_key(cache: ActivationCache, eval_tokens: int) -> dict:
    """What identifies a run's training data: the cache's request and weights, its token count and
    the split."""
    m = cache.manifest
    return dict(source="activations", request=m["request"], weights_sha256=m["weights_sha256"], tokens=cache.tokens,
                held_out=f"last {eval_tokens} tokens", train_rows=cache.tokens - eval_tokens)


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def method_spec(method: str, k: int, initial_threshold: float | None = None) -> MethodSpec:
    """The spec of ``method`` at sparsity level ``k`` (module docstring); JumpReLU needs its
    ``initial_threshold`` (:func:`jumprelu_start`)."""
    _check_methods((method,))
    if method in ("ReLU", "JumpReLU"):
        attribute = "l1_coefficient" if method == "ReLU" else "l0_coefficient"
        start = CONTROLLER_START[method]
        controller = HookSpec.controller(target_l0=float(k), coefficient=start, gain=CONTROLLER_GAIN, rule="log-proportional",
                                         attribute=attribute)
        extra = {}
        if method == "JumpReLU":
            if initial_threshold is None:
                raise ValueError("JumpReLU's spec needs initial_threshold (real_mp.jumprelu_start).")
            extra = dict(JUMPRELU_CONFIG, initial_threshold=float(initial_threshold))
        return MethodSpec.make(method, method, hooks=[controller], **{attribute: start}, **extra)
    if method == "BatchTopK":
        return MethodSpec.make(method, method, k=float(k))
    return MethodSpec.make(method, method, k=int(k))


def jumprelu_start(k: int, profile: Profile, cache: ActivationCache) -> float:
    """JumpReLU's initial threshold at sparsity level ``k``: the (1 - m k/p) quantile of its
    initial pre-activations (the run's seed, standardised inputs; m =
    :data:`JUMPRELU_START_L0_MULTIPLE`) on :data:`JUMPRELU_START_ROWS` tokens spread evenly over
    the training tokens, so that it starts at L0 = m k; 4 significant digits (it is part of the
    run's key)."""
    S = profile.real
    p = S.expansion * cache.d
    sae, _ = MethodSpec.make("JumpReLU", "JumpReLU").build(d=cache.d, n_latents=p, seed=profile.seeds[0] + 1, device=profile.device,
                                                           dtype=profile.dtype)
    sae.set_input_norm(**cache.normalisation("mp"))
    train_x = split(cache, S.eval_tokens)[0]
    x = train_x[:: max(1, train_x.shape[0] // JUMPRELU_START_ROWS)][:JUMPRELU_START_ROWS].to(device=profile.device, dtype=profile.dtype)
    with torch.no_grad():
        pre = sae.pre_activations(x).flatten()
    n = pre.numel()
    value = float(pre.kthvalue(max(1, min(n, n - round(n * JUMPRELU_START_L0_MULTIPLE * k / p)))).values)
    return float(f"{max(value, 1e-3):.4g}")


def trained(method: str, k: int, profile: Profile, cache: ActivationCache) -> CachedRun:
    """The run of ``method`` at sparsity level ``k`` on ``cache`` (trained once, then loaded from
    the run cache). ``summary`` holds ``train_loss``, ``train_batch_l0`` and ``coefficient`` (the
    controller's final coefficient; NaN without one)."""
    S = profile.real
    seed = profile.seeds[0]

    def summarize(sae, hist, hooks) -> dict:
        return dict(train_loss=float(hist.last("loss")), train_batch_l0=float(hist.last("l0")),
                    coefficient=float(hooks[0].coefficient) if hooks else float("nan"))

    run = dict(steps=S.steps, batch_size=S.batch_size, lr=S.lr, seed=seed, progress=False, log_every=max(1, S.steps // 50),
               input_norm="model", **OPTIMIZER)
    theta = jumprelu_start(k, profile, cache) if method == "JumpReLU" else None
    return train_cached(method_spec(method, k, theta), lambda: split(cache, S.eval_tokens)[0], data_key=data_key(cache, S.eval_tokens),
                        d=cache.d, n_latents=S.expansion * cache.d, seed=seed + 1, run=run, device=profile.device, dtype=profile.dtype,
                        summarize=summarize, input_norm=cache.normalisation("mp"), snapshots=snapshot_steps(S.steps))


def snapshot_steps(steps: int) -> tuple[int, ...]:
    """The steps at which every run keeps its model (a quarter, half and three quarters of the way),
    for the inference sweep over training (Fig 20's reading, :func:`inference_over_training`)."""
    return tuple(sorted({s for s in (steps // 4, steps // 2, 3 * steps // 4) if 1 <= s < steps}))


def _runs(profile: Profile, cache: ActivationCache | None, methods, ks, progress: bool, desc: str):
    cache = activation_cache(profile) if cache is None else cache
    jobs = [(m, k) for k in ks for m in methods]
    for method, k in tqdm(jobs, desc=desc, disable=not progress):
        yield method, k, trained(method, k, profile, cache), cache


def _held_out(sae: SAE, cache: ActivationCache, profile: Profile, rows: int | None = None) -> Tensor:
    x = split(cache, profile.real.eval_tokens)[1]
    x = x if rows is None else x[:rows]
    with torch.no_grad():
        return sae.normalize_input(x.to(device=profile.device, dtype=profile.dtype))


# --------------------------------------------------------------------------------------------
# readings
# --------------------------------------------------------------------------------------------


def r2_score(x: Tensor, x_hat: Tensor) -> float:
    """R^2 = 1 - sum (x - x_hat)^2 / sum (x - m)^2, m the **global scalar** mean of x (every
    entry of every row; our reading of the paper's R^2, docs/papers.md#mp-sae-natural-data).
    float64."""
    x64, e64 = x.to(torch.float64), (x_hat - x).to(torch.float64)
    den = float((x64 - x64.mean()).pow(2).sum())
    if not den > 0:
        raise ValueError("R^2 is undefined for constant x (every entry equal).")
    return 1.0 - float(e64.pow(2).sum()) / den


def _nmse(x: Tensor, x_hat: Tensor) -> float:
    x64, e64 = x.to(torch.float64), (x_hat - x).to(torch.float64)
    return float((e64.pow(2).sum(1) / x64.pow(2).sum(1).clamp_min(1e-300)).mean())


@torch.no_grad()
def inference_codes(method: str, sae: SAE, x: Tensor, k: int) -> Tensor:
    """Codes of ``sae`` (trained as ``method``) on the normalised ``x`` at inference k (module
    docstring): k pursuit steps (MP-SAE), the top k pre-activations (TopK), the k largest of its
    own codes (BatchTopK, ReLU, JumpReLU)."""
    _check_methods((method,))
    with sae.prepared_inputs():
        if method in ("MP-SAE", "TopK"):
            return sae.encode(x, k=k)
        codes = sae.encode(x)
    k = min(int(k), codes.shape[-1])
    top = codes.topk(k, dim=-1)
    return torch.zeros_like(codes).scatter_(-1, top.indices, top.values)


def _mp_prefix_codes(sae, x: Tensor, k_max: int):
    """MP-SAE's codes at k = 1 .. k_max from one pursuit of k_max steps (its first k steps are the
    k-step pursuit; experiments.mp checks it)."""
    with sae.prepared_inputs():
        out = sae.pursuit(x, k=k_max)
    codes = torch.zeros_like(out.codes)
    for t in range(k_max):
        codes.scatter_add_(1, out.indices[:, t : t + 1].clamp(min=0), out.alphas[:, t : t + 1])
        yield codes


def _codes_at(method: str, sae: SAE, x: Tensor, ks: list[int]):
    """``(k, codes)`` at every inference k of the increasing ``ks`` (:func:`inference_codes`;
    MP-SAE's from one pursuit of ``max(ks)`` steps, read at each prefix)."""
    prefix = _mp_prefix_codes(sae, x, ks[-1]) if method == "MP-SAE" else None
    for j in range(1, ks[-1] + 1):
        codes = next(prefix) if prefix is not None else None
        if j in ks:
            yield j, codes if codes is not None else inference_codes(method, sae, x, j)


def _largest_latents(code: Tensor, ks: list[int]):
    """``(k, codes)`` at every k of ``ks``: the k largest-magnitude latents of ``code`` (Fig 20's
    reading of MP-SAE, :func:`inference_over_training`, on the code of one pursuit of ``max(ks)``
    steps: at ``max(ks)`` that is the whole code)."""
    for j in ks:
        top = code.abs().topk(min(int(j), code.shape[-1]), dim=-1).indices
        yield j, torch.zeros_like(code).scatter_(-1, top, code.gather(-1, top))


#: The readings of the inference k (column ``reading`` of :func:`inference_over_training`): MP-SAE is
#: read both ways, the other methods one way each (:func:`inference_codes`).
READING_STEPS = "k pursuit steps"
READING_LARGEST = "k largest latents"
READING_TOPK = "top k pre-activations"


def _decode(sae: SAE, codes: Tensor) -> Tensor:
    with torch.no_grad(), sae.prepared_inputs():
        return sae.decode(codes)


def _l0(codes: Tensor) -> float:
    return float((codes != 0).sum(1).to(torch.float64).mean())


def _settled(history) -> bool:
    """The reconstruction error (``mse``; the loss without the penalty a controller keeps moving)
    settled."""
    losses = [r.get("mse", r["loss"]) for r in history.rows if "loss" in r]
    return len(losses) >= 10 and plateaued(losses)


def frontier(profile: Profile, *, cache: ActivationCache | None = None, methods=METHODS, progress: bool = True) -> pd.DataFrame:
    """Fig 5: R^2 against L0, one SAE per method and sparsity level, on the held-out tokens.

    Returns
    -------
    DataFrame with ``method, k, l0`` (mean active latents per held-out token at the training
    setting), ``r2`` (global-mean R^2, :func:`r2_score`), ``fvu`` (per-coordinate mean),
    ``nmse`` (mean ||x - x_hat||^2 / ||x||^2), ``dead_fraction`` (latents silent on every held-out
    token), ``train_loss``, ``train_batch_l0``, ``coefficient`` (the controller's final one; NaN
    otherwise), ``settled`` (the training batch's reconstruction error settled,
    :func:`~sae_theory.metrics.plateaued`),
    ``steps``, ``seconds`` (training time of the run that filled the cache).
    """
    methods = _check_methods(methods)
    rows = []
    for method, k, run, cache in _runs(profile, cache, methods, profile.real.ks, progress, "frontier"):
        sae = run.model
        x = _held_out(sae, cache, profile)
        with torch.no_grad(), sae.prepared_inputs():
            codes = sae.encode(x)
        x_hat = _decode(sae, codes)
        rows.append(dict(method=method, k=k, l0=_l0(codes), r2=r2_score(x, x_hat), fvu=_fvu(x, x_hat), nmse=_nmse(x, x_hat),
                         dead_fraction=float(((codes != 0).sum(0) == 0).to(torch.float64).mean()),
                         train_loss=run.summary.get("train_loss", math.nan), train_batch_l0=run.summary.get("train_batch_l0", math.nan),
                         coefficient=run.summary.get("coefficient", math.nan), settled=_settled(run.history), steps=run.steps,
                         seconds=run.seconds))
    return pd.DataFrame(rows)


def frontier_margins(df: pd.DataFrame, value: str = "r2", mp_claims: str = "higher", reference: str = "MP-SAE") -> pd.DataFrame:
    """MP-SAE's ``value`` against every other method's at comparable L0, per sparsity level, from
    a frame with ``method, k, l0`` and ``value`` (one row per run: :func:`frontier`, or the
    per-run rows of :func:`babel_scores` with ``value="babel_coactive", mp_claims="lower"``).

    Each other method's value is read at MP-SAE's L0: interpolated linearly in log L0 between its
    runs when MP-SAE's L0 lies inside their L0 range (``how = "interpolated"``). Outside the range
    the nearest run is used only when the comparison then leans against MP-SAE's claim (``"at a
    larger L0"`` for R^2, which grows with L0, when MP-SAE's L0 is below the range; ``"at a smaller
    L0"`` for the co-active Babel, which also grows with L0, when it is above); otherwise no value
    (``"none"``).

    Returns
    -------
    DataFrame with ``k, method, mp_l0, mp_value, value_at_mp_l0, margin`` (MP-SAE's advantage in
    the direction it claims: its value minus the other's when ``mp_claims="higher"``, the other's
    minus its own when ``"lower"``; NaN without a comparable value), ``how``.
    """
    if mp_claims not in ("higher", "lower"):
        raise ValueError(f"mp_claims must be 'higher' or 'lower', got {mp_claims!r}.")
    if reference not in set(df["method"]):
        raise ValueError(f"the frame has no {reference!r} runs; methods: {sorted(set(df['method']))}.")
    ref = df[df["method"] == reference].sort_values("k")
    sign = 1.0 if mp_claims == "higher" else -1.0
    rows = []
    for other in [m for m in dict.fromkeys(df["method"]) if m != reference]:
        g = df[df["method"] == other].sort_values("l0")
        lx, ry = np.log(g["l0"].to_numpy(float)), g[value].to_numpy(float)
        for _, r in ref.iterrows():
            at = math.log(r["l0"]) if r["l0"] > 0 else -math.inf
            if lx[0] <= at <= lx[-1]:
                v, how = float(np.interp(at, lx, ry)), "interpolated"
            elif at < lx[0] and mp_claims == "higher":
                v, how = float(ry[0]), "at a larger L0"
            elif at > lx[-1] and mp_claims == "lower":
                v, how = float(ry[-1]), "at a smaller L0"
            else:
                v, how = math.nan, "none"
            rows.append(dict(k=r["k"], method=other, mp_l0=r["l0"], mp_value=r[value], value_at_mp_l0=v,
                             margin=sign * (r[value] - v), how=how))
    return pd.DataFrame(rows)


def inference_ks(train_k: int, multiple: int) -> list[int]:
    """The inference k read for a run of training k: 1, 2, 4, ... (doublings) and k/2, 3k/2, ...
    (half steps of k) up to ``multiple`` x k, with k itself and k + 1."""
    top = multiple * train_k
    ks = {1, train_k, train_k + 1, top}
    ks |= {2 ** i for i in range(int(math.log2(top)) + 1)}
    ks |= {max(1, round(train_k * h / 2)) for h in range(1, 2 * multiple + 1)}
    return sorted(k for k in ks if 1 <= k <= top)


def inference_sweep(profile: Profile, *, cache: ActivationCache | None = None, methods=METHODS, rank_k: int | None = None,
                    progress: bool = True) -> pd.DataFrame:
    """Figs 6 and 8: error and effective rank of the codes against the inference k.

    Every run is read at :func:`inference_ks` of its training k (up to
    ``inference_k_max_multiple`` x k). The effective rank (exp of the entropy of the eigenvalues of
    Z^T Z, :func:`~sae_theory.metrics.effective_rank`) costs an eigendecomposition of a p x p
    matrix, so it is read for the runs of training k ``rank_k`` only (default: the middle of
    ``ks``), at the doublings 1, 2, 4, ... and at k; NaN elsewhere.

    Returns
    -------
    DataFrame with ``method, train_k, inference_k, l0, r2, nmse, effective_rank``.
    """
    methods = _check_methods(methods)
    S = profile.real
    rank_k = S.ks[len(S.ks) // 2] if rank_k is None else rank_k
    rows = []
    for method, k, run, cache in _runs(profile, cache, methods, S.ks, progress, "inference k"):
        sae = run.model
        x = _held_out(sae, cache, profile)
        ks = inference_ks(k, S.inference_k_max_multiple)
        rank_at = {j for j in ks if j & (j - 1) == 0 or j == k} if k == rank_k else set()
        for j, codes in _codes_at(method, sae, x, ks):
            x_hat = _decode(sae, codes)
            rows.append(dict(method=method, train_k=k, inference_k=j, l0=_l0(codes), r2=r2_score(x, x_hat), nmse=_nmse(x, x_hat),
                             effective_rank=effective_rank(codes) if j in rank_at else math.nan))
    return pd.DataFrame(rows)


def inference_over_training(profile: Profile, *, cache: ActivationCache | None = None, methods=METHODS, train_k: int | None = None,
                            progress: bool = True) -> pd.DataFrame:
    """Fig 20's reading: the normalised error against the inference k, at several points of
    training (:func:`snapshot_steps` and the end), for the runs of training k ``train_k`` (default:
    the middle of ``ks``). The paper's point: MP-SAE's error keeps falling beyond the training k
    only after enough training.

    The paper's Fig 20 keeps the **k largest-magnitude latents** of the code (docs/papers.md). For
    MP-SAE the code has to reach beyond the training k for that to mean anything; which code the
    paper takes is not stated, so we take one pursuit of the largest inference k (INFERRED) and
    read MP-SAE both ways: ``reading`` ``"k largest latents"`` (that code's k largest, Fig 20's)
    and ``"k pursuit steps"`` (:func:`inference_sweep`'s, Fig 8's); at the largest k the two are the
    same code. TopK: ``"top k pre-activations"``; BatchTopK, ReLU, JumpReLU: ``"k largest latents"``
    of their own codes (:func:`inference_codes`).

    Returns
    -------
    DataFrame with ``method, reading, train_k, step, inference_k, l0, nmse``.
    """
    methods = _check_methods(methods)
    S = profile.real
    train_k = S.ks[len(S.ks) // 2] if train_k is None else train_k
    if train_k not in S.ks:
        raise ValueError(f"train_k={train_k} is not among the profile's ks {list(S.ks)}.")
    rows = []
    for method, k, run, cache in _runs(profile, cache, methods, (train_k,), progress, "over training"):
        ks = inference_ks(k, S.inference_k_max_multiple)
        for step in (*run.snapshots, run.steps):
            sae = run.at(step)
            x = _held_out(sae, cache, profile)
            reading = {"MP-SAE": READING_STEPS, "TopK": READING_TOPK}.get(method, READING_LARGEST)
            for j, codes in _codes_at(method, sae, x, ks):
                rows.append(dict(method=method, reading=reading, train_k=k, step=step, inference_k=j, l0=_l0(codes),
                                 nmse=_nmse(x, _decode(sae, codes))))
            if method == "MP-SAE":  # the last codes read are the whole code of the pursuit of max(ks) steps: no second pursuit
                for j, top in _largest_latents(codes, ks):
                    rows.append(dict(method=method, reading=READING_LARGEST, train_k=k, step=step, inference_k=j, l0=_l0(top),
                                     nmse=_nmse(x, _decode(sae, top))))
    return pd.DataFrame(rows)


def babel_scores(profile: Profile, *, cache: ActivationCache | None = None, methods=METHODS, babel_r: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                 progress: bool = True) -> pd.DataFrame:
    """Fig 7: Babel of the whole dictionary against that of the atoms each input co-activates.

    For every run: mu_1(r) (Tropp 2004: over atoms, the largest sum of the r largest |cos| with
    the others) of the whole dictionary at r = k and at every r of ``babel_r``, and the co-active
    Babel (mu_1(|S| - 1) of the atoms each of ``babel_rows`` held-out tokens uses, at the training
    setting, averaged; :func:`~sae_theory.metrics.babel_coactive`).

    Returns
    -------
    DataFrame, one row per run and r: ``method, k, l0, babel_coactive, babel_k`` (mu_1(k)),
    ``r, babel`` (mu_1(r)).
    """
    methods = _check_methods(methods)
    S = profile.real
    rows = []
    for method, k, run, cache in _runs(profile, cache, methods, S.ks, progress, "Babel"):
        sae = run.model
        x = _held_out(sae, cache, profile, S.babel_rows)
        with torch.no_grad(), sae.prepared_inputs():
            codes = sae.encode(x)
        D = sae.dictionary.detach()
        curve = _babel_curve(D, sorted({*babel_r, k}))
        co = babel_coactive(D, codes)
        for r, value in curve.items():
            rows.append(dict(method=method, k=k, l0=_l0(codes), babel_coactive=co, babel_k=curve[k], r=r, babel=value))
    return pd.DataFrame(rows)


def _babel_curve(D: Tensor, rs) -> dict[int, float]:
    """mu_1(r) for every r of ``rs`` from one sort of the cosines (equals
    :func:`~sae_theory.metrics.babel` at each r; the test checks it)."""
    U = D.detach().to("cpu", torch.float64)
    U = U / U.norm(dim=1, keepdim=True).clamp_min(1e-300)
    C = (U @ U.T).abs()
    C.fill_diagonal_(-1.0)
    top = C.topk(max(rs), dim=1).values.cumsum(1)
    return {int(r): float(top[:, r - 1].max()) for r in rs}


def gram_histogram(profile: Profile, *, cache: ActivationCache | None = None, methods=METHODS, k: int | None = None,
                   bins: int = 80, progress: bool = True) -> pd.DataFrame:
    """Fig 17: the off-diagonal cosines between the atoms of each method's dictionary at training
    k ``k`` (default: the smallest of ``ks``; the paper's Fig 17 uses k = 5), as a histogram on
    ``bins`` equal bins over [-1, 1].

    Returns
    -------
    DataFrame with ``method, k, bin_left, bin_right, density`` (fraction of the off-diagonal
    pairs in the bin divided by the bin width) and ``std`` (standard deviation of the cosines).
    """
    methods = _check_methods(methods)
    k = min(profile.real.ks) if k is None else k
    edges = np.linspace(-1.0, 1.0, bins + 1)
    rows = []
    for method, k_, run, _ in _runs(profile, cache, methods, (k,), progress, "D D^T"):
        U = run.model.dictionary.detach().to("cpu", torch.float64)
        U = U / U.norm(dim=1, keepdim=True).clamp_min(1e-300)
        C = U @ U.T
        off = C[~torch.eye(C.shape[0], dtype=torch.bool)].numpy()
        counts, _ = np.histogram(off, bins=edges)
        density = counts / counts.sum() / np.diff(edges)
        rows += [dict(method=method, k=k_, bin_left=lo, bin_right=hi, density=v, std=float(off.std()))
                 for lo, hi, v in zip(edges[:-1], edges[1:], density)]
    return pd.DataFrame(rows)


def training_curves(profile: Profile, *, cache: ActivationCache | None = None, methods=METHODS, progress: bool = True) -> pd.DataFrame:
    """The training loss, its reconstruction part and the training batch's L0 against the step,
    every run (its History, every ``steps // 50`` steps).

    Returns
    -------
    DataFrame with ``method, k, step, loss`` (with the penalty of ReLU and JumpReLU), ``mse``
    (the batch's mean ||x - x_hat||^2), ``l0``.
    """
    methods = _check_methods(methods)
    rows = []
    for method, k, run, _ in _runs(profile, cache, methods, profile.real.ks, progress, "curves"):
        rows += [dict(method=method, k=k, step=r["step"], loss=r["loss"], mse=r.get("mse", r["loss"]), l0=r.get("l0", math.nan))
                 for r in run.history.rows]
    return pd.DataFrame(rows)
