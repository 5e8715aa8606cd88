"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping ahead"): learned per-latent thresholds
trained through straight-through estimators (STE) of an L0 penalty.

    pre   = (x - b_dec) W_enc + b_enc
    z     = JumpReLU_theta(pre) = pre * H(pre - theta),   theta = exp(log_threshold) > 0
    L     = mean_b [ ||x_b - x_hat_b||^2 + lambda * sum_m H(pre_bm - theta_m) ]

H is the Heaviside step, so L has no gradient with respect to theta. The paper's pseudo-derivatives,
with the rectangle kernel K(u) = 1[|u| < 1/2] and bandwidth eps, replace the missing ones:

    d JumpReLU / d pre   = H(pre - theta)                       (the exact one)
    d JumpReLU / d theta = -(theta / eps) K((pre - theta) / eps)
    d H / d pre          = 0
    d H / d theta        = -(1 / eps) K((pre - theta) / eps)

:func:`jumprelu` and :func:`step` are those two functions with those backward passes. Atoms (rows
of W_dec) are kept at unit norm, so lambda trades reconstruction against L0 directly. lambda is the
buffer ``l0_coefficient``: a :class:`~sae_theory.training.SparsityController` can steer it toward
a target L0, and a checkpoint keeps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .._checks import check_real
from .base import SAEConfig, TrainOutput, UntiedSAE, reconstruction_loss
from .registry import register_sae

__all__ = ["JumpReLUSAE", "JumpReLUSAEConfig", "jumprelu", "step"]


def _rectangle(u: Tensor) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        g_pre = grad * (pre > threshold).to(pre.dtype)
        g_theta = -(threshold / eps) * _rectangle((pre - threshold) / eps) * grad
        return g_pre, _sum_to(g_theta, threshold.shape), None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        g_theta = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad
        return torch.zeros_like(pre), _sum_to(g_theta, threshold.shape), None


def _sum_to(g: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape`` (the per-latent thresholds)."""
    while g.ndim > len(shape):
        g = g.sum(0)
    return g


def jumprelu(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """pre * H(pre - threshold), with the STE pseudo-derivative for ``threshold`` (module docstring)."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
    """H(pre - threshold), with the STE pseudo-derivative for ``threshold`` and none for ``pre``."""
    return _Step.apply(pre, threshold, bandwidth)


@dataclass(frozen=True)
class JumpReLUSAEConfig(SAEConfig):
    """Config of :class:`JumpReLUSAE`."""

    unit_norm_decoder: bool = True
    """Renormalise the atoms (rows of W_dec) to unit norm after every step (the default here)."""
    l0_coefficient: float = 1e-3
    """lambda >= 0, the weight of the L0 penalty (the initial value when a controller steers it)."""
    initial_threshold: float = 1e-3
    """theta of every latent at initialisation (> 0; the paper's and SAELens' 0.001)."""
    bandwidth: float = 1e-3
    """eps of the rectangle kernel (> 0; the paper's 0.001)."""

    def __post_init__(self):
        super().__post_init__()
        check_real("l0_coefficient", self.l0_coefficient, minimum=0)
        for name in ("initial_threshold", "bandwidth"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}.")


@register_sae("JumpReLU", config=JumpReLUSAEConfig)
class JumpReLUSAE(UntiedSAE):
    """Untied SAE with JumpReLU activations, learned thresholds and an STE-trained L0 penalty."""

    config: JumpReLUSAEConfig

    def __init__(self, config: JumpReLUSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else JumpReLUSAEConfig(**kwargs))
        cfg = self.config
        self.log_threshold = nn.Parameter(self._new(cfg.n_latents, fill=math.log(cfg.initial_threshold)))
        self.register_buffer("l0_coefficient", torch.tensor(cfg.l0_coefficient, dtype=cfg.dtype, device=cfg.device))

    @property
    def threshold(self) -> Tensor:
        """theta = exp(log_threshold), (M,)."""
        return self.log_threshold.exp()

    def activate(self, pre_acts: Tensor) -> Tensor:
        return jumprelu(pre_acts, self.threshold, self.config.bandwidth)

    def training_forward(self, x: Tensor) -> TrainOutput:
        pre = self.pre_activations(x)
        theta = self.threshold
        codes = jumprelu(pre, theta, self.config.bandwidth)
        x_hat = self._decode(codes)
        mse = reconstruction_loss(x, x_hat)
        l0 = step(pre, theta, self.config.bandwidth).sum(-1).mean()
        loss = mse + self.l0_coefficient * l0
        return TrainOutput(loss, x_hat, codes, pre, {"mse": mse.detach(), "l0_penalty": l0.detach()})
