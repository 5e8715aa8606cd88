"""Save and load SAEs: weights as safetensors, the config as JSON beside them.

>>> save_sae(model, "runs/gba_toy")          # runs/gba_toy/sae.safetensors + config.json
>>> model = load_sae("runs/gba_toy")          # same class, config and weights
>>> model = load_sae("runs/gba/step_00000500")  # a training checkpoint's step folder
>>> model = load_sae("runs/gba")              # a checkpoint_dir: its latest complete step

One format, one writer, one reader. A *save folder* holds

* ``sae.safetensors``: ``model.state_dict()`` (parameters and buffers);
* ``config.json``: ``sae_class`` (the registered class name, :mod:`sae_theory.models.registry`),
  ``config`` (``model.config.to_dict()``), ``input_norm`` (the model's input normalisation,
  ``{"kind", "scale"}``; :attr:`~sae_theory.models.base.SAE.input_norm`; a save without it, from an
  older sae_theory, loads as ``"none"``), ``sae_theory_version``, and any extra keys of the writer
  (a training checkpoint adds ``step`` and ``train_config``).

:func:`write_sae_files` is the only code that writes these two files (:func:`save_sae` and the
trainer's :func:`~sae_theory.training.save_checkpoint` both call it), :func:`read_sae_config` and
:func:`read_sae_weights` the only code that reads them (:func:`load_sae` and
:func:`~sae_theory.training.load_checkpoint`). A checkpoint's ``step_XXXXXXXX`` folder is a save
folder plus ``trainer.pt``, so :func:`load_sae` opens it.

Saves are atomic: the files are written into a hidden temporary sibling folder
(:func:`atomic_folder`) that is then swapped in, so a crash or kill mid-save leaves the previous
save (or none), never a mix of old and new files.

Parameter names are SAELens's (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``), so exporting to
SAELens is a renaming of the config, not of the weights.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ._checks import check_path
from .models import SAE
from .models.registry import get_sae

__all__ = ["apply_input_norm", "atomic_folder", "load_sae", "read_sae_config", "read_sae_weights", "save_sae", "write_sae_files"]

WEIGHTS, CONFIG = "sae.safetensors", "config.json"
#: config.json keys that write_sae_files owns; extra keys may not override them.
RESERVED_KEYS = ("sae_class", "config", "input_norm", "sae_theory_version")
#: The weights file of checkpoints written before checkpoints became save folders.
_OLD_CHECKPOINT_WEIGHTS = "model.safetensors"
_FIX = "pass the folder given to save_sae, a checkpoint's step_XXXXXXXX folder, or a checkpoint_dir"


# ---------------------------------------------------------------------------------------------
# atomic folders


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).
    False where the platform or file system cannot; the caller then falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28, musl, ...
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike, *, replaceable: Iterable[str] | None = None) -> Iterator[Path]:
    """Write a folder atomically: yield a fresh temporary sibling of ``final``, swap it in on success.

    Parameters
    ----------
    final : path
        The folder to (re)write; its parents are created.
    replaceable : names, optional
        When ``final`` already exists, it is replaced only if every entry in it is one of these
        names (FileExistsError otherwise, so that a save never deletes unrelated files); None:
        replace whatever it holds (for folders that this package owns, e.g. checkpoint steps).

    Notes
    -----
    The temporary folder is ``.<name>.tmp<pid>`` beside ``final``; it is removed if the body
    raises. On Linux the swap is one ``renameat2(RENAME_EXCHANGE)``; elsewhere the old folder is
    renamed to ``.<name>.old<pid>`` and the new one into place (a kill between those two renames
    leaves both complete folders under their hidden names). The old contents are then deleted.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} is a file; a save is a folder: pass a folder path.")
    if final.is_dir() and replaceable is not None:
        foreign = sorted(p.name for p in final.iterdir() if p.name not in set(replaceable))
        if foreign:
            raise FileExistsError(
                f"{final} holds {foreign}, which a save would delete (a save replaces its whole folder); "
                "pass a folder of its own, e.g. a new subfolder."
            )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not final.exists():
        os.replace(tmp, final)
        return
    if not _exchange(tmp, final):
        old = final.with_name(f".{final.name}.old{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        tmp = old
    shutil.rmtree(tmp)  # now the previous contents


# ---------------------------------------------------------------------------------------------
# the one writer and the one reader


def write_sae_files(model: SAE, folder: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> None:
    """Write ``sae.safetensors`` and ``config.json`` of ``model`` into the existing ``folder``.

    The only writer of the save format (module docstring). It neither checks the registry nor
    makes the write atomic: :func:`save_sae` and the checkpoints do both around it (checkpoints
    accept unregistered SAE classes, which :func:`load_sae` then cannot rebuild but
    :func:`~sae_theory.training.load_checkpoint` can load into a given model).

    Parameters
    ----------
    model : SAE
        Needs ``config.to_dict()`` (every :class:`~sae_theory.models.base.SAE` has it).
    folder : path
        An existing folder, usually the temporary one of :func:`atomic_folder`.
    extra : dict, optional
        More JSON-ready keys for ``config.json`` (not ``sae_class``, ``config`` or
        ``sae_theory_version``).
    """
    from safetensors.torch import save_file

    from . import __version__

    config = getattr(model, "config", None)
    if config is None or not callable(getattr(config, "to_dict", None)):
        raise TypeError(f"{type(model).__name__} has no config.to_dict(); every SAE needs a config (see sae_theory.models.base).")
    extra = dict(extra or {})
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra config.json keys {clash} are written by write_sae_files itself; rename them.")
    folder = Path(folder)
    # clone: safetensors refuses tensors that share storage (a tied weight and its view).
    tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS))
    norm = getattr(model, "input_norm", None) or {"kind": "none", "scale": None}
    meta = dict(sae_class=type(model).__name__, config=config.to_dict(), input_norm=dict(norm), sae_theory_version=__version__, **extra)
    (folder / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def _need(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        old = folder / _OLD_CHECKPOINT_WEIGHTS
        if old.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {folder} is a checkpoint of an older sae_theory ({old.name}); "
                "train again to write a current checkpoint (sae.safetensors + config.json + trainer.pt)."
            )
        raise FileNotFoundError(f"{path} is missing, so {folder} is not a save folder; {_FIX}.")
    return path


def read_sae_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a save folder (or of a checkpoint's step folder).

    Raises FileNotFoundError naming the missing file, ValueError for a file that is not a save's
    config (no ``sae_class`` / ``config``)."""
    path = _need(Path(folder), CONFIG)
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the save is damaged: save it again.") from None
    if not isinstance(meta, dict) or not all(k in meta for k in ("sae_class", "config")):
        raise ValueError(f"{path} has no 'sae_class' and 'config'; it was not written by save_sae or a checkpoint: {_FIX}.")
    return meta


def read_sae_weights(folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a save folder's ``sae.safetensors``, on ``device``.

    Raises FileNotFoundError naming the missing file, ValueError naming a file that safetensors
    cannot read (truncated or corrupt)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = _need(Path(folder), WEIGHTS)
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as exc:
        raise ValueError(f"{path} cannot be read ({exc}); the save is damaged: save it again.") from None


def _is_save_folder(folder: Path) -> bool:
    return (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file()


# ---------------------------------------------------------------------------------------------
# the public pair


def save_sae(model: SAE, folder: str | os.PathLike) -> Path:
    """Write ``model`` to ``folder``: ``sae.safetensors`` (its state dict, buffers included) and
    ``config.json`` (class name, config, package version). Returns the folder.

    The class must be registered (:func:`~sae_theory.models.register_sae`). The write is atomic
    (:func:`atomic_folder`): an existing save in ``folder`` is replaced only once the new one is
    complete; a folder holding other files is refused (FileExistsError) rather than emptied.
    """
    if not isinstance(model, SAE):
        raise TypeError(f"model must be an SAE (a class registered with sae_theory.models.register_sae), got {type(model).__name__}.")
    check_path("folder", folder)
    name = type(model).__name__
    try:
        entry = get_sae(name)
    except KeyError as exc:
        raise TypeError(f"save_sae cannot save a {name}: {exc.args[0]}") from None
    if entry.cls is not type(model):
        raise TypeError(f"{name} is registered as {entry.cls.__module__}.{entry.cls.__qualname__}, not {type(model).__module__}.{type(model).__qualname__}; register the class you save.")
    folder = Path(folder)
    with atomic_folder(folder, replaceable=(WEIGHTS, CONFIG)) as tmp:
        write_sae_files(model, tmp)
    return folder


def _resolve_save(folder: Path) -> tuple[Path, dict[str, torch.Tensor] | None]:
    """``folder`` itself if it is a save (a save_sae folder or a checkpoint step), else the latest
    intact step of a checkpoint_dir with its weights (on the CPU), read once to check them;
    FileNotFoundError naming the file and the fix otherwise."""
    if _is_save_folder(folder):
        return folder, None
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist or is not a folder; {_FIX}.")
    from .training.checkpoint import complete_checkpoints  # training imports io: import at call time

    steps = complete_checkpoints(folder)
    skipped = []
    for step in steps:  # newest first; a step whose files cannot be read (a kill mid-write) is skipped
        try:
            read_sae_config(step)
            weights = read_sae_weights(step)
        except (OSError, ValueError) as exc:
            skipped.append(f"{step.name} ({exc})")
            continue
        if skipped:
            warnings.warn(f"load_sae skipped the damaged checkpoint(s) {'; '.join(skipped)} of {folder}; "
                          f"loading the newest intact one, {step}.", stacklevel=3)
        return step, weights
    if steps:
        raise ValueError(f"every checkpoint in {folder} is damaged: {'; '.join(skipped)}; train again.")
    missing = [f for f in (WEIGHTS, CONFIG) if not (folder / f).is_file()]
    if (folder / _OLD_CHECKPOINT_WEIGHTS).is_file() or any((p / _OLD_CHECKPOINT_WEIGHTS).is_file() for p in folder.glob("step_*")):
        raise FileNotFoundError(
            f"{folder} holds checkpoints of an older sae_theory ({_OLD_CHECKPOINT_WEIGHTS}); load_sae reads {WEIGHTS} + {CONFIG}: "
            "train again to write current checkpoints."
        )
    raise FileNotFoundError(
        f"{folder / missing[0]} is missing: {folder} is neither a save_sae folder ({WEIGHTS} + {CONFIG}) "
        f"nor a checkpoint_dir (complete step_XXXXXXXX subfolders); {_FIX}."
    )


def load_sae(folder: str | os.PathLike, *, device: str | torch.device | None = None) -> SAE:
    """Rebuild a saved SAE, optionally on another ``device``.

    Parameters
    ----------
    folder : path
        A :func:`save_sae` folder, a training checkpoint's ``step_XXXXXXXX`` folder, or a
        ``checkpoint_dir`` (its latest step is opened; a latest step whose files cannot be read,
        e.g. truncated by a kill, is skipped with a warning naming it, for the newest intact one).
    device : str or torch.device, optional
        Overrides the saved ``config.device``.

    Raises
    ------
    TypeError
        ``folder`` is not a path.
    FileNotFoundError
        ``folder`` is neither a save nor a checkpoint folder (naming the missing file).
    ValueError
        ``config.json`` is not JSON, names an SAE class that is not registered, or holds a config
        that class refuses; ``sae.safetensors`` is damaged or holds weights of another shape
        (each naming the file); every step of a ``checkpoint_dir`` is damaged. Nothing is built
        before the config is read and checked.
    """
    folder, weights = _resolve_save(Path(check_path("folder", folder)))
    meta = read_sae_config(folder)
    name = meta["sae_class"]
    try:
        entry = get_sae(str(name))
    except KeyError as exc:
        raise ValueError(f"{folder / CONFIG} names SAE class {name!r}: {exc.args[0]}") from None
    cls, cfg_cls = entry.cls, entry.config_cls
    saved_device = str(meta["config"].get("device", "cpu"))
    if device is None and saved_device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{folder / CONFIG} was saved on {saved_device!r} and this machine has no CUDA device; "
                         f"load it on the CPU with load_sae({str(folder)!r}, device=\"cpu\").")
    fields = meta["config"] if device is None else {**meta["config"], "device": str(device)}
    try:
        config = cfg_cls.from_dict(fields)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{folder / CONFIG} holds a config {cfg_cls.__name__} cannot take ({exc}); the save is damaged or "
                         "from another version of the class: save it again.") from None
    model = cls(config)
    apply_input_norm(model, meta.get("input_norm"), where=folder / CONFIG)
    try:
        model.load_state_dict(weights if weights is not None else read_sae_weights(folder, device=config.device))
    except RuntimeError as exc:  # missing, unexpected or mis-shaped tensors
        raise ValueError(f"{folder / WEIGHTS} does not fit the {name} that {CONFIG} describes: {exc}") from None
    return model


def apply_input_norm(model: SAE, record: Any, *, where: Any = "the save") -> None:
    """Set ``model``'s input normalisation from a saved ``{"kind", "scale"}`` record (None: an
    older save without one, loaded as ``"none"``); a damaged record is a ValueError naming
    ``where``."""
    if record is None:
        return
    if not isinstance(record, dict) or set(record) not in ({"kind", "scale"}, {"kind", "scale", "mean", "std"}):
        raise ValueError(f"{where} holds input_norm={record!r}; it must be {{'kind': ..., 'scale': ...}}: the save is damaged, save it again.")
    try:
        model.set_input_norm(record["kind"], record["scale"], mean=record.get("mean"), std=record.get("std"))
    except ValueError as exc:
        raise ValueError(f"{where} holds an input_norm the model cannot take ({exc}); the save is damaged, save it again.") from None
