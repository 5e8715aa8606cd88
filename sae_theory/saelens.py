"""Export to and import from SAELens's on-disk format.

>>> export_saelens(model, "export/topk")       # export/topk/cfg.json + sae_weights.safetensors
>>> sae = sae_lens.SAE.load_from_disk("export/topk")   # in an environment with SAELens
>>> model = import_saelens("export/topk")       # back: same class, config and encode/decode

A SAELens save folder holds ``cfg.json`` (the config, with an ``architecture`` key) and
``sae_weights.safetensors`` (the inference SAE's state dict). The format written here is the one
``SAE.load_from_disk`` of SAELens 6.54.12 (:data:`SAELENS_VERSION`) reads, checked against that
version's source and loader (``tests/test_saelens.py``, ``benchmarks/bench_saelens_roundtrip.py``).
SAELens's conventions match ours: ``W_enc`` (d_in, d_sae) = (d, M), ``W_dec`` (d_sae, d_in) = (M, d)
with the atoms as rows, ``hidden_pre = (x - b_dec) W_enc + b_enc`` when
``apply_b_dec_to_input`` (always written True), ``x_hat = codes W_dec + b_dec``; nothing
rescales by decoder norms (``rescale_acts_by_decoder_norm`` False).

The model's input normalisation (:attr:`~sae_theory.models.base.SAE.input_norm`, set by training)
goes with it. SAELens sees an input u where our model sees s u:

* ``"none"``: ``normalize_activations = "none"``, s = 1, nothing changes;
* ``"scale"`` (every row times c): SAELens has no run-time constant scale (its
  ``expected_average_only_in`` factor is folded into the weights before saving), so the scale is
  folded in the same way: ``normalize_activations = "none"``, s = c;
* ``"unit"`` (every row to norm 1): ``normalize_activations = "constant_norm_rescale"``, which
  scales each row to norm sqrt(d) on the way in and back on the way out of ``decode``; s = 1/sqrt(d).

The fold: ``W_enc`` times s, ``W_dec`` and ``b_dec`` divided by s, so SAELens's pre-activations and
codes are ours and its ``decode(encode(x))`` is our ``forward(x)`` (the raw units). An MP-SAE keeps
unit atoms (its pursuit needs them): ``b_dec`` and ``residual_threshold`` are divided by s, and its
codes are ours divided by s (:func:`saelens_codes_factor`), with the same support. The tied SAEs'
``threshold``/``b_enc`` need no change. :func:`import_saelens` undoes the fold (to rounding: the
round trip of a normalised model is exact to a few ulps, not bit for bit); a plain SAELens save
with ``constant_norm_rescale`` comes in as a ``"unit"`` model, one with ``expected_average_only_in``
(folded already, identity at inference) as ``"none"``; ``layer_norm`` is refused.

What each SAE becomes (``architecture`` in ``cfg.json``):

=================  ==========================================================================
ours               SAELens
=================  ==========================================================================
ReLUSAE            ``"standard"``: the same four tensors.
TopKSAE            ``"topk"`` with ``k``: the same four tensors.
JumpReLUSAE        ``"jumprelu"``: ``threshold = exp(log_threshold)``.
BatchTopKSAE       ``"jumprelu"`` with ``threshold`` = our scalar inference threshold repeated
                   over the M latents: what SAELens itself saves for its own BatchTopK
                   (``BatchTopKTrainingSAE.process_state_dict_for_saving_inference``), and the
                   same codes as our ``encode(x)`` (``batch=False``): ours keeps ReLU(pre) where
                   it exceeds theta, SAELens keeps ReLU(pre) where pre exceeds theta, the same
                   set for every theta (for theta < 0 both keep every positive entry). The
                   training rule (``encode(x, batch=True)``) has no SAELens inference class.
MatryoshkaSAE      ``"standard"``: its inference architecture (a ReLU SAE). SAELens has no
                   Matryoshka inference class (its ``matryoshka_batchtopk`` is a training class
                   saved as JumpReLU), so the prefixes are not exported: SAELens decodes with
                   all the latents (our ``decode(codes)``, not ``decode(codes, prefix=m)``).
MPSAE              ``"matching_pursuit"``: ``W_dec``, ``b_dec``; ``max_iterations = k``,
                   ``residual_threshold = threshold`` (0, which SAELens reads as off, for None),
                   ``stop_on_duplicate_support = stop_on_repeat``. Exported only with
                   ``selection="relu"`` (SAELens's pursuit selects by ReLU). Two differences
                   remain, each on inputs where it cannot change much: (1) SAELens checks the
                   residual threshold after each step, we before each step, so an input with
                   ``||x - b_dec|| < threshold`` gets one step in SAELens and none with us (every
                   other input stops at the same step); (2) our stop at rounding level
                   (``stop_at_rounding``) has no SAELens counterpart: SAELens goes on past it,
                   adding codes of at most 32 eps ||x - b_dec|| each (an input that is exactly an
                   atom, or a sparse sum of orthonormal atoms).
TiedSAE            by ``activation``: ``"jumprelu_threshold"`` -> ``"jumprelu"`` with ``b_enc`` = 0
                   and ``threshold = -b_enc`` (z = u 1[u > -b] with u = W (x - b_dec); needs every
                   b_enc <= 0, which bias adaptation keeps: with b_m > 0 our neuron outputs
                   negative u in (-b_m, 0], which SAELens's ReLU drops, so that export raises);
                   ``"jumprelu_biased"`` -> ``"jumprelu"`` with ``b_enc`` = b and ``threshold`` =
                   theta; ``"relu"`` -> ``"standard"`` with ``b_enc`` = b; ``"topk"`` -> ``"topk"``
                   with ``b_enc`` = b and ``k``.
TiedTopKSAE        ``"topk"`` with ``b_enc`` = b and ``k``.
TiedReLUSAE        ``"standard"`` with ``b_enc`` = b.
=================  ==========================================================================

The tied SAEs (``TiedSAE``, ``TiedTopKSAE``, ``TiedReLUSAE``) change in two ways, as SAELens's
standard / topk / jumprelu SAEs have separate encoder and decoder weights and no output scale:
``W_enc`` is a copy of ``W^T`` (so a model fine-tuned in SAELens is no longer tied), and the
per-neuron output scale a is folded into the decoder, ``W_dec = diag(a) W`` (rows of norm a_m, not
1). The codes are unchanged; SAELens decodes ``z (diag(a) W)`` where we compute ``(a z) W``: the
same up to rounding.

Everything SAELens has no place for rides in ``cfg.json`` under ``metadata["sae_theory"]``: our
class name and config, a note of what was folded, and the state-dict tensors the SAELens weights do
not determine (the output scale a of the tied SAEs, penalty coefficients, pass counters), written
exactly (floats as ``float.hex``). SAELens keeps unknown metadata keys and ignores them.
:func:`import_saelens` reads that block and rebuilds our model from the SAELens weights plus those
tensors, so a round trip gives the same encode and decode, bit for bit. The SAELens weights decide
wherever the metadata holds nothing (weights fine-tuned in SAELens come through as they are); the
rebuilt model is then exported again and must reproduce the SAELens tensors exactly, so weights
that contradict the metadata (a tied SAE's ``W_dec`` no longer ``diag(a) W`` with ``W = W_enc^T`` and the
stored a, a BatchTopK threshold no longer one value) are refused rather than paired with a stale
output scale.
Without the block (a folder SAELens wrote) the architecture decides the class (:func:`import_saelens`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from ._checks import check_path
from .io import atomic_folder
from .models import (
    MPSAE,
    SAE,
    BatchTopKSAE,
    JumpReLUSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TiedReLUSAE,
    TiedSAE,
    TiedTopKSAE,
    TopKSAE,
)
from .models.registry import get_sae

__all__ = ["CFG", "METADATA_KEY", "SAELENS_VERSION", "SUPPORTED_ARCHITECTURES", "WEIGHTS", "export_saelens", "import_saelens",
           "saelens_codes_factor"]

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
SAELENS_VERSION = "6.54.12"
"""The SAELens version whose loader the written format was checked against (written as the
config's ``metadata.sae_lens_version``: SAELens applies its pre-6.0 config defaults to a config
without one)."""
METADATA_KEY = "sae_theory"
"""Key of our block in the config's ``metadata``."""
SUPPORTED_ARCHITECTURES = ("standard", "topk", "jumprelu", "matching_pursuit")
"""The SAELens architectures that :func:`import_saelens` reads."""
_READ_NORMS = ("none", "expected_average_only_in", "constant_norm_rescale")

