"""The one generic training loop of sae_theory.

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
7. a :class:`~sae_theory.training.History` row every ``log_every`` steps and at the last step; a
   checkpoint every ``checkpoint_every`` steps and at the last step (when ``checkpoint_dir`` is set).

Half precision
--------------
A model in float16 or bfloat16 is trained in mixed precision: the forward pass, the loss and the
gradients are computed in the model's dtype, but the optimiser steps on float32 master copies of
its half-precision parameters (:class:`_MasterWeights`), so Adam's moments and ``eps`` live in
float32 and an update smaller than the half dtype's resolution accumulates instead of being
rounded away. Measured before this (CPU, d=16, 64 latents, 300 steps): Adam in float16 gave a NaN
loss at step 2 (``eps=1e-8`` and the squared gradients of the second moment underflow to 0 in
float16, 0/0), and plain SGD in bfloat16 left 40-87 % of the weights never changed (each update
below bfloat16's 2^-8 relative resolution). In step 4 the gradients are copied to the masters (in
float32; clipping acts on them), the optimiser steps on the masters, step 5's ``post_step`` runs on
the masters (constraints are applied in float32) and the model's weights are then set to the
masters rounded to the model's dtype. A change made to a half-precision parameter outside the
optimiser (a hook) is taken into its master before the next update. float32 and float64 models
are trained on their own parameters, as before. Checkpoints of a half-precision run also hold the
masters (``trainer.pt``), so a resume is bit-identical.
There is no loss scaling: a float16 gradient below 6e-8 is 0 (bfloat16 has float32's range). On
the toy problems above none was (the smallest gradient entries at initialisation are about 1e-6),
but a much larger model or batch may need one; a non-finite loss raises as in float32.

Method-specific behaviour lives in the model (``training_forward``, ``post_step``) or in hooks,
never here. The config and schedule are in :mod:`~sae_theory.training.config`, the History in
:mod:`~sae_theory.training.history`.

Checkpoints
-----------
``checkpoint_dir/step_{t:08d}/`` holds (:mod:`~sae_theory.training.checkpoint`)

* ``sae.safetensors``: ``model.state_dict()`` (parameters and buffers);
* ``config.json``: the model class and config (as :func:`~sae_theory.io.save_sae` writes them),
  plus ``step`` and ``train_config``;
* ``trainer.pt``: step, optimizer state, source state, hook states, History rows, input scale.

So ``load_sae(step_folder)`` or ``load_sae(checkpoint_dir)`` (latest step) rebuilds the SAE. A
folder is written under a temporary name and swapped in when complete, so a crash mid-save never
leaves a half checkpoint that :func:`~sae_theory.training.latest_checkpoint` would pick; the
temporary folders a kill leaves are deleted at the next start.

Before step 1, and before the model, optimizer or folder is changed, :func:`train` checks that a
resume is the same run (model class and config, TrainConfig but for ``steps``, logging, progress
and the checkpoint fields, hooks' kinds and configs), that a fresh run does not write into another
run's checkpoints, and that ``checkpoint_dir`` can be written.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..metrics import l0
from .checkpoint import Hook, apply_resume, check_checkpoint_dir_writable, clean_checkpoint_dir, prepare_resume, prune_checkpoints, refuse_other_runs, save_checkpoint
from .config import TrainConfig, lr_at
from .history import History
from .sources import BatchSource, as_source

if TYPE_CHECKING:  # pragma: no cover
    from ..models.base import SAE

__all__ = ["train"]


# ---------------------------------------------------------------------------------------------
# the loop


def _is_half(dtype: torch.dtype) -> bool:
    """A floating dtype narrower than float32 (float16, bfloat16): trained through float32 masters."""
    return dtype.is_floating_point and torch.finfo(dtype).bits < 32


class _MasterWeights:
    """Mixed precision by hand: float32 master copies of the half-precision trained parameters.

    ``optimizer_params`` is what the optimiser gets: the master of every half-precision parameter,
    the parameter itself otherwise (float32, float64: nothing changes for those). Per step,
    :meth:`grads_to_masters` after ``backward`` and :meth:`post_step` after ``optimizer.step()``.
    ``state()`` is what a checkpoint saves (None when no parameter is in half precision).
    """

    def __init__(self, model: "SAE", params: list[torch.nn.Parameter]):
        names = {id(p): n for n, p in model.named_parameters()}
        self.pairs: dict[str, tuple[torch.nn.Parameter, Tensor]] = {}
        self.optimizer_params: list[Tensor] = []
        for i, p in enumerate(params):
            if isinstance(p, Tensor) and _is_half(p.dtype):
                master = p.detach().to(torch.float32, copy=True)
                self.pairs[names.get(id(p), f"optimizer_parameters()[{i}]")] = (p, master)
                self.optimizer_params.append(master)
            else:
                self.optimizer_params.append(p)

    def state(self) -> dict[str, Tensor] | None:
        """The masters by parameter name (the tensors themselves), or None without any."""
        return {name: m for name, (_, m) in self.pairs.items()} or None

    @torch.no_grad()
    def grads_to_masters(self) -> None:
        """Take into each master what was changed in its half-precision parameter since the
        master was last rounded into it (a hook's edit), then give the master the parameter's
        gradient in float32 and drop the half-precision gradient."""
        for p, m in self.pairs.values():
            h = p.detach()
            m.copy_(torch.where(h != m.to(h.dtype), h.to(m.dtype), m))
            m.grad = None if p.grad is None else p.grad.detach().to(m.dtype)
            p.grad = None

    @torch.no_grad()
    def post_step(self, model: "SAE") -> None:
        """``model.post_step()`` on the masters (each half-precision parameter temporarily holds
        its master's float32 data, so constraints such as unit-norm atoms act in float32), then
        the parameters set to their masters rounded to their dtype."""
        if not self.pairs:
            model.post_step()
            return
        halves = [p.data for p, _ in self.pairs.values()]
        for p, m in self.pairs.values():
            p.data = m
        try:
            model.post_step()
        finally:
            for (p, _), h in zip(self.pairs.values(), halves):
                p.data = h
        for p, m in self.pairs.values():
            p.copy_(m)


def _make_optimizer(params: list[Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` over ``params`` (for a half-precision model: its float32 masters,
    :attr:`_MasterWeights.optimizer_params`, so the moments and ``eps`` are float32)."""
    if not params:
        raise ValueError("model.optimizer_parameters() is empty; there is nothing to train.")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


class _Batches:
    """Draws, checks, moves and normalises the batches of one run."""

    def __init__(self, source: BatchSource, model: "SAE", cfg: TrainConfig):
        self.source, self.cfg, self.model = source, cfg, model
        self.d = model.config.d
        self.dtype = model.config.dtype
        first = next(iter(model.state_dict().values()), None)
        self.device = first.device if first is not None else torch.device(model.config.device)

    @property
    def input_scale(self) -> float | None:
        """The constant of ``input_norm="scale"`` (None until the first batch gave it, and for the
        other kinds): the model's, which holds the one copy."""
        return self.model.input_norm["scale"] if self.cfg.input_norm == "scale" else None

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
        if self.cfg.input_norm == "scale" and self.input_scale is None:
            ms = float(x.to(torch.float64).pow(2).sum(-1).mean())
            if not ms > 0:
                raise ValueError(f"input_norm='scale' cannot estimate a scale from the first batch of {self.source!r}: all its rows are zero.")
            self.model.set_input_norm("scale", 1.0 / math.sqrt(ms))
        # the model's own normalisation (set by train() to cfg.input_norm, or the model's for "model")
        return self.model.normalize_input(x)


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
        A float16 / bfloat16 model is trained in mixed precision: forward pass and loss in its
        dtype, the optimiser on float32 master copies of its parameters (module docstring, "Half
        precision"); its parameters stay in its dtype.
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
        A hook with ``check_model(model)`` is asked before step 1 whether it can drive ``model``
        (it raises if not), before anything changes.
    resume : path or "latest", optional
        A ``step_XXXXXXXX`` folder, a checkpoint folder (its latest step), or ``"latest"`` for
        ``cfg.checkpoint_dir``'s latest. Model, optimizer, data stream, hooks, History and input
        scale are restored and training continues from the next step up to ``cfg.steps``; the
        result is bit-identical to an uninterrupted run with the same config. The checkpoint must
        be of this run: same model class and config (``device`` may differ), same TrainConfig but
        for ``steps``, ``log_every``, ``progress``, ``checkpoint_every``, ``checkpoint_dir`` and
        ``overwrite_checkpoints``, same hooks (number, kinds, configs); see
        :func:`~sae_theory.training.load_checkpoint`. A damaged latest step is skipped, with a
        warning, for the newest intact one. None: a fresh run. A fresh run, or a resumed one whose
        ``cfg.checkpoint_dir`` is not the folder of the checkpoint it resumes from, is refused when
        that folder already holds ``step_XXXXXXXX`` folders (another run's) unless
        ``cfg.overwrite_checkpoints``, which deletes them first.

    Raises
    ------
    ValueError
        A batch with NaN/inf or of the wrong width (naming the data and the step); a checkpoint
        past ``cfg.steps``, damaged (naming it), or of another run (naming every differing field,
        with its saved and given value).
    FileExistsError
        A fresh run into a ``checkpoint_dir`` that holds checkpoints (resume, use a new folder, or
        set ``overwrite_checkpoints=True``).
    OSError
        ``checkpoint_dir`` cannot be created or written (naming it), before step 1.
    FloatingPointError
        A non-finite loss; with ``checkpoint_dir`` set, the state before that step is saved first.

    Every error before step 1 is raised before the model, the optimizer or ``checkpoint_dir`` is
    changed; then the temporary folders of a killed save are deleted from ``checkpoint_dir`` (and,
    for a fresh run with ``overwrite_checkpoints``, its step folders).
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}.")
    hooks = list(hooks)
    for i, h in enumerate(hooks):
        if not callable(h):
            raise TypeError(f"hooks[{i}] ({type(h).__name__}) is not callable; a hook is called as hook(model, step, out).")
    for h in hooks:  # a hook that cannot drive this model says so now, before step 1 changes it
        check = getattr(h, "check_model", None)
        if callable(check):
            check(model)
    source = as_source(data, cfg)
    params = list(model.optimizer_parameters())
    masters = _MasterWeights(model, params)
    optimizer = _make_optimizer(masters.optimizer_params, cfg)
    ckpt_dir = cfg.checkpoint_dir
    # every check first (nothing changed yet), then load, then tidy the folder
    prepared = None
    if resume is not None:
        prepared = prepare_resume(resume, model, cfg=cfg, optimizer=optimizer, source=source, hooks=hooks, master_weights=masters.state())
    # a checkpoint_dir that is not the folder resumed from holds no step of this run: its steps
    # are another run's, which this one must not mix with (nor, without the flag, delete)
    foreign = ckpt_dir is not None and (prepared is None or Path(prepared["folder"]).resolve().parent != Path(ckpt_dir).resolve())
    if foreign and not cfg.overwrite_checkpoints:
        refuse_other_runs(Path(ckpt_dir))
    if prepared is not None:  # the run's own source: data other than the saved run's raises here
        source.load_state_dict(prepared["state"]["source"])
    if ckpt_dir is not None:
        check_checkpoint_dir_writable(Path(ckpt_dir))
    history, start = History(), 0
    if prepared is not None:
        loaded = apply_resume(prepared, model, optimizer=optimizer, hooks=hooks, master_weights=masters.state())
        history, start = loaded["history"], loaded["step"]
    if ckpt_dir is not None:
        clean_checkpoint_dir(Path(ckpt_dir), old_steps=foreign and cfg.overwrite_checkpoints)
    batches = _Batches(source, model, cfg)

    def checkpoint(step: int) -> Path:
        history.input_scale = batches.input_scale
        return save_checkpoint(
            ckpt_dir, step, model, cfg, optimizer=optimizer, source=source, hooks=hooks, history=history, master_weights=masters.state()
        )

    model.train()
    # the input normalisation belongs to the model: set it now (a resumed run's scale comes back
    # through its history; a fresh one's from the first batch, _Batches.next); the loop's batches
    # are normalised by it, so the model takes them as prepared
    if cfg.input_norm != "model":
        model.set_input_norm(cfg.input_norm, history.input_scale if cfg.input_norm == "scale" else None)
    bar = tqdm(total=cfg.steps, initial=start, desc="train", disable=not cfg.progress, dynamic_ncols=True)
    prepared = model.prepared_inputs()
    prepared.__enter__()
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
                    if cfg.input_norm == "scale":
                        model.set_input_norm(cfg.input_norm, scale_before)
                    where = f" The state before this step was saved to {str(checkpoint(step - 1))!r}."
                raise FloatingPointError(
                    f"the loss is {float(out.loss.detach())} at step {step} (lr={lr:.3g}); lower TrainConfig.lr "
                    f"(or add warmup_steps / grad_clip).{where}"
                )
            out.loss.backward()
            masters.grads_to_masters()
            grad_norm = None
            if cfg.grad_clip is not None:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(masters.optimizer_params, cfg.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            masters.post_step(model)
            for hook in hooks:
                hook(model, step, out)
            history.steps_run = step

            if step % cfg.log_every == 0 or step == cfg.steps:
                loss = float(out.loss.detach())
                row = {"step": step, "loss": loss, "lr": lr, "l0": l0(out.codes)}
                if grad_norm is not None:
                    row["grad_norm"] = grad_norm
                row.update({k: float(v) for k, v in out.metrics.items() if k not in row})
                history.rows.append(row)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
            bar.update(1)
            del out, x
            if ckpt_dir is not None and (step == cfg.steps or (cfg.checkpoint_every is not None and step % cfg.checkpoint_every == 0)):
                checkpoint(step)
                if cfg.keep_checkpoints is not None:
                    prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
    finally:
        prepared.__exit__(None, None, None)
        bar.close()
    history.input_scale = batches.input_scale
    return history
