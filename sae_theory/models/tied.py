"""The tied SAE that Bias Adaptation (BA) and Group Bias Adaptation (GBA) train
(docs/papers.md#gba-architecture).

    y   = W (x - b_dec) + b_enc                     pre-activations, (B, M)
    z   = phi(y)                                    codes
    x^  = (a * z) W + b_dec                         a: per-neuron output scale

W (M, d) is used both to encode and to decode, with unit-norm rows renormalised after every
optimiser step (``unit_norm_decoder``, on by default: the spherical constraint of the analysis);
``b_enc`` (the neuron bias b of the paper) is a buffer that gradients never touch: only bias
adaptation moves it. ``b_dec`` is the paper's pre-bias b_pre, subtracted inside the
pre-activation (the reading the first author's library settles, docs/papers.md#gba-author-code).

The activation, by ``TiedSAEConfig.activation`` (docs/papers.md#gba-architecture and
docs/papers.md#gba-author-code leave two JumpReLU readings):

* ``"jumprelu_threshold"`` (default): the neuron fires when y = u + b > 0, u = W (x - b_dec), and
  outputs the un-shifted projection, z = u * 1[u + b > 0]. The bias is then only a threshold
  (theta = -b), which is what the paper's appendix says JumpReLU is for ("decouples the neuron
  output magnitude from its bias") and what makes bias adaptation a pure frequency control: moving
  b changes which inputs fire, not the size of what they write. No straight-through estimator is
  needed because b is not trained.
* ``"jumprelu_biased"``: z = y * 1[y > theta] on the biased pre-activation with a fixed
  ``theta >= 0`` (the first author's library's JumpReLU; theta = 0 is ReLU).
* ``"relu"``: z = max(y, 0), the analysed model's activation (up to smoothing).
* ``"topk"``: z = ReLU of the ``k`` largest y, zero elsewhere: the paper's TopK baseline on its
  own tied model ("no regulariser; only the K largest pre-activations y_m are kept",
  docs/papers.md#gba-architecture). Trained without bias adaptation, b stays 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import check_bool, check_real
from .base import SAEConfig, TiedWeightSAE, TrainOutput, check_k, reconstruction_loss, topk_relu, unit_rows_
from .registry import register_sae

__all__ = ["TiedSAE", "TiedSAEConfig", "ACTIVATIONS"]

ACTIVATIONS = ("jumprelu_threshold", "jumprelu_biased", "relu", "topk")


@dataclass(frozen=True)
class TiedSAEConfig(SAEConfig):
    """Config of :class:`TiedSAE`."""

    unit_norm_decoder: bool = True
    """Renormalise the rows of W to unit norm after every optimiser step (the spherical constraint
    of the analysis; the default here)."""
    activation: str = "jumprelu_threshold"
    """``"jumprelu_threshold"`` (default), ``"jumprelu_biased"``, ``"relu"`` or ``"topk"``; see the module docstring."""
    theta: float = 0.0
    """Fixed threshold of ``"jumprelu_biased"`` (>= 0); unused otherwise."""
    k: int | None = None
    """Active neurons per input of ``"topk"`` (1 <= k <= n_latents); must be None otherwise."""
    output_scale_init: float = 1.0
    """Initial per-neuron output scale a. The analysed algorithm takes a -> 0
    (docs/papers.md#gba-recovery-theorem), which decouples the neurons: each one then follows its
    own firing set's dominant direction. The deployed GBA uses a = 1."""
    train_output_scale: bool = True
    """Train the output scale a. False keeps it at ``output_scale_init``."""
    train_b_dec: bool = True
    """Train the pre-bias b_dec (initialised to 0; :meth:`TiedSAE.init_b_dec_` can set it from data)."""

    def __post_init__(self):
        super().__post_init__()
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
        check_real("output_scale_init", self.output_scale_init, minimum=0, include_minimum=False)
        check_real("theta", self.theta, minimum=0)
        check_bool("train_output_scale", self.train_output_scale)
        if self.activation == "topk":
            if self.k is None:
                raise ValueError("activation='topk' needs k (the active neurons per input); pass k=...")
            object.__setattr__(self, "k", check_k(self.k, self.n_latents))
        elif self.k is not None:
            raise ValueError(f"k is only used by activation='topk'; got k={self.k} with activation={self.activation!r}.")


@register_sae("GBA", config=TiedSAEConfig, aliases=("BA", "Tied"))
class TiedSAE(TiedWeightSAE):
    """Tied SAE with output scales, an adapted (never trained) neuron bias and a pre-bias.

    Parameters (SAELens names): ``W_dec`` (M, d) the tied weight W, unit rows (kept so by
    ``post_step`` with ``unit_norm_decoder``);
    ``W_enc`` = ``W_dec.T`` (a view); ``output_scale`` (M,) the paper's a; ``b_enc`` (M,) the
    paper's b, a buffer in [-1, 0] moved only by bias adaptation; ``b_dec`` (d,) the pre-bias.
    """

    config: TiedSAEConfig

    def __init__(self, config: TiedSAEConfig | None = None, **kwargs):
        config = config if config is not None else TiedSAEConfig(**kwargs)
        super().__init__(config)
        gen = self._generator()
        W = self._new(config.n_latents, config.d, generator=gen)
        unit_rows_(W)
        self.W_dec = nn.Parameter(W)
        self.output_scale = nn.Parameter(self._new(config.n_latents, fill=config.output_scale_init), requires_grad=config.train_output_scale)
        self.b_dec = nn.Parameter(self._new(config.d, fill=0.0), requires_grad=config.train_b_dec)
        self.register_buffer("b_enc", self._new(config.n_latents, fill=0.0))


    @torch.no_grad()
    def init_b_dec_(self, x: Tensor) -> None:
        """Set the pre-bias to the mean of a data batch x (B, d)."""
        self.b_dec.copy_(self._check_input(x).mean(0))

    def _projections(self, x: Tensor) -> Tensor:
        return (self._check_input(x) - self.b_dec) @ self.W_dec.T  # u = W (x - b_dec), (B, M)

    def _activate(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Codes z, pre-activations y and, when the activation computed it, the mask 1[y > 0]."""
        y = u + self.b_enc
        act = self.config.activation
        if act == "jumprelu_biased":
            return y * (y > self.config.theta), y, None
        if act == "topk":
            return topk_relu(y, self.config.k), y, None
        fired = (y > 0).to(u.dtype)
        # relu(y) = y * 1[y > 0], with the same gradient (1[y > 0]; torch's relu also takes 0 at y = 0)
        return (u if act == "jumprelu_threshold" else y) * fired, y, fired

    def encode(self, x: Tensor) -> Tensor:
        """Codes z (B, M) of x (B, d)."""
        return self._activate(self._projections(x))[0]

    def pre_activations(self, x: Tensor) -> Tensor:
        """y = W (x - b_dec) + b_enc, (B, M): what bias adaptation counts."""
        return self._projections(x) + self.b_enc

    def decode(self, codes: Tensor) -> Tensor:
        """x^ = (a * z) W + b_dec."""
        return self._decode(self._check_codes(codes))

    def _decode(self, codes: Tensor) -> Tensor:
        return (codes * self.output_scale) @ self.W_dec + self.b_dec

    def training_forward(self, x: Tensor) -> TrainOutput:
        z, y, fired = self._activate(self._projections(x))
        x_hat = self._decode(z)
        loss = reconstruction_loss(x, x_hat)
        return TrainOutput(loss, x_hat, z, y, {"mse": loss.detach()}, fired=fired)
