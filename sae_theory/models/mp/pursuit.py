"""The fast batched matching pursuit: the same loop as :func:`~.reference.matching_pursuit_reference`
for a whole batch at once.

Selection needs only correlations, and c(t) = c(t-1) - a_t G[j(t)] with the Gram matrix
G = D D^T, so after one (B, d) x (d, p) product each step of :func:`pursuit_gram` costs O(B p)
instead of O(B d p). Rows are processed in blocks whose correlations stay in cache
(:data:`BLOCK_BYTES`); every buffer is allocated once per call. :func:`pursuit_direct`
recomputes the correlations r D^T at every step instead (no G). Which one runs, and the caching
of G, is :class:`~.model.MPSAE`'s business.

Both keep the residual r itself (r -= a_t D_j(t), O(B d) a step, as the reference), and both
stop rows the way the reference does, through one mask of active rows: a stopped row's later
coefficients are 0 (indices -1), so its codes and residual no longer change. The mask serves the
threshold mode (||r|| < threshold, checked before every step), ``stop_on_repeat`` (after the step
that left the support unchanged) and the stop at rounding level (||r|| <= 32 eps ||xc||, checked
before every step, :func:`~.reference.rounding_floor`). The residual norms are those of the
explicit r in both paths (the Gram path used to update ||r||^2 by ||r||^2 - 2 a c_j + a^2 G_jj,
whose cancellation leaves an error of ~eps ||x||^2: too coarse to see a residual of 32 eps ||x||).

Neither assumes unit-norm atoms: the coefficient is <r, D_j> as in the reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import MPResult, rounding_floor

__all__ = ["ARGMAX_CHUNK", "BLOCK_BYTES", "pursuit_direct", "pursuit_gram"]

BLOCK_BYTES = 8 << 20
"""Target size of one block of correlations (rows x p) in the fast path: small enough to stay in a
CPU core's cache level that is much faster than memory, large enough to amortise the per-operation
dispatch cost (measured in ``benchmarks/bench_mp.py``)."""

ARGMAX_CHUNK = 128
"""Row argmax in two levels when p is a multiple of this: the maximum of each chunk of 128
correlations (a vectorised reduction), then the argmax over the chunk maxima and inside the
winning chunk. PyTorch's CPU argmax with indices is not vectorised and was about 3x slower on
(256, 4096) blocks; the result is the same, ties included (the first maximum wins)."""


def _row_max(C: Tensor, vals: Tensor, idx: Tensor) -> None:
    """vals, idx <- the maximum of each row of C and its first index (as ``torch.max(C, 1)``)."""
    n, p = C.shape
    c = ARGMAX_CHUNK
    if p % c or p < 2 * c or C.device.type != "cpu":
        torch.max(C, 1, out=(vals, idx))
        return
    V = C.view(n, p // c, c)
    torch.max(V.amax(2), 1, out=(vals, idx))  # value and first chunk holding it
    inner = V.gather(1, idx.view(n, 1, 1).expand(n, 1, c)).view(n, c).argmax(1)
    idx.mul_(c).add_(inner)


def _select(C: Tensor, vals: Tensor, idx: Tensor, absbuf: Tensor | None, selection: str) -> tuple[Tensor, Tensor]:
    """Fill (vals, idx) with the selected atom and its score; return (c_j, alpha).

    "relu": argmax_j relu(c_j) equals argmax_j c_j whenever some c_j > 0; when none is, relu(c)
    is all zeros, alpha = 0 and the step changes nothing, whichever atom is named.
    """
    if selection == "relu":
        _row_max(C, vals, idx)
        return vals, vals.clamp(min=0)
    torch.abs(C, out=absbuf)
    _row_max(absbuf, vals, idx)
    c = C.gather(1, idx[:, None]).squeeze(1)
    return c, c


def _stop_rows(active: Tensor, r: Tensor, threshold: float | None, floor: Tensor | None) -> None:
    """active <- active and not stopped, before a step: ||r|| < threshold (threshold mode), or
    ||r|| <= floor (the stop at rounding level; NaN never compares <=, so a NaN row goes on)."""
    rn = torch.linalg.vector_norm(r, dim=1)
    if threshold is not None:
        active &= rn >= threshold
    if floor is not None:
        active &= ~(rn <= floor)


def pursuit_gram(xc: Tensor, D: Tensor, G: Tensor, k: int, threshold: float | None, selection: str, stop_on_repeat: bool,
                 want_codes: bool = True, stop_at_rounding: bool = True) -> MPResult:
    """Matching pursuit of the centred inputs xc (B, d) on the atoms D (p, d), selecting through
    G = D D^T (p, p). ``want_codes=False`` returns ``codes=None`` (they are still built when
    ``stop_on_repeat`` needs them). ``stop_at_rounding``: the stop at rounding level
    (:func:`~.reference.rounding_floor`)."""
    B, p = xc.shape[0], D.shape[0]
    C = xc @ D.T  # (B, p), the only B x p product
    keep_codes = want_codes or stop_on_repeat
    codes = torch.zeros_like(C) if keep_codes else None
    indices = torch.full((B, k), -1, dtype=torch.long, device=xc.device)
    alphas = torch.zeros(B, k, dtype=xc.dtype, device=xc.device)
    steps = torch.zeros(B, dtype=torch.long, device=xc.device)
    r = xc.clone()  # the residual, updated as in the reference: O(B d) a step against the O(B p) of C
    floor = rounding_floor(xc) if stop_at_rounding else None
    adaptive = threshold is not None or stop_on_repeat or floor is not None
    # leave the loop once every row has stopped: always on the CPU; on an accelerator only in the
    # modes that stop rows often (threshold, stop_on_repeat), as the check waits for the device
    early_exit = threshold is not None or stop_on_repeat or (floor is not None and xc.device.type == "cpu")
    rows = max(1, min(B, BLOCK_BYTES // max(1, p * C.element_size())))
    Gb = torch.empty(rows, p, dtype=C.dtype, device=C.device)
    Db = torch.empty(rows, D.shape[1], dtype=C.dtype, device=C.device)
    absbuf = torch.empty(rows, p, dtype=C.dtype, device=C.device) if selection == "abs" else None
    vals = torch.empty(rows, dtype=C.dtype, device=C.device)
    idx = torch.empty(rows, dtype=torch.long, device=C.device)
    for s in range(0, B, rows):
        e = min(B, s + rows)
        n = e - s
        Cb, rb, zb = C[s:e], r[s:e], (codes[s:e] if keep_codes else None)
        Gn, Dn, vn, jn = Gb[:n], Db[:n], vals[:n], idx[:n]
        an = absbuf[:n] if absbuf is not None else None
        fb = floor[s:e] if floor is not None else None
        if adaptive:
            active = torch.ones(n, dtype=torch.bool, device=C.device)
        for t in range(k):
            if threshold is not None or fb is not None:
                _stop_rows(active, rb, threshold, fb)
            if early_exit and not bool(active.any()):
                break
            _, a = _select(Cb, vn, jn, an, selection)
            if adaptive:
                a = a * active
            torch.index_select(G, 0, jn, out=Gn)
            Cb.addcmul_(Gn, a[:, None], value=-1)
            torch.index_select(D, 0, jn, out=Dn)
            rb.addcmul_(Dn, a[:, None], value=-1)
            if stop_on_repeat:
                before = zb.gather(1, jn[:, None]).squeeze(1)
                zb.scatter_add_(1, jn[:, None], a[:, None])
                steps[s:e] += active
                active &= (before != 0) != (before + a != 0)  # the support changed
            else:
                if keep_codes:
                    zb.scatter_add_(1, jn[:, None], a[:, None])
                if adaptive:
                    steps[s:e] += active
            indices[s:e, t] = jn.masked_fill_(a == 0, -1)
            alphas[s:e, t] = a
        if not adaptive:
            steps[s:e] = k
    return MPResult(codes if want_codes else None, indices, alphas, steps, r)


def pursuit_direct(xc: Tensor, D: Tensor, k: int, threshold: float | None, selection: str, stop_on_repeat: bool,
                   stop_at_rounding: bool = True) -> MPResult:
    """Matching pursuit of xc (B, d) on D (p, d), recomputing the correlations r D^T every step.
    ``stop_at_rounding``: the stop at rounding level (:func:`~.reference.rounding_floor`)."""
    B, p = xc.shape[0], D.shape[0]
    r = xc.clone()
    C = torch.empty(B, p, dtype=xc.dtype, device=xc.device)
    codes = torch.zeros_like(C)
    indices = torch.full((B, k), -1, dtype=torch.long, device=xc.device)
    alphas = torch.zeros(B, k, dtype=xc.dtype, device=xc.device)
    steps = torch.zeros(B, dtype=torch.long, device=xc.device)
    absbuf = torch.empty_like(C) if selection == "abs" else None
    vals = torch.empty(B, dtype=xc.dtype, device=xc.device)
    idx = torch.empty(B, dtype=torch.long, device=xc.device)
    Db = torch.empty_like(xc)
    active = torch.ones(B, dtype=torch.bool, device=xc.device)
    floor = rounding_floor(xc) if stop_at_rounding else None
    adaptive = threshold is not None or stop_on_repeat or floor is not None
    early_exit = threshold is not None or stop_on_repeat or (floor is not None and xc.device.type == "cpu")  # as pursuit_gram
    for t in range(k):
        if threshold is not None or floor is not None:
            _stop_rows(active, r, threshold, floor)
        if early_exit and not bool(active.any()):
            break
        torch.mm(r, D.T, out=C)
        c, a = _select(C, vals, idx, absbuf, selection)
        if adaptive:
            a = a * active
        torch.index_select(D, 0, idx, out=Db)
        r.addcmul_(Db, a[:, None], value=-1)
        before = codes.gather(1, idx[:, None]).squeeze(1) if stop_on_repeat else None
        codes.scatter_add_(1, idx[:, None], a[:, None])
        steps += active
        if stop_on_repeat:
            active &= (before != 0) != (before + a != 0)
        indices[:, t] = idx.masked_fill_(a == 0, -1)
        alphas[:, t] = a
    return MPResult(codes, indices, alphas, steps, r)
