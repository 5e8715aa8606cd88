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
applied, then the input stops); and, unless ``stop_at_rounding=False``, as soon as the residual is
rounding:

    stop before step t  when  ||r(t-1)|| <= eps_rel ||x - b_dec||,  eps_rel = 32 eps(dtype)

(:func:`~.reference.rounding_tolerance`, :data:`~.reference.ROUNDING_MULTIPLE`: 7.1e-15 in float64,
3.8e-6 in float32). Why: once x is represented exactly (x an atom, or a sparse combination of
orthonormal atoms) the plain loop does not stop, it decomposes the rounding left by its first
steps; measured before this rule (float64, 64 random unit atoms in d = 16, k = 8, x = each atom):
6 to 8 atoms per input in the reference and 4 to 8 in the fast paths instead of 1, the later
coefficients at most 5e-16 ||x||, different atoms in the reference, the Gram path, the direct path
and training; x = 2 or 3 orthonormal atoms gave L0 = 5 to 8. The residual of an exact
representation was measured at 2 to 12.5 eps ||x|| (d = 16..16384, 1 to 32 steps, float32 and
float64), hence the multiple 32. Every code the rule removes is at most eps_rel ||x - b_dec|| in
size (|a_t| <= ||r(t-1)|| ||D_j||, and the atoms are unit norm), so it changes nothing above rounding level: on inputs
whose residual never gets that small the codes are bit for bit those of the plain loop (tested).
A zero input (x = b_dec) takes no step and gets all-zero codes; a NaN or Inf input is not
stopped (its codes stay NaN, as before). In half precision 32 eps is coarse (3 % of ||x|| in
float16, 25 % in bfloat16): switch the rule off there.

All three rules freeze a row the same way in every implementation (the reference, both fast paths
and so training): its later coefficients are 0 and its later indices -1, and ``steps`` counts the
steps it took. Training recomputes only the steps the pursuit took, so ``training_forward`` has the
codes of ``encode`` (zeros included).

How this relates to the authors' code (docs/papers.md#mp-sae-implementations): the official toy
code stops at ||r|| < 0.05 (absolute) or an unchanged support, SAELens at ||r|| <
``residual_threshold`` (1e-2 by default) or a repeated support, and ``overcomplete`` runs fixed k
steps with no stop. None has a stop relative to ||x|| at rounding level: with their absolute
thresholds on, inputs stop far earlier than at rounding level (ours comes first only when
||x - b_dec|| > threshold / eps_rel: 1.3e4 for 0.05 in float32, 7e12 in float64); with fixed k
(``overcomplete``, and SAELens with its threshold at 0 and the repeat rule off) they add the
rounding-level atoms the plain loop adds. Ours differs from those by codes below eps_rel ||x||
only; ``stop_at_rounding=False`` runs the plain loop.

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
