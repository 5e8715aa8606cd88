"""Matching pursuit one input at a time, line by line (the loop of :mod:`sae_theory.models.mp`),
and what a pursuit returns.

:func:`matching_pursuit_reference` is the definition the fast batched paths
(:mod:`.pursuit`) are tested against, in float64; it is for tests and theory checks, not for
speed. It works with atoms that are not unit norm too (the coefficient is then still the plain
correlation <r, D_j>), to show what breaks then. The option checks shared by the reference and
the model live here as well, with the tolerance of the stop at rounding level
(:func:`rounding_tolerance`, :func:`rounding_floor`), which every implementation applies the same
way.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..._checks import check_finite, check_int, check_matrix

__all__ = ["MPResult", "ROUNDING_MULTIPLE", "SELECTIONS", "check_selection", "check_threshold", "matching_pursuit_reference",
           "rounding_floor", "rounding_tolerance"]

SELECTIONS = ("relu", "abs")

ROUNDING_MULTIPLE = 32
"""The stop at rounding level halts an input once ||r|| <= ROUNDING_MULTIPLE * eps * ||x - b_dec||
(eps = ``torch.finfo(dtype).eps``). Why 32: the residual left once x is represented exactly (x an
atom, or a sparse combination of orthonormal atoms) is rounding, and it was measured at 2-8 eps
||x|| for d = 16..1024 (Gram and direct paths) and up to 12.5 eps at d = 16384 (direct path),
float32 and float64, 1 to 32 steps, 64 to 256 inputs each; 32 leaves a factor of 2.5 over the
worst case measured (a larger d or more steps may need more: the rule then just does not fire, and
the plain loop's rounding-level codes come back). Below that level the codes of the three
implementations already disagree with one another (they are the rounding of earlier steps,
decomposed), so they carry nothing. 32 eps is 7.1e-15 in float64 and 3.8e-6 in float32; in half
precision it is coarse (3 % of ||x|| in float16, 25 % in bfloat16): turn the stop off there
(``stop_at_rounding=False``)."""


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


def rounding_tolerance(dtype: torch.dtype) -> float:
    """eps_rel of the stop at rounding level: :data:`ROUNDING_MULTIPLE` x ``torch.finfo(dtype).eps``."""
    return ROUNDING_MULTIPLE * torch.finfo(dtype).eps


def rounding_floor(xc: Tensor) -> Tensor:
    """Per row of the centred inputs xc (B, d), the residual norm at or below which the pursuit
    stops: ``rounding_tolerance(dtype) * ||xc||`` (B,). A zero row gets 0, so it takes no step (its
    residual is already 0). A row whose norm is not finite (NaN, Inf, or overflow of the norm) gets
    -1, which no residual norm reaches: the stop never hides a NaN or Inf input behind zero codes.
    """
    floor = rounding_tolerance(xc.dtype) * torch.linalg.vector_norm(xc, dim=-1)
    return floor.masked_fill_(~torch.isfinite(floor), -1.0)


def matching_pursuit_reference(
    x: Tensor,
    D: Tensor,
    k: int,
    *,
    threshold: float | None = None,
    selection: str = "relu",
    stop_on_repeat: bool = False,
    b_dec: Tensor | None = None,
    stop_at_rounding: bool = True,
) -> tuple[MPResult, list[list[Tensor]]]:
    """Matching pursuit, one input at a time, line by line (:mod:`sae_theory.models.mp`). For
    tests and theory checks, not for speed.

    x (B, d), D (p, d) with atoms as rows (unit norm for the propositions to hold; not required:
    the coefficient is <r, D_j> whatever ||D_j||).
    ``stop_at_rounding``: before every step, an input whose residual norm is at most
    :func:`rounding_floor` of x - b_dec stops (the stop at rounding level of
    :mod:`sae_theory.models.mp`); False runs the plain loop.
    Returns the :class:`MPResult` and, per input, the list of residuals r(0), ..., r(T).
    Ties in the argmax go to the lowest index (as ``torch.argmax``).
    Raises TypeError / ValueError naming the argument for a non-tensor, a shape other than
    x (B, d), D (p, d), b_dec (d,), a k below 1, or NaN / Inf in x, D or b_dec.
    """
    check_selection(selection)
    check_threshold(threshold)
    k = check_int("k", k, minimum=1)
    x = check_matrix("x", x, what="(B, d)", allow_no_rows=True)
    D = check_matrix("D", D, what=f"(p, d={x.shape[1]})")
    if D.shape[1] != x.shape[1]:
        raise ValueError(f"D must have shape (p, d={x.shape[1]}) (atoms as rows, as wide as x), got {tuple(D.shape)}.")
    check_finite("x", x)
    check_finite("D", D)
    if b_dec is not None:
        if not isinstance(b_dec, Tensor) or b_dec.shape != (x.shape[1],):
            raise ValueError(f"b_dec must be None or a tensor of shape (d={x.shape[1]},), got {getattr(b_dec, 'shape', type(b_dec).__name__)}.")
        check_finite("b_dec", b_dec)
    B, p = x.shape[0], D.shape[0]
    codes = torch.zeros(B, p, dtype=x.dtype, device=x.device)
    indices = torch.full((B, k), -1, dtype=torch.long, device=x.device)
    alphas = torch.zeros(B, k, dtype=x.dtype, device=x.device)
    steps = torch.zeros(B, dtype=torch.long, device=x.device)
    residuals = torch.zeros_like(x)
    trace: list[list[Tensor]] = []
    xc = x - (b_dec if b_dec is not None else 0)
    floor = rounding_floor(xc).tolist() if stop_at_rounding else None
    for b in range(B):
        r = xc[b]
        z = codes[b]
        history = [r.clone()]
        for t in range(k):
            norm = float(torch.linalg.vector_norm(r))
            if threshold is not None and norm < threshold:
                break
            if floor is not None and norm <= floor[b]:  # the residual is rounding: nothing left to represent
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
