"""Has a training curve settled? One rule for every verdict that needs a converged run."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._checks import check_real

__all__ = ["metric_settled", "plateaued"]


def _finite_curve(values: Sequence[float], minimum: int, need: str) -> list[float]:
    """``values`` as floats; ValueError if fewer than ``minimum`` (``need`` says why) or one is not finite."""
    v = [float(x) for x in values]
    if len(v) < minimum:
        raise ValueError(f"values has {len(v)} entries; {need}.")
    bad = [i for i, x in enumerate(v) if not math.isfinite(x)]
    if bad:
        raise ValueError(f"values[{bad[0]}] is {v[bad[0]]}: a curve with NaN/Inf has not converged; look at the run.")
    return v


def plateaued(values: Sequence[float], *, tail: float = 0.2, rtol: float = 0.05, atol: float = 1e-4) -> bool:
    """Whether a logged curve (e.g. the training loss, in step order) has settled.

    The mean of the last ``tail`` fraction of the values is compared with the mean of the
    ``tail`` fraction just before it: settled when they differ by at most
    ``atol + rtol * |earlier mean|``. ``atol`` lets a curve that has reached (near) zero count as
    settled although its relative change is large.

    Raises
    ------
    ValueError
        If fewer than 10 values are given (two windows of at least 5 are needed), a value is not
        finite, or ``tail`` is not in (0, 0.5].
    """
    check_real("tail", tail, minimum=0, maximum=0.5, include_minimum=False)
    check_real("rtol", rtol, minimum=0)
    check_real("atol", atol, minimum=0)
    v = _finite_curve(values, 10, "plateaued needs at least 10 logged values (two windows of 5)")
    w = max(5, int(round(tail * len(v))))
    w = min(w, len(v) // 2)
    last, before = v[-w:], v[-2 * w:-w]
    a, b = sum(last) / w, sum(before) / w
    return abs(a - b) <= atol + rtol * abs(b)


def metric_settled(values: Sequence[float], *, atol: float = 0.03) -> bool:
    """Whether a metric read at a few points along one run (in step order, e.g. FRR at 1/2 and 3/4
    of a run and at its end) has stopped moving: its last two readings differ by at most ``atol``
    (0.03 of FRR: four of the toy's 128 features).

    A coarser test than :func:`plateaued`, for metrics that cost an evaluation per reading (a
    handful of snapshots, not a logged curve). A metric can settle while the loss still falls
    and the other way round; a verdict on a metric needs the metric settled.

    Raises
    ------
    ValueError
        Fewer than two values, or a value that is not finite.
    """
    check_real("atol", atol, minimum=0)
    v = _finite_curve(values, 2, "metric_settled needs at least two readings")
    return abs(v[-1] - v[-2]) <= atol
