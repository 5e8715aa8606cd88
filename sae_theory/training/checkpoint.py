"""Training checkpoints: write, find and load the ``step_XXXXXXXX`` folders of a run.

``checkpoint_dir/step_{t:08d}/`` is a :func:`~sae_theory.io.save_sae` folder plus the trainer's
state:

* ``sae.safetensors``: ``model.state_dict()`` (parameters and buffers);
* ``config.json``: ``sae_class``, ``config`` (the model config), ``sae_theory_version``, and the
  checkpoint's ``step`` and ``train_config`` (the :class:`~sae_theory.training.TrainConfig`);
* ``trainer.pt``: step, optimizer state, source state, hook states and hook kinds and configs,
  History rows, input scale, and for a float16 / bfloat16 model the float32 master weights the
  optimiser steps on (``master_weights``, by parameter name; see :mod:`~sae_theory.training.trainer`).

The first two are written and read by :mod:`sae_theory.io` (:func:`~sae_theory.io.write_sae_files`,
:func:`~sae_theory.io.read_sae_config`, :func:`~sae_theory.io.read_sae_weights`), so
``load_sae(step_folder)`` and ``load_sae(checkpoint_dir)`` (its latest complete step) rebuild the
trained SAE. A step folder is written under a temporary name and swapped in when complete
(:func:`~sae_theory.io.atomic_folder`), so a crash mid-save never leaves a half checkpoint that
:func:`latest_checkpoint` would pick.

A resume is the same run or an error: :func:`load_checkpoint` reads and checks everything before
it loads anything, and refuses (ValueError naming every differing field) a checkpoint whose model
class or config, TrainConfig (but for :data:`RESUMABLE_TRAIN_FIELDS`) or hooks differ from the
run's. A damaged step folder (a file that cannot be read) is named; as the latest step of a folder
it is skipped, with a warning, for the newest intact one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from .._checks import check_int
from ..io import CONFIG, WEIGHTS, apply_input_norm, atomic_folder, read_sae_config, read_sae_weights, write_sae_files
from .config import TrainConfig
from .history import History
from .sources import BatchSource

if TYPE_CHECKING:  # pragma: no cover
    from ..models.base import SAE, TrainOutput

__all__ = ["RESUMABLE_TRAIN_FIELDS", "STEP_DIR", "TRAINER_FILE", "apply_resume", "check_checkpoint_dir_writable", "clean_checkpoint_dir", "complete_checkpoints", "latest_checkpoint",
           "load_checkpoint", "prepare_resume", "prune_checkpoints", "refuse_other_runs", "resolve_checkpoint", "save_checkpoint", "step_folder_name"]

TRAINER_FILE = "trainer.pt"
#: Names of the step folders in a checkpoint_dir.
STEP_DIR = re.compile(r"^step_(\d+)$")
#: Names of the temporary folders of a step being written (:func:`~sae_theory.io.atomic_folder`).
TMP_STEP_DIR = re.compile(r"^\.step_\d+\.tmp\d+$")
#: TrainConfig fields that may differ between a checkpoint and the run that resumes it.
RESUMABLE_TRAIN_FIELDS = ("steps", "log_every", "progress", "checkpoint_every", "checkpoint_dir", "overwrite_checkpoints", "keep_checkpoints")
#: Model config fields that may differ between a checkpoint and the model it is loaded into.
PORTABLE_MODEL_FIELDS = ("device",)

Hook = Callable[["SAE", int, "TrainOutput"], None]

_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
_TRAINER_KEYS = ("step", "optimizer", "source", "hooks", "history")


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


def _hook_spec(hook: Hook) -> dict[str, Any]:
    """``kind`` (the hook's function or class name) and ``config`` (JSON) of a hook: its
    ``config`` (``to_dict()`` or a dataclass), else the fields of a dataclass hook that its
    ``state_dict()`` does not hold (those are state, restored on resume), else None."""
    kind = getattr(hook, "__name__", None) or type(hook).__name__
    config = getattr(hook, "config", None)
    if callable(getattr(config, "to_dict", None)):
        fields = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    elif dataclasses.is_dataclass(hook) and not isinstance(hook, type):
        state = hook.state_dict() if callable(getattr(hook, "state_dict", None)) else {}
        state = state if isinstance(state, dict) else {}
        fields = {f.name: getattr(hook, f.name) for f in dataclasses.fields(hook) if f.name not in state}
    else:
        fields = None
    return {"kind": str(kind), "config": None if fields is None else json.loads(json.dumps(fields, default=repr))}


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
    master_weights: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``checkpoint_dir/step_{step:08d}/`` and return its path (an existing one is replaced).

    Files (module docstring): ``sae.safetensors`` and ``config.json`` through
    :func:`~sae_theory.io.write_sae_files` (the writer of :func:`~sae_theory.io.save_sae`; the
    model class need not be registered, but :func:`~sae_theory.io.load_sae` can only rebuild a
    registered one), with ``step`` and ``train_config`` added to ``config.json``; ``trainer.pt``
    (step, optimizer/source/hook states, History rows and input scale; hooks by position, None for
    a hook without ``state_dict``; ``hook_specs``: each hook's kind and config, which a resume
    compares; ``master_weights``: the float32 master copies of a half-precision model's parameters,
    by name, when given). Atomic: see :func:`~sae_theory.io.atomic_folder`.
    """
    name = step_folder_name(step)
    history = history if history is not None else History()
    with atomic_folder(Path(checkpoint_dir) / name) as tmp:
        write_sae_files(model, tmp, extra={"step": step, "train_config": None if cfg is None else cfg.to_dict()})
        torch.save(
            {
                "format": 4,
                "step": step,
                "optimizer": None if optimizer is None else optimizer.state_dict(),
                "source": None if source is None else source.state_dict(),
                "hooks": _hook_states(hooks),
                "hook_specs": [_hook_spec(h) for h in hooks],
                "history": {"rows": history.rows, "steps_run": history.steps_run, "input_scale": history.input_scale},
                "master_weights": None if master_weights is None else {k: v.detach() for k, v in master_weights.items()},
            },
            tmp / TRAINER_FILE,
        )
    return Path(checkpoint_dir) / name


def _step_folders(root: Path, *, complete: bool) -> list[Path]:
    """The ``step_XXXXXXXX`` folders of ``root`` (with ``complete``: only those holding
    ``sae.safetensors``, ``config.json`` and ``trainer.pt``), highest step first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (not complete or all((p / f).is_file() for f in (WEIGHTS, CONFIG, TRAINER_FILE))):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def complete_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """The complete ``step_XXXXXXXX`` folders (``sae.safetensors``, ``config.json`` and
    ``trainer.pt`` present) of ``checkpoint_dir``, newest first; their files are not read."""
    return _step_folders(Path(checkpoint_dir), complete=True)


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The complete ``step_XXXXXXXX`` folder (``sae.safetensors``, ``config.json`` and
    ``trainer.pt`` present) with the highest step in ``checkpoint_dir``, or None."""
    found = complete_checkpoints(checkpoint_dir)
    return found[0] if found else None


def _candidates(path: str | os.PathLike, cfg: TrainConfig | None) -> tuple[list[Path], bool]:
    """The step folders that ``path`` may mean, newest first, and whether ``path`` named one
    step folder itself (True) or a checkpoint folder / ``"latest"`` (False)."""
    if isinstance(path, str) and path == "latest":
        if cfg is None or cfg.checkpoint_dir is None:
            raise ValueError('resume="latest" needs TrainConfig.checkpoint_dir; set it or pass a checkpoint path.')
        path = cfg.checkpoint_dir
    p = Path(path)
    if (p / TRAINER_FILE).is_file():
        return [p], True
    found = _step_folders(p, complete=True)
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {str(p)!r}: expected a step_XXXXXXXX folder ({WEIGHTS}, {CONFIG}, {TRAINER_FILE}) "
            "or a folder holding them; check the path or train without resume."
        )
    return found, False


