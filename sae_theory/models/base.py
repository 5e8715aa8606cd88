"""The contract every SAE in sae_theory follows (what SAELens and SAEBench expect).

* ``encode(x (B, d)) -> codes (B, M)``, ``decode(codes) -> x_hat (B, d)``,
  ``forward(x) = decode(encode(x))``, ``dictionary -> (M, d)`` (rows are atoms);
* parameters named as SAELens names them: ``W_enc (d, M)``, ``b_enc (M,)``, ``W_dec (M, d)``,
  ``b_dec (d,)`` (pre-bias: subtracted before encoding, added after decoding);
* the trainer calls ``training_forward(x) -> TrainOutput`` (loss, codes, pre-activations),
  ``optimizer_parameters()`` (what the optimiser may touch) and ``post_step()`` (constraints
  after each optimiser step, e.g. unit-norm atoms);
* the same switches, named the same way, on every config: ``unit_norm_decoder`` (renormalise
  the atoms after every optimiser step, done once here in :meth:`SAE.post_step`) and
  ``train_b_dec`` (whether the pre-bias is trained); each model keeps its own default;
* every parameter has the dtype and device the config asks for; inputs of another dtype are
  refused, never silently cast;
* inputs are checked before anything is computed or changed: ``x`` of ``encode`` / ``forward`` /
  ``training_forward`` (and every method taking data) and ``codes`` of ``decode`` must be tensors
  of the right width and dtype, free of NaN and infinity (ValueError / TypeError naming the
  argument). The finiteness check is one sum over the input per call
  (:func:`sae_theory._checks.check_finite`): small against the matrix products of the SAE. Codes
  that the SAE produced itself (``forward``, ``training_forward``) are decoded through
  :meth:`SAE._decode` without a second check.

The reconstruction loss of every model is the squared L2 error summed over d and averaged over
the batch, mean_b ||x_b - x_hat_b||^2 (the GBA paper's 1/2 factor only rescales the learning rate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._checks import check_bool, check_finite, check_int, check_tensor

__all__ = ["INPUT_NORM_KINDS", "PreActivationCodes", "SAE", "SAEConfig", "TiedWeightSAE", "TrainOutput", "UntiedSAE", "check_k", "reconstruction_loss",
           "selection_applies", "selection_mask", "topk_relu", "unit_rows_"]


#: The input normalisations a model can carry (:meth:`SAE.set_input_norm`), the trainer's
#: ``TrainConfig.input_norm`` values.
INPUT_NORM_KINDS = ("none", "unit", "scale", "standardize")


def _normalizes_raw_inputs(fn):
    """Wrap a ``training_forward``: raw inputs are normalised once as the model's input
    normalisation says, and the body runs with inputs marked prepared (no second normalisation)."""
    if getattr(fn, "_sae_normalizing", False):
        return fn

    @functools.wraps(fn)
    def wrapper(self, x, *args, **kwargs):
        if self._input_norm == "none" or self._inputs_prepared:
            return fn(self, x, *args, **kwargs)
        x = self._check_input(x)
        with self.prepared_inputs():
            return fn(self, x, *args, **kwargs)

    wrapper._sae_normalizing = True
    return wrapper


@dataclass(frozen=True)
class SAEConfig:
    """Fields every SAE config has. Subclasses add their own, with validation in ``__post_init__``."""

    d: int
    """Input dimension."""
    n_latents: int
    """Number of latents (neurons, atoms) M."""
    dtype: torch.dtype = torch.float32
    """Dtype of every parameter."""
    device: str = "cpu"
    """Device of every parameter."""
    seed: int = 0
    """Seed of the initialisation (an explicit generator; the global RNG is never touched)."""
    unit_norm_decoder: bool = False
    """Renormalise the atoms (rows of ``W_dec``, the :attr:`SAE.dictionary`) to unit norm after
    every optimiser step (:meth:`SAE.post_step`; a zero row stays zero). Every model sets the
    default it was built with: True for the models whose analysis or recipe fixes the atom norm
    (TopK, BatchTopK, JumpReLU, MP-SAE, the tied SAE), False for the decoder-norm-weighted L1
    models (ReLU, Matryoshka), which need no constraint."""
    train_b_dec: bool = True
    """Train the pre-bias ``b_dec``. It starts at zero; False keeps it out of the optimiser's reach
    (``requires_grad=False``), so it stays where it was set."""

    def __post_init__(self):
        for name in ("d", "n_latents"):
            object.__setattr__(self, name, check_int(name, getattr(self, name), minimum=1))
        for name in ("unit_norm_decoder", "train_b_dec"):
            check_bool(name, getattr(self, name))
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype, got {self.dtype!r}.")
        check_int("seed", self.seed)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {self.device!r}.") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dtype as a string)."""
        out = dataclasses.asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        if isinstance(data.get("dtype"), str):
            data["dtype"] = getattr(torch, data["dtype"])
        for k, v in data.items():
            if isinstance(v, list):
                data[k] = tuple(v)
        return cls(**data)


