"""Tests of the recovery theorem's bounds (docs/papers.md#gba-recovery-theorem): float functions in ``bounds`` against
their sympy derivations in ``symbolic`` (two oracles), and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from _helpers import assert_close

from sae_theory.theory import bounds, symbolic

S = symbolic.SYMBOLS


def random_points(k: int, seed: int = 0):
    """k random (f, d, s, eps, varsigma) inside the theorem's domain: f in (1e-6, 0.5), d in
    [1, 4096], s in [1, 40], eps and varsigma in [0, 0.9)."""
    rng = np.random.default_rng(seed)
    f = 10 ** rng.uniform(-6, math.log10(0.5), k)
    d = 10 ** rng.uniform(0, math.log10(4096), k)
    s = rng.uniform(1, 40, k)
    s[: k // 4] = rng.integers(1, 20, k // 4)  # integer sparsities too
    eps = rng.uniform(0, 0.9, k)
    eps[: k // 5] = 0.0
    vs = rng.uniform(0, 0.9, k)
    return list(zip(f.tolist(), d.tolist(), s.tolist(), eps.tolist(), vs.tolist()))


def rel_close(a: float, b: float, rtol: float = 1e-12) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b))


# --------------------------------------------------------------------------------------------
# sympy vs bounds.py
# --------------------------------------------------------------------------------------------


def test_band_in_frequency__symbolic_equals_bounds_at_random_points():
    band = symbolic.lambdify_band_in_frequency()
    for f, d, s, eps, vs in random_points(300):
        low_sym, high_sym = band(f, d, s, eps, vs)
        low, high = bounds.band_in_frequency(f, d, s, eps, vs)
        low_n, high_n = bounds.resonance_band(s / f, d, s, eps, vs)
        assert rel_close(low_sym, low) and rel_close(high_sym, high), (f, d, s, eps, vs)
        assert rel_close(low_n, low) and rel_close(high_n, high), (f, d, s, eps, vs)


def test_band_in_frequency__symbolic_form_is_f_over_s():
    # After n = s/f: lower end f/s and third term d^(1-varsigma) f/s, exactly.
    low, (first, second, third) = symbolic.band_in_frequency()
    f, s, d, eps, vs = S["f"], S["s"], S["d"], S["eps"], S["varsigma"]
    assert sp.simplify(low - f / s) == 0
    assert sp.simplify(third - d ** (1 - vs) * f / s) == 0
    # The first two terms are (f/s)^((1+1/s)/2) and (f/s)^(2(1+eps)^2/s): check at a point.
    point = {f: sp.Rational(1, 1000), s: 3, d: 50, eps: sp.Rational(1, 10), vs: sp.Rational(1, 5)}
    assert_close(float(first.subs(point)), (1 / 3000) ** ((1 + 1 / 3) / 2))
    assert_close(float(second.subs(point)), (1 / 3000) ** (2 * 1.1**2 / 3))


def test_critical_dimension__symbolic_equals_bounds():
    expr = symbolic.critical_dimension()
    fn = sp.lambdify((S["n"], S["s"], S["varsigma"]), expr, "math")
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, s, vs = 10 ** rng.uniform(0.5, 7), rng.uniform(1, 30), rng.uniform(0, 0.9)
        assert rel_close(fn(n, s, vs), bounds.critical_dimension(n, s, vs))
        # At d = d* the third band term meets the first one.
        t1, _, t3 = bounds.band_upper_terms(n, bounds.critical_dimension(n, s, vs), s, 0.0, vs)
        assert rel_close(t1, t3, 1e-9)


def test_critical_dimension__hand_values():
    # n = 65536 = 2^16, s = 3: d* = n^((1 - 1/3)/2) = n^(1/3) = 2^(16/3) ~ 40.3.
    assert_close(bounds.critical_dimension(65536, 3), 2 ** (16 / 3))
    # s -> infinity: d* -> sqrt(n) = 256. At s = 1e9 it is 256 to ~1e-8 relative.
    assert abs(bounds.critical_dimension(65536, 1e9) / 256 - 1) < 1e-7


def test_nonempty_band_condition__equals_min_sparsity_for_band():
    # The sympy condition is s > 2 (1 + eps)^2; checked by truth value on both sides of the
    # boundary, so the test does not depend on how sympy orders the relation.
    cond = symbolic.nonempty_band_condition()
    s, eps = S["s"], S["eps"]
    for e in [0.0, 0.05, 0.1, 0.3, 0.5, 0.99]:
        b = bounds.min_sparsity_for_band(e)
        assert_close(b, 2 * (1 + e) ** 2)
        assert bool(cond.subs({eps: e, s: b * (1 + 1e-9)}))
        assert not bool(cond.subs({eps: e, s: b * (1 - 1e-9)}))
    # Exactly on the boundary (rational eps = 1/10: 2 * (11/10)^2 = 121/50) the strict inequality fails.
    assert not bool(cond.subs({eps: sp.Rational(1, 10), s: sp.Rational(121, 50)}))
    # eps = 0: s > 2, so s = 3 is the smallest integer sparsity with a band.
    assert bounds.min_sparsity_for_band() == 2.0
    assert bool(cond.subs({eps: 0, s: 3})) and not bool(cond.subs({eps: 0, s: 2}))


def test_width_at_band_floor__equals_width_lower_bound():
    expr = symbolic.width_at_band_floor()
    fn = sp.lambdify((S["n"], S["s"], S["eps"]), expr, "math")
    rng = np.random.default_rng(2)
    for _ in range(200):
        n, s, eps = 10 ** rng.uniform(0.5, 4), rng.uniform(0.5, 6), rng.uniform(0, 0.5)
        assert rel_close(fn(n, s, eps), bounds.width_lower_bound(n, 1 / n, s, eps))
    # Hand value: n = 1024, s = 3, eps = 0: n^(1 + 3) = 2^40.
    assert bounds.width_lower_bound(1024, 1 / 1024, 3) == 2.0**40
    assert_close(fn(1024, 3, 0.0), 2.0**40)


# --------------------------------------------------------------------------------------------
# hand values
# --------------------------------------------------------------------------------------------


def test_resonance_band__hand_values_at_gba_scale():
    # n = 65536 = 2^16, s = 3, eps = varsigma = 0:
    #   first  n^-(1 + 1/3)/2 = n^(-2/3) = 2^(-32/3) ~ 6.104e-4
    #   second n^(-2 * 1 / 3) = 2^(-32/3)            (equal to the first at s = 3, eps = 0)
    #   third  d / n = 128 / 2^16 = 2^-9 ~ 1.953e-3
    # low = 1/n = 2^-16 ~ 1.526e-5, high = 2^(-32/3).
    t1, t2, t3 = bounds.band_upper_terms(65536, 128, 3)
    assert_close(t1, 2 ** (-32 / 3))
    assert_close(t2, 2 ** (-32 / 3))
    assert_close(t3, 2.0**-9)
    low, high = bounds.resonance_band(65536, 128, 3)
    assert low == 2.0**-16
    assert_close(high, 2 ** (-32 / 3))
    # d = 32 < d* ~ 40.3: the d-term 32/2^16 = 2^-11 ~ 4.88e-4 is the top of the band.
    assert bounds.resonance_band(65536, 32, 3)[1] == 2.0**-11
    # The GBA heatmap's f = 3/65536 ~ 4.6e-5 lies in the band; the band in f agrees.
    assert_close(bounds.band_in_frequency(3 / 65536, 128, 3)[1], 2 ** (-32 / 3))


def test_resonance_band__empty_for_s2_nonempty_for_s3():
    # s = 2, eps = 0: second term n^(-2/2) = 1/n = low, so high <= low (empty) for every n, d.
    for n in [16, 1024, 65536, 1e9]:
        low, high = bounds.resonance_band(n, 1e6, 2)
        assert high <= low
        # s = 3 with d large: high = n^(-2/3) > 1/n.
        low3, high3 = bounds.resonance_band(n, 1e6, 3)
        assert high3 > low3
    # eps > 0 lifts the needed sparsity: s = 3 at eps = 0.3 needs s > 2 * 1.69 = 3.38, empty.
    low, high = bounds.resonance_band(65536, 1e6, 3, eps=0.3)
    assert high <= low


def test_in_resonance_band__inside_and_outside():
    # Band at n = 65536, d = 128, s = 3: (1.526e-5, 6.104e-4).
    assert bounds.in_resonance_band(1e-4, 65536, 128, 3)
    assert not bounds.in_resonance_band(1e-5, 65536, 128, 3)
    assert not bounds.in_resonance_band(1e-3, 65536, 128, 3)
    assert not bounds.in_resonance_band(2.0**-16, 65536, 128, 3)  # strict at the lower end
    assert not bounds.in_resonance_band(1e-4, 65536, 1e6, 2)  # empty band


def test_simplified_band_in_frequency__hand_values_and_looser():
    # f = 1e-4, d = 50: (f, min(sqrt(f), f d)) = (1e-4, min(1e-2, 5e-3)) = (1e-4, 5e-3).
    low, high = bounds.simplified_band_in_frequency(1e-4, 50)
    assert low == 1e-4
    assert_close(high, 5e-3)
    # Looser than the theorem's form at the same f (s = 3): its top is higher.
    assert high > bounds.band_in_frequency(1e-4, 50, 3)[1]


def test_success_probability__hand_value():
    # 1 - 65536^(-4 * 0.25) = 1 - 1/65536.
    assert_close(bounds.success_probability(65536, 0.25), 1 - 2.0**-16)
    assert bounds.success_probability(65536, 0.0) == 0.0


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bounds.resonance_band(1, 10, 3), "n must be > 1"),
        (lambda: bounds.resonance_band(0.5, 10, 3), "n must be > 1"),
        (lambda: bounds.resonance_band(100, 0.5, 3), "d must be >= 1"),
        (lambda: bounds.resonance_band(100, 10, 0), "s must be > 0"),
        (lambda: bounds.resonance_band(100, 10, 3, eps=1.0), "eps"),
        (lambda: bounds.resonance_band(100, 10, 3, eps=-0.1), "eps"),
        (lambda: bounds.resonance_band(100, 10, 3, varsigma=1.0), "varsigma"),
        (lambda: bounds.resonance_band(float("nan"), 10, 3), "n must be > 1"),
        (lambda: bounds.width_lower_bound(100, 0.0, 3), "p must lie in"),
        (lambda: bounds.width_lower_bound(100, 1.5, 3), "p must lie in"),
        (lambda: bounds.width_lower_bound(100, float("nan"), 3), "p must lie in"),
        (lambda: bounds.width_lower_bound(1, 0.5, 3), "n must be > 1"),
        (lambda: bounds.width_lower_bound(100, 0.5, 3, eps=1.0), "eps"),
        (lambda: bounds.band_in_frequency(0.0, 10, 3), "f must lie in"),
        (lambda: bounds.band_in_frequency(1.0, 10, 3), "f must lie in"),
        (lambda: bounds.simplified_band_in_frequency(1.5, 10), "f must lie in"),
        (lambda: bounds.critical_dimension(1, 3), "n must be > 1"),
        (lambda: bounds.success_probability(100, 1.0), "eps"),
        (lambda: bounds.min_sparsity_for_band(1.0), "eps"),
        (lambda: bounds.in_resonance_band(1e-3, 1, 10, 3), "n must be > 1"),
    ],
)
def test_bounds__bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