def resolve_checkpoint(path: str | os.PathLike, cfg: TrainConfig | None = None) -> Path:
    """The step folder that ``path`` names: ``path`` itself if it holds ``trainer.pt``, else the
    latest complete step of the folder ``path``; ``"latest"`` means ``cfg.checkpoint_dir``.

    Raises ValueError for ``"latest"`` without ``cfg.checkpoint_dir``, FileNotFoundError when
    there is no checkpoint. The files are not read (:func:`load_checkpoint` reads them and skips
    a damaged latest step)."""
    return _candidates(path, cfg)[0][0]


class _Damaged(ValueError):
    """A step folder whose files cannot be read."""

    def __init__(self, folder: Path, reason: str):
        self.folder, self.reason = folder, reason
        super().__init__(
            f"checkpoint {str(folder)!r} is damaged: {reason}; resume from an earlier step folder, "
            'or with resume="latest" (the newest intact step), or train without resume.'
        )


def _read(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """config.json, the weights (on the CPU) and trainer.pt of a step folder; :class:`_Damaged`
    naming the file that cannot be read (truncated, corrupt, missing)."""
    try:
        meta = read_sae_config(folder)
    except (OSError, ValueError) as exc:
        raise _Damaged(folder, f"{CONFIG} cannot be read ({exc})") from None
    try:
        weights = read_sae_weights(folder)
    except Exception as exc:  # safetensors raises its own SafetensorError on a truncated file
        raise _Damaged(folder, f"{WEIGHTS} cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        state = torch.load(folder / TRAINER_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # EOFError, OSError, pickle errors, ...
        raise _Damaged(folder, f"{TRAINER_FILE} cannot be read ({type(exc).__name__}: {exc})") from None
    missing = [k for k in _TRAINER_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise _Damaged(folder, f"{TRAINER_FILE} lacks {missing}")
    return meta, weights, state


def _compare(label: str, saved: dict[str, Any], given: dict[str, Any], skip: Sequence[str] = ()) -> list[str]:
    """``"<label><field>: saved <a>, given <b>"`` for every field that differs."""
    out = []
    for k in sorted((set(saved) | set(given)) - set(skip)):
        a, b = saved.get(k, "<absent>"), given.get(k, "<absent>")
        if a != b:
            out.append(f"{label}{k}: saved {a!r}, given {b!r}")
    return out


def _hook_differences(state: dict[str, Any], hooks: Sequence[Hook]) -> list[str]:
    """The differences between the saved hooks (``hook_specs``) and ``hooks``, as :func:`_compare`."""
    specs, given = state.get("hook_specs"), [_hook_spec(h) for h in hooks]
    if specs is None:  # a checkpoint of before hook_specs: the number of hooks only
        n = len(state["hooks"])
        return [] if n == len(given) else [f"hooks: saved {n}, given {len(given)}"]
    if len(specs) != len(given):
        saved_kinds, given_kinds = (", ".join(s["kind"] for s in ss) for ss in (specs, given))
        return [f"hooks: saved {len(specs)} ({saved_kinds}), given {len(given)} ({given_kinds})"]
    out = []
    for i, (a, b) in enumerate(zip(specs, given)):
        if a["kind"] != b["kind"]:
            out.append(f"hooks[{i}]: saved a {a['kind']}, given a {b['kind']}")
        elif a["config"] is None or b["config"] is None:
            if a["config"] != b["config"]:
                out.append(f"hooks[{i}] ({a['kind']}) config: saved {a['config']!r}, given {b['config']!r}")
        else:
            out += _compare(f"hooks[{i}] ({a['kind']}) ", a["config"], b["config"])
    return out


def prepare_resume(
    path: str | os.PathLike,
    model: "SAE",
    *,
    cfg: TrainConfig | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    source: BatchSource | None = None,
    hooks: Sequence[Hook] = (),
    master_weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Read and check the checkpoint that ``path`` names (see :func:`load_checkpoint`) without
    changing anything; what :func:`apply_resume` then loads."""
    folders, explicit = _candidates(path, cfg)
    skipped: list[_Damaged] = []
    for folder in folders:
        try:
            meta, weights, state = _read(folder)
            break
        except _Damaged as exc:
            if explicit:
                raise
            skipped.append(exc)
    else:
        raise ValueError(
            f"every checkpoint in {str(folders[0].parent)!r} is damaged ("
            + "; ".join(f"{e.folder.name}: {e.reason}" for e in skipped)
            + "); train without resume (overwrite_checkpoints=True to replace them)."
        )
    if skipped:
        warnings.warn(
            "skipped the damaged checkpoint(s) "
            + "; ".join(f"{str(e.folder)!r} ({e.reason})" for e in skipped)
            + f"; resuming from the newest intact one, {str(folder)!r}.",
            stacklevel=3,
        )

    where = f"checkpoint {str(folder)!r}"
    if meta["sae_class"] != type(model).__name__:
        raise ValueError(f"{where} holds a {meta['sae_class']} but the model is a {type(model).__name__}; build the saved model class to load it.")
    diffs = _compare("model config ", meta["config"], _model_config_json(model), PORTABLE_MODEL_FIELDS)
    saved_cfg = meta.get("train_config")
    if cfg is not None and saved_cfg is not None:
        diffs += _compare("TrainConfig.", saved_cfg, cfg.to_dict(), RESUMABLE_TRAIN_FIELDS)
    diffs += _hook_differences(state, hooks)
    if diffs:
        raise ValueError(
            f"{where} was saved by another run or with other settings: {'; '.join(diffs)}. Resume with the saved "
            f"model config, TrainConfig and hooks (only {', '.join(RESUMABLE_TRAIN_FIELDS)} and the model's device "
            "may change), or start a fresh run in another checkpoint_dir."
        )
    if cfg is not None and saved_cfg is None:
        raise ValueError(f"{where} has no train_config (save_checkpoint without cfg); it cannot be resumed, only loaded.")

    given = model.state_dict()
    bad = sorted(k for k in set(weights) | set(given) if k not in weights or k not in given or weights[k].shape != given[k].shape)
    if bad:
        raise ValueError(f"{where} holds weights that do not fit the model ({', '.join(bad)}); it is damaged or of another model.")
    step = int(state["step"])
    if cfg is not None and step > cfg.steps:
        raise ValueError(f"{where} is at step {step}, past steps={cfg.steps}; raise steps to continue training.")
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"{where} has no optimizer state; it cannot be resumed, only loaded.")
        name = (saved_cfg or {}).get("optimizer")
        if name in _OPTIMIZERS and type(optimizer) is not _OPTIMIZERS[name]:
            raise ValueError(f"{where} was saved with optimizer {name!r}, the optimizer given is a {type(optimizer).__name__}; pass the saved optimizer.")
    if source is not None and state["source"] is None:
        raise ValueError(f"{where} has no data source state; it cannot be resumed, only loaded.")
    if master_weights is not None:
        saved_masters = state.get("master_weights")
        if saved_masters is None:
            raise ValueError(
                f"{where} has no float32 master weights, which the optimiser of this {meta['config'].get('dtype')} model steps on "
                "(a checkpoint written before half-precision models were trained in mixed precision, or by save_checkpoint "
                "without master_weights); it cannot be resumed as the same run, only loaded. Train afresh."
            )
        bad = sorted(
            k for k in set(saved_masters) | set(master_weights)
            if k not in saved_masters or k not in master_weights or saved_masters[k].shape != master_weights[k].shape
            or saved_masters[k].dtype != master_weights[k].dtype
        )
        if bad:
            raise ValueError(f"{where} holds master weights that do not fit the model ({', '.join(bad)}); it is damaged or of another model.")
    for i, (hook, hstate) in enumerate(zip(hooks, state["hooks"])):
        if hstate is not None and not callable(getattr(hook, "load_state_dict", None)):
            raise ValueError(f"hook {i} ({type(hook).__name__}) has no load_state_dict but {where} holds a state for it; pass the same hooks in the same order.")
    return {"folder": folder, "meta": meta, "weights": weights, "state": state}


def apply_resume(
    prepared: dict[str, Any],
    model: "SAE",
    *,
    optimizer: torch.optim.Optimizer | None = None,
    source: BatchSource | None = None,
    hooks: Sequence[Hook] = (),
    master_weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Load what :func:`prepare_resume` read: source and hook states first (a source given other data
    raises here), then optimizer and model. Returns :func:`load_checkpoint`'s dict."""
    state = prepared["state"]
    if source is not None:
        source.load_state_dict(state["source"])
    for hook, hstate in zip(hooks, state["hooks"]):
        if hstate is not None:
            hook.load_state_dict(hstate)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if master_weights is not None:
        with torch.no_grad():
            for name, m in master_weights.items():
                m.copy_(state["master_weights"][name])
    model.load_state_dict(prepared["weights"])
    apply_input_norm(model, prepared["meta"].get("input_norm"), where=Path(prepared["folder"]) / CONFIG)
    h = state["history"]
    history = History(rows=list(h["rows"]), steps_run=int(h["steps_run"]), input_scale=h["input_scale"])
    return {"step": int(state["step"]), "history": history, "path": prepared["folder"], "config": prepared["meta"]}


def load_checkpoint(
    path: str | os.PathLike,
    model: "SAE",
    *,
    cfg: TrainConfig | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    source: BatchSource | None = None,
    hooks: Sequence[Hook] = (),
    master_weights: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (and optimizer, source, hooks, master weights when given).

    Everything is read and checked before anything is loaded, and the model is loaded last, so
    an error leaves ``model`` and ``optimizer`` as they were.

    Parameters
    ----------
    path : path or "latest"
        A ``step_XXXXXXXX`` folder, or a checkpoint folder (its latest step), or ``"latest"``
        (``cfg.checkpoint_dir``'s latest step). A damaged step folder (a file that cannot be read,
        e.g. truncated by a kill) given itself raises ValueError naming it; as a folder's latest
        step it is skipped with a warning naming it, for the newest intact one.
    model : SAE
        Must be the saved class with the saved config (``device`` may differ).
    cfg : TrainConfig, optional
        The run's config: must equal the saved ``train_config`` except for
        ``RESUMABLE_TRAIN_FIELDS`` (``steps``, ``log_every``, ``progress``, ``checkpoint_every``,
        ``checkpoint_dir``, ``overwrite_checkpoints``); the checkpoint's step must not exceed
        ``cfg.steps``.
    optimizer, source : optional
        Get the saved states; the optimizer must be of the saved kind (``"adam"``: Adam, ...).
    hooks : sequence
        Must be the saved hooks: their number, kinds (class or function names) and configs
        (``hook.config``, or a dataclass hook's fields that its ``state_dict`` does not hold).
    master_weights : mapping of str to Tensor, optional
        Float32 tensors, by parameter name, that get the saved master weights of a float16 /
        bfloat16 run (the tensors :func:`~sae_theory.training.train`'s optimiser steps on); the
        checkpoint must hold them, with the same names and shapes.

    Returns
    -------
    dict
        ``step``, ``history`` (a :class:`~sae_theory.training.History`), ``path`` and ``config``
        (the parsed config.json: ``sae_class``, ``config``, ``sae_theory_version``, ``step``,
        ``train_config``). ``trainer.pt`` is read with ``torch.load(weights_only=True)``: hook and
        source states must be made of tensors, numbers, strings, lists and dicts.

    Raises
    ------
    ValueError
        A damaged checkpoint (naming its folder and file); one of another model class; one whose
        model config, TrainConfig or hooks differ, naming every differing field with its saved
        and given value; a missing optimizer / source / hook state or master weights.
    FileNotFoundError
        No checkpoint at ``path``.
    """
    prepared = prepare_resume(path, model, cfg=cfg, optimizer=optimizer, source=source, hooks=hooks, master_weights=master_weights)
    return apply_resume(prepared, model, optimizer=optimizer, source=source, hooks=hooks, master_weights=master_weights)


# ---------------------------------------------------------------------------------------------
# the checkpoint folder of a run


def refuse_other_runs(root: Path) -> None:
    """FileExistsError if ``root`` holds ``step_XXXXXXXX`` folders (a fresh run would mix its
    checkpoints with those of another run)."""
    old = _step_folders(root, complete=False)
    if old:
        names = ", ".join(p.name for p in old[:3]) + (f" and {len(old) - 3} more" if len(old) > 3 else "")
        raise FileExistsError(
            f"checkpoint_dir {str(root)!r} already holds checkpoints of a run ({names}); continue that run with "
            'train(..., resume="latest"), train into a new checkpoint_dir, or set TrainConfig(overwrite_checkpoints=True) '
            "to delete them first."
        )


def check_checkpoint_dir_writable(root: Path) -> None:
    """Create ``root`` and write and delete a probe file in it; the OSError names the folder."""
    probe = root / f".write_probe{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise type(exc)(f"checkpoint_dir {str(root)!r} cannot be written ({exc}); choose a writable folder or checkpoint_dir=None.") from exc


def prune_checkpoints(checkpoint_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Delete every ``step_XXXXXXXX`` folder of ``checkpoint_dir`` but the ``keep`` newest complete
    ones (incomplete step folders older than those go too); returns the deleted folders."""
    keep = check_int("keep", keep, minimum=1)
    root = Path(checkpoint_dir)
    kept = _step_folders(root, complete=True)[:keep]
    if not kept:
        return []
    oldest = int(STEP_DIR.match(kept[-1].name).group(1))
    gone = [p for p in _step_folders(root, complete=False) if p not in kept and int(STEP_DIR.match(p.name).group(1)) < oldest]
    for p in gone:
        shutil.rmtree(p)
    return gone


def clean_checkpoint_dir(root: Path, *, old_steps: bool) -> None:
    """Delete the temporary step folders that a killed save left in ``root`` (``.step_N.tmpPID``,
    :func:`~sae_theory.io.atomic_folder`), and with ``old_steps`` every ``step_XXXXXXXX`` folder."""
    for p in sorted(root.iterdir()):
        if p.is_dir() and (TMP_STEP_DIR.match(p.name) or (old_steps and STEP_DIR.match(p.name))):
            shutil.rmtree(p)
