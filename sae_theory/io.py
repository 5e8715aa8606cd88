"""Save and load SAEs: weights as safetensors, the config as JSON beside them.

>>> save_sae(model, "runs/gba_toy")          # runs/gba_toy/sae.safetensors + config.json
>>> model = load_sae("runs/gba_toy")          # same class, config and weights

Parameter names are SAELens's (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``), so exporting to
SAELens is a renaming of the config, not of the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .models import SAE
from .models.registry import get_sae

__all__ = ["load_sae", "save_sae"]

WEIGHTS, CONFIG = "sae.safetensors", "config.json"


def save_sae(model: SAE, folder: str | Path) -> Path:
    """Write ``model`` to ``folder`` (created): ``sae.safetensors`` (its state dict, buffers
    included) and ``config.json`` (class name, config, package version). Returns the folder."""
    from safetensors.torch import save_file

    from . import __version__

    name = type(model).__name__
    try:
        entry = get_sae(name)
    except KeyError as exc:
        raise TypeError(f"save_sae cannot save a {name}: {exc.args[0]}") from None
    if entry.cls is not type(model):
        raise TypeError(f"{name} is registered as {entry.cls.__module__}.{entry.cls.__qualname__}, not {type(model).__module__}.{type(model).__qualname__}; register the class you save.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share storage (a tied weight and its view).
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    meta = dict(sae_class=name, config=model.config.to_dict(), sae_theory_version=__version__)
    (folder / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_sae(folder: str | Path, *, device: str | torch.device | None = None) -> SAE:
    """Rebuild the SAE saved by :func:`save_sae` in ``folder``, optionally on another ``device``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for f in (WEIGHTS, CONFIG):
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder / f} is missing; {folder} was not written by save_sae.")
    meta = json.loads((folder / CONFIG).read_text())
    name = meta.get("sae_class")
    try:
        entry = get_sae(str(name))
    except KeyError as exc:
        raise ValueError(f"{folder / CONFIG} names SAE class {name!r}: {exc.args[0]}") from None
    cls, cfg_cls = entry.cls, entry.config_cls
    config = cfg_cls.from_dict(meta["config"])
    if device is not None:
        config = cfg_cls.from_dict({**meta["config"], "device": str(device)})
    model = cls(config)
    model.load_state_dict(load_file(str(folder / WEIGHTS), device=str(config.device)))
    return model
