"""TopK SAE (Gao et al. 2024; the GBA paper's main baseline): keep the k largest pre-activations
of every input, ReLU them, zero the rest. No sparsity penalty."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .._checks import check_int
from .auxk import add_auxk, check_auxk_fields, register_auxk_buffer
from .base import SAEConfig, TrainOutput, UntiedSAE, check_k, reconstruction_loss, topk_relu
from .registry import register_sae

__all__ = ["TopKSAE", "TopKSAEConfig"]


@dataclass(frozen=True)
class TopKSAEConfig(SAEConfig):
    """Config of :class:`TopKSAE`."""

    unit_norm_decoder: bool = True
    """Renormalise the atoms (rows of W_dec) to unit norm after every step (the default here)."""
    k: int = 32
    """Active latents per input, 1 <= k <= n_latents."""
    auxk_coefficient: float = 0.0
    """Weight of the AuxK dead-latent loss (:mod:`sae_theory.models.auxk`; SAELens's
    ``aux_loss_coefficient``, default 1 there); 0: off."""
    auxk_k: int | None = None
    """Dead latents that reconstruct the residual per input; None: d // 2 (Gao et al.)."""
    dead_steps: int = 1000
    """A latent is dead after this many training steps without firing (SAELens's
    ``dead_feature_window``)."""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "k", check_k(self.k, self.n_latents))
        check_auxk_fields(self)


@register_sae("TopK", config=TopKSAEConfig)
class TopKSAE(UntiedSAE):
    """Untied SAE with a TopK activation: codes = ReLU(top-k of pre_acts), exactly <= k non-zeros
    per row (fewer when some of the top k are negative)."""

    config: TopKSAEConfig

    def __init__(self, config: TopKSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else TopKSAEConfig(**kwargs))
        self.k = self.config.k
        register_auxk_buffer(self)

    def _check_k(self, k) -> int:
        k = check_int("k", k)
        if not 1 <= k <= self.n_latents:
            raise ValueError(f"k must lie in [1, n_latents={self.n_latents}], got {k}.")
        return k

    def activate(self, pre_acts: Tensor, k: int | None = None) -> Tensor:
        return topk_relu(pre_acts, self.k if k is None else self._check_k(k))

    def encode(self, x: Tensor, k: int | None = None) -> Tensor:
        """Codes (B, M) keeping the top ``k`` (default: the trained k) pre-activations."""
        if k is not None:
            self._check_k(k)  # before any work on x
        return self.activate(self.pre_activations(x), k)

    def training_forward(self, x: Tensor) -> TrainOutput:
        """Reconstruction loss, plus the AuxK dead-latent loss when ``auxk_coefficient`` > 0."""
        pre = self.pre_activations(x)
        codes = self.activate(pre)
        x_hat = self._decode(codes)
        loss, metrics = add_auxk(self, reconstruction_loss(x, x_hat), x, x_hat, pre, codes)
        return TrainOutput(loss, x_hat, codes, pre, metrics)
