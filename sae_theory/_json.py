"""Conversion of configs, profiles and results to plain JSON types (figure sidecars, profiles)."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any, where: str = "config") -> Any:
    """Convert ``obj`` to plain JSON types; raise ``TypeError`` naming where it failed."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), where)
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    # Only look at numpy / torch types when those are already imported: otherwise obj can't be one.
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(obj, (torch.dtype, torch.device)):
            return str(obj)
        if isinstance(obj, torch.Tensor):
            return to_jsonable(obj.detach().cpu().tolist(), where)
    np = sys.modules.get("numpy")
    if np is not None:
        if isinstance(obj, np.generic):
            return to_jsonable(obj.item(), where)
        if isinstance(obj, np.ndarray):
            return to_jsonable(obj.tolist(), where)
        if isinstance(obj, np.dtype):
            return str(obj)
    raise TypeError(
        f"{where} has a value of type {type(obj).__name__} that cannot be written to JSON; "
        "pass plain numbers/strings, lists, dicts, dataclasses, numpy or torch values."
    )
