"""The GBA paper's TopK and L1 baselines on its own tied model (docs/papers.md#gba-architecture).

The paper defines every method on one tied SAE with output scales and a pre-bias,

    y   = W (x - b_dec) + b_enc                     pre-activations, (B, M)
    z   = phi(y)                                    codes
    x^  = (a * z) W + b_dec                         a: per-neuron output scale,

and its baselines differ from GBA only in phi and the loss (EXACT, docs/papers.md#gba-architecture):

* **TopK** (:class:`TiedTopKSAE`): "no regulariser; only the K largest pre-activations y_m are
  kept"; z = ReLU of the k largest y, zero elsewhere; loss ||x^ - x||^2.
* **L1** (:class:`TiedReLUSAE`): z = ReLU(y), loss ||x^ - x||^2 + lambda sum_m ||w_m|| z_m.

Our untied :class:`~sae_theory.models.TopKSAE` and :class:`~sae_theory.models.ReLUSAE` have a
separate encoder; these two keep one weight W (M, d) that encodes and decodes (``W_enc`` is the
view ``W_dec.T``, :class:`~sae_theory.models.base.TiedWeightSAE`), as the paper's baselines do.

What the paper leaves open, and what we chose (each a config switch):

* **Trainable neuron bias** (``train_b_enc``, default True; INFERRED). Under GBA the bias b_m gets
  no gradient because bias adaptation moves it (docs/papers.md#gba-architecture). The baselines
  have no bias adaptation; with b frozen at 0 a ReLU neuron on a unit-norm w fires on about half
  of the inputs and the L1 penalty could not make the codes sparse, and the first author's library
  trains the encoder bias of its tied SAE (docs/papers.md#gba-author-code). So b_enc is a
  parameter here, trained by default; ``train_b_enc=False`` keeps it at its initial 0.
* **Pre-bias** (``train_b_dec``, default True): subtracted inside the pre-activation and added
  back after decoding, as for the tied GBA SAE (the reading the first author's library settles,
  docs/papers.md#gba-author-code).
* **Unit-norm rows** (``unit_norm_decoder``, default True): the spherical constraint of the
  analysis (REPORTED), renormalised after every optimiser step; the output scale a (initialised
  to ``output_scale_init`` = 1, trained when ``train_output_scale``) carries the decoder's
  magnitude, as in the deployed GBA SAE. Under unit rows the L1 weight ||w_m|| is 1, so the L1
  penalty is lambda * sum_m z_m; it is still computed from W, so the formula stays the paper's when
  the constraint is off (then the penalty can be escaped by shrinking W and growing a: keep the
  constraint on with a trained output scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import check_bool, check_real
from .base import PreActivationCodes, SAEConfig, TiedWeightSAE, TrainOutput, check_k, topk_relu, unit_rows_
from .relu import l1_training_forward
from .registry import register_sae

__all__ = ["TiedReLUSAE", "TiedReLUSAEConfig", "TiedTopKSAE", "TiedTopKSAEConfig"]


@dataclass(frozen=True)
class _TiedBaselineConfig(SAEConfig):
    """Fields shared by the tied baselines (see the module docstring for the defaults)."""

    unit_norm_decoder: bool = True
    """Renormalise the rows of W to unit norm after every optimiser step (default True)."""
    output_scale_init: float = 1.0
    """Initial per-neuron output scale a (> 0; the paper's deployed SAE uses 1)."""
    train_output_scale: bool = True
    """Train the output scale a. False keeps it at ``output_scale_init``."""
    train_b_enc: bool = True
    """Train the neuron bias b_enc (initialised to 0). False keeps it at 0 (``requires_grad=False``)."""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "output_scale_init", check_real("output_scale_init", self.output_scale_init, minimum=0, include_minimum=False))
        for name in ("train_output_scale", "train_b_enc"):
            check_bool(name, getattr(self, name))


