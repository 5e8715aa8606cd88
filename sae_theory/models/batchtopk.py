"""BatchTopK SAE (Bussmann, Leask & Nanda 2024): TopK over the whole batch instead of per input.

Training: with a = ReLU(pre_acts) of a batch of B inputs, keep the round(k B) largest entries of
the (B, M) matrix a, zero the rest. The batch's mean L0 is then exactly k (fewer when a has fewer
positive entries), while single inputs may use more or fewer latents. Decoder atoms are kept at
unit norm. No sparsity penalty.

Inference: a per-batch budget makes one input's code depend on the others in its batch, so at
inference the SAE applies a single threshold theta instead, codes = a * 1[a > theta]. theta is the
authors' estimate: an exponential moving average (rate ``threshold_lr``) of the smallest positive
activation kept in each training batch, held in the buffer ``threshold``.
``encode(x, batch=True)`` applies the training rule to the batch x instead.

Target-L0 schedule: the MP-SAE toy trains BatchTopK at k = 3 for the first 1,000 steps, then at
1.36 (docs/papers.md#mp-sae-training). ``k_initial`` and ``k_initial_steps`` give that schedule; the
training pass counter is the buffer ``n_train_passes``, so a resumed run continues the schedule
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_real
from .auxk import add_auxk, check_auxk_fields, register_auxk_buffer
from .base import SAEConfig, TrainOutput, UntiedSAE, mask_at_or_above, reconstruction_loss, selection_applies
from .registry import register_sae

__all__ = ["BatchTopKSAE", "BatchTopKSAEConfig", "batch_topk"]


def _check_k(name: str, k, n_latents: int) -> float:
    return check_real(name, k, minimum=0, include_minimum=False, maximum=n_latents)  # mean active latents per input


@dataclass(frozen=True)
class BatchTopKSAEConfig(SAEConfig):
    """Config of :class:`BatchTopKSAE`."""

    unit_norm_decoder: bool = True
    """Renormalise the atoms (rows of W_dec) to unit norm after every step (the default here)."""
    k: float = 32.0
    """Mean active latents per input (a float: the batch keeps round(k B) entries), in (0, n_latents]."""
    k_initial: float | None = None
    """Optional k of the first ``k_initial_steps`` training passes (the toy: 3); None: always ``k``."""
    k_initial_steps: int = 0
    """Training passes at ``k_initial``."""
    threshold_lr: float = 0.01
    """Rate of the moving average of the inference threshold, in (0, 1]."""
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
        object.__setattr__(self, "k", _check_k("k", self.k, self.n_latents))
        if self.k_initial is not None:
            object.__setattr__(self, "k_initial", _check_k("k_initial", self.k_initial, self.n_latents))
        object.__setattr__(self, "k_initial_steps", check_int("k_initial_steps", self.k_initial_steps, minimum=0))
        if self.k_initial_steps > 0 and self.k_initial is None:
            raise ValueError(f"k_initial_steps={self.k_initial_steps} needs a k_initial; set k_initial (or k_initial_steps=0).")
        if not (isinstance(self.threshold_lr, (int, float)) and 0 < self.threshold_lr <= 1):
            raise ValueError(f"threshold_lr must lie in (0, 1], got {self.threshold_lr!r}.")
        check_auxk_fields(self)


#: Entries of a batch from which :func:`batch_topk` selects instead of ``torch.topk``, from
#: ``benchmarks/bench_topk.py`` (one CPU thread, float32, codes and gradient through the ReLU, an
#: idle 2-core machine; ``torch.topk`` / selection, medians): (200, 20) with a budget of 272 (the
#: hierarchy toy): 0.14 / 0.14 ms; (256, 512), 2,048: 2.08 / 0.92 ms with half the entries zero,
#: 1.61 / 0.96 ms with 90%; (256, 1536), 8,192: 4.5 / 2.9 ms; (1024, 4096), 16,384: 75 / 44 ms.
BUDGET_SELECT_MIN_ENTRIES = 65_536


def _budget_mask(flat: Tensor, budget: int) -> Tensor | None:
    """:func:`~sae_theory.models.base.selection_mask` of the 1-D non-negative ``flat`` for its
    ``budget`` largest entries, where :func:`~sae_theory.models.base.selection_applies` and the
    batch has at least :data:`BUDGET_SELECT_MIN_ENTRIES` entries. It selects among the positive
    entries only: a trained BatchTopK's activations are mostly exact zeros, on which NumPy's
    introselect degrades (a 131,072-entry batch with 90% zeros: ``np.partition`` of the whole
    batch 3.9 ms, against 0.21 ms on continuous values and ``torch.topk``'s 1.4 ms). With at most
    ``budget`` positive entries: all of them (the budget-th largest is 0, so the codes are the
    same). None where ``selection_mask`` would give None."""
    if not selection_applies(flat, budget, max_width=None, min_width=BUDGET_SELECT_MIN_ENTRIES):
        return None
    arr = flat.detach().numpy()
    positive = arr > 0
    if int(np.count_nonzero(positive)) <= budget:
        return torch.from_numpy(positive.astype(arr.dtype))
    values = np.compress(positive, arr)
    at = values.size - budget
    return mask_at_or_above(arr, np.partition(values, at)[at:at + 1], budget)


def batch_topk(acts: Tensor, budget: int) -> Tensor:
    """Keep the ``budget`` largest entries of the non-negative (B, M) ``acts``, zero the others
    (ties broken as ``torch.topk`` breaks them). ``budget`` is clipped to [0, B M].

    On the CPU the entries are found by selection and ``acts`` multiplied by their 0/1 mask
    (:func:`_budget_mask`): the same codes as ``torch.topk``'s, bit for bit. With no more than
    ``budget`` positive entries only those are kept, so the gradient does not reach ``acts`` at the
    zeros that ``torch.topk`` would have picked to fill the budget (the ReLU in front of this
    function in :class:`BatchTopKSAE` gives those entries a zero gradient either way). Ties above
    0 go through ``torch.topk``."""
    flat = acts.reshape(-1)
    budget = max(0, min(int(budget), flat.numel()))
    mask = _budget_mask(flat, budget)
    if mask is not None:
        return (flat * mask).reshape(acts.shape)
    top = flat.topk(budget, sorted=False)
    return torch.zeros_like(flat).scatter(0, top.indices, top.values).reshape(acts.shape)


@register_sae("BatchTopK", config=BatchTopKSAEConfig)
class BatchTopKSAE(UntiedSAE):
    """Untied SAE with a BatchTopK activation in training and a learned threshold at inference."""

    config: BatchTopKSAEConfig

    def __init__(self, config: BatchTopKSAEConfig | None = None, **kwargs):
        super().__init__(config if config is not None else BatchTopKSAEConfig(**kwargs))
        dev = self.config.device
        self.register_buffer("threshold", torch.zeros((), dtype=self.config.dtype, device=dev))
        self.register_buffer("n_train_passes", torch.zeros((), dtype=torch.long, device=dev))
        register_auxk_buffer(self)

    @property
    def k(self) -> float:
        """The k of the next training pass (``k_initial`` during the first ``k_initial_steps``)."""
        cfg = self.config
        if cfg.k_initial is not None and int(self.n_train_passes) < cfg.k_initial_steps:
            return cfg.k_initial
        return cfg.k

    def budget(self, batch_size: int) -> int:
        """Entries kept in a training batch of ``batch_size`` inputs: max(1, round(k B))."""
        return max(1, round(self.k * batch_size))

    def activate(self, pre_acts: Tensor) -> Tensor:
        """Inference codes: ReLU(pre_acts) where it exceeds the threshold, 0 elsewhere."""
        a = torch.relu(pre_acts)
        return torch.where(a > self.threshold, a, torch.zeros_like(a))

    def encode(self, x: Tensor, batch: bool = False) -> Tensor:
        """Codes (B, M): the inference threshold, or with ``batch=True`` the training rule on x
        (the round(k B) largest activations of the batch)."""
        pre = self.pre_activations(x)
        if batch:
            if pre.ndim != 2:
                raise ValueError(f"batch=True needs x of shape (B, d), got {tuple(x.shape)}.")
            return batch_topk(torch.relu(pre), self.budget(pre.shape[0]))
        return self.activate(pre)

    def training_forward(self, x: Tensor) -> TrainOutput:
        pre = self.pre_activations(x)
        if pre.ndim != 2:
            raise ValueError(f"training needs x of shape (B, d), got {tuple(x.shape)}.")
        codes = batch_topk(torch.relu(pre), self.budget(pre.shape[0]))
        x_hat = self._decode(codes)
        loss, metrics = add_auxk(self, reconstruction_loss(x, x_hat), x, x_hat, pre, codes)
        if self.training:
            with torch.no_grad():
                kept = codes[codes > 0]
                if kept.numel() > 0:  # an all-zero batch leaves the threshold where it was
                    lr = self.config.threshold_lr
                    self.threshold.mul_(1 - lr).add_(lr * kept.min())
                self.n_train_passes += 1
        return TrainOutput(loss, x_hat, codes, pre, metrics)