_FORMAT = 1
_DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_DTYPES = {**{v: k for k, v in _DTYPE_NAMES.items()}, **{f"torch.{v}": k for k, v in _DTYPE_NAMES.items()}}
#: The SAELens state-dict keys of each architecture (its loader is strict: no more, no fewer).
_KEYS = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "matching_pursuit": ("W_dec", "b_dec"),
}


class _Layout(NamedTuple):
    """One of our SAEs laid out as a SAELens SAE."""

    architecture: str
    fields: dict[str, Any]
    """Architecture-specific config fields (``k``, the pursuit's stopping rules)."""
    tensors: dict[str, Tensor]
    """The SAELens state dict."""
    derived: tuple[str, ...]
    """Our state-dict keys that ``tensors`` determine; the rest travels in the metadata."""
    note: str
    """What changed on the way, for a reader of ``cfg.json``."""


# ---------------------------------------------------------------------------------------------
# our SAEs -> SAELens layouts, and back


def _untied(model) -> dict[str, Tensor]:
    return {"W_enc": model.W_enc, "b_enc": model.b_enc, "W_dec": model.W_dec, "b_dec": model.b_dec}


_UNTIED = ("W_enc", "b_enc", "W_dec", "b_dec")


def _layout_relu(model: ReLUSAE) -> _Layout:
    return _Layout("standard", {}, _untied(model), _UNTIED, "same weights")


def _layout_matryoshka(model: MatryoshkaSAE) -> _Layout:
    return _Layout("standard", {}, _untied(model), _UNTIED,
                   "inference architecture (ReLU SAE); the nested prefixes are not exported: SAELens decodes with all latents")