@dataclass
class TrainOutput:
    """What one training forward pass returns to the trainer and its hooks."""

    loss: Tensor
    """Scalar the optimiser minimises."""
    x_hat: Tensor
    """Reconstruction (B, d)."""
    codes: Tensor
    """Latent codes (B, M), after the activation."""
    pre_acts: Tensor
    """Pre-activations (B, M) the activation was applied to (what bias adaptation watches)."""
    metrics: dict[str, Tensor | float] = field(default_factory=dict)
    """Scalars to log (e.g. ``mse``, ``l1``) as detached 0-d tensors: the trainer turns them into
    floats only on the steps it logs, so a GPU step does not wait for the device."""
    fired: Tensor | None = None
    """Optional 0/1 mask (B, M) of ``pre_acts > 0`` in the codes' dtype, when the forward pass
    computed it anyway (the tied SAE's activations do). Bias adaptation counts firings from it
    instead of comparing the pre-activations a second time."""


def reconstruction_loss(x: Tensor, x_hat: Tensor) -> Tensor:
    """mean_b ||x_b - x_hat_b||^2: squared error summed over the features, averaged over the batch."""
    return (x_hat - x).pow(2).sum(-1).mean()


class SAE(nn.Module):
    """Base class: input checks, the contract, save/load names. Subclasses implement
    ``encode``, ``decode`` and ``dictionary``; most also ``training_forward`` and ``post_step``."""

    config: SAEConfig

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.training_forward = _normalizes_raw_inputs(cls.training_forward)

    def __init__(self, config: SAEConfig):
        super().__init__()
        self.config = config
        self.d, self.n_latents = config.d, config.n_latents
        self._input_norm, self._input_scale, self._inputs_prepared = "none", None, 0
        self._input_mean = self._input_std = None
        self._norm_cache: dict = {}

    # -- input normalisation: part of the model ------------------------------------------------
    @property
    def input_norm(self) -> dict[str, Any]:
        """The input normalisation the model was trained with, JSON-ready: ``{"kind", "scale"}``,
        plus ``"mean"`` and ``"std"`` (lists of d floats) for ``"standardize"``. Kinds: ``"none"``;
        ``"unit"`` (every row to unit L2 norm, a zero row stays zero); ``"scale"`` (every row times
        the constant ``scale``); ``"standardize"`` (every coordinate j to (x_j - mean_j) / std_j, the
        population statistics of the data, MP-SAE's real-data setting). Every method taking data
        (``encode``, ``forward``, ``pre_activations``, ``training_forward``, ...) applies it to raw
        inputs, so raw activations give the codes training saw; ``forward`` returns the
        reconstruction in the raw inputs' units (:meth:`denormalize`), while ``decode`` returns it
        in the normalised units. Set by the trainer (``TrainConfig.input_norm``; ``"model"`` keeps
        one set here with :meth:`set_input_norm`), kept by :func:`~sae_theory.io.save_sae`,
        checkpoints and the SAELens export."""
        out: dict[str, Any] = {"kind": self._input_norm, "scale": self._input_scale}
        if self._input_norm == "standardize":
            out["mean"], out["std"] = self._input_mean.tolist(), self._input_std.tolist()
        return out

    def set_input_norm(self, kind: str, scale: float | None = None, *, mean: Any = None, std: Any = None) -> None:
        """Set :attr:`input_norm`: ``kind`` in :data:`INPUT_NORM_KINDS`; ``scale`` a finite
        positive number with ``"scale"`` (None only while it is not yet known, e.g. before a
        trainer has seen its first batch), None otherwise; ``mean`` and ``std`` (d values each,
        finite, std > 0; kept in float64) with ``"standardize"`` only."""
        if kind not in INPUT_NORM_KINDS:
            raise ValueError(f"input norm kind must be one of {INPUT_NORM_KINDS}, got {kind!r}.")
        if kind == "scale" and scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
                raise ValueError(f"scale must be a finite positive number for input norm 'scale', got {scale!r}.")
            scale = float(scale)
        elif kind != "scale" and scale is not None:
            raise ValueError(f"scale={scale!r} is only for input norm 'scale' (got kind {kind!r}); pass scale=None.")
        if kind == "standardize":
            vecs = []
            for name, v in (("mean", mean), ("std", std)):
                if v is None:
                    raise ValueError(f"input norm 'standardize' needs {name} (d={self.d} values).")
                t = torch.as_tensor(v, dtype=torch.float64).detach().cpu().reshape(-1).clone()
                if t.numel() != self.d or not bool(torch.isfinite(t).all()):
                    raise ValueError(f"{name} must hold d={self.d} finite values, got {t.numel()} values"
                                     + ("" if bool(torch.isfinite(t).all()) else " with NaN or infinity") + ".")
                vecs.append(t)
            if not bool((vecs[1] > 0).all()):
                raise ValueError("std must be > 0 in every coordinate (a constant coordinate: take its std as 1).")
            self._input_mean, self._input_std, self._norm_cache = vecs[0], vecs[1], {}
        elif mean is not None or std is not None:
            raise ValueError(f"mean and std are only for input norm 'standardize' (got kind {kind!r}).")
        self._input_norm, self._input_scale = kind, scale

    def _standardizer(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.dtype, like.device)
        if key not in self._norm_cache:
            self._norm_cache[key] = (self._input_mean.to(device=like.device, dtype=like.dtype),
                                     self._input_std.to(device=like.device, dtype=like.dtype))
        return self._norm_cache[key]

    def normalize_input(self, x: Tensor) -> Tensor:
        """``x`` as the model's input normalisation maps it (the identity for ``"none"``)."""
        if self._input_norm == "unit":
            norms = x.norm(dim=-1, keepdim=True)
            return x / torch.where(norms > 0, norms, torch.ones_like(norms))
        if self._input_norm == "scale":
            if self._input_scale is None:
                raise ValueError("this SAE's input norm is 'scale' but its scale is not known yet (set_input_norm('scale', c)).")
            return x * self._input_scale
        if self._input_norm == "standardize":
            mean, std = self._standardizer(x)
            return (x - mean) / std
        return x

    def denormalize(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """A reconstruction ``x_hat`` of the normalised ``x`` (what :meth:`decode` returns) back in
        the units of the raw ``x``: ``forward(x) = denormalize(decode(encode(x)), x)``."""
        if self._inputs_prepared or self._input_norm == "none":
            return x_hat
        if self._input_norm == "unit":
            return x_hat * x.norm(dim=-1, keepdim=True)
        if self._input_norm == "standardize":
            mean, std = self._standardizer(x_hat)
            return x_hat * std + mean
        return x_hat / self._input_scale

    @contextlib.contextmanager
    def prepared_inputs(self):
        """Inside, inputs are taken as already normalised (the trainer normalises its batches
        itself and calls the model inside this)."""
        self._inputs_prepared += 1
        try:
            yield self
        finally:
            self._inputs_prepared -= 1

    # -- helpers for subclasses ---------------------------------------------------------------
    def _generator(self) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.config.seed)

    def _new(self, *shape: int, generator: torch.Generator | None = None, fill: float | None = None) -> Tensor:
        """A tensor of the config's dtype/device: Gaussian from ``generator`` or constant ``fill``.

        Random draws are made on the CPU (so a seed gives the same weights on every device) and
        then moved.
        """
        if fill is not None:
            return torch.full(shape, float(fill), dtype=self.config.dtype, device=self.config.device)
        t = torch.randn(*shape, generator=generator, dtype=torch.float64)
        return t.to(dtype=self.config.dtype, device=self.config.device)

    def _check_input(self, x: Tensor, name: str = "x") -> Tensor:
        """``x`` if it is a (..., d) tensor of the SAE's dtype without NaN or infinity, else
        TypeError / ValueError naming ``name``; normalised per :attr:`input_norm` unless inside
        :meth:`prepared_inputs`. Costs one sum over x (:func:`check_finite`)."""
        check_tensor(name, x, what=f"(..., d={self.d})")
        if x.ndim < 1 or x.shape[-1] != self.d:
            raise ValueError(f"{name} must have shape (..., d={self.d}), got {tuple(x.shape)}.")
        self._check_dtype(name, x)
        check_finite(name, x)
        if self._input_norm != "none" and not self._inputs_prepared:
            return self.normalize_input(x)
        return x

    def _check_codes(self, codes: Tensor, name: str = "codes") -> Tensor:
        """``codes`` if it is a (..., n_latents) tensor of the SAE's dtype without NaN or
        infinity, else TypeError / ValueError naming ``name``. Costs one sum over the codes."""
        check_tensor(name, codes, what=f"(..., n_latents={self.n_latents})")
        if codes.ndim < 1 or codes.shape[-1] != self.n_latents:
            raise ValueError(f"{name} must have shape (..., n_latents={self.n_latents}), got {tuple(codes.shape)}.")
        self._check_dtype(name, codes)
        check_finite(name, codes)
        return codes

    def _check_dtype(self, name: str, t: Tensor) -> None:
        if t.dtype != self.config.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but the SAE's parameters are {self.config.dtype}; "
                f"cast the input ({name}.to({self.config.dtype})) or build the SAE with dtype={t.dtype}."
            )

    # -- the contract -------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, codes: Tensor) -> Tensor:
        """Decode codes this SAE produced itself (already checked through its input): what
        ``forward`` and ``training_forward`` use, so the codes are not checked a second time.
        Default: the public :meth:`decode`; models override it with the unchecked computation
        and check in ``decode``."""
        return self.decode(codes)

    @property
    def dictionary(self) -> Tensor:  # pragma: no cover - abstract
        """Atoms (M, d): row m is what latent m writes."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``, in the units of ``x`` (:attr:`input_norm`)."""
        return self.denormalize(self._decode(self.encode(x)), x)

    def training_forward(self, x: Tensor) -> TrainOutput:
        """Default: reconstruction loss only. ``pre_acts`` defaults to the codes."""
        codes = self.encode(x)
        x_hat = self._decode(codes)
        loss = reconstruction_loss(x, x_hat)
        return TrainOutput(loss, x_hat, codes, codes, {"mse": loss.detach()})

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser updates (default: all with ``requires_grad``)."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def post_step(self) -> None:
        """Constraints applied after each optimiser step: with ``config.unit_norm_decoder``, the
        atoms (rows of :attr:`dictionary`, which must be the stored parameter, not a copy) are
        renormalised to unit norm in place. A model with more constraints calls
        ``super().post_step()``."""
        if self.config.unit_norm_decoder:
            unit_rows_(self.dictionary)

    def extra_repr(self) -> str:
        return f"d={self.d}, n_latents={self.n_latents}, dtype={self.config.dtype}"


