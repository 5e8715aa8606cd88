"""How to train: :class:`TrainConfig` (optimiser, schedule, data handling, logging, checkpoints)
and the learning-rate schedule :func:`lr_at`, a pure function of the step.

>>> cfg = TrainConfig(steps=2_000, batch_size=512, lr=1e-3, schedule="cosine", warmup_steps=100)
>>> lr_at(100, cfg)
0.001
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from .._checks import check_bool, check_int, check_real

__all__ = ["INPUT_NORMS", "OPTIMIZERS", "SCHEDULES", "TrainConfig", "lr_at"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "wsd")
INPUT_NORMS = ("none", "unit", "scale", "model")


@dataclass(frozen=True)
class TrainConfig:
    """How to train an SAE: optimiser, learning-rate schedule, data handling, logging, checkpoints.

    Serialises with :meth:`to_dict` (saved as ``train_config`` in every checkpoint's
    ``config.json``). A value of the wrong type raises TypeError, one out of range ValueError,
    both naming the field.

    The same config trains a model of any floating dtype; a float16 / bfloat16 model is trained in
    mixed precision (forward pass and loss in its dtype, the optimiser on float32 master weights,
    see :mod:`~sae_theory.training.trainer`), so ``lr``, ``eps`` and ``grad_clip`` mean what they
    mean in float32.
    """

    steps: int
    """Number of optimiser steps (>= 1). Steps are counted from 1."""
    batch_size: int = 512
    """Rows per step (>= 1)."""
    lr: float = 1e-3
    """Peak learning rate (> 0)."""
    optimizer: str = "adam"
    """``"adam"``, ``"adamw"`` (decoupled weight decay) or ``"sgd"`` (plain gradient descent, with
    ``momentum``). With unit-norm atoms, SGD followed by renormalisation is the spherical gradient
    descent of the GBA analysis; Adam's per-coordinate scaling bends each row's step towards the
    sign pattern of its gradient, which limits how far a tied atom can align with a feature."""
    momentum: float = 0.0
    """``"sgd"`` only: momentum in [0, 1)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (beta1, beta2), each in [0, 1)."""
    eps: float = 1e-8
    """Adam's epsilon (> 0). It acts in float32 or float64 whatever the model's dtype: a float16 /
    bfloat16 model is trained on float32 master weights (:mod:`~sae_theory.training.trainer`, "Half
    precision"), so Adam's moments and eps are float32; 1e-8 in float16 itself would round to 0."""
    weight_decay: float = 0.0
    """Decoupled weight decay (>= 0); only with ``optimizer="adamw"``."""
    schedule: str = "constant"
    """Learning rate after warmup: ``"constant"``; ``"cosine"`` from lr down to ``min_lr_ratio * lr``
    at the last step; ``"wsd"`` (warmup-stable-decay) constant, then the final ``decay_fraction``
    of the steps decays linearly to ``min_lr_ratio * lr``."""
    warmup_steps: int = 0
    """Linear warmup: step t <= warmup_steps gets ``lr * t / warmup_steps``. In [0, steps]."""
    decay_fraction: float = 0.2
    """``"wsd"`` only: fraction of the steps, in (0, 1], in the final linear decay
    (``max(1, round(decay_fraction * steps))`` steps)."""
    min_lr_ratio: float = 0.0
    """Final learning rate of ``"cosine"`` and ``"wsd"`` as a fraction of lr, in [0, 1]."""
    grad_clip: float | None = None
    """Clip the total gradient norm of ``model.optimizer_parameters()`` to this (> 0); None: no
    clipping. When set, History rows also record ``grad_norm`` (the norm before clipping)."""
    input_norm: str = "none"
    """``"none"``; ``"unit"``: every row of every batch scaled to unit L2 norm (the GBA paper's
    "sample and normalize X_t"), a zero row stays zero; ``"scale"``: every batch multiplied by one
    constant c = 1 / sqrt(mean_b ||x_b||^2) estimated on the first batch, so rows have mean squared
    norm 1 (c is kept in the checkpoint and reported as ``History.input_scale``); ``"model"``: the
    model's own input normalisation, set beforehand with ``SAE.set_input_norm`` (e.g. the
    ``"standardize"`` statistics of an activation cache, ``ActivationCache.normalisation``), applied
    to every batch and kept. The others set the model's input normalisation to themselves
    (:attr:`SAE.input_norm <sae_theory.models.base.SAE.input_norm>`)."""
    seed: int = 0
    """Seeds the data order / sample stream generator (never the global RNG). >= 0."""
    log_every: int = 50
    """History records every ``log_every`` steps (>= 1) and the last step."""
    checkpoint_every: int | None = None
    """Checkpoint every this many steps (>= 1); None: only at the end (if ``checkpoint_dir``)."""
    checkpoint_dir: str | None = None
    """Folder of the ``step_XXXXXXXX`` checkpoints; required with ``checkpoint_every``. When set,
    a checkpoint is also written at the last step and before raising on a non-finite loss."""
    progress: bool = True
    """Show a tqdm progress bar with the loss."""
    overwrite_checkpoints: bool = False
    """A fresh run (``train(..., resume=None)``) into a ``checkpoint_dir`` that already holds
    ``step_XXXXXXXX`` folders (another run's checkpoints) is refused, and so is a resumed run whose
    ``checkpoint_dir`` is not the folder of the checkpoint it resumes from and holds step folders;
    True deletes those step folders first. No effect when resuming within the run's own folder.
    Like ``steps``, ``log_every``, ``progress`` and the checkpoint cadence and folder, it may
    differ between a run and its resume."""
    keep_checkpoints: int | None = None
    """Keep only the newest this many ``step_XXXXXXXX`` folders in ``checkpoint_dir`` (>= 1), deleting
    older ones after each checkpoint is written; None keeps every one. Like the cadence, it may differ
    between a run and its resume."""

    def __post_init__(self):
        check_int("steps", self.steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_real("lr", self.lr, minimum=0, include_minimum=False)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        if not (isinstance(betas, tuple) and len(betas) == 2):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        for i, b in enumerate(betas):
            check_real(f"betas[{i}]", b, minimum=0, maximum=1, include_maximum=False)
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        check_real("eps", self.eps, minimum=0, include_minimum=False)
        check_real("weight_decay", self.weight_decay, minimum=0)
        check_real("momentum", self.momentum, minimum=0, maximum=1, include_maximum=False)
        if self.momentum > 0 and self.optimizer != "sgd":
            raise ValueError(f"momentum={self.momentum} applies to optimizer='sgd' only; Adam's momentum is betas[0].")
        if self.weight_decay > 0 and self.optimizer == "sgd":
            raise ValueError(f"weight_decay={self.weight_decay} is not supported with optimizer='sgd'; use 'adamw' or weight_decay=0.")
        if self.weight_decay > 0 and self.optimizer == "adam":
            raise ValueError(
                f"weight_decay={self.weight_decay} with optimizer='adam' would be L2 regularisation folded into Adam's "
                "moments; use optimizer='adamw' for weight decay (or weight_decay=0)."
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}.")
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} exceeds steps={self.steps}; lower warmup_steps.")
        check_real("decay_fraction", self.decay_fraction, minimum=0, maximum=1, include_minimum=False)
        if self.schedule == "wsd" and self.warmup_steps > self.steps - self.decay_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} runs into the wsd decay (the last {self.decay_steps} of {self.steps} steps); "
                "lower warmup_steps or decay_fraction."
            )
        check_real("min_lr_ratio", self.min_lr_ratio, minimum=0, maximum=1)
        if self.grad_clip is not None:
            check_real("grad_clip (None: no clipping)", self.grad_clip, minimum=0, include_minimum=False)
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}.")
        check_int("seed", self.seed, minimum=0)
        check_int("log_every", self.log_every, minimum=1)
        if self.checkpoint_every is not None:
            check_int("checkpoint_every (None: only at the end)", self.checkpoint_every, minimum=1)
            if self.checkpoint_dir is None:
                raise ValueError(f"checkpoint_every={self.checkpoint_every} needs a checkpoint_dir; set checkpoint_dir (or checkpoint_every=None).")
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)):
                raise ValueError(f"checkpoint_dir must be a path or None, got {type(self.checkpoint_dir).__name__}.")
            object.__setattr__(self, "checkpoint_dir", os.fspath(self.checkpoint_dir))
        check_bool("progress", self.progress)
        check_bool("overwrite_checkpoints", self.overwrite_checkpoints)
        if self.keep_checkpoints is not None:
            check_int("keep_checkpoints (None: keep every checkpoint)", self.keep_checkpoints, minimum=1)

    @property
    def decay_steps(self) -> int:
        """Length of the ``"wsd"`` decay phase, ``max(1, round(decay_fraction * steps))``."""
        return max(1, round(self.decay_fraction * self.steps))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``dataclasses.asdict`` with betas as a list)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of step ``step`` (1 <= step <= cfg.steps); a pure function of the step.

    With W = warmup_steps, S = steps, lr = cfg.lr, m = min_lr_ratio * lr:

    * t <= W: ``lr * t / W`` (linear warmup, reaching lr at t = W);
    * ``"constant"``: lr;
    * ``"cosine"``: ``m + (lr - m) (1 + cos(pi u)) / 2`` with u = (t - W) / (S - W), so lr just after
      warmup and m at the last step;
    * ``"wsd"``: lr until step S - D (D = ``cfg.decay_steps``), then
      ``lr - (lr - m) (t - (S - D)) / D``, reaching m at the last step.
    """
    check_int(f"step (of a run with steps={cfg.steps})", step, minimum=1, maximum=cfg.steps)
    lr, W, S = cfg.lr, cfg.warmup_steps, cfg.steps
    lo = cfg.min_lr_ratio * lr
    if step <= W:
        return lr * step / W
    if cfg.schedule == "cosine":
        u = (step - W) / (S - W)
        return lo + (lr - lo) * 0.5 * (1.0 + math.cos(math.pi * u))
    if cfg.schedule == "wsd":
        start = S - cfg.decay_steps
        if step <= start:
            return lr
        return lr - (lr - lo) * (step - start) / cfg.decay_steps
    return lr