def _layout_topk(model: TopKSAE) -> _Layout:
    return _Layout("topk", {"k": model.config.k, "rescale_acts_by_decoder_norm": False}, _untied(model), _UNTIED, "same weights")


def _layout_jumprelu(model: JumpReLUSAE) -> _Layout:
    return _Layout("jumprelu", {}, {**_untied(model), "threshold": model.threshold}, (*_UNTIED, "log_threshold"),
                   "threshold = exp(log_threshold)")


def _layout_batchtopk(model: BatchTopKSAE) -> _Layout:
    theta = model.threshold.expand(model.n_latents)
    return _Layout("jumprelu", {}, {**_untied(model), "threshold": theta}, (*_UNTIED, "threshold"),
                   "BatchTopK at inference: JumpReLU with the scalar threshold repeated over the latents, as SAELens saves its "
                   "BatchTopK; the batch training rule is not exported")


def _tied_common(model) -> dict[str, Tensor]:
    W = model.W_dec
    return {"W_enc": W.T, "W_dec": model.output_scale[:, None] * W, "b_dec": model.b_dec}


_TIED_NOTE = "tied weight W: W_enc = W^T (a copy), W_dec = diag(output_scale) W (output scale folded into the decoder)"


def _layout_tied(model: TiedSAE) -> _Layout:
    cfg, b = model.config, model.b_enc
    t = _tied_common(model)
    derived = ("W_dec", "b_enc", "b_dec")
    if cfg.activation == "jumprelu_threshold":
        if bool((b > 0).any()):
            raise ValueError(
                f"cannot export this TiedSAE faithfully: {int((b > 0).sum())} neuron(s) have b_enc > 0 (largest "
                f"{float(b.max()):.3g}); with activation='jumprelu_threshold' such a neuron outputs negative projections u in "
                "(-b, 0], which SAELens's JumpReLU (ReLU(h) 1[h > threshold]) drops. Bias adaptation keeps b_enc <= 0; "
                "clamp b_enc to <= 0 or export with another activation.")
        return _Layout("jumprelu", {}, {**t, "b_enc": torch.zeros_like(b), "threshold": -b}, derived,
                       f"{_TIED_NOTE}; neuron bias b as the JumpReLU threshold -b, b_enc = 0")
    if cfg.activation == "jumprelu_biased":
        return _Layout("jumprelu", {}, {**t, "b_enc": b, "threshold": torch.full_like(b, cfg.theta)}, derived,
                       f"{_TIED_NOTE}; b_enc = neuron bias b, threshold = theta")
    if cfg.activation == "relu":
        return _Layout("standard", {}, {**t, "b_enc": b}, derived, f"{_TIED_NOTE}; b_enc = neuron bias b")
    return _Layout("topk", {"k": cfg.k, "rescale_acts_by_decoder_norm": False}, {**t, "b_enc": b}, derived,
                   f"{_TIED_NOTE}; b_enc = neuron bias b")


def _layout_tied_topk(model: TiedTopKSAE) -> _Layout:
    return _Layout("topk", {"k": model.config.k, "rescale_acts_by_decoder_norm": False}, {**_tied_common(model), "b_enc": model.b_enc},
                   ("W_dec", "b_enc", "b_dec"), f"{_TIED_NOTE}; b_enc = neuron bias b")


def _layout_tied_relu(model: TiedReLUSAE) -> _Layout:
    return _Layout("standard", {}, {**_tied_common(model), "b_enc": model.b_enc}, ("W_dec", "b_enc", "b_dec"),
                   f"{_TIED_NOTE}; b_enc = neuron bias b")


def _layout_mp(model: MPSAE) -> _Layout:
    cfg = model.config
    if cfg.selection != "relu":
        raise ValueError(f"cannot export an MPSAE with selection={cfg.selection!r}: SAELens's matching pursuit selects "
                         "argmax relu(<r, D_j>) with a non-negative coefficient (our selection='relu'); there is no SAELens "
                         "class for the signed (abs) pursuit.")
    fields = {"residual_threshold": 0.0 if cfg.threshold is None else float(cfg.threshold), "max_iterations": cfg.k,
              "stop_on_duplicate_support": cfg.stop_on_repeat}
    note = "max_iterations = k, residual_threshold = threshold (0 = off), stop_on_duplicate_support = stop_on_repeat"
    if cfg.stop_at_rounding:
        note += "; SAELens has no stop at rounding level (stop_at_rounding): it goes on past it with codes of rounding size"
    return _Layout("matching_pursuit", fields, {"W_dec": model.W_dec, "b_dec": model.b_dec}, ("W_dec", "b_dec"), note)


_LAYOUTS: dict[type, Callable[[Any], _Layout]] = {
    ReLUSAE: _layout_relu,
    TopKSAE: _layout_topk,
    BatchTopKSAE: _layout_batchtopk,
    JumpReLUSAE: _layout_jumprelu,
    MatryoshkaSAE: _layout_matryoshka,
    MPSAE: _layout_mp,
    TiedSAE: _layout_tied,
    TiedTopKSAE: _layout_tied_topk,
    TiedReLUSAE: _layout_tied_relu,
}