def unit_rows_(W: Tensor) -> None:
    """Normalise the rows of W to unit norm in place; a zero row is left at zero (it cannot be
    normalised, and a dead atom should stay visibly dead rather than become NaN)."""
    norms = W.norm(dim=1, keepdim=True)
    W.div_(torch.where(norms > 0, norms, torch.ones_like(norms)))


def check_k(k: Any, n_latents: int) -> int:
    """``k`` (active latents per input of a TopK-style SAE) as an int in [1, n_latents], or raise
    naming it."""
    k = check_int("k", k, minimum=1)
    if k > n_latents:
        raise ValueError(f"k must be <= n_latents={n_latents}, got {k}; lower k or raise n_latents.")
    return k


#: Where :func:`selection_mask` selects instead of ``torch.topk``, from ``benchmarks/bench_topk.py``
#: (one CPU thread, float32, codes and gradient, an idle 2-core machine; ``torch.topk`` / selection,
#: medians): ``torch.topk``'s cost grows with k and selection's does not, and on wide rows the
#: mask's passes over memory cost more than ``torch.topk`` saves. (256, 512) rows with k = 8:
#: 0.95 / 0.80 ms (0.6 / 0.7 ms on a loaded machine: not selected), k = 20: 1.76 / 0.89 ms, k = 50:
#: 1.99 / 0.86 ms; (256, 1536), k = 32: 6.2 / 3.0 ms; (20,000, 512), k = 20: 224 / 153 ms;
#: (256, 4096), k = 20: 6.8 / 6.1 ms; (4096, 4096), k = 16: 216 / 247 ms; (200, 20), k = 2:
#: 0.11 / 0.13 ms. With more than one thread ``torch.topk`` shares the rows among them and NumPy
#: does not: not measured, so ``torch.topk`` there.
SELECT_MIN_K = 16
SELECT_MAX_WIDTH = 2048
_SELECT_DTYPES = (torch.float32, torch.float64)


