"""MP-SAE (Costa et al. 2025, docs/papers.md#mp-sae-algorithm): a tied SAE whose encoder is unrolled
matching pursuit.

One dictionary D (p atoms of dimension d, rows of ``W_dec``) selects, scores, updates the
residual and decodes:

    r(0) = x - b_dec ;  z = 0
    for t = 1..k:
        c(t) = D r(t-1)                     correlations, (p,)
        j(t) = argmax_j relu(c(t))_j        selection ("relu", the authors' code); "abs": argmax |c|
        a_t  = relu(c(t)_j(t))              coefficient ("abs": the signed c(t)_j(t))
        z_j(t) += a_t                       an atom may be selected again: its code accumulates
        r(t) = r(t-1) - a_t D_j(t)
    x_hat = z D + b_dec

The coefficient is the plain correlation <r(t-1), D_j>, not <r(t-1), D_j> / ||D_j||^2: with
unit-norm atoms the two agree, and the propositions of docs/papers.md#mp-sae-propositions (Props
C.1-C.3: the residual is orthogonal to the last selected atom, ||r||^2 falls by exactly a_t^2, the
reconstruction converges) hold. With atoms that are not unit norm every implementation here still
runs the same loop, and the propositions fail (the tests show by how much).

Stopping (per input): after ``k`` steps; with ``threshold`` set, as soon as ||r|| < threshold
(checked before every step, so ``k`` is then a cap); with ``stop_on_repeat``, after the first step
that leaves the support {j : z_j != 0} unchanged (the official toy code's rule: that step is
applied, then the input stops).

The modules, one idea each:

* :mod:`.reference`: :func:`matching_pursuit_reference`, a per-input loop that mirrors the lines
  above (float64 tests, the theory notebook), and :class:`MPResult`, what every pursuit returns.
* :mod:`.pursuit`: the batched fast paths, through the Gram matrix or direct, in cache-sized
  blocks of rows (:func:`~.pursuit.pursuit_gram`, :func:`~.pursuit.pursuit_direct`).
* :mod:`.autograd`: the training gradient, :class:`~.autograd.UnrolledPursuit` (hand-written
  backward) and :func:`~.autograd.unrolled_autograd` (plain autograd, for the tests).
* :mod:`.model`: :class:`MPSAEConfig` and :class:`MPSAE`, which chooses the path and trains.
"""

from .autograd import UnrolledPursuit, unrolled_autograd
from .model import GRAM_MODES, MPSAE, MPSAEConfig
from .reference import SELECTIONS, MPResult, matching_pursuit_reference

__all__ = [
    "GRAM_MODES",
    "MPResult",
    "MPSAE",
    "MPSAEConfig",
    "SELECTIONS",
    "UnrolledPursuit",
    "matching_pursuit_reference",
    "unrolled_autograd",
]
