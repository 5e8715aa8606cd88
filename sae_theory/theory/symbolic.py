"""Sympy derivations that :mod:`sae_theory.theory.bounds` is checked against.

Import this module only where sympy is wanted (tests, notebooks); training code never does.

* :func:`band_in_frequency` — the resonance band after substituting f = s/n.
* :func:`critical_dimension` — solve "d-term = first term" for d.
* :func:`nonempty_band_condition` — when the second upper term exceeds the lower end 1/n.
* :func:`width_at_band_floor` — the width bound at p = 1/n.
* :func:`mp_step_identities` — Props C.1 and C.2 of MP-SAE derived from the update rule.
* :func:`mixing_cosine`, :func:`mixing_epsilon` — the MP-SAE toy's within-group correlation after
  epsilon-mixing orthonormal atoms, and epsilon solved for a target correlation.
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "SYMBOLS",
    "band_in_frequency",
    "band_in_n",
    "critical_dimension",
    "lambdify_band_in_frequency",
    "mixing_cosine",
    "mixing_epsilon",
    "mp_step_identities",
    "nonempty_band_condition",
    "width_at_band_floor",
    "width_bound",
]

n, d, s, f, p = sp.symbols("n d s f p", positive=True)
eps, varsigma = sp.symbols("epsilon varsigma", nonnegative=True)
SYMBOLS = dict(n=n, d=d, s=s, f=f, p=p, eps=eps, varsigma=varsigma)


def band_in_n() -> tuple[sp.Expr, tuple[sp.Expr, sp.Expr, sp.Expr]]:
    """(lower end, three upper terms) of the band as reported (docs/papers.md#gba-recovery-theorem),
    in n, d, s."""
    low = 1 / n
    upper = (n ** (-(1 + 1 / s) / 2), n ** (-2 * (1 + eps) ** 2 / s), d ** (1 - varsigma) / n)
    return low, upper


def band_in_frequency() -> tuple[sp.Expr, tuple[sp.Expr, sp.Expr, sp.Expr]]:
    """The band with n = s/f substituted and simplified: lower end f/s, and the three upper terms
    (f/s)^((1 + 1/s)/2), (f/s)^(2 (1 + eps)^2 / s), d^(1 - varsigma) f / s."""
    low, upper = band_in_n()
    sub = {n: s / f}
    return sp.simplify(low.subs(sub)), tuple(sp.powsimp(sp.simplify(u.subs(sub)), force=True) for u in upper)


def lambdify_band_in_frequency():
    """Float64 function (f, d, s, eps, varsigma) -> (low, high) from :func:`band_in_frequency`."""
    low, upper = band_in_frequency()
    low_fn = sp.lambdify((f, d, s, eps, varsigma), low, "math")
    up_fns = [sp.lambdify((f, d, s, eps, varsigma), u, "math") for u in upper]

    def band(f_, d_, s_, eps_=0.0, varsigma_=0.0):
        return low_fn(f_, d_, s_, eps_, varsigma_), min(u(f_, d_, s_, eps_, varsigma_) for u in up_fns)

    return band


def critical_dimension() -> sp.Expr:
    """Solve d^(1 - varsigma)/n = n^-(1 + 1/s)/2 for d: d* = n^((s - 1) / (2 s (1 - varsigma)))."""
    _, (first, _, third) = band_in_n()
    # Both sides are positive powers: compare logarithms, which is linear in log d.
    logd = sp.Symbol("logd", real=True)
    eq = sp.Eq(sp.expand_log(sp.log(third), force=True).subs(sp.log(d), logd), sp.expand_log(sp.log(first), force=True))
    (sol,) = sp.solve(eq, logd)
    return n ** sp.factor(sp.simplify(sol / sp.log(n)))


def nonempty_band_condition() -> sp.Expr:
    """The inequality on s under which n^-2(1+eps)^2/s > 1/n for n > 1: s > 2 (1 + eps)^2."""
    _, (_, second, _) = band_in_n()
    # For n > 1, n^a > n^b iff a > b.
    exponent = sp.expand_log(sp.log(second), force=True).coeff(sp.log(n))
    return sp.solve(sp.Gt(exponent, -1), s)


def width_bound() -> sp.Expr:
    """M >~ n p^(-s/(1-eps)^2), as reported."""
    return n * p ** (-s / (1 - eps) ** 2)


def width_at_band_floor() -> sp.Expr:
    """The width bound at p = 1/n: n^(1 + s/(1 - eps)^2)."""
    return sp.powsimp(sp.simplify(width_bound().subs(p, 1 / n)), force=True)


def mp_step_identities(dim: int = 4) -> dict[str, sp.Expr]:
    """Props C.1 and C.2 of MP-SAE (docs/papers.md#mp-sae-propositions) derived from one
    matching-pursuit step.

    With a residual r and an atom D_j of ``dim`` symbolic coordinates, alpha = <r, D_j> and
    r' = r - alpha D_j, expand (polynomial identities, hence valid for every value):

    * ``orthogonality``: <D_j, r'> - alpha (1 - ||D_j||^2), which simplifies to 0; so
      <D_j, r'> = alpha (1 - ||D_j||^2), zero exactly when ||D_j|| = 1 (C.1);
    * ``norm_drop``: ||r||^2 - ||r'||^2 - alpha^2 (2 - ||D_j||^2), which simplifies to 0; so the
      squared norm falls by alpha^2 (2 - ||D_j||^2), which is alpha^2 exactly when ||D_j|| = 1 (C.2);
    * ``orthogonality_unit`` and ``norm_drop_unit``: <D_j, r'> and ||r||^2 - ||r'||^2 - alpha^2 on
      the unit sphere (the last coordinate eliminated through ||D_j|| = 1), which simplify to 0.

    The expressions are bilinear in the coordinates, so the identities at any ``dim`` >= 1 are the
    same computation; ``dim`` only sets the size of the expansion. Returns the simplified
    expressions (each should be 0) and the closed forms ``inner_after`` and ``drop_after``.
    """
    r = sp.Matrix(sp.symbols(f"r0:{dim}", real=True))
    D = sp.Matrix(sp.symbols(f"D0:{dim}", real=True))
    alpha = (r.T * D)[0]
    r_new = r - alpha * D
    norm2 = (D.T * D)[0]
    inner_after = sp.expand((D.T * r_new)[0])
    drop_after = sp.expand((r.T * r)[0] - (r_new.T * r_new)[0])
    out = {
        "orthogonality": sp.simplify(inner_after - alpha * (1 - norm2)),
        "norm_drop": sp.simplify(drop_after - alpha**2 * (2 - norm2)),
        "inner_after": sp.factor(inner_after),
        "drop_after": sp.factor(drop_after),
    }
    # on the unit sphere: the last coordinate is sqrt(1 - sum of the other squares)
    last = D[dim - 1]
    on_sphere = {last: sp.sqrt(1 - sum(D[i] ** 2 for i in range(dim - 1)))}
    out["orthogonality_unit"] = sp.simplify(sp.expand(inner_after.subs(on_sphere)))
    out["norm_drop_unit"] = sp.simplify(sp.expand((drop_after - alpha**2).subs(on_sphere)))
    return out


def mixing_cosine(group_size: int | sp.Symbol | None = None) -> sp.Expr:
    """Cosine between two atoms of a group after epsilon-mixing
    (docs/papers.md#mp-sae-hierarchical-toy).

    Orthonormal q_1..q_m (m = ``group_size``) become q_i' = (1 - eps) q_i + eps/(m - 1) sum_{j != i} q_j.
    With a = 1 - eps and b = eps/(m - 1): <q_i', q_k'> = 2ab + (m - 2) b^2 and ||q_i'||^2 = a^2 + (m - 1) b^2,
    so cos = (2ab + (m - 2) b^2) / (a^2 + (m - 1) b^2) — derived here from the vectors, not assumed.
    """
    m = sp.Symbol("m", positive=True) if group_size is None else group_size
    e = sp.Symbol("epsilon", nonnegative=True)
    if isinstance(m, int):  # derive from explicit coordinates
        q = sp.eye(m)
        mixed = [(1 - e) * q[:, i] + e / (m - 1) * sum((q[:, j] for j in range(m) if j != i), sp.zeros(m, 1)) for i in range(2)]
        return sp.simplify((mixed[0].T * mixed[1])[0] / (mixed[0].T * mixed[0])[0])
    a, b = 1 - e, e / (m - 1)
    return sp.simplify((2 * a * b + (m - 2) * b**2) / (a**2 + (m - 1) * b**2))


def mixing_epsilon(group_size: int | sp.Symbol | None = None) -> sp.Expr:
    """epsilon as a function of the target correlation rho (symbol ``rho``): the root of
    ``mixing_cosine = rho`` with epsilon in [0, (m - 1)/m) (at (m - 1)/m all atoms coincide)."""
    m = sp.Symbol("m", positive=True) if group_size is None else group_size
    rho = sp.Symbol("rho", nonnegative=True)
    e = sp.Symbol("epsilon", nonnegative=True)
    a, b = 1 - e, e / (m - 1)
    roots = sp.solve(sp.Eq(rho * (a**2 + (m - 1) * b**2), 2 * a * b + (m - 2) * b**2), e)
    # the branch that is 0 at rho = 0 and increasing (the other starts at 2 (m - 1)/m or beyond)
    for root in roots:
        at0 = sp.simplify(root.subs(rho, 0))
        if at0 == 0:
            return sp.simplify(root)
    raise RuntimeError(f"no root of the mixing equation vanishes at rho = 0: {roots}")