def selection_applies(values: Tensor, k: int, *, max_width: int | None, min_width: int = 1) -> bool:
    """Whether :func:`selection_mask` (and the batch budget of ``batchtopk``) select the ``k``
    largest entries of the rows of ``values`` instead of ``torch.topk``: a CPU float32/float64
    tensor with one torch thread, ``k >= SELECT_MIN_K``, ``k`` at most the row width and that
    width in [``min_width``, ``max_width``] (None: no upper bound)."""
    n = values.shape[-1] if values.ndim else 0
    return (values.device.type == "cpu" and values.dtype in _SELECT_DTYPES and torch.get_num_threads() == 1
            and values.numel() > 0 and SELECT_MIN_K <= k <= n and min_width <= n and (max_width is None or n <= max_width))


def selection_mask(values: Tensor, k: int, *, positive: bool = False) -> Tensor | None:
    """1 at the ``k`` largest entries of every row (last dimension) of ``values``, 0 elsewhere, in
    ``values``' dtype, found by selection (NumPy's introselect, ``np.partition``, for each row's
    k-th largest value, then the entries at or above it) when that keeps the same entries as
    ``torch.topk`` would, as far as a ReLU or non-negative values can tell: every row has exactly
    k entries at or above its k-th largest, or that value is <= 0 (the entries kept beyond k are
    then tied at or below 0). With ``positive``, only the entries above 0 among them (what a ReLU
    keeps). None where a row has a tie above 0 at its k-th value, or NaN (which sorts as the
    largest value here as in ``torch.topk``), and where :func:`selection_applies` says no: the
    caller then uses ``torch.topk``, whose tie-breaking decides.

    Why: with one CPU thread ``torch.topk`` sorts its way to the k largest, at a cost that grows
    with k, and a boolean mask through ``torch.where`` costs more than the selection itself
    (measured on (256, 512) rows, k = 20: ``torch.topk`` 1.5-2.1 ms, ``np.partition`` 0.26 ms,
    ``torch.where`` with a boolean mask 0.44 ms, a product with this float mask 0.03 ms); where
    that pays is in :data:`SELECT_MIN_K`'s comment."""
    if not selection_applies(values, k, max_width=SELECT_MAX_WIDTH):
        return None
    n = values.shape[-1]
    arr = values.detach().numpy()
    return mask_at_or_above(arr, np.partition(arr, n - k, axis=-1)[..., n - k:n - k + 1], k, positive=positive)