def _norm_factor(model: SAE) -> tuple[str, float]:
    """SAELens's ``normalize_activations`` for the model's input norm, and the factor s with which
    our model's input is s times SAELens's SAE input u: ``"scale"`` c -> ("none", c) (u = x);
    ``"unit"`` -> ("constant_norm_rescale", 1 / sqrt(d)) (u = sqrt(d) x / ||x||); none -> ("none", 1)."""
    norm = model.input_norm
    if norm["kind"] == "standardize":
        return "none", math.nan  # per coordinate: _layout folds it
    if norm["kind"] == "scale":
        if norm["scale"] is None:
            raise ValueError("this SAE's input norm is 'scale' but its scale is not known (set_input_norm('scale', c)); "
                             "train it or set the scale before exporting.")
        return "none", float(norm["scale"])
    if norm["kind"] == "unit":
        return "constant_norm_rescale", 1.0 / math.sqrt(model.d)
    return "none", 1.0


def _standardize_stats(model: SAE) -> tuple[Tensor, Tensor]:
    """The float64 mean and std of a model with input norm ``"standardize"``."""
    norm = model.input_norm
    return torch.tensor(norm["mean"], dtype=torch.float64), torch.tensor(norm["std"], dtype=torch.float64)


def _layout(model: SAE) -> _Layout:
    """The model's SAELens layout with its input normalisation folded in (module docstring):
    SAELens's input u is our input divided by s (:func:`_norm_factor`), so W_enc -> s W_enc,
    W_dec -> W_dec / s, b_dec -> b_dec / s (the same pre-activations and codes, the
    reconstruction in u's units); for matching pursuit the atoms stay unit and the codes and the
    residual threshold are divided by s instead."""
    layout = _LAYOUTS[type(model)](model)
    _, s = _norm_factor(model)
    if model.input_norm["kind"] == "standardize":
        # ours sees (x - mu) / sigma, SAELens x: W_enc -> W_enc / sigma (rows), W_dec -> W_dec sigma (columns),
        # b_dec -> mu + sigma b_dec; the same codes, SAELens's decode in x's units
        if layout.architecture == "matching_pursuit":
            raise ValueError("cannot export an MP-SAE with input norm 'standardize': SAELens has no per-coordinate input "
                             "scaling and folding it into the atoms would change the pursuit (it needs unit atoms); export a "
                             "model trained with 'unit' or 'scale', or standardise the inputs yourself before SAELens.")
        t = dict(layout.tensors)
        mu, sigma = _standardize_stats(model)
        dt = t["W_dec"].dtype
        t["W_enc"] = (t["W_enc"].to(torch.float64) / sigma[:, None]).to(dt)
        t["W_dec"] = (t["W_dec"].to(torch.float64) * sigma[None, :]).to(dt)
        t["b_dec"] = (mu + sigma * t["b_dec"].to(torch.float64)).to(dt)
        note = "input norm 'standardize' folded: W_enc rows divided by std, W_dec columns times std, b_dec -> mean + std b_dec"
        return layout._replace(tensors=t, note=f"{layout.note}; {note}" if layout.note else note)
    if s == 1.0:
        return layout
    t = dict(layout.tensors)
    fields = dict(layout.fields)
    t["b_dec"] = t["b_dec"] / s
    if layout.architecture == "matching_pursuit":
        if fields.get("residual_threshold"):
            fields["residual_threshold"] = fields["residual_threshold"] / s
        note = f"input norm folded: b_dec and residual_threshold divided by s = {s!r}, so SAELens's codes are ours divided by s"
    else:
        t["W_enc"], t["W_dec"] = t["W_enc"] * s, t["W_dec"] / s
        note = f"input norm folded: W_enc times s = {s!r}, W_dec and b_dec divided by s (the same codes)"
    return layout._replace(fields=fields, tensors=t, note=f"{layout.note}; {note}" if layout.note else note)


def saelens_codes_factor(model: SAE) -> float:
    """SAELens's codes of ``export_saelens(model)`` are ours times this: 1, except for an MP-SAE
    with an input normalisation (its atoms stay unit, so the codes carry the fold: sqrt(d) for
    ``"unit"``, 1 / c for ``"scale"`` c). SAELens's ``decode(encode(x))`` is our ``forward(x)``."""
    if not isinstance(model, SAE):
        raise TypeError(f"model must be an SAE of sae_theory, got {type(model).__name__}.")
    if type(model) is MPSAE:
        return 1.0 / _norm_factor(model)[1]
    return 1.0


def _unfold(model: SAE, t: dict[str, Tensor], s: float) -> dict[str, Tensor]:
    """The SAELens tensors ``t`` of a folded export with the fold of :func:`_layout` undone."""
    if model.input_norm["kind"] == "standardize":
        t = dict(t)
        mu, sigma = _standardize_stats(model)
        dt = t["W_dec"].dtype
        t["W_enc"] = (t["W_enc"].to(torch.float64) * sigma[:, None]).to(dt)
        t["W_dec"] = (t["W_dec"].to(torch.float64) / sigma[None, :]).to(dt)
        t["b_dec"] = ((t["b_dec"].to(torch.float64) - mu) / sigma).to(dt)
        return t
    if s == 1.0:
        return t
    t = dict(t)
    t["b_dec"] = t["b_dec"] * s
    if "W_enc" in t:
        t["W_enc"], t["W_dec"] = t["W_enc"] / s, t["W_dec"] * s
    return t


