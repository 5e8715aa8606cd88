"""TopK SAE (Gao et al. 2024; the GBA paper's main baseline): keep the k largest pre-activations
of every input, ReLU them, zero the rest. No sparsity penalty."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .._checks import check_int
from .base import SAEConfig, UntiedSAE, check_k, topk_relu
from .registry import register_sae

__all__ = ["TopKSAE", "TopKSAEConfig"]


@dataclass(frozen=True)
class TopKSAEConfig(SAEConfig):
    """Config of :class:`TopKSAE`."""

    unit_norm_decoder: bool = True
    """Renormalise the atoms (rows of W_dec) to unit norm after every step (the default here)."""
    k: int = 32
    """Active latents per input, 1 <= k <= n_latents."""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "k", check_k(self.k, self.n_latents))


@register_sae("TopK", config=TopKSAEConfig)
class TopKSAE(UntiedSAE):
    """Untied SAE with a TopK activation: codes = ReLU(top-k of pre_acts), exactly <= k non-zeros
    per row (fewer when some of the top k are negative)."""

    config: TopKSAEConfig

    def __init__(self, config: TopKSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else TopKSAEConfig(**kwargs))
        self.k = self.config.k

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