def mask_at_or_above(arr, kth, k: int, *, positive: bool = False) -> Tensor | None:
    """The 0/1 mask (a tensor of ``arr``'s dtype) of the entries of the NumPy array ``arr`` at or
    above ``kth`` (its rows' k-th largest values, the last dimension kept as 1), and above 0 with
    ``positive``; None unless every row has exactly ``k`` entries at or above its ``kth`` or a
    ``kth`` <= 0 (:func:`selection_mask`)."""
    at = arr >= kth
    # a sum of 0/1 entries is exact below 2^24 entries in float32 (cheaper than a float64 sum)
    count = torch.from_numpy(at.astype(arr.dtype)).sum(-1, dtype=torch.float32 if arr.shape[-1] < 2**24 else torch.float64)
    if not bool(((count == k) | (torch.from_numpy(kth[..., 0]) <= 0)).all()):
        return None
    return torch.from_numpy((at & (arr > 0) if positive else at).astype(arr.dtype))


def topk_relu(pre_acts: Tensor, k: int) -> Tensor:
    """ReLU of the ``k`` largest entries of every row, zero elsewhere (at most k non-zeros; fewer
    when some of the k largest are negative).

    On the CPU the k largest entries are found by selection (:func:`selection_mask`) and the
    pre-activations multiplied by the 0/1 mask of those above 0, plus 0 (which turns the products'
    negative zeros into zeros): the same codes as ``torch.topk``'s k entries with their ReLU, bit
    for bit, and the same gradient (the mask; off it the product's gradient may be a negative zero
    where the scatter's is a zero, which sums and Adam treat alike). Training runs with either are
    bit-identical (tested). A full-width ReLU and its backward pass would cost more than the
    selection here (measured at (256, 512): 0.05 and 0.22 ms). Elsewhere (:func:`selection_applies`:
    another device, several threads, k < 16, rows wider than 2,048) and at a tie above 0 at a row's
    k-th value, ``torch.topk``."""
    mask = selection_mask(pre_acts, k, positive=True)
    if mask is not None:
        return pre_acts.mul(mask).add_(0.0)
    top = pre_acts.topk(k, dim=-1)
    return torch.zeros_like(pre_acts).scatter(-1, top.indices, torch.relu(top.values))


