"""ReLU SAE with an L1 penalty weighted by decoder norms (the GBA paper's L1 baseline,
docs/papers.md#gba-architecture):

    L = mean_b [ ||x_b - x_hat_b||^2 + lambda * sum_m ||W_dec[m]|| * z_bm ],   z = ReLU(pre_acts)

Weighting by the atom norm makes the penalty invariant to trading scale between the encoder and
the decoder, so no unit-norm constraint is needed (``unit_norm_decoder`` is off by default).
lambda is the buffer ``l1_coefficient`` (in the config's dtype): a
:class:`~sae_theory.training.SparsityController` can steer it toward a target L0, and a checkpoint
keeps it, so a resumed run continues with the steered value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_real
from .base import SAEConfig, TrainOutput, UntiedSAE, reconstruction_loss
from .registry import register_sae

__all__ = ["ReLUSAE", "ReLUSAEConfig", "l1_training_forward"]


@dataclass(frozen=True)
class ReLUSAEConfig(SAEConfig):
    """Config of :class:`ReLUSAE`."""

    l1_coefficient: float = 1e-2
    """lambda >= 0, the weight of the decoder-norm-weighted L1 penalty."""

    def __post_init__(self):
        super().__post_init__()
        check_real("l1_coefficient", self.l1_coefficient, minimum=0)


@register_sae("ReLU", config=ReLUSAEConfig, aliases=("L1", "Vanilla"))
class ReLUSAE(UntiedSAE):
    """Untied ReLU SAE trained with reconstruction + lambda * decoder-norm-weighted L1."""

    config: ReLUSAEConfig

    def __init__(self, config: ReLUSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else ReLUSAEConfig(**kwargs))
        cfg = self.config
        self.register_buffer("l1_coefficient", torch.tensor(cfg.l1_coefficient, dtype=cfg.dtype, device=cfg.device))

    def activate(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)

    def training_forward(self, x: Tensor) -> TrainOutput:
        return l1_training_forward(self, x)


def l1_training_forward(sae, x: Tensor) -> TrainOutput:
    """The forward pass of a ReLU SAE trained on reconstruction + lambda * decoder-norm-weighted L1:
    codes z = ReLU(pre_activations(x)), loss = ||x^ - x||^2 + lambda * mean_b sum_m ||W_dec[m]|| z_bm,
    lambda the SAE's ``l1_coefficient`` buffer (so a SparsityController can steer it). Shared by
    the untied :class:`ReLUSAE` and the tied L1 baseline."""
    pre = sae.pre_activations(x)
    codes = torch.relu(pre)
    x_hat = sae._decode(codes)  # codes of its own: decoded without a second check
    mse = reconstruction_loss(x, x_hat)
    l1 = (codes * sae.W_dec.norm(dim=1)).sum(-1).mean()
    loss = mse + sae.l1_coefficient * l1
    return TrainOutput(loss, x_hat, codes, pre, {"mse": mse.detach(), "l1": l1.detach()})
