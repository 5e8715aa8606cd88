"""The AuxK dead-latent loss of TopK-style SAEs (Gao et al. 2024, Appendix A.2 / B.1), as SAELens
6.54.12 computes it (``TopKTrainingSAE.calculate_topk_aux_loss``, ``calculate_topk_aux_acts`` and the
trainer's ``n_forward_passes_since_fired``):

* a latent is *dead* once it has not fired (a non-zero code) in more than ``dead_steps`` training
  steps (SAELens's ``dead_feature_window``, 1,000); the counter is a buffer, so it is saved and a
  resumed run continues it; the mask of a step is the one from before that step's codes;
* with D dead latents and k_aux = ``auxk_k`` (None: d // 2, the paper's heuristic), the
  min(k_aux, D) largest *pre-activations* among the dead latents (not ReLU'd, as SAELens) decode,
  without b_dec, the detached residual e = x - x_hat:
  ``L_aux = mean_b || z_aux W_dec - e ||^2``;
* the loss adds ``auxk_coefficient * min(D / k_aux, 1) * L_aux`` (SAELens's coefficient
  default is 1; ours is 0, the loss off, so existing recipes are unchanged).

:class:`~sae_theory.models.TopKSAE` and :class:`~sae_theory.models.BatchTopKSAE` take the three
fields in their configs; ``tests/test_auxk.py`` checks the loss against a restatement of SAELens's
code and that it revives dead latents.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["add_auxk", "auxk_loss", "check_auxk_fields", "register_auxk_buffer"]


def check_auxk_fields(config) -> None:
    """Validate ``auxk_coefficient`` (finite, >= 0), ``auxk_k`` (None or 1..n_latents) and
    ``dead_steps`` (>= 1) of a config, normalising the ints in place."""
    c = config.auxk_coefficient
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
        raise ValueError(f"auxk_coefficient must be a finite number >= 0 (0: no AuxK loss), got {c!r}.")
    if config.auxk_k is not None:
        object.__setattr__(config, "auxk_k", check_int("auxk_k", config.auxk_k, minimum=1, maximum=config.n_latents))
    object.__setattr__(config, "dead_steps", check_int("dead_steps", config.dead_steps, minimum=1))


def register_auxk_buffer(model) -> None:
    """The steps-since-fired counter (M,), only when the loss is on (so the state dict of a model
    without it, and older saves, are unchanged)."""
    if model.config.auxk_coefficient > 0:
        model.register_buffer("steps_since_fired", torch.zeros(model.n_latents, dtype=torch.long, device=model.config.device))


def auxk_loss(model, x: Tensor, x_hat: Tensor, pre: Tensor, codes: Tensor) -> Tensor | None:
    """The weighted AuxK term of one training step (module docstring), or None when it is off or
    no latent is dead; updates the counter when the model is in training mode."""
    cfg = model.config
    if cfg.auxk_coefficient <= 0:
        return None
    counter = model.steps_since_fired
    dead = counter > cfg.dead_steps  # the mask from before this step
    if model.training:
        with torch.no_grad():
            fired = (codes.reshape(-1, codes.shape[-1]) != 0).any(0)
            counter.add_(1)
            counter[fired] = 0
    n_dead = int(dead.sum())
    if n_dead == 0:
        return None
    k_aux = cfg.auxk_k if cfg.auxk_k is not None else max(1, x.shape[-1] // 2)
    scale = min(n_dead / k_aux, 1.0)
    k = min(k_aux, n_dead)
    masked = torch.where(dead, pre, torch.full_like(pre, -math.inf))
    top = masked.topk(k, dim=-1, sorted=False)
    z = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    residual = (x - x_hat).detach()
    aux = (z @ model.W_dec - residual).pow(2).sum(-1).mean()
    return cfg.auxk_coefficient * scale * aux


def add_auxk(model, loss: Tensor, x: Tensor, x_hat: Tensor, pre: Tensor, codes: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss with the AuxK term added when it is on (:func:`auxk_loss`), and the
    metrics of the step: ``mse`` (the reconstruction ``loss`` as given) and ``auxk`` when added."""
    metrics = {"mse": loss.detach()}
    aux = auxk_loss(model, x, x_hat, pre, codes)
    if aux is not None:
        loss = loss + aux
        metrics["auxk"] = aux.detach()
    return loss, metrics
