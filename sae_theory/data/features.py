"""Feature matrices V (n, d) for the statistical model X = H V: random Gaussian, or built to a
target mutual coherence. Rows are features and have unit norm."""

from __future__ import annotations

import math

import torch

from .._checks import check_int
from ..theory.conditions import cosine_extremes

__all__ = ["gaussian_features", "coherent_features", "welch_bound"]


def gaussian_features(n: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """i.i.d. Gaussian features normalised to unit rows (docs/papers.md#gba-model), float64 (n, d)
    on CPU."""
    n = check_int("n_features", n, minimum=1)
    d = check_int("d", d, minimum=1)
    V = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return V / V.norm(dim=1, keepdim=True)


def welch_bound(n: int, d: int) -> float:
    """Lowest mutual coherence any n unit vectors in R^d can have: sqrt((n - d) / (d (n - 1)))
    for n > d, else 0."""
    n = check_int("n_features", n, minimum=1)
    d = check_int("d", d, minimum=1)
    return math.sqrt((n - d) / (d * (n - 1))) if n > d else 0.0


def coherent_features(n: int, d: int, coherence: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """Unit features whose mutual coherence max_{i != j} |cos(v_i, v_j)| equals ``coherence``.

    Construction (exact, one pass over the Gram matrix in blocks): draw unit g_i in R^{d-1}
    (orthonormal when n <= d - 1, else Gaussian), then set v_i = (sqrt(1 - t) g_i, sqrt(t)).
    Then ||v_i|| = 1 and cos(v_i, v_j) = (1 - t) <g_i, g_j> + t, so with G+ and G- the largest
    and smallest off-diagonal <g_i, g_j>, the coherence is
    max((1 - t) G+ + t, |(1 - t) G- + t|), which is solved for t in closed form. Every pair then
    shares the common component t: the dictionary is coherent "towards one direction".

    Returns
    -------
    V : float64 (n, d) on CPU
    achieved : float
        The coherence of V from the formula above (equal to ``coherence`` up to rounding).

    Raises
    ------
    ValueError
        If ``coherence`` is outside [0, 1), d < 2, or below what the construction reaches for
        this (n, d) (roughly the coherence of random Gaussian features; the Welch bound is quoted).
    """
    n = check_int("n_features", n, minimum=1)
    d = check_int("d", d, minimum=2)
    mu = float(coherence)
    if not (math.isfinite(mu) and 0 <= mu < 1):
        raise ValueError(f"coherence must lie in [0, 1), got {coherence}.")
    if n <= d - 1:
        g = torch.linalg.qr(torch.randn(d - 1, n, generator=generator, dtype=torch.float64)).Q.T  # (n, d-1) orthonormal rows
        g_max = g_min = 0.0
    else:
        g = gaussian_features(n, d - 1, generator)
        g_max, g_min = cosine_extremes(g) if n > 1 else (0.0, 0.0)
    a = abs(min(g_min, 0.0))
    # t at which the two branches cross (the lowest coherence this construction reaches).
    t_cross = max(0.0, (a - g_max) / (2.0 + a - g_max))
    lowest = g_max + t_cross * (1.0 - g_max)
    if 1.0 - g_max < 1e-12:
        raise ValueError("two random features coincide; raise d.")
    t = (mu - g_max) / (1.0 - g_max)
    if n > 1 and t < t_cross - 1e-15:
        raise ValueError(
            f"coherence={mu} is below {lowest:.4f}, the lowest this construction reaches at n_features={n}, d={d} "
            f"(random Gaussian features have coherence about {max(g_max, a):.4f}; the Welch bound is "
            f"{welch_bound(n, d):.4f}). Raise the target coherence, raise d or lower n_features."
        )
    t = min(max(t, 0.0), 1.0) if n > 1 else mu
    V = torch.cat([math.sqrt(1 - t) * g, torch.full((n, 1), math.sqrt(t), dtype=torch.float64)], dim=1)
    achieved = max((1 - t) * g_max + t, abs((1 - t) * g_min + t)) if n > 1 else 0.0
    return V, achieved