class PreActivationCodes:
    """Mixin (before the SAE base in the bases) of the SAEs whose codes are
    ``activate(pre_activations(x))`` and whose training loss is the reconstruction alone, with the
    pre-activations reported to hooks. Subclasses give ``pre_activations`` and ``activate``."""

    def activate(self, pre_acts: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        return self.activate(self.pre_activations(x))

    def training_forward(self, x: Tensor) -> TrainOutput:
        pre = self.pre_activations(x)
        codes = self.activate(pre)
        x_hat = self._decode(codes)
        loss = reconstruction_loss(x, x_hat)
        return TrainOutput(loss, x_hat, codes, pre, {"mse": loss.detach()})


class TiedWeightSAE(SAE):
    """Shared body of the SAEs with one weight that both encodes and decodes (the GBA tied SAE,
    MP-SAE): ``W_dec`` (M, d) is the parameter, its rows are the atoms, and ``W_enc`` is its
    transpose (a view, so SAELens names still apply)."""

    W_dec: nn.Parameter

    @property
    def W_enc(self) -> Tensor:
        """(d, M) view of the tied weight ``W_dec``."""
        return self.W_dec.T

    @property
    def dictionary(self) -> Tensor:
        return self.W_dec


class UntiedSAE(PreActivationCodes, SAE):
    """Shared body of the untied SAEs: ``pre_acts = (x - b_dec) W_enc + b_enc``,
    ``x_hat = codes W_dec + b_dec``. Atoms (rows of ``W_dec``) start unit-norm and ``W_enc``
    starts as ``W_dec.T`` (the common initialisation); ``b_dec`` starts at zero and is trained
    when ``config.train_b_dec``; subclasses choose the activation."""

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        W = self._new(config.n_latents, config.d, generator=self._generator())
        unit_rows_(W)
        self.W_dec = nn.Parameter(W)
        self.W_enc = nn.Parameter(W.T.clone())
        self.b_enc = nn.Parameter(self._new(config.n_latents, fill=0.0))
        self.b_dec = nn.Parameter(self._new(config.d, fill=0.0), requires_grad=config.train_b_dec)

    @property
    def dictionary(self) -> Tensor:
        return self.W_dec

    def pre_activations(self, x: Tensor) -> Tensor:
        """(x - b_dec) W_enc + b_enc, (B, M)."""
        return (self._check_input(x) - self.b_dec) @ self.W_enc + self.b_enc

    def decode(self, codes: Tensor) -> Tensor:
        return self._decode(self._check_codes(codes))

    def _decode(self, codes: Tensor) -> Tensor:
        return codes @ self.W_dec + self.b_dec