class _TiedBaseline(PreActivationCodes, TiedWeightSAE):
    """Shared body: parameters, pre-activations and decoding of the tied baselines.

    Parameters (SAELens names): ``W_dec`` (M, d) the tied weight W (``W_enc`` = ``W_dec.T``, a
    view); ``output_scale`` (M,) the paper's a; ``b_enc`` (M,) the neuron bias b; ``b_dec`` (d,) the
    pre-bias b_pre. Subclasses give :meth:`activate` and, for a penalty, ``training_forward``.
    """

    config: _TiedBaselineConfig

    def __init__(self, config: _TiedBaselineConfig):
        super().__init__(config)
        W = self._new(config.n_latents, config.d, generator=self._generator())
        unit_rows_(W)
        self.W_dec = nn.Parameter(W)
        self.output_scale = nn.Parameter(self._new(config.n_latents, fill=config.output_scale_init),
                                         requires_grad=config.train_output_scale)
        self.b_enc = nn.Parameter(self._new(config.n_latents, fill=0.0), requires_grad=config.train_b_enc)
        self.b_dec = nn.Parameter(self._new(config.d, fill=0.0), requires_grad=config.train_b_dec)

    def pre_activations(self, x: Tensor) -> Tensor:
        """y = W (x - b_dec) + b_enc, (B, M)."""
        return (self._check_input(x) - self.b_dec) @ self.W_dec.T + self.b_enc

    def decode(self, codes: Tensor) -> Tensor:
        """x^ = (a * z) W + b_dec, (B, d)."""
        return self._decode(self._check_codes(codes))

    def _decode(self, codes: Tensor) -> Tensor:
        return (codes * self.output_scale) @ self.W_dec + self.b_dec


@dataclass(frozen=True)
class TiedTopKSAEConfig(_TiedBaselineConfig):
    """Config of :class:`TiedTopKSAE`."""

    k: int = 32
    """Active neurons per input, 1 <= k <= n_latents."""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "k", check_k(self.k, self.n_latents))


@register_sae("Tied TopK", config=TiedTopKSAEConfig)
class TiedTopKSAE(_TiedBaseline):
    """The GBA paper's TopK baseline on its tied model (module docstring): z = ReLU of the k
    largest y = W (x - b_dec) + b_enc per row, zero elsewhere (<= k non-zeros; fewer when some of
    the k largest are negative); loss ||x^ - x||^2, no penalty."""

    config: TiedTopKSAEConfig

    def __init__(self, config: TiedTopKSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else TiedTopKSAEConfig(**kwargs))
        self.k = self.config.k

    def activate(self, pre_acts: Tensor) -> Tensor:
        return topk_relu(pre_acts, self.k)


@dataclass(frozen=True)
class TiedReLUSAEConfig(_TiedBaselineConfig):
    """Config of :class:`TiedReLUSAE`."""

    l1_coefficient: float = 1e-2
    """lambda >= 0, the weight of the ||w_m||-weighted L1 penalty."""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "l1_coefficient", check_real("l1_coefficient", self.l1_coefficient, minimum=0))


@register_sae("Tied L1", config=TiedReLUSAEConfig, aliases=("Tied ReLU",))
class TiedReLUSAE(_TiedBaseline):
    """The GBA paper's L1 baseline on its tied model (module docstring): z = ReLU(y), trained on

        L = mean_b [ ||x_b - x^_b||^2 + lambda * sum_m ||w_m|| * z_bm ]

    (docs/papers.md#gba-architecture, EXACT up to the paper's 1/2 on the squared error). lambda is
    the buffer ``l1_coefficient`` (in the config's dtype), as in the untied ReLU SAE, so a
    :class:`~sae_theory.training.SparsityController` can steer it."""

    config: TiedReLUSAEConfig

    def __init__(self, config: TiedReLUSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else TiedReLUSAEConfig(**kwargs))
        cfg = self.config
        self.register_buffer("l1_coefficient", torch.tensor(cfg.l1_coefficient, dtype=cfg.dtype, device=cfg.device))

    def activate(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)

    def training_forward(self, x: Tensor) -> TrainOutput:
        return l1_training_forward(self, x)
