"""Matryoshka SAE (Nabeshima 2024; Bussmann et al. 2025): nested prefixes of the latents must each
reconstruct the input on their own, so the first latents learn general (parent) concepts.

With prefix ends 0 < m_1 < ... < m_G = M and z = ReLU(pre_acts) (the ReLU-L1 variant that the
MP-SAE toy trains, docs/papers.md#mp-sae-training):

    x_hat^(g) = z[:, :m_g] W_dec[:m_g] + b_dec                     (prefix g decodes alone)
    L = (1/G) sum_g mean_b [ ||x_b - x_hat_b^(g)||^2 + lambda * sum_{m < m_g} ||W_dec[m]|| z_bm ]

The reconstruction term is the mean of the prefix errors and the sparsity term the mean of the
prefix L1 penalties (a latent in an early prefix is penalised in every prefix that contains it), as
in Nabeshima's code. The full decode (g = G) is ``decode(codes)``; ``decode(codes, prefix=m)``
decodes with the first m latents only.

Prefixes: ``"fixed"`` uses ``prefixes`` (ends, increasing, the last equal to n_latents);
``"pareto"`` draws ``n_prefixes - 1`` distinct ends from {min_prefix_length, .., M - 1} at every
training pass, with P(end = j) proportional to (j - min + 1)^a - (j - min)^a (a = ``pareto_power``,
Nabeshima's truncated Pareto law, which favours short prefixes), plus M. The draw is seeded by
(config.seed, the pass counter ``n_train_passes``, a buffer), so a resumed run draws the same
prefixes. Not implemented: Nabeshima's periodic latent permutation (frequent latents moved to the
front); its optimiser-state permutation is a no-op in that code (it looks the state up in
``param_group``, where Adam keeps none).

lambda is the buffer ``l1_coefficient``; a :class:`~sae_theory.training.SparsityController` can
steer it toward a target L0. As in the ReLU SAE, the penalty is weighted by the atom norms, so the
atoms need no unit-norm constraint (``unit_norm_decoder`` is off by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_int, check_real
from .base import SAEConfig, TrainOutput, UntiedSAE
from .registry import register_sae

__all__ = ["MatryoshkaSAE", "MatryoshkaSAEConfig", "PREFIX_SAMPLING", "pareto_prefix_ends"]

PREFIX_SAMPLING = ("fixed", "pareto")


@dataclass(frozen=True)
class MatryoshkaSAEConfig(SAEConfig):
    """Config of :class:`MatryoshkaSAE`."""

    l1_coefficient: float = 1e-2
    """lambda >= 0, the weight of the decoder-norm-weighted L1 penalty."""
    prefix_sampling: str = "fixed"
    """``"fixed"`` (``prefixes``) or ``"pareto"`` (``n_prefixes`` ends drawn every pass)."""
    prefixes: tuple[int, ...] | None = None
    """``"fixed"``: increasing prefix ends, the last equal to n_latents. None: n_latents split in
    ``n_prefixes`` doubling blocks (M/2^(G-1), .., M/2, M, rounded up)."""
    n_prefixes: int = 5
    """Number of prefixes G (the MP-SAE toy: 5), in [1, n_latents]."""
    min_prefix_length: int = 1
    """``"pareto"``: the shortest prefix, in [1, n_latents - n_prefixes + 1]."""
    pareto_power: float = 0.5
    """``"pareto"``: the exponent a in (0, 1] of the truncated Pareto law of the ends."""

    def __post_init__(self):
        super().__post_init__()
        M = self.n_latents
        check_real("l1_coefficient", self.l1_coefficient, minimum=0)
        if self.prefix_sampling not in PREFIX_SAMPLING:
            raise ValueError(f"prefix_sampling must be one of {PREFIX_SAMPLING}, got {self.prefix_sampling!r}.")
        object.__setattr__(self, "n_prefixes", check_int("n_prefixes", self.n_prefixes, minimum=1))
        if self.n_prefixes > M:
            raise ValueError(f"n_prefixes must be <= n_latents={M}, got {self.n_prefixes}; use fewer prefixes or more latents.")
        if self.prefixes is not None:
            ends = tuple(self.prefixes)
            if not ends:
                raise ValueError(f"prefixes must be a non-empty tuple of ints, got {self.prefixes!r}.")
            ends = tuple(check_int(f"prefixes[{i}]", e) for i, e in enumerate(ends))
            if any(b <= a for a, b in zip(ends, ends[1:])) or ends[0] < 1 or ends[-1] != M:
                raise ValueError(f"prefixes must increase from >= 1 to n_latents={M}, got {ends}; e.g. (M // 4, M // 2, M).")
            if self.prefix_sampling != "fixed":
                raise ValueError("prefixes are fixed ends; use prefix_sampling='fixed' with them (or prefixes=None).")
            object.__setattr__(self, "prefixes", ends)
        object.__setattr__(self, "min_prefix_length", check_int("min_prefix_length", self.min_prefix_length, minimum=1))
        if self.min_prefix_length > M - self.n_prefixes + 1:
            raise ValueError(f"min_prefix_length must be <= n_latents - n_prefixes + 1 = {M - self.n_prefixes + 1}, "
                             f"got {self.min_prefix_length}; lower it or use fewer prefixes.")
        if not (isinstance(self.pareto_power, (int, float)) and 0 < self.pareto_power <= 1):
            raise ValueError(f"pareto_power must lie in (0, 1], got {self.pareto_power!r}.")

    def fixed_prefix_ends(self) -> tuple[int, ...]:
        """The ends of ``"fixed"``: ``prefixes``, or doubling blocks ending at n_latents."""
        if self.prefixes is not None:
            return self.prefixes
        M, G = self.n_latents, self.n_prefixes
        ends = sorted({max(1, math.ceil(M / 2 ** (G - 1 - g))) for g in range(G)})
        return tuple(ends)


def pareto_prefix_ends(n_latents: int, n_prefixes: int, min_prefix_length: int, power: float,
                       generator: torch.Generator) -> tuple[int, ...]:
    """``n_prefixes - 1`` distinct ends drawn from {min, .., M - 1} with P(j) proportional to
    (j - min + 1)^power - (j - min)^power, sorted, then M (module docstring)."""
    M, G, m0 = n_latents, n_prefixes, min_prefix_length
    if G == 1:
        return (M,)
    j = torch.arange(m0, M, dtype=torch.float64)
    weights = (j - m0 + 1) ** power - (j - m0) ** power
    picks = torch.multinomial(weights, G - 1, replacement=False, generator=generator) + m0
    return tuple(sorted(int(p) for p in picks)) + (M,)


@register_sae("Matryoshka", config=MatryoshkaSAEConfig)
class MatryoshkaSAE(UntiedSAE):
    """Untied ReLU SAE whose nested prefixes are trained to reconstruct the input on their own."""

    config: MatryoshkaSAEConfig

    def __init__(self, config: MatryoshkaSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else MatryoshkaSAEConfig(**kwargs))
        cfg = self.config
        self.register_buffer("l1_coefficient", torch.tensor(cfg.l1_coefficient, dtype=cfg.dtype, device=cfg.device))
        self.register_buffer("n_train_passes", torch.zeros((), dtype=torch.long, device=cfg.device))

    def activate(self, pre_acts: Tensor) -> Tensor:
        return torch.relu(pre_acts)

    def decode(self, codes: Tensor, prefix: int | None = None) -> Tensor:
        """x_hat from all latents, or with ``prefix=m`` from the first m latents only."""
        codes = self._check_codes(codes)
        if prefix is None:
            return self._decode(codes)
        prefix = check_int("prefix", prefix, minimum=1)
        if prefix > self.n_latents:
            raise ValueError(f"prefix must be <= n_latents={self.n_latents}, got {prefix}.")
        return codes[..., :prefix] @ self.W_dec[:prefix] + self.b_dec

    def prefix_ends(self) -> tuple[int, ...]:
        """Prefix ends of the next training pass."""
        cfg = self.config
        if cfg.prefix_sampling == "fixed":
            return cfg.fixed_prefix_ends()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + int(self.n_train_passes))
        return pareto_prefix_ends(cfg.n_latents, cfg.n_prefixes, cfg.min_prefix_length, cfg.pareto_power, gen)

    def prefix_losses(self, x: Tensor, codes: Tensor, ends: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstruction errors (G,), L1 penalties (G,), full x_hat) of the prefixes ``ends``:
        mean_b ||x_b - x_hat_b^(g)||^2 and mean_b sum_{m < m_g} ||W_dec[m]|| z_bm, accumulated
        block by block (one pass over the latents)."""
        norms = self.W_dec.norm(dim=1)
        x_hat = self.b_dec.expand_as(x)
        l1 = codes.new_zeros(())
        errs, pens = [], []
        start = 0
        for end in ends:
            block = codes[..., start:end]
            x_hat = x_hat + block @ self.W_dec[start:end]
            l1 = l1 + (block * norms[start:end]).sum(-1).mean()
            errs.append((x_hat - x).pow(2).sum(-1).mean())
            pens.append(l1)
            start = end
        return torch.stack(errs), torch.stack(pens), x_hat

    def training_forward(self, x: Tensor) -> TrainOutput:
        pre = self.pre_activations(x)
        codes = torch.relu(pre)
        ends = self.prefix_ends()
        errs, pens, x_hat = self.prefix_losses(x, codes, ends)
        loss = errs.mean() + self.l1_coefficient * pens.mean()
        if self.training:
            with torch.no_grad():
                self.n_train_passes += 1
        return TrainOutput(loss, x_hat, codes, pre, {"mse": errs[-1].detach(), "prefix_mse": errs.mean().detach(), "l1": pens[-1].detach()})
