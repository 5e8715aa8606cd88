"""The one generic training loop of sae_theory (STYLE.md §4).

>>> from sae_theory.training import TrainConfig, train
>>> cfg = TrainConfig(steps=2_000, batch_size=512, lr=1e-3, schedule="cosine", warmup_steps=100)
>>> history = train(sae, SparseFeatureModel(1024, 64, sparsity=3), cfg)     # doctest: +SKIP
>>> history.to_frame().plot(x="step", y="loss")                             # doctest: +SKIP

Each step t = 1..steps:

1. ``lr = lr_at(t, cfg)`` (a pure function of t, written into every param group, so a resumed run
   needs no scheduler state);
2. ``x = source.next_batch(batch_size)``, checked finite and of width d, moved to the SAE's
   device and dtype, normalised per ``cfg.input_norm``;
3. ``out = model.training_forward(x)``; a non-finite ``out.loss`` raises FloatingPointError
   (after checkpointing the state *before* step t when checkpointing is on);
4. ``out.loss.backward()``, optional gradient clipping, ``optimizer.step()``,
   ``optimizer.zero_grad(set_to_none=True)``;
5. ``model.post_step()`` (constraints: unit-norm atoms, ...);
6. ``hook(model, t, out)`` for every hook, in order (e.g. bias adaptation);
7. a :class:`History` row every ``log_every`` steps and at the last step; a checkpoint every
   ``checkpoint_every`` steps and at the last step (when ``checkpoint_dir`` is set).

Method-specific behaviour lives in the model (``training_forward``, ``post_step``) or in hooks,
never here.

Checkpoints
-----------
``checkpoint_dir/step_{t:08d}/`` holds

* ``model.safetensors``: ``model.state_dict()`` (parameters and buffers);
* ``trainer.pt``: step, optimizer state, source state, hook states, History rows, input scale;
* ``config.json``: the TrainConfig, the model class and the model config.

A folder is written under a temporary name and renamed when complete, so a crash mid-save never
leaves a half checkpoint that :func:`latest_checkpoint` would pick.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .sources import BatchSource, as_source

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..models.base import SAE, TrainOutput

__all__ = ["History", "TrainConfig", "latest_checkpoint", "load_checkpoint", "lr_at", "save_checkpoint", "train"]

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "wsd")
INPUT_NORMS = ("none", "unit", "scale")
MODEL_FILE, TRAINER_FILE, CONFIG_FILE = "model.safetensors", "trainer.pt", "config.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
#: Model config fields that may differ between a checkpoint and the model it is loaded into.
_PORTABLE_MODEL_FIELDS = ("device",)

Hook = Callable[["SAE", int, "TrainOutput"], None]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


@dataclass(frozen=True)
class TrainConfig:
    """How to train an SAE: optimiser, learning-rate schedule, data handling, logging, checkpoints.

    Serialises with :meth:`to_dict` (saved as ``config.json`` beside every checkpoint).
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
    """Adam's epsilon (> 0)."""
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
    norm 1 (c is kept in the checkpoint and reported as ``History.input_scale``)."""
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

    def __post_init__(self):
        def need_int(name: str, minimum: int) -> None:
            v = getattr(self, name)
            if not _is_int(v) or v < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {v!r}.")

        need_int("steps", 1)
        need_int("batch_size", 1)
        if not _is_number(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else self.betas
        if not (isinstance(betas, tuple) and len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}.")
        object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        if not _is_number(self.eps) or self.eps <= 0:
            raise ValueError(f"eps must be a finite number > 0, got {self.eps!r}.")
        if not _is_number(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}.")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}.")
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
        need_int("warmup_steps", 0)
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} exceeds steps={self.steps}; lower warmup_steps.")
        if not _is_number(self.decay_fraction) or not 0 < self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must lie in (0, 1], got {self.decay_fraction!r}.")
        if self.schedule == "wsd" and self.warmup_steps > self.steps - self.decay_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} runs into the wsd decay (the last {self.decay_steps} of {self.steps} steps); "
                "lower warmup_steps or decay_fraction."
            )
        if not _is_number(self.min_lr_ratio) or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}.")
        if self.grad_clip is not None and (not _is_number(self.grad_clip) or self.grad_clip <= 0):
            raise ValueError(f"grad_clip must be None or a finite number > 0, got {self.grad_clip!r}.")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {self.input_norm!r}.")
        need_int("seed", 0)
        need_int("log_every", 1)
        if self.checkpoint_every is not None:
            need_int("checkpoint_every", 1)
            if self.checkpoint_dir is None:
                raise ValueError(f"checkpoint_every={self.checkpoint_every} needs a checkpoint_dir; set checkpoint_dir (or checkpoint_every=None).")
        if self.checkpoint_dir is not None:
            if not isinstance(self.checkpoint_dir, (str, os.PathLike)):
                raise ValueError(f"checkpoint_dir must be a path or None, got {type(self.checkpoint_dir).__name__}.")
            object.__setattr__(self, "checkpoint_dir", os.fspath(self.checkpoint_dir))
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True or False, got {self.progress!r}.")

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
    if not _is_int(step) or not 1 <= step <= cfg.steps:
        raise ValueError(f"step must be an int in [1, steps={cfg.steps}], got {step!r}.")
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


@dataclass
class History:
    """What :func:`train` returns: one row per logged step.

    Every row has ``step``, ``loss``, ``lr``, ``l0`` (mean number of non-zero codes per row) and
    the model's ``TrainOutput.metrics`` (the trainer's keys win on a name clash), plus
    ``grad_norm`` (before clipping) when ``grad_clip`` is set.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    """Logged rows, in step order (a resumed run continues the saved rows)."""
    steps_run: int = 0
    """Last completed step (counting the steps before a resume)."""
    input_scale: float | None = None
    """The constant c of ``input_norm="scale"``; None otherwise."""

    def to_frame(self) -> "pd.DataFrame":
        """The rows as a tidy pandas DataFrame, one row per logged step."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def last(self, key: str) -> Any:
        """The most recent logged value of ``key``; KeyError if no row has it."""
        for row in reversed(self.rows):
            if key in row:
                return row[key]
        known = sorted({k for r in self.rows for k in r})
        raise KeyError(f"no History row has {key!r}; logged keys: {known}.")

    def __len__(self) -> int:
        return len(self.rows)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _model_config_dict(model: "SAE") -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(config, "to_dict", None)):
        raise TypeError(f"{type(model).__name__} has no config.to_dict(); every SAE needs a config (see sae_theory.models.base).")
    return json.loads(json.dumps(config.to_dict()))  # tuples -> lists, as in config.json


def _hook_states(hooks: Sequence[Hook]) -> list[Any]:
    return [h.state_dict() if callable(getattr(h, "state_dict", None)) else None for h in hooks]


def save_checkpoint(
    checkpoint_dir: str | os.PathLike,
    step: int,
    model: "SAE",
    cfg: TrainConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    source: BatchSource | None = None,
    hooks: Sequence[Hook] = (),
    history: History | None = None,
) -> Path:
    """Write ``checkpoint_dir/step_{step:08d}/`` and return its path (an existing one is replaced).

    Files: ``model.safetensors`` (``model.state_dict()``, tensors made contiguous), ``trainer.pt``
    (step, optimizer/source/hook states, History rows and input scale; hooks by position, None
    for a hook without ``state_dict``), ``config.json`` (train config, model class, model config).
    """
    from safetensors.torch import save_file

    if not _is_int(step) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}.")
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = root / f".step_{step:08d}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    # clone: safetensors refuses tensors that share storage (e.g. a tied weight and its view)
    tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp / MODEL_FILE))
    history = history if history is not None else History()
    torch.save(
        {
            "format": 1,
            "step": step,
            "optimizer": None if optimizer is None else optimizer.state_dict(),
            "source": None if source is None else source.state_dict(),
            "hooks": _hook_states(hooks),
            "history": {"rows": history.rows, "steps_run": history.steps_run, "input_scale": history.input_scale},
        },
        tmp / TRAINER_FILE,
    )
    meta = {
        "step": step,
        "train_config": None if cfg is None else cfg.to_dict(),
        "model_class": type(model).__name__,
        "model_module": type(model).__module__,
        "model_config": _model_config_dict(model),
    }
    (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The complete ``step_XXXXXXXX`` folder with the highest step in ``checkpoint_dir``, or None."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and all((p / f).is_file() for f in (MODEL_FILE, TRAINER_FILE, CONFIG_FILE)):
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), p)
    return None if best is None else best[1]


def _resolve_checkpoint(path: str | os.PathLike, cfg: TrainConfig | None = None) -> Path:
    if path == "latest":
        if cfg is None or cfg.checkpoint_dir is None:
            raise ValueError('resume="latest" needs TrainConfig.checkpoint_dir; set it or pass a checkpoint path.')
        path = cfg.checkpoint_dir
    p = Path(path)
    if (p / TRAINER_FILE).is_file():
        return p
    found = latest_checkpoint(p)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {str(p)!r}: expected a step_XXXXXXXX folder or a folder holding them.")
    return found


def load_checkpoint(
    path: str | os.PathLike,
    model: "SAE",
    *,
    optimizer: torch.optim.Optimizer | None = None,
    source: BatchSource | None = None,
    hooks: Sequence[Hook] = (),
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (and optimizer, source, hooks when given).

    Parameters
    ----------
    path : path
        A ``step_XXXXXXXX`` folder, or a checkpoint folder (its latest step is used).
    model : SAE
        Must be the saved class with the saved config (``device`` may differ); ValueError otherwise.

    Returns
    -------
    dict
        ``step``, ``history`` (a :class:`History`), ``path`` and ``config`` (the parsed config.json).
        ``trainer.pt`` is read with ``torch.load(weights_only=True)``: hook and source states must
        be made of tensors, numbers, strings, lists and dicts.
    """
    from safetensors.torch import load_file

    folder = _resolve_checkpoint(path)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    mine = _model_config_dict(model)
    if meta["model_class"] != type(model).__name__:
        raise ValueError(
            f"checkpoint {str(folder)!r} holds a {meta['model_class']} but the model is a {type(model).__name__}; "
            "build the saved model class to load it."
        )
    saved = {k: v for k, v in meta["model_config"].items() if k not in _PORTABLE_MODEL_FIELDS}
    given = {k: v for k, v in mine.items() if k not in _PORTABLE_MODEL_FIELDS}
    if saved != given:
        diff = sorted(k for k in set(saved) | set(given) if saved.get(k) != given.get(k))
        details = ", ".join(f"{k}: saved {saved.get(k)!r} vs given {given.get(k)!r}" for k in diff)
        raise ValueError(f"checkpoint {str(folder)!r} was saved with a different model config ({details}); build the model with the saved config.")

    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    model.load_state_dict(load_file(str(folder / MODEL_FILE), device=str(device)))
    state = torch.load(folder / TRAINER_FILE, map_location="cpu", weights_only=True)
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"checkpoint {str(folder)!r} has no optimizer state; it cannot be resumed, only loaded.")
        optimizer.load_state_dict(state["optimizer"])
    if source is not None:
        if state["source"] is None:
            raise ValueError(f"checkpoint {str(folder)!r} has no data source state; it cannot be resumed, only loaded.")
        source.load_state_dict(state["source"])
    hooks = list(hooks)
    if hooks or state["hooks"]:
        if len(hooks) != len(state["hooks"]):
            raise ValueError(f"checkpoint {str(folder)!r} was saved with {len(state['hooks'])} hook(s) but {len(hooks)} were given; pass the same hooks in the same order.")
        for i, (hook, hstate) in enumerate(zip(hooks, state["hooks"])):
            has = callable(getattr(hook, "load_state_dict", None))
            if hstate is not None and not has:
                raise ValueError(f"hook {i} ({type(hook).__name__}) has no load_state_dict but the checkpoint holds a state for it; pass the same hooks in the same order.")
            if hstate is not None:
                hook.load_state_dict(hstate)
    h = state["history"]
    history = History(rows=list(h["rows"]), steps_run=int(h["steps_run"]), input_scale=h["input_scale"])
    return {"step": int(state["step"]), "history": history, "path": folder, "config": meta}


