"""Argument checks shared by the package: each raises with a message that names the argument
and says what to change. Exceptions, never ``assert``."""

from __future__ import annotations

import math
import numbers
import os
from typing import Any

import numpy as np
import torch

__all__ = [
    "SAFE_NORMAL_Z",
    "check_bool",
    "check_fits_dtype",
    "check_finite",
    "check_floating_dtype",
    "check_generator",
    "check_index",
    "check_int",
    "check_levels",
    "check_matrix",
    "check_number",
    "check_path",
    "check_positive",
    "check_probability",
    "check_real",
    "check_same_length",
    "check_tensor",
]

#: |z| that no standard normal draw reaches in practice: P(|Z| > 10) ~ 1.5e-23 (and a normal
#: sampler fed uniforms of at most 53 bits cannot exceed sqrt(2 ln 2^53) ~ 8.6). The laws built
#: on normals (log-normal coefficients, normal magnitudes) are bounded at this many standard
#: deviations when checked against a dtype's range.
SAFE_NORMAL_Z = 10.0


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
    """Raise naming ``name`` if ``tensor`` (dense or sparse) holds a NaN or an infinity.

    Cost: one sum over the tensor and one read of its result (a device synchronisation on a
    GPU): a NaN or an infinity always makes the sum non-finite. Only when the sum is not finite
    is the exact elementwise test run, so finite values whose sum overflows are still accepted.
    On the CPU ``torch.isfinite(x).all()`` costs 4-30x a sum (measured on (256, 42) to
    (4096, 2048) float32 blocks), which is why the sum comes first: about 3 us on a (256, 42)
    batch, cheap enough for every ``encode`` call. Half-precision tensors are summed in float32
    (their sum overflows float16 at 65504).
    """
    values = (tensor.coalesce().values() if tensor.is_sparse else tensor).detach()
    if not values.is_floating_point():
        return
    total = values.sum(dtype=torch.float32) if values.element_size() < 4 else values.sum()
    if math.isfinite(total.item()) or bool(torch.isfinite(values).all()):
        return
    bad = int((~torch.isfinite(values)).sum())
    raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the input before passing it.")


def check_tensor(name: str, t: object, *, what: str) -> torch.Tensor:
    """Return ``t`` if it is a torch.Tensor, or raise TypeError naming ``name`` and the expected
    shape ``what`` (e.g. ``"(..., d=6)"``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {what}, got {type(t).__name__}.")
    return t


def check_floating_dtype(name: str, dtype: Any) -> torch.dtype:
    """Return ``dtype`` if it is a floating torch.dtype, or raise TypeError naming ``name``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}.")
    return dtype


def check_generator(name: str, generator: Any) -> torch.Generator | None:
    """Return ``generator`` if it is None or a torch.Generator, or raise TypeError naming ``name``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}.")
    return generator


def check_fits_dtype(name: str, log_largest: float, dtype: torch.dtype, *, fix: str = "") -> None:
    """Raise naming ``name`` if values up to exp(``log_largest``) overflow ``dtype``.

    The bound is passed as a logarithm so that laws whose largest value overflows even a Python
    float (a log-normal) can be checked: the comparison is log_largest <= ln(finfo(dtype).max).
    """
    top = torch.finfo(dtype).max
    if not log_largest <= math.log(top):
        shown = f"{math.exp(log_largest):.4g}" if log_largest < 709 else f"exp({log_largest:.4g})"
        raise ValueError(f"{name} produces values up to {shown}, which overflow {str(dtype).removeprefix('torch.')} "
                         f"(largest finite value {top:.4g}) to inf; {fix or 'use smaller parameters or a wider dtype'}.")


def check_same_length(name: str, seq: Any, other_name: str, n: int) -> None:
    """Raise naming ``name`` unless ``len(seq) == n``, the length of ``other_name``."""
    if len(seq) != n:
        raise ValueError(f"{name} has {len(seq)} entries but {other_name} has {n}; give one entry of {name} per entry of {other_name}.")


def check_levels(name: str, levels: Any, n: int, other_name: str) -> torch.Tensor:
    """``levels`` (one integer level per atom of ``other_name``, which has ``n`` atoms) as an
    int64 tensor on the CPU; raise naming ``name`` for a wrong length or a non-integer level."""
    arr = np.asarray(levels.detach().cpu() if isinstance(levels, torch.Tensor) else levels)
    if arr.dtype == bool or arr.dtype.kind not in "iuf" or arr.ndim > 1:
        raise ValueError(f"{name} must hold integer levels, one per atom of {other_name}, got {levels!r}.")
    arr = arr.reshape(-1)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ValueError(f"{name} must hold integer levels, one per atom of {other_name}; got non-integer or NaN values.")
        arr = arr.astype(np.int64)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {other_name} has {n} atoms; give one level per atom.")
    return torch.as_tensor(arr, dtype=torch.int64)


def check_index(name: str, value: Any, n: int, *, of: str) -> int:
    """``value`` as an int index in [0, n) of ``of``, or raise ValueError naming ``name``
    (a bool, a float or an index out of range)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < n:
        raise ValueError(f"{name} = {value!r} is not an atom index in [0, {n}) of {of}.")
    return int(value)


def check_path(name: str, value: Any) -> os.PathLike | str:
    """Return ``value`` if it is a str or os.PathLike (a folder or file path), or raise TypeError naming ``name``."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}.")
    return value


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


def check_number(name: str, value: Any) -> float:
    """``value`` as a float if it is a real number (NaN and infinity included: the caller checks
    the range), or TypeError naming ``name`` (bools, strings, None and tensors are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}.")
    return float(value)


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
