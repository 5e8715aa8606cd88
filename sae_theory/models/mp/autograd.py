"""The training gradient of MP-SAE.

The selection runs under ``no_grad`` (:mod:`.pursuit`); the coefficients are then recomputed
differentiably from the gathered atoms, a_t = relu(<r(t-1), D_j(t)>) (the SAELens trick,
docs/papers.md#mp-sae-implementations), and x_hat = x - r(k). :class:`UnrolledPursuit` gives that
recomputation a hand-written backward that walks the steps in reverse, so the graph holds
O(B d + B k), neither the O(k B d) of plain autograd (:func:`unrolled_autograd`, kept for the
tests) nor the O(k B p) of the naive loop. Gradients are those of the unrolled loop: every
selected atom, none for the others. Like the reference, neither assumes unit-norm atoms.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["UnrolledPursuit", "unrolled_autograd"]


class UnrolledPursuit(torch.autograd.Function):
    """The pursuit's coefficients and final residual as a function of (x - b_dec, D), for fixed
    selections, with the gradient of the unrolled loop:

        r(0) = x0;  a_t = act(<r(t-1), D_j(t)>) * taken_t;  r(t) = r(t-1) - a_t D_j(t)

    (act = relu or identity). Autograd through that loop stores r(t-1) and D_j(t) for every step,
    O(k B d). The backward here walks the steps in reverse and rebuilds r(t-1) = r(t) + a_t D_j(t)
    instead, so it stores only r(k) and the (B, k) coefficients. Rebuilding adds one rounding per
    step; :func:`unrolled_autograd` is the plain version the tests compare it with.

    ``UnrolledPursuit.apply(x0 (B, d), W (p, d), idx (B, k), taken (B, k) bool, relu) -> (r, A)``.
    ``taken`` marks the steps the pursuit took (``alphas != 0``): a row stopped by any rule
    (threshold, repeated support, rounding level) has no later step here either, so the training
    codes keep the support of the pursuit's.
    """

    @staticmethod
    def forward(ctx, x0: Tensor, W: Tensor, idx: Tensor, taken: Tensor, relu: bool):
        r = x0.detach().clone()
        A = torch.empty(idx.shape, dtype=x0.dtype, device=x0.device)
        mask = taken.to(x0.dtype)
        for t in range(idx.shape[1]):
            Dj = W.detach()[idx[:, t]]
            a = (r * Dj).sum(-1)
            if relu:
                a.clamp_(min=0)
            a.mul_(mask[:, t])
            r.addcmul_(Dj, a[:, None], value=-1)
            A[:, t] = a
        ctx.save_for_backward(r, W, idx, mask, A)
        ctx.relu = relu
        ctx.set_materialize_grads(False)
        return r.clone(), A.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_r: Tensor | None, g_A: Tensor | None):
        r, W, idx, mask, A = ctx.saved_tensors
        W = W.detach()
        g_r = torch.zeros_like(r) if g_r is None else g_r.clone()
        g_W = torch.zeros_like(W) if ctx.needs_input_grad[1] else None
        r = r.clone()
        for t in reversed(range(idx.shape[1])):
            Dj = W[idx[:, t]]
            a = A[:, t]
            r.addcmul_(Dj, a[:, None])  # r <- r(t-1)
            # d loss / d a_t: through r(t) = r(t-1) - a_t D_j, and directly (codes)
            g_a = -(g_r * Dj).sum(-1)
            if g_A is not None:
                g_a = g_a + g_A[:, t]
            # through a_t = act(<r(t-1), D_j>) * taken: relu' = 1[a_t > 0] (0 where the step was void)
            g_pre = g_a * ((a > 0).to(a.dtype) if ctx.relu else mask[:, t])
            if g_W is not None:
                g_W.index_add_(0, idx[:, t], g_pre[:, None] * r - a[:, None] * g_r)
            g_r.addcmul_(Dj, g_pre[:, None])
        return g_r, g_W, None, None, None


def unrolled_autograd(x0: Tensor, W: Tensor, idx: Tensor, taken: Tensor, relu: bool) -> tuple[Tensor, Tensor]:
    """Plain-autograd version of :class:`UnrolledPursuit` (O(k B d) memory), for tests."""
    r = x0
    alphas = []
    for t in range(idx.shape[1]):
        Dj = W[idx[:, t]]
        a = (r * Dj).sum(-1)
        if relu:
            a = torch.relu(a)
        a = a * taken[:, t]
        r = r - a[:, None] * Dj
        alphas.append(a)
    return r, torch.stack(alphas, 1)
