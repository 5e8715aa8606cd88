"""Argument checks shared by the package: each raises with a message that names the argument
and says what to change. Exceptions, never ``assert``."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = ["check_bool", "check_finite", "check_int", "check_matrix", "check_positive", "check_probability", "check_real"]


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the allowed range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is True or False, or raise naming ``name`` (1, "yes" and None are refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (>= 0 with ``allow_zero``), or raise naming ``name``."""
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}.")
    return value


def check_probability(name: str, value: Any, *, allow_zero: bool = False, allow_one: bool = True) -> float:
    """Return ``value`` as a float in (0, 1] (bounds per flags), or raise naming ``name``."""
    value = float(value)
    lo_ok = value >= 0 if allow_zero else value > 0
    hi_ok = value <= 1 if allow_one else value < 1
    if not (math.isfinite(value) and lo_ok and hi_ok):
        interval = ("[" if allow_zero else "(") + "0, 1" + ("]" if allow_one else ")")
        raise ValueError(f"{name} must lie in {interval}, got {value}.")
    return value


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise if ``tensor`` (dense or sparse) holds a NaN or an infinity."""
    values = tensor.coalesce().values() if tensor.is_sparse else tensor
    if values.is_floating_point() and not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the input before passing it.")


def check_matrix(name: str, t: object, *, what: str = "(rows, d)", allow_no_rows: bool = False) -> torch.Tensor:
    """Raise unless ``t`` is a dense 2-D floating tensor with at least one column (and one row,
    unless ``allow_no_rows``); ``what`` names the axes in the message, e.g. ``"(B, M)"``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {what}, got {type(t).__name__}.")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {t.layout}; call .to_dense() first.")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape {what}, got shape {tuple(t.shape)}.")
    if not t.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {t.dtype}.")
    if t.shape[1] == 0 or (t.shape[0] == 0 and not allow_no_rows):
        need = "one column" if allow_no_rows else "one row and one column"
        raise ValueError(f"{name} must have at least {need}, got shape {tuple(t.shape)}.")
    return t


def check_real(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    include_minimum: bool = True,
    include_maximum: bool = True,
) -> float:
    """Return ``value`` as a finite float within the bounds, or raise naming ``name``.

    Parameters
    ----------
    name : str
        The argument's name, as the caller's user knows it.
    value : real number
        Python or numpy int/float; bools, strings, None and tensors are refused.
    minimum, maximum : float, optional
        Bounds; None: unbounded on that side.
    include_minimum, include_maximum : bool
        Whether the bound itself is allowed (``>=`` / ``<=``) or not (``>`` / ``<``).

    Raises
    ------
    TypeError
        ``value`` is not a real number (or is a bool).
    ValueError
        ``value`` is NaN, infinite or outside the bounds; the message gives the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    x = float(value)
    lo_ok = minimum is None or (x >= minimum if include_minimum else x > minimum)
    hi_ok = maximum is None or (x <= maximum if include_maximum else x < maximum)
    if not (math.isfinite(x) and lo_ok and hi_ok):
        if minimum is not None and maximum is not None:
            bound = f" in {'[' if include_minimum else '('}{minimum}, {maximum}{']' if include_maximum else ')'}"
        elif minimum is not None:
            bound = f" {'>=' if include_minimum else '>'} {minimum}"
        elif maximum is not None:
            bound = f" {'<=' if include_maximum else '<'} {maximum}"
        else:
            bound = ""
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}.")
    return x
