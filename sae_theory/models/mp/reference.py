"""Matching pursuit one input at a time, line by line (the loop of :mod:`sae_theory.models.mp`),
and what a pursuit returns.

:func:`matching_pursuit_reference` is the definition the fast batched paths
(:mod:`.pursuit`) are tested against, in float64; it is for tests and theory checks, not for
speed. It works with atoms that are not unit norm too (the coefficient is then still the plain
correlation <r, D_j>), to show what breaks then. The option checks shared by the reference and
the model live here as well.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["MPResult", "SELECTIONS", "check_selection", "check_threshold", "matching_pursuit_reference"]

SELECTIONS = ("relu", "abs")


class MPResult(NamedTuple):
    """What a pursuit returns.

    codes (B, p); indices (B, k) selected atom per step; alphas (B, k) coefficient per step (0 for
    steps an input did not take); steps (B,) number of steps each input took; residual (B, d) the
    final residual r (of x - b_dec). indices is -1 where alphas is 0: a step not taken, or one
    that changed nothing (relu selection when no correlation is positive).
    """

    codes: Tensor
    indices: Tensor
    alphas: Tensor
    steps: Tensor
    residual: Tensor


def check_selection(selection: str) -> None:
    """Raise unless ``selection`` is one of :data:`SELECTIONS`."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")


def check_threshold(threshold: float | None, name: str = "threshold") -> None:
    """Raise unless ``threshold`` is None or a finite number >= 0 (a residual norm)."""
    if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"{name} must be None or a finite number >= 0 (a residual norm), got {threshold!r}.")


def matching_pursuit_reference(
    x: Tensor,
    D: Tensor,
    k: int,
    *,
    threshold: float | None = None,
    selection: str = "relu",
    stop_on_repeat: bool = False,
    b_dec: Tensor | None = None,
) -> tuple[MPResult, list[list[Tensor]]]:
    """Matching pursuit, one input at a time, line by line (:mod:`sae_theory.models.mp`). For
    tests and theory checks, not for speed.

    x (B, d), D (p, d) with atoms as rows (unit norm for the propositions to hold; not required:
    the coefficient is <r, D_j> whatever ||D_j||).
    Returns the :class:`MPResult` and, per input, the list of residuals r(0), ..., r(T).
    Ties in the argmax go to the lowest index (as ``torch.argmax``).
    """
    check_selection(selection)
    B, p = x.shape[0], D.shape[0]
    codes = torch.zeros(B, p, dtype=x.dtype, device=x.device)
    indices = torch.full((B, k), -1, dtype=torch.long, device=x.device)
    alphas = torch.zeros(B, k, dtype=x.dtype, device=x.device)
    steps = torch.zeros(B, dtype=torch.long, device=x.device)
    residuals = torch.zeros_like(x)
    trace: list[list[Tensor]] = []
    for b in range(B):
        r = x[b] - (b_dec if b_dec is not None else 0)
        z = codes[b]
        history = [r.clone()]
        for t in range(k):
            if threshold is not None and float(torch.linalg.vector_norm(r)) < threshold:
                break
            c = D @ r  # correlation of the residual with every atom
            if selection == "relu":
                j = int(torch.argmax(torch.relu(c)))
                a = torch.relu(c[j])
            else:
                j = int(torch.argmax(c.abs()))
                a = c[j]
            before = bool(z[j] != 0)
            z[j] = z[j] + a
            r = r - a * D[j]
            indices[b, t], alphas[b, t] = (j if a != 0 else -1), a
            steps[b] = t + 1
            history.append(r.clone())
            if stop_on_repeat and before == bool(z[j] != 0):  # support unchanged
                break
        residuals[b] = r
        trace.append(history)
    return MPResult(codes, indices, alphas, steps, residuals), trace