# ---------------------------------------------------------------------------------------------
# the loop


def _make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if not params:
        raise ValueError("model.optimizer_parameters() is empty; there is nothing to train.")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def _l0(codes: Tensor) -> float:
    codes = codes.detach()
    if codes.is_sparse:
        codes = codes.to_dense()
    codes = codes.reshape(-1, codes.shape[-1])
    return float((codes != 0).sum(-1).to(torch.float64).mean())


class _Batches:
    """Draws, checks, moves and normalises the batches of one run."""

    def __init__(self, source: BatchSource, model: "SAE", cfg: TrainConfig, input_scale: float | None):
        self.source, self.cfg = source, cfg
        self.d = model.config.d
        self.dtype = model.config.dtype
        first = next(iter(model.state_dict().values()), None)
        self.device = first.device if first is not None else torch.device(model.config.device)
        self.input_scale = input_scale

    def next(self, step: int) -> Tensor:
        x = self.source.next_batch(self.cfg.batch_size)
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.source!r}.next_batch returned a {type(x).__name__} at step {step}; it must return a Tensor (batch, d).")
        if x.ndim != 2 or x.shape[-1] != self.d:
            raise ValueError(f"the batch from {self.source!r} at step {step} has shape {tuple(x.shape)}; the SAE needs (batch, d={self.d}).")
        x = x.to(device=self.device, dtype=self.dtype)
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(f"the batch from {self.source!r} at step {step} has {bad} NaN or infinite value(s); clean the data.")
        if self.cfg.input_norm == "unit":
            norms = x.norm(dim=-1, keepdim=True)
            x = x / torch.where(norms > 0, norms, torch.ones_like(norms))
        elif self.cfg.input_norm == "scale":
            if self.input_scale is None:
                ms = float(x.to(torch.float64).pow(2).sum(-1).mean())
                if not ms > 0:
                    raise ValueError(f"input_norm='scale' cannot estimate a scale from the first batch of {self.source!r}: all its rows are zero.")
                self.input_scale = 1.0 / math.sqrt(ms)
            x = x * self.input_scale
        return x


