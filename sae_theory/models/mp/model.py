"""The MP-SAE model: :class:`MPSAEConfig` and :class:`MPSAE` (the algorithm is described in
:mod:`sae_theory.models.mp`).

:meth:`MPSAE.pursuit` runs the fast batched path of :mod:`.pursuit`. It selects through the Gram
matrix G = D D^T, which is cached and rebuilt when the dictionary changes (an optimiser step,
``post_step``, ``load_state_dict``: keyed on the weight's version counter), or directly. The rule
for using G (``gram="auto"``): it must fit in ``gram_max_bytes`` and, when it is not cached yet,
building it (p^2 d multiply-adds) must cost less than the direct pursuit (k B d p): p <= k B.

Training (:meth:`MPSAE.training_forward`): the selection runs under ``no_grad``, then
:class:`~.autograd.UnrolledPursuit` recomputes the coefficients differentiably. Options: the
dead-atom auxiliary loss of the authors' library (docs/papers.md#mp-sae-training) and atom dropout
in early training.

Unit-norm atoms. The propositions (docs/papers.md#mp-sae-propositions) assume ||D_j|| = 1, and by
default (``unit_norm_decoder=True``) ``post_step`` renormalises the atoms after every optimiser
step, as the overcomplete library does. With ``unit_norm_decoder=False`` (the official MP-SAE toy
code does not renormalise) the atoms drift off the sphere during training; the pursuit still runs
the same loop, with coefficient <r, D_j> (not divided by ||D_j||^2), exactly as
:func:`~.reference.matching_pursuit_reference`, and the propositions no longer hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..._checks import check_bool, check_int
from ..base import SAEConfig, TiedWeightSAE, TrainOutput, reconstruction_loss, unit_rows_
from ..registry import register_sae
from .autograd import UnrolledPursuit
from .pursuit import pursuit_direct, pursuit_gram
from .reference import MPResult, check_selection, check_threshold

__all__ = ["GRAM_MODES", "MPSAE", "MPSAEConfig"]

GRAM_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class MPSAEConfig(SAEConfig):
    """Config of :class:`MPSAE`. ``n_latents`` is the number of atoms p."""

    unit_norm_decoder: bool = True
    """Renormalise the atoms to unit norm after every optimiser step (the propositions assume unit
    atoms; the overcomplete library does it). False, as the official toy code: the atoms drift
    (module docstring)."""
    train_b_dec: bool = False
    """Learn the pre-bias b_dec (r(0) = x - b_dec, x_hat = z D + b_dec). Off, as in the paper: b_dec
    then stays a zero parameter the optimiser never sees."""
    k: int = 16
    """Pursuit steps per input (training and default inference); the cap when ``threshold`` is set."""
    threshold: float | None = None
    """Stop an input once ||r|| < threshold (None: always take k steps)."""
    stop_on_repeat: bool = False
    """Stop an input after the first step that leaves its support unchanged (official toy rule)."""
    stop_at_rounding: bool = True
    """Stop an input once its residual is rounding: ||r|| <= 32 eps ||x - b_dec|| (eps of the dtype;
    :data:`~.reference.ROUNDING_MULTIPLE`), checked before every step, so that an input equal to an
    atom gets one code and a zero input none. The codes it removes are each at most 32 eps
    ||x - b_dec|| (unit atoms). False: the plain loop, which goes on decomposing the rounding."""
    selection: str = "relu"
    """``"relu"``: argmax of relu(c), coefficient relu(c_j) >= 0 (the authors' code, default);
    ``"abs"``: classic matching pursuit, argmax |c|, signed coefficient."""
    gram: str = "auto"
    """Selection through the Gram matrix: ``"auto"`` (the rule in this module's docstring),
    ``"always"``, ``"never"`` (direct correlations every step)."""
    gram_max_bytes: int = 2 << 30
    """Largest Gram matrix (p^2 x element size) that ``"auto"`` builds."""
    aux_coefficient: float = 0.0
    """Weight of the dead-atom auxiliary loss (the authors' library recommends 1e-2; 0 = off):
    loss -= aux_coefficient * mean over inputs n and dead atoms j of <r_n, D_j>, r the final
    residual, when more than ``aux_min_dead`` atoms are dead in the batch."""
    aux_dead_threshold: float = 1e-2
    """An atom is dead in a batch when its largest code is below this."""
    aux_min_dead: int = 10
    """The auxiliary loss acts only when more than this many atoms are dead."""
    atom_dropout: float = 0.0
    """Probability of removing each atom from selection in a training forward pass (one mask per
    pass, shared by the batch and the steps, as the authors' library). 0 = off."""
    atom_dropout_steps: int = 0
    """Training passes during which dropout is on (it helps early; the authors' advice)."""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "k", check_int("k", self.k, minimum=1))
        check_threshold(self.threshold)
        check_bool("stop_on_repeat", self.stop_on_repeat)
        check_bool("stop_at_rounding", self.stop_at_rounding)
        check_selection(self.selection)
        if self.gram not in GRAM_MODES:
            raise ValueError(f"gram must be one of {GRAM_MODES}, got {self.gram!r}.")
        object.__setattr__(self, "gram_max_bytes", check_int("gram_max_bytes", self.gram_max_bytes, minimum=0))
        if not (math.isfinite(self.aux_coefficient) and self.aux_coefficient >= 0):
            raise ValueError(f"aux_coefficient must be a finite number >= 0, got {self.aux_coefficient}.")
        if not (math.isfinite(self.aux_dead_threshold) and self.aux_dead_threshold >= 0):
            raise ValueError(f"aux_dead_threshold must be a finite number >= 0, got {self.aux_dead_threshold}.")
        object.__setattr__(self, "aux_min_dead", check_int("aux_min_dead", self.aux_min_dead, minimum=0))
        if not (0.0 <= self.atom_dropout < 1.0):
            raise ValueError(f"atom_dropout must lie in [0, 1) (a probability of removing an atom), got {self.atom_dropout}.")
        object.__setattr__(self, "atom_dropout_steps", check_int("atom_dropout_steps", self.atom_dropout_steps, minimum=0))
        if self.atom_dropout > 0 and self.atom_dropout_steps == 0:
            raise ValueError("atom_dropout > 0 needs atom_dropout_steps > 0 (the training passes it stays on for).")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MPSAEConfig:
        """Inverse of :meth:`to_dict`; also reads configs saved before ``use_b_dec`` was renamed
        ``train_b_dec`` (same meaning)."""
        data = dict(data)
        if "use_b_dec" in data:
            if "train_b_dec" in data:
                raise ValueError("the config has both use_b_dec and train_b_dec (the same switch, renamed); keep train_b_dec only.")
            data["train_b_dec"] = data.pop("use_b_dec")
        return super().from_dict(data)


@register_sae("MP-SAE", config=MPSAEConfig, aliases=("MP",))
class MPSAE(TiedWeightSAE):
    """Matching-pursuit SAE (:mod:`sae_theory.models.mp`).

    Parameters (SAELens names): ``W_dec`` (p, d) the dictionary, unit rows at initialisation and,
    with ``unit_norm_decoder`` (the default), after every ``post_step``; ``W_enc`` = ``W_dec.T``
    (a view: the weights are tied); ``b_dec`` (d,) the pre-bias, zero, trained only with
    ``train_b_dec``. There is no encoder bias.

    >>> sae = MPSAE(d=64, n_latents=256, k=8)
    >>> x = torch.randn(5, 64)
    >>> sae.encode(x).ne(0).sum(1).le(8).all().item()
    True
    """

    config: MPSAEConfig

    def __init__(self, config: MPSAEConfig | None = None, **kwargs):
        config = config if config is not None else MPSAEConfig(**kwargs)
        super().__init__(config)
        W = self._new(config.n_latents, config.d, generator=self._generator())
        unit_rows_(W)
        self.W_dec = nn.Parameter(W)
        self.b_dec = nn.Parameter(self._new(config.d, fill=0.0), requires_grad=config.train_b_dec)
        # training passes so far (drives atom dropout; a buffer so a resumed run continues exactly)
        self.register_buffer("n_train_passes", torch.zeros((), dtype=torch.long, device=config.device))
        self._gram: tuple[Tensor, Tensor] | None = None  # (the dictionary G was built from, G)

    @classmethod
    def from_dictionary(cls, D: Tensor, *, normalize: bool = True, **kwargs) -> MPSAE:
        """An MP-SAE whose atoms are the rows of D (p, d), in D's dtype and device. ``normalize``
        scales them to unit norm first (the propositions need it; a zero row raises). With
        ``normalize=False`` the pursuit runs on D as given; training would renormalise it at the
        first ``post_step`` unless ``unit_norm_decoder=False``."""
        if not isinstance(D, Tensor) or D.ndim != 2 or not D.dtype.is_floating_point:
            raise ValueError("D must be a floating (p, d) tensor with the atoms as rows.")
        if not bool(torch.isfinite(D).all()):
            raise ValueError("D has NaN or Inf entries.")
        D = D.detach().clone()
        if normalize:
            norms = D.norm(dim=1)
            if bool((norms == 0).any()):
                raise ValueError(f"D has {int((norms == 0).sum())} zero rows, which cannot be normalised; drop them.")
            D /= norms[:, None]
        kwargs.setdefault("dtype", D.dtype)
        kwargs.setdefault("device", str(D.device))
        sae = cls(d=D.shape[1], n_latents=D.shape[0], **kwargs)
        with torch.no_grad():
            sae.W_dec.copy_(D)
        return sae

    # -- contract ------------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return self.config.k

    def encode(self, x: Tensor, k: int | None = None, threshold: float | None = None) -> Tensor:
        """Codes (B, p). ``k`` overrides the number of steps (the cap in threshold mode) and
        ``threshold`` the residual-norm stop, for inference at another sparsity than training."""
        return self.pursuit(x, k=k, threshold=threshold).codes

    def pre_activations(self, x: Tensor) -> Tensor:
        """The codes: matching pursuit has no pre-activation apart from its output, so firing
        statistics (and ``TrainOutput.pre_acts``) count the codes themselves."""
        return self.encode(x)

    def decode(self, codes: Tensor) -> Tensor:
        """x_hat = z D + b_dec."""
        return self._check_codes(codes) @ self.W_dec + self.b_dec

    # -- the Gram matrix -----------------------------------------------------------------------
    def _gram_valid(self) -> bool:
        """Whether the cached G was built from exactly the current dictionary. The check compares
        the dictionary with the copy kept beside G (O(p d), against the O(p^2 d) of building G),
        so no change can slip past it: optimiser steps, ``post_step``, ``load_state_dict``, and
        also writes through ``W_dec.data`` or in-place edits under ``torch.no_grad()`` (e.g.
        dead-atom resampling), which do not bump the parameter's version counter."""
        if self._gram is None:
            return False
        W0, W = self._gram[0], self.W_dec.detach()
        return W0.shape == W.shape and W0.dtype == W.dtype and W0.device == W.device and torch.equal(W0, W)

    def gram(self) -> Tensor:
        """G = D D^T (p, p), cached until the dictionary changes in any way (see
        :meth:`_gram_valid`); with or without unit-norm atoms."""
        if not self._gram_valid():
            with torch.no_grad():
                W = self.W_dec.detach()
                self._gram = (W.clone(), W @ W.T)
        return self._gram[1]

    def uses_gram(self, batch_size: int, k: int | None = None) -> bool:
        """Whether a pursuit of ``batch_size`` inputs and ``k`` steps selects through G (the rule
        of the module docstring of :mod:`sae_theory.models.mp.model`)."""
        mode = self.config.gram
        if mode != "auto":
            return mode == "always"
        p = self.n_latents
        if p * p * self.W_dec.element_size() > self.config.gram_max_bytes:
            return False
        cached = self._gram_valid()
        return cached or p <= (self.k if k is None else k) * batch_size

    # -- the pursuit -----------------------------------------------------------------------------
    def _resolve(self, k: int | None, threshold: float | None) -> tuple[int, float | None]:
        k = self.config.k if k is None else k
        k = check_int("k", k, minimum=1)
        check_threshold(threshold)
        return k, self.config.threshold if threshold is None else threshold

    @torch.no_grad()
    def pursuit(self, x: Tensor, k: int | None = None, threshold: float | None = None, *, keep: Tensor | None = None,
                codes: bool = True, stop_at_rounding: bool | None = None) -> MPResult:
        """Batched matching pursuit of x (B, d) (or (..., d), flattened): the fast path.

        ``keep`` (p,) optional 0/1 mask of atoms allowed to be selected (atom dropout).
        ``codes=False`` skips the (B, p) codes (``MPResult.codes`` is then None) where the rule
        does not need them (training: indices and coefficients suffice).
        ``stop_at_rounding`` overrides the config's stop at rounding level for this call.
        Same result as :func:`~.reference.matching_pursuit_reference` (up to rounding; see the
        tests), unit-norm atoms or not.
        """
        x = self._check_input(x)
        lead = x.shape[:-1]
        x = x.reshape(-1, self.d)
        k, threshold = self._resolve(k, threshold)
        rounding = self.config.stop_at_rounding if stop_at_rounding is None else check_bool("stop_at_rounding", stop_at_rounding)
        D = self.W_dec.detach()
        xc = x - self.b_dec.detach()
        if keep is not None:
            D = D * keep[:, None]
        if self.uses_gram(x.shape[0], k):
            G = self.gram() if keep is None else self.gram() * keep[:, None] * keep[None, :]
            out = pursuit_gram(xc, D, G, k, threshold, self.config.selection, self.config.stop_on_repeat, codes, rounding)
        else:
            out = pursuit_direct(xc, D, k, threshold, self.config.selection, self.config.stop_on_repeat, rounding)
        if len(lead) != 1 and out.codes is not None:
            out = MPResult(out.codes.reshape(*lead, -1), out.indices.reshape(*lead, k), out.alphas.reshape(*lead, k),
                           out.steps.reshape(lead), out.residual.reshape(*lead, self.d))
        return out

    def training_forward(self, x: Tensor) -> TrainOutput:
        x = self._check_input(x).reshape(-1, self.d)
        cfg = self.config
        keep = None
        if self.training and cfg.atom_dropout > 0 and int(self.n_train_passes) < cfg.atom_dropout_steps:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + int(self.n_train_passes))
            keep = (torch.rand(self.n_latents, generator=gen) >= cfg.atom_dropout).to(self.W_dec.dtype).to(self.W_dec.device)
        if self.training:
            self.n_train_passes += 1
        sel = self.pursuit(x, keep=keep, codes=cfg.stop_on_repeat)
        # differentiable recomputation of the coefficients from the gathered atoms, with a
        # hand-written backward that walks the steps in reverse (O(B d + B k) saved, not O(k B p))
        idx = sel.indices.clamp(min=0)  # -1 (no atom added) -> any valid row, multiplied by 0
        # steps not taken add nothing: stopped inputs (threshold, repeat, rounding level), dropped
        # atoms; so the training codes have the support of encode's, whichever rule stopped a row
        taken = sel.alphas != 0
        r, A = UnrolledPursuit.apply(x - self.b_dec, self.W_dec, idx, taken, cfg.selection == "relu")
        codes = torch.zeros(x.shape[0], self.n_latents, dtype=x.dtype, device=x.device).scatter_add(1, idx, A)
        x_hat = x - r
        mse = reconstruction_loss(x, x_hat)
        loss = mse
        metrics = {"mse": mse.detach(), "steps": sel.steps.to(x.dtype).mean()}
        if cfg.aux_coefficient > 0:
            dead = codes.detach().amax(0) < cfg.aux_dead_threshold
            n_dead = int(dead.sum())
            if n_dead > cfg.aux_min_dead:
                aux = (r @ self.W_dec[dead].T).mean()
                loss = loss - cfg.aux_coefficient * aux
                metrics["aux"] = aux.detach()
        return TrainOutput(loss, x_hat, codes, codes, metrics)
