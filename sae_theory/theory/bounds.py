"""The recovery theorem's conditions (GBA Theorem 6.1 of the ICLR version) as plain float
functions.

Source and certainty (docs/papers.md#gba-recovery-theorem). The theorem is REPORTED by a secondary
paper note; the exponents were not checked against the PDF, and that note itself warns to check
them. As reported:

* width        M >~ n * p^(-s / (1 - eps)^2)
* target band  n^-1 <~ p <~ min{ n^-(1 + 1/s)/2 , n^-2(1 + eps)^2/s , d^(1 - varsigma) / n }
* probability  >= 1 - n^(-4 eps), after T = 1/varsigma iterations (a constant)

Every ``>~`` / ``<~`` hides constants that are not known, so these functions return the bare
expressions (constant 1). ``eps`` and ``varsigma`` are the theorem's small positive constants;
both default to 0, the limit in which the statements are cleanest. A second summary prints the
width with +s instead of -s and the last band term as d^((1 - varsigma)/n): we follow the first
reading, under which the width grows as p shrinks, as a width bound must.

Substituting f = s/n (balanced s-sparse features), the band reads f/s <~ p <~ min{(f/s)^((1+1/s)/2),
(f/s)^(2(1+eps)^2/s), d^(1-varsigma) f/s} (derived in :mod:`sae_theory.theory.symbolic`). The
paper note's simplified form f <~ p <~ min{sqrt(f), f d} is :func:`simplified_band_in_frequency`;
it drops factors that are powers of n, not constants, so it is looser than the theorem's form.
"""

from __future__ import annotations

import math

from .._checks import check_number

__all__ = [
    "band_in_frequency",
    "band_upper_terms",
    "critical_dimension",
    "in_resonance_band",
    "min_sparsity_for_band",
    "resonance_band",
    "simplified_band_in_frequency",
    "success_probability",
    "width_lower_bound",
]


def _check(n: float, d: float | None = None, s: float | None = None, eps: float = 0.0, varsigma: float = 0.0) -> None:
    """Raise naming the first bad argument: every one must be a finite real number in its range
    (an infinite n, d or s would turn a bound into 0 or inf without saying so)."""
    n = check_number("n", n)
    if not (n > 1 and math.isfinite(n)):
        raise ValueError(f"n must be > 1 and finite, got {n}.")
    if d is not None and not (check_number("d", d) >= 1 and math.isfinite(d)):
        raise ValueError(f"d must be >= 1 and finite, got {d}.")
    if s is not None and not (check_number("s", s) > 0 and math.isfinite(s)):
        raise ValueError(f"s must be > 0 and finite, got {s}.")
    if not 0 <= check_number("eps", eps) < 1:
        raise ValueError(f"eps must lie in [0, 1), got {eps}.")
    if not 0 <= check_number("varsigma", varsigma) < 1:
        raise ValueError(f"varsigma must lie in [0, 1), got {varsigma}.")


def band_upper_terms(n: float, d: float, s: float, eps: float = 0.0, varsigma: float = 0.0) -> tuple[float, float, float]:
    """The three upper limits of the band: n^-(1+1/s)/2, n^-2(1+eps)^2/s, d^(1-varsigma)/n.

    Certainty: all three exponents REPORTED, unverified (docs/papers.md#gba-recovery-theorem).
    """
    _check(n, d, s, eps, varsigma)
    return (
        n ** (-(1 + 1 / s) / 2),
        n ** (-2 * (1 + eps) ** 2 / s),
        d ** (1 - varsigma) / n,
    )


def resonance_band(n: float, d: float, s: float, eps: float = 0.0, varsigma: float = 0.0) -> tuple[float, float]:
    """(low, high) of the target-frequency band: low = 1/n, high = min of :func:`band_upper_terms`.

    The band is empty when high <= low. Certainty: the lower end 1/n ~ f is consistent across
    sources; the upper exponents are REPORTED, unverified.
    """
    high = min(band_upper_terms(n, d, s, eps, varsigma))  # checks the arguments first
    return 1.0 / n, high


def in_resonance_band(p: float, n: float, d: float, s: float, eps: float = 0.0, varsigma: float = 0.0) -> bool:
    """Whether target frequency p lies strictly inside :func:`resonance_band` (constants 1).
    A NaN or infinite p raises (it is in no band, but it is no frequency either)."""
    if not math.isfinite(check_number("p", p)):
        raise ValueError(f"p must be a finite number (a target frequency), got {p}.")
    low, high = resonance_band(n, d, s, eps, varsigma)
    return low < p < high


def width_lower_bound(n: float, p: float, s: float, eps: float = 0.0) -> float:
    """Width the theorem asks for: n * p^(-s/(1-eps)^2).

    Certainty: REPORTED; the sign of the exponent differs between two summaries (we take -s).
    At p ~ 1/n this is ~ n^(1+s): far above the M = 4n the authors' own synthetic run used, so
    either the bound is loose or the reported form is off.
    """
    _check(n, s=s, eps=eps)
    if not 0 < check_number("p", p) <= 1:
        raise ValueError(f"target frequency p must lie in (0, 1], got {p}.")
    return n * p ** (-s / (1 - eps) ** 2)


def success_probability(n: float, eps: float) -> float:
    """1 - n^(-4 eps), the theorem's success probability. Certainty: REPORTED."""
    _check(n, eps=eps)
    return 1.0 - n ** (-4 * eps)


def critical_dimension(n: float, s: float, varsigma: float = 0.0) -> float:
    """The d at which the d-term of the band meets the first term: d* = n^((1 - 1/s) / (2 (1 - varsigma))).

    Below d* the band's top is d^(1-varsigma)/n, which shrinks with d: the "narrowing at
    d < sqrt(n)" of the paper; d* -> sqrt(n) as s grows. Derived in
    :func:`sae_theory.theory.symbolic.critical_dimension`. Certainty: follows from REPORTED exponents.
    """
    _check(n, s=s, varsigma=varsigma)
    return n ** ((1 - 1 / s) / (2 * (1 - varsigma)))


def min_sparsity_for_band(eps: float = 0.0) -> float:
    """The band is non-empty for large n only if s > 2 (1 + eps)^2 (the second upper term must
    beat 1/n); with eps = 0, s >= 3. Certainty: follows from REPORTED exponents."""
    _check(2.0, eps=eps)
    return 2 * (1 + eps) ** 2


def band_in_frequency(f: float, d: float, s: float, eps: float = 0.0, varsigma: float = 0.0) -> tuple[float, float]:
    """:func:`resonance_band` written in the feature frequency f = s/n (i.e. n = s/f)."""
    if not 0 < check_number("f", f) < 1:
        raise ValueError(f"feature frequency f must lie in (0, 1), got {f}.")
    return resonance_band(s / f, d, s, eps, varsigma)


def simplified_band_in_frequency(f: float, d: float) -> tuple[float, float]:
    """The paper note's simplified reading f <~ p <~ min{sqrt(f), f d}
    (docs/papers.md#gba-recovery-theorem). Looser than :func:`band_in_frequency`: it drops the
    factor f^(1/(2s)) s^-(1+1/s)/2 from the first term, which is a power of n, not a constant."""
    if not 0 < check_number("f", f) < 1:
        raise ValueError(f"feature frequency f must lie in (0, 1), got {f}.")
    if not (check_number("d", d) >= 1 and math.isfinite(d)):
        raise ValueError(f"d must be >= 1 and finite, got {d}.")
    return f, min(math.sqrt(f), f * d)
