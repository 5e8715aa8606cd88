"""Training checkpoints: write, find and load the ``step_XXXXXXXX`` folders of a run.

``checkpoint_dir/step_{t:08d}/`` is a :func:`~sae_theory.io.save_sae` folder plus the trainer's
state:

* ``sae.safetensors``: ``model.state_dict()`` (parameters and buffers);
* ``config.json``: ``sae_class``, ``config`` (the model config), ``sae_theory_version``, and the
  checkpoint's ``step`` and ``train_config`` (the :class:`~sae_theory.training.TrainConfig`);
* ``trainer.pt``: step, optimizer state, source state, hook states, History rows, input scale.

The first two are written and read by :mod:`sae_theory.io` (:func:`~sae_theory.io.write_sae_files`,
:func:`~sae_theory.io.read_sae_config`, :func:`~sae_theory.io.read_sae_weights`), so
``load_sae(step_folder)`` and ``load_sae(checkpoint_dir)`` (its latest complete step) rebuild the
trained SAE. A step folder is written under a temporary name and swapped in when complete
(:func:`~sae_theory.io.atomic_folder`), so a crash mid-save never leaves a half checkpoint that
:func:`latest_checkpoint` would pick.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from .._checks import check_int
from ..io import CONFIG, WEIGHTS, atomic_folder, read_sae_config, read_sae_weights, write_sae_files
from .config import TrainConfig
from .history import History
from .sources import BatchSource

if TYPE_CHECKING:  # pragma: no cover
    from ..models.base import SAE, TrainOutput

__all__ = ["STEP_DIR", "TRAINER_FILE", "latest_checkpoint", "load_checkpoint", "resolve_checkpoint", "save_checkpoint", "step_folder_name"]

TRAINER_FILE = "trainer.pt"
#: Names of the step folders in a checkpoint_dir.
STEP_DIR = re.compile(r"^step_(\d+)$")
#: Model config fields that may differ between a checkpoint and the model it is loaded into.
PORTABLE_MODEL_FIELDS = ("device",)

Hook = Callable[["SAE", int, "TrainOutput"], None]


def step_folder_name(step: int) -> str:
    """``step_{step:08d}``, the folder of the checkpoint after step ``step``."""
    return f"step_{check_int('step', step, minimum=0):08d}"


def _model_config_json(model: "SAE") -> dict[str, Any]:
    """The model's config as config.json holds it (tuples as lists)."""
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(config, "to_dict", None)):
        raise TypeError(f"{type(model).__name__} has no config.to_dict(); every SAE needs a config (see sae_theory.models.base).")
    return json.loads(json.dumps(config.to_dict()))


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

    Files (module docstring): ``sae.safetensors`` and ``config.json`` through
    :func:`~sae_theory.io.write_sae_files` (the writer of :func:`~sae_theory.io.save_sae`; the
    model class need not be registered, but :func:`~sae_theory.io.load_sae` can only rebuild a
    registered one), with ``step`` and ``train_config`` added to ``config.json``; ``trainer.pt``
    (step, optimizer/source/hook states, History rows and input scale; hooks by position, None for
    a hook without ``state_dict``). Atomic: see :func:`~sae_theory.io.atomic_folder`.
    """
    name = step_folder_name(step)
    history = history if history is not None else History()
    with atomic_folder(Path(checkpoint_dir) / name) as tmp:
        write_sae_files(model, tmp, extra={"step": step, "train_config": None if cfg is None else cfg.to_dict()})
        torch.save(
            {
                "format": 2,
                "step": step,
                "optimizer": None if optimizer is None else optimizer.state_dict(),
                "source": None if source is None else source.state_dict(),
                "hooks": _hook_states(hooks),
                "history": {"rows": history.rows, "steps_run": history.steps_run, "input_scale": history.input_scale},
            },
            tmp / TRAINER_FILE,
        )
    return Path(checkpoint_dir) / name


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The complete ``step_XXXXXXXX`` folder (``sae.safetensors``, ``config.json`` and
    ``trainer.pt`` present) with the highest step in ``checkpoint_dir``, or None."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and all((p / f).is_file() for f in (WEIGHTS, CONFIG, TRAINER_FILE)):
            if best is None or int(m.group(1)) > best[0]:
                best = (int(m.group(1)), p)
    return None if best is None else best[1]


def resolve_checkpoint(path: str | os.PathLike, cfg: TrainConfig | None = None) -> Path:
    """The step folder that ``path`` names: ``path`` itself if it holds ``trainer.pt``, else the
    latest complete step of the folder ``path``; ``"latest"`` means ``cfg.checkpoint_dir``.

    Raises ValueError for ``"latest"`` without ``cfg.checkpoint_dir``, FileNotFoundError when
    there is no checkpoint."""
    if isinstance(path, str) and path == "latest":
        if cfg is None or cfg.checkpoint_dir is None:
            raise ValueError('resume="latest" needs TrainConfig.checkpoint_dir; set it or pass a checkpoint path.')
        path = cfg.checkpoint_dir
    p = Path(path)
    if (p / TRAINER_FILE).is_file():
        return p
    found = latest_checkpoint(p)
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint in {str(p)!r}: expected a step_XXXXXXXX folder ({WEIGHTS}, {CONFIG}, {TRAINER_FILE}) "
            "or a folder holding them; check the path or train without resume."
        )
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
        ``step``, ``history`` (a :class:`~sae_theory.training.History`), ``path`` and ``config``
        (the parsed config.json: ``sae_class``, ``config``, ``sae_theory_version``, ``step``,
        ``train_config``). ``trainer.pt`` is read with ``torch.load(weights_only=True)``: hook and
        source states must be made of tensors, numbers, strings, lists and dicts.
    """
    folder = resolve_checkpoint(path)
    meta = read_sae_config(folder)
    if meta["sae_class"] != type(model).__name__:
        raise ValueError(
            f"checkpoint {str(folder)!r} holds a {meta['sae_class']} but the model is a {type(model).__name__}; "
            "build the saved model class to load it."
        )
    saved = {k: v for k, v in meta["config"].items() if k not in PORTABLE_MODEL_FIELDS}
    given = {k: v for k, v in _model_config_json(model).items() if k not in PORTABLE_MODEL_FIELDS}
    if saved != given:
        diff = sorted(k for k in set(saved) | set(given) if saved.get(k) != given.get(k))
        details = ", ".join(f"{k}: saved {saved.get(k)!r} vs given {given.get(k)!r}" for k in diff)
        raise ValueError(f"checkpoint {str(folder)!r} was saved with a different model config ({details}); build the model with the saved config.")

    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    model.load_state_dict(read_sae_weights(folder, device=device))
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