def train(
    model: "SAE",
    data: Any,
    cfg: TrainConfig,
    *,
    hooks: Sequence[Hook] = (),
    resume: str | os.PathLike | None = None,
) -> History:
    """Train ``model`` in place on ``data`` for ``cfg.steps`` steps and return the :class:`History`.

    Parameters
    ----------
    model : SAE
        Follows :mod:`sae_theory.models.base`: ``training_forward(x) -> TrainOutput``,
        ``optimizer_parameters()``, ``post_step()``, ``config.to_dict()``.
    data : Tensor (N, d), SparseFeatureModel or batch source
        See :func:`~sae_theory.training.as_source` (a tensor is served in random epochs with the
        last partial batch dropped; a feature model gives fresh samples every step).
    cfg : TrainConfig
    hooks : sequence of callables ``hook(model, step, out)``
        Called after ``post_step`` at every step (from 1), in order, with the step's
        :class:`~sae_theory.models.base.TrainOutput` as returned by the model. The backward pass
        has already run: hooks must not backpropagate through ``out`` (read ``out.pre_acts`` etc.
        under ``torch.no_grad()`` / ``.detach()``). A hook with ``state_dict()`` /
        ``load_state_dict()`` has its state checkpointed, by position in ``hooks``.
    resume : path or "latest", optional
        A ``step_XXXXXXXX`` folder, a checkpoint folder (its latest step), or ``"latest"`` for
        ``cfg.checkpoint_dir``'s latest. Model, optimizer, data stream, hooks, History and input
        scale are restored and training continues from the next step up to ``cfg.steps``; the
        result is bit-identical to an uninterrupted run with the same config. ValueError if the
        saved model class or config differs from ``model``'s.

    Raises
    ------
    ValueError
        A batch with NaN/inf or of the wrong width (naming the data and the step); a checkpoint
        past ``cfg.steps`` or of another model.
    FloatingPointError
        A non-finite loss; with ``checkpoint_dir`` set, the state before that step is saved first.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}.")
    hooks = list(hooks)
    for i, h in enumerate(hooks):
        if not callable(h):
            raise TypeError(f"hooks[{i}] ({type(h).__name__}) is not callable; a hook is called as hook(model, step, out).")
    source = as_source(data, cfg)
    params = list(model.optimizer_parameters())
    optimizer = _make_optimizer(params, cfg)
    history, start = History(), 0
    if resume is not None:
        loaded = load_checkpoint(_resolve_checkpoint(resume, cfg), model, optimizer=optimizer, source=source, hooks=hooks)
        history, start = loaded["history"], loaded["step"]
        if start > cfg.steps:
            raise ValueError(f"the checkpoint is at step {start}, past steps={cfg.steps}; raise steps to continue training.")
    batches = _Batches(source, model, cfg, history.input_scale)
    ckpt_dir = cfg.checkpoint_dir

    def checkpoint(step: int) -> Path:
        history.input_scale = batches.input_scale
        return save_checkpoint(ckpt_dir, step, model, cfg, optimizer=optimizer, source=source, hooks=hooks, history=history)

    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not cfg.progress, dynamic_ncols=True)
    try:
        for step in range(start + 1, cfg.steps + 1):
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            source_before = source.state_dict() if ckpt_dir is not None else None
            scale_before = batches.input_scale
            x = batches.next(step)
            out = model.training_forward(x)
            if not bool(torch.isfinite(out.loss.detach()).all()):
                where = ""
                if ckpt_dir is not None:
                    # the state before this step: model/optimizer/hooks/history are untouched,
                    # only the data stream moved on, so put its state back first
                    source.load_state_dict(source_before)
                    batches.input_scale = scale_before
                    where = f" The state before this step was saved to {str(checkpoint(step - 1))!r}."
                raise FloatingPointError(
                    f"the loss is {float(out.loss.detach())} at step {step} (lr={lr:.3g}); lower TrainConfig.lr "
                    f"(or add warmup_steps / grad_clip).{where}"
                )
            out.loss.backward()
            grad_norm = None
            if cfg.grad_clip is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            model.post_step()
            for hook in hooks:
                hook(model, step, out)
            history.steps_run = step

            if step % cfg.log_every == 0 or step == cfg.steps:
                loss = float(out.loss.detach())
                row = {"step": step, "loss": loss, "lr": lr, "l0": _l0(out.codes)}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                row.update({k: float(v) for k, v in out.metrics.items() if k not in row})
                history.rows.append(row)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update(1)
            del out, x
            if ckpt_dir is not None and (step == cfg.steps or (cfg.checkpoint_every is not None and step % cfg.checkpoint_every == 0)):
                checkpoint(step)
    finally:
        bar.close()
    history.input_scale = batches.input_scale
    return history