def _log_preimage(theta: Tensor) -> Tensor:
    """A log_threshold l with exp(l) == theta bit for bit wherever one lies within 64 ulps of
    log(theta) (always, for a theta that was exp of something: then one exists next to log(theta));
    elsewhere log(theta). theta = 0 gives -inf."""
    best = theta.log()
    ok = best.exp() == theta
    up, down = best.clone(), best.clone()
    inf = torch.tensor(math.inf, dtype=theta.dtype, device=theta.device)
    for _ in range(64):
        if bool(ok.all()):
            break
        up, down = torch.nextafter(up, inf), torch.nextafter(down, -inf)
        for cand in (up, down):
            hit = ~ok & (cand.exp() == theta)
            best = torch.where(hit, cand, best)
            ok |= hit
    return best


def _inverse(model: SAE, t: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state-dict entries (the layout's ``derived`` keys) from the SAELens tensors ``t``."""
    if isinstance(model, MPSAE):
        return {"W_dec": t["W_dec"], "b_dec": t["b_dec"]}
    if isinstance(model, (TiedSAE, TiedTopKSAE, TiedReLUSAE)):
        out = {"W_dec": t["W_enc"].T.contiguous(), "b_dec": t["b_dec"]}
        jr_threshold = isinstance(model, TiedSAE) and model.config.activation == "jumprelu_threshold"
        out["b_enc"] = -t["threshold"] if jr_threshold else t["b_enc"]
        return out
    out = {k: t[k] for k in _UNTIED}
    if isinstance(model, JumpReLUSAE):
        out["log_threshold"] = _log_preimage(t["threshold"])
    elif isinstance(model, BatchTopKSAE):
        out["threshold"] = t["threshold"][0].clone()
    return out


def _close_to_rounding(a: Tensor, b: Tensor) -> bool:
    """a == b to a few roundings of their dtype (relative to the tensor's largest entry)."""
    eps = torch.finfo(b.dtype).eps
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(((a - b).abs() <= 8 * eps * max(scale, 1e-30)).all())


# ---------------------------------------------------------------------------------------------
# the metadata's exact tensors


def _encode_tensor(t: Tensor) -> dict[str, Any]:
    t = t.detach().cpu()
    name = str(t.dtype).removeprefix("torch.")
    flat = t.reshape(-1).tolist()
    if t.dtype.is_floating_point:
        return {"dtype": name, "shape": list(t.shape), "hex": [float(v).hex() for v in flat]}
    return {"dtype": name, "shape": list(t.shape), "values": [int(v) for v in flat]}


def _decode_tensor(entry: Any, where: str, device: str) -> Tensor:
    try:
        dtype = getattr(torch, entry["dtype"])
        values = [float.fromhex(v) for v in entry["hex"]] if "hex" in entry else entry["values"]
        return torch.tensor(values, dtype=dtype).reshape(entry["shape"]).to(device)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{where} is not a tensor written by export_saelens ({type(exc).__name__}: {exc}).") from None


# ---------------------------------------------------------------------------------------------
# export


def export_saelens(model: SAE, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder`` in SAELens's format: ``cfg.json`` + ``sae_weights.safetensors``.

    Which SAELens architecture each of our SAEs becomes, and what changes on the way (the tied
    SAEs' output scale folded into ``W_dec``, BatchTopK as JumpReLU, Matryoshka as its ReLU
    inference SAE, MP-SAE's stopping rules), is in the module docstring. ``SAE.load_from_disk``
    of SAELens reads the folder; :func:`import_saelens` reads it back into the same class and
    config. The write is atomic (:func:`~sae_theory.io.atomic_folder`): an existing export in
    ``folder`` is replaced once the new one is complete; a folder holding other files is refused.

    Parameters
    ----------
    model : SAE
        A ReLUSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, MPSAE, TiedSAE, TiedTopKSAE or
        TiedReLUSAE (exactly these classes: a subclass may change what the weights mean), with
        parameters in float32, float64, float16 or bfloat16.
    folder : path
        The folder to write (created with its parents).

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    TypeError
        ``model`` is not an SAE or ``folder`` not a path.
    ValueError
        There is no faithful SAELens counterpart: another SAE class (naming the supported ones), a
        dtype SAELens does not load, an MPSAE with ``selection="abs"``, a TiedSAE with activation
        ``"jumprelu_threshold"`` and a positive neuron bias (each message says why).
    FileExistsError
        ``folder`` holds files other than a previous export's.
    """
    from safetensors.torch import save_file

    from . import __version__

    if not isinstance(model, SAE):
        raise TypeError(f"model must be an SAE of sae_theory, got {type(model).__name__}.")
    check_path("folder", folder)
    layout_of = _LAYOUTS.get(type(model))
    if layout_of is None:
        names = ", ".join(c.__name__ for c in _LAYOUTS)
        raise ValueError(f"no SAELens export for {type(model).__name__}: export_saelens writes {names} (each into the SAELens "
                         "architecture whose encode and decode it matches); another class, subclasses included, may mean "
                         "something else by its weights.")
    dtype = model.config.dtype
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"SAELens loads float32, float64, float16 and bfloat16 weights, not {dtype}; convert the model "
                         f"(build it with dtype=torch.float32) before exporting.")
    with torch.no_grad():
        layout = _layout(model)
        state = model.state_dict()
        extra = {k: _encode_tensor(v) for k, v in state.items() if k not in layout.derived}
        tensors = {k: v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in layout.tensors.items()}
    cfg = {
        "architecture": layout.architecture,
        "d_in": model.d,
        "d_sae": model.n_latents,
        "dtype": _DTYPE_NAMES[dtype],
        "device": model.config.device,
        "apply_b_dec_to_input": True,
        "normalize_activations": _norm_factor(model)[0],
        "reshape_activations": "none",
        **layout.fields,
        "metadata": {
            "sae_lens_version": SAELENS_VERSION,
            "sae_lens_training_version": None,
            METADATA_KEY: {
                "format": _FORMAT,
                "sae_theory_version": __version__,
                "sae_class": type(model).__name__,
                "config": model.config.to_dict(),
                "input_norm": dict(model.input_norm),
                "note": layout.note,
                "tensors": extra,
            },
        },
    }
    folder = Path(folder)
    with atomic_folder(folder, replaceable=(CFG, WEIGHTS)) as tmp:
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CFG).write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


# ---------------------------------------------------------------------------------------------
# import


def _read_cfg(folder: Path) -> dict[str, Any]:
    path = folder / CFG
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the SAELens save is damaged.") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} holds {type(cfg).__name__}, not a SAELens config (a JSON object).")
    return cfg


def _saelens_major(cfg: dict[str, Any]) -> int | None:
    metadata = cfg.get("metadata")
    version = cfg.get("sae_lens_version") or (metadata.get("sae_lens_version") if isinstance(metadata, dict) else None)
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def _pre6_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """The defaults SAELens 6 gives a config written by SAELens < 6 (``handle_pre_6_0_config``),
    as far as the architectures we read need them."""
    cfg = dict(cfg)
    cfg.setdefault("apply_b_dec_to_input", True)
    cfg.setdefault("architecture", "standard")
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if cfg.get("activation_fn") == "topk" and kwargs.get("k") is not None:
        cfg["architecture"], cfg["k"] = "topk", kwargs["k"]
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool) or norm is None:
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    return cfg


def _field(cfg: dict[str, Any], name: str, path: Path, default: Any = None, required: bool = False) -> Any:
    if name not in cfg:
        if required:
            raise ValueError(f"{path} has no {name!r}; a SAELens config needs it.")
        return default
    return cfg[name]


def _plain_model(arch: str, cfg: dict[str, Any], t: dict[str, Tensor], path: Path, dtype: torch.dtype, device: str) -> SAE:
    """Our SAE for a SAELens save without our metadata (see :func:`import_saelens`)."""
    M, d = t["W_dec"].shape
    common = dict(d=d, n_latents=M, dtype=dtype, device=device)
    centred = bool(cfg.get("apply_b_dec_to_input", True))
    try:
        if arch == "matching_pursuit":
            thr = float(_field(cfg, "residual_threshold", path, 1e-2))
            iters = _field(cfg, "max_iterations", path, None)
            model = MPSAE(**common, k=d if iters is None else int(iters), threshold=thr if thr > 0 else None,
                          stop_on_repeat=bool(_field(cfg, "stop_on_duplicate_support", path, True)), stop_at_rounding=False)
            state = {"W_dec": t["W_dec"], "b_dec": t["b_dec"] if centred else torch.zeros_like(t["b_dec"])}
        else:
            W_enc, b_enc, W_dec = t["W_enc"], t["b_enc"], t["W_dec"]
            if not centred:  # SAELens: x W_enc + b_enc; ours: (x - b_dec) W_enc + b_enc'
                b_enc = b_enc + t["b_dec"] @ W_enc
            if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
                norms = W_dec.norm(dim=-1).clamp(min=1e-8)  # SAELens's fold_W_dec_norm
                W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]
            state = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": t["b_dec"]}
            if arch == "standard":
                model = ReLUSAE(**common)
            elif arch == "topk":
                model = TopKSAE(**common, k=int(_field(cfg, "k", path, required=True)))
            else:
                model = JumpReLUSAE(**common)
                state["log_threshold"] = _log_preimage(t["threshold"].clamp(min=0))  # theta < 0 acts as 0 (ReLU first)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} describes a {arch} SAE that sae_theory cannot build: {exc}") from None
    full = model.state_dict()
    full.update({k: v.to(device) for k, v in state.items()})
    model.load_state_dict(full)
    return model


def _our_model(meta: dict[str, Any], arch: str, cfg: dict[str, Any], t: dict[str, Tensor], path: Path, device: str) -> SAE:
    """Rebuild the SAE that :func:`export_saelens` wrote, from the weights and our metadata block."""
    where = f"{path}'s metadata.{METADATA_KEY}"
    if not isinstance(meta, dict) or not all(k in meta for k in ("sae_class", "config", "tensors")):
        raise ValueError(f"{where} lacks sae_class / config / tensors; it was not written by export_saelens. Remove "
                         f"metadata.{METADATA_KEY} from {CFG} to import the folder as a plain SAELens SAE.")
    try:
        entry = get_sae(str(meta["sae_class"]))
        config = entry.config_cls.from_dict({**meta["config"], "device": device})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{where} names a class or config sae_theory cannot build ({exc}).") from None
    model = entry.cls(config)
    if type(model) not in _LAYOUTS:
        raise ValueError(f"{where} names {entry.name}, which export_saelens does not write.")
    from .io import apply_input_norm

    apply_input_norm(model, meta.get("input_norm"), where=f"{where}.input_norm")
    norm_name, s = _norm_factor(model)
    if cfg.get("normalize_activations", "none") != norm_name:
        raise ValueError(f"{path} has normalize_activations={cfg.get('normalize_activations')!r}, its metadata.{METADATA_KEY} "
                         f"input_norm {model.input_norm} exports as {norm_name!r}; the SAELens save was changed after "
                         f"export_saelens wrote it. Remove metadata.{METADATA_KEY} from {CFG} to import it as a plain SAELens SAE.")
    stale = (f"; the SAELens save was changed after export_saelens wrote it. Remove metadata.{METADATA_KEY} from {CFG} to "
             "import it as a plain SAELens SAE.")
    expected = _layout(model)
    if expected.architecture != arch:
        raise ValueError(f"{path} has architecture {arch!r} but its metadata.{METADATA_KEY} describes a {entry.name} "
                         f"exported as {expected.architecture!r}{stale}")
    for name, value in expected.fields.items():
        if cfg.get(name) != value:
            raise ValueError(f"{path} has {name}={cfg.get(name)!r}, its metadata.{METADATA_KEY} config gives {value!r}{stale}")
    for name, value in (("d_in", model.d), ("d_sae", model.n_latents)):
        if cfg.get(name) != value:
            raise ValueError(f"{path} has {name}={cfg.get(name)!r}, its metadata.{METADATA_KEY} config gives {value!r}{stale}")
    if not cfg.get("apply_b_dec_to_input", True):
        raise ValueError(f"{path} has apply_b_dec_to_input=false; export_saelens writes true{stale}")
    state = model.state_dict()
    extra = meta["tensors"] if isinstance(meta["tensors"], dict) else {}
    for key in state:
        if key in expected.derived:
            continue
        if key not in extra:
            raise ValueError(f"{where}.tensors has no {key!r}, which a {entry.name} needs; the metadata is damaged{stale}")
        state[key] = _decode_tensor(extra[key], f"{where}.tensors[{key!r}]", device)
    state.update({k: v.to(device) for k, v in _inverse(model, _unfold(model, t, s)).items()})
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path.parent / WEIGHTS} does not fit the {entry.name} that {where} describes: {exc}") from None
    try:
        with torch.no_grad():
            again = _layout(model).tensors
    except ValueError as exc:
        raise ValueError(f"{path.parent / WEIGHTS} rebuilt with metadata.{METADATA_KEY} cannot be exported again ({exc}){stale}") from None
    for name, value in again.items():
        value = value.to(t[name].device)
        # an unfolded input norm comes back to rounding (two products by s), not bit for bit
        same = torch.equal(value, t[name]) if s == 1.0 else _close_to_rounding(value, t[name])
        if not same:
            raise ValueError(f"{path.parent / WEIGHTS}: {name} is not what the {entry.name} rebuilt from it and from "
                             f"metadata.{METADATA_KEY} exports{stale}")
    return model


def import_saelens(folder: str | os.PathLike, *, device: str | torch.device | None = None) -> SAE:
    """Read a SAELens save folder (``cfg.json`` + ``sae_weights.safetensors``) into our SAE.

    A folder written by :func:`export_saelens` comes back as the class and config it was exported
    from (named in ``metadata["sae_theory"]`` of ``cfg.json``), with encode and decode bit for bit
    those of the exported model. Any other SAELens save of a supported architecture becomes:

    * ``"standard"`` -> :class:`~sae_theory.models.ReLUSAE`;
    * ``"topk"`` -> :class:`~sae_theory.models.TopKSAE` with its ``k``;
    * ``"jumprelu"`` -> :class:`~sae_theory.models.JumpReLUSAE` with ``log_threshold`` =
      log(threshold) (exp of it gives the threshold back bit for bit where a float does; a
      threshold <= 0 acts as 0 in SAELens, whose JumpReLU applies ReLU first, and becomes 0);
    * ``"matching_pursuit"`` -> :class:`~sae_theory.models.MPSAE` with ``k = max_iterations``
      (d_in when None, as SAELens), ``threshold = residual_threshold`` (None when <= 0),
      ``stop_on_repeat = stop_on_duplicate_support`` and ``stop_at_rounding=False`` (SAELens has
      no such stop). SAELens checks the threshold after each step, we before: an input already
      within ``residual_threshold`` of b_dec takes one step there and none here.

    SAELens configs without ``apply_b_dec_to_input`` on the input side are folded into ours, exactly
    in real arithmetic: ``b_enc += b_dec W_enc`` (standard, topk, jumprelu), ``b_dec = 0``
    (matching pursuit, where SAELens then adds no b_dec either). A topk SAE with
    ``rescale_acts_by_decoder_norm`` gets SAELens's own ``fold_W_dec_norm`` (W_enc and b_enc times
    the decoder norms, W_dec divided by them). Configs of SAELens < 6 get SAELens 6's defaults
    first. Inputs of a ``reshape_activations="hook_z"`` SAE must be passed flattened (..., n_heads *
    d_head): our SAEs do not reshape.

    Parameters
    ----------
    folder : path
        A SAELens save folder.
    device : str or torch.device, optional
        Where to build the model; None: the CPU, as SAELens's ``load_from_disk``.

    Raises
    ------
    TypeError
        ``folder`` is not a path.
    FileNotFoundError
        ``folder`` lacks ``cfg.json`` or ``sae_weights.safetensors`` (naming the missing file).
    ValueError
        An architecture other than :data:`SUPPORTED_ARCHITECTURES` (naming it and them); an input
        normalisation (``normalize_activations`` other than ``"none"``: our SAEs have none, and its
        scale is not in the folder); a dtype, tensors or config fields that do not fit; a folder
        of :func:`export_saelens` whose SAELens config or weights were changed afterwards so that
        they contradict ``metadata["sae_theory"]`` (module docstring; removing that block imports
        the folder as a plain SAELens SAE). Each message names the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(check_path("folder", folder))
    device = "cpu" if device is None else str(torch.device(device))
    for name in (CFG, WEIGHTS):
        if not (folder / name).is_file():
            hint = " (it is a save_sae folder: open it with sae_theory.load_sae)" if (folder / "sae.safetensors").is_file() else ""
            raise FileNotFoundError(f"{folder / name} is missing, so {folder} is not a SAELens save folder ({CFG} + {WEIGHTS}){hint}.")
    path = folder / CFG
    cfg = _read_cfg(folder)
    major = _saelens_major(cfg)
    if major is None or major < 6:
        cfg = _pre6_defaults(cfg)
    arch = cfg.get("architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{path} has architecture {arch!r}, which import_saelens does not read; supported: "
                         f"{', '.join(SUPPORTED_ARCHITECTURES)}.")
    norm = cfg.get("normalize_activations", "none")
    if norm not in _READ_NORMS:
        raise ValueError(f"{path} has normalize_activations={norm!r}, which import_saelens does not read: it reads "
                         f"{', '.join(map(repr, _READ_NORMS))} ('layer_norm' standardises each input with statistics our "
                         "SAEs have no place for); normalise the inputs yourself and save the SAE with 'none'.")
    dtype_name = _field(cfg, "dtype", path, "float32")
    if dtype_name not in _DTYPES:
        raise ValueError(f"{path} has dtype {dtype_name!r}; import_saelens reads {', '.join(_DTYPE_NAMES.values())}.")
    dtype = _DTYPES[dtype_name]
    d_in, d_sae = _field(cfg, "d_in", path, required=True), _field(cfg, "d_sae", path, required=True)
    try:
        raw = load_file(str(folder / WEIGHTS), device=device)
    except SafetensorError as exc:
        raise ValueError(f"{folder / WEIGHTS} cannot be read ({exc}); the SAELens save is damaged.") from None
    want = _KEYS[arch]
    if sorted(raw) != sorted(want):
        raise ValueError(f"{folder / WEIGHTS} holds {sorted(raw)}; a SAELens {arch!r} SAE holds exactly {sorted(want)}.")
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,), "threshold": (d_sae,)}
    for k, v in raw.items():
        if tuple(v.shape) != shapes[k]:
            raise ValueError(f"{folder / WEIGHTS}: {k} has shape {tuple(v.shape)}, the config's d_in={d_in}, d_sae={d_sae} "
                             f"make it {shapes[k]}.")
    t = {k: v.to(dtype) for k, v in raw.items()}
    metadata = cfg.get("metadata")
    meta = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if meta is not None:
        return _our_model(meta, arch, cfg, t, path, device)
    model = _plain_model(arch, cfg, t, path, dtype, device)
    if norm == "constant_norm_rescale":  # SAELens's input is sqrt(d) x / ||x||: our unit norm, with the fold undone
        model.set_input_norm("unit")
        s = 1.0 / math.sqrt(model.d)
        with torch.no_grad():
            model.b_dec.mul_(s)
            if isinstance(model, MPSAE):
                if model.config.threshold is not None:
                    import dataclasses

                    model.config = dataclasses.replace(model.config, threshold=model.config.threshold * s)
            else:
                model.W_enc.div_(s)
                model.W_dec.mul_(s)
    return model
