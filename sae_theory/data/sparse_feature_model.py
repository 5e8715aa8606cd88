"""The statistical feature model of the GBA paper (docs/papers.md#gba-model): X = H V, H sparse and
non-negative.

>>> from sae_theory.data import SparseFeatureModel
>>> model = SparseFeatureModel(n_features=1024, d=64, sparsity=3, seed=0)
>>> X, H = model.sample(10_000)         # X (10000, 64), H (10000, 1024) dense
>>> for X, H in model.stream(5_000_000, chunk_size=65_536):   # H sparse COO chunks
...     ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .._checks import check_finite, check_int, check_probability
from .features import coherent_features, gaussian_features
from .laws import (
    Balanced,
    Bernoulli,
    CoefficientLaw,
    MixedSparsity,
    SupportSpec,
    as_coefficient_law,
    as_support_law,
)

__all__ = ["SparseFeatureModel"]

#: ``sample(..., h_layout="dense")`` refuses to build a dense H larger than this many entries.
MAX_DENSE_H_ENTRIES = 1 << 28


def _seeds(seed: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (features, samples) from one user seed."""
    a, b = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(a) >> 1, int(b) >> 1


def _check_layout(h_layout: str) -> None:
    if h_layout not in ("sparse", "dense"):
        raise ValueError(f"h_layout must be 'sparse' or 'dense', got {h_layout!r}.")


@dataclass(frozen=True)
class _Planted:
    pairs: tuple[tuple[int, int], ...]
    probability: float


class SparseFeatureModel:
    """Data X = H V with features V (n, d) and sparse non-negative coefficients H (N, n).

    Parameters
    ----------
    n_features : int
        Number of features n >= 1.
    d : int
        Ambient dimension d >= 1.
    sparsity : int or SupportLaw, optional
        Which features fire in a row. An int ``s`` means :class:`~sae_theory.data.laws.Balanced`:
        exactly s active on a uniformly random support, so every feature has f = s/n. Laws:
        :class:`MixedSparsity` (random row sparsity, e.g. the GBA imbalanced toy),
        :class:`Bernoulli`, :class:`Zipf`. Give this or ``frequencies``.
    frequencies : sequence of float, optional
        Per-feature frequencies in (0, 1]; features then fire independently (Bernoulli).
    coefficients : CoefficientLaw, float or str, optional
        Law of the value of an active entry: ``Constant(1.0)`` (default), ``Uniform(a, b)``
        with a > 0, ``LogNormal(mu, sigma)``. A law whose draws can overflow ``dtype`` to inf
        (e.g. ``LogNormal(80, 1)`` in float32) is refused here (ValueError naming it).
    features : tensor (n, d), optional
        Use these features instead of random ones (kept as given, in the model's dtype).
    coherence : float, optional
        Build unit features with exactly this mutual coherence (see
        :func:`~sae_theory.data.features.coherent_features`). Default: Gaussian unit rows.
    planted_pairs : int or sequence of (i, j), optional
        Pairs of features that fire together: in every row where either feature of a pair is
        active, with probability ``planted_probability`` both are made active (the missing one
        gets a fresh coefficient). An int k plants k random disjoint pairs. Pairs must be
        disjoint. This breaks H3 on purpose; it also adds one active feature to those rows.
    planted_probability : float
        Probability in [0, 1] that a planted pair fires together (1 = always together).
    seed : int
        Seeds the features, the planted pairs and the default sample stream.
    dtype, device
        Of V and of every sample.
    chunk_size : int
        Rows generated at a time by :meth:`sample` and :meth:`stream`.

    Notes
    -----
    Nothing of size n x n is built. A chunk costs O(chunk * E|supp|) for the support and
    O(nnz * d) for X = H V (a sparse-dense product), so n = 65,536 streams on a CPU.
    """

    def __init__(
        self,
        n_features: int,
        d: int,
        sparsity: SupportSpec | None = None,
        *,
        frequencies: Sequence[float] | torch.Tensor | None = None,
        coefficients: CoefficientLaw | float | str | None = None,
        features: torch.Tensor | None = None,
        coherence: float | None = None,
        planted_pairs: int | Sequence[tuple[int, int]] | None = None,
        planted_probability: float = 1.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        chunk_size: int = 8192,
    ):
        self.n = check_int("n_features", n_features, minimum=1)
        self.d = check_int("d", d, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.chunk_size = check_int("chunk_size", chunk_size, minimum=1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}.")
        self.dtype, self.device = dtype, torch.device(device)
        self.support = as_support_law(sparsity, frequencies)
        self.support.validate(self.n)
        self.coefficients = as_coefficient_law(coefficients)
        self.coefficients.check_dtype(self.dtype, name=f"coefficients={self.coefficients!r}")  # no inf in H or X
        feature_seed, self._sample_seed = _seeds(self.seed)
        gen = torch.Generator().manual_seed(feature_seed)

        if features is not None and coherence is not None:
            raise ValueError("give features= or coherence=, not both.")
        self.achieved_coherence: float | None = None
        if features is not None:
            if not isinstance(features, torch.Tensor):
                features = torch.as_tensor(features)
            if features.shape != (self.n, self.d):
                raise ValueError(f"features must have shape (n_features, d) = {(self.n, self.d)}, got {tuple(features.shape)}.")
            check_finite("features", features)
            if bool((features.norm(dim=1) == 0).any()):
                raise ValueError("features has a zero row; every feature needs a non-zero direction.")
            V = features.detach().to(torch.float64).cpu()
            self._feature_kind = "supplied"
        elif coherence is not None:
            V, self.achieved_coherence = coherent_features(self.n, self.d, coherence, gen)
            self._feature_kind = f"coherence={float(coherence)}"
        else:
            V = gaussian_features(self.n, self.d, gen)
            self._feature_kind = "gaussian"
        self._V = V.to(dtype=self.dtype, device=self.device)

        self.planted = self._make_planted(planted_pairs, planted_probability, gen)
        self._generator = self._new_generator()

    # ----------------------------------------------------------------------------------------
    @classmethod
    def imbalanced_toy(cls, seed: int = 0, **kwargs: Any) -> "SparseFeatureModel":
        """The GBA imbalanced-sparsity toy (docs/papers.md#gba-imbalanced-toy): n = 128, d = 42,
        half the rows s = 3, half s = 20, so every feature has f = 11.5/128 ~ 0.09."""
        kwargs.setdefault("n_features", 128)
        kwargs.setdefault("d", 42)
        return cls(sparsity=MixedSparsity((3, 20), (0.5, 0.5)), seed=seed, **kwargs)

    def _make_planted(self, pairs, probability, gen) -> _Planted | None:
        q = check_probability("planted_probability", probability, allow_zero=True)  # also when no pairs: never ignore a bad value
        if pairs is None:
            return None
        if isinstance(pairs, (int, np.integer)) and not isinstance(pairs, bool):
            k = check_int("planted_pairs", pairs, minimum=0, maximum=self.n // 2)
            perm = torch.randperm(self.n, generator=gen)[: 2 * k].reshape(k, 2).tolist()
            pairs = [tuple(p) for p in perm]
        pairs = tuple((int(i), int(j)) for i, j in pairs)
        seen: set[int] = set()
        for i, j in pairs:
            for x in (i, j):
                if not 0 <= x < self.n:
                    raise ValueError(f"planted_pairs index {x} is outside [0, n_features={self.n}).")
            if i == j:
                raise ValueError(f"planted_pairs has ({i}, {j}); a pair needs two different features.")
            if i in seen or j in seen:
                raise ValueError(f"planted_pairs must be disjoint; feature {i if i in seen else j} appears twice.")
            seen.update((i, j))
        return _Planted(pairs, q) if pairs else None

    def _new_generator(self, device: torch.device | None = None) -> torch.Generator:
        return torch.Generator(device=device or self.device).manual_seed(self._sample_seed)

    def reset(self) -> None:
        """Restart the default sample stream from the model's seed."""
        self._generator = self._new_generator()

    # ----------------------------------------------------------------------------------------
    @property
    def features(self) -> torch.Tensor:
        """V (n, d): row i is feature v_i."""
        return self._V

    @property
    def frequencies(self) -> torch.Tensor:
        """Population frequency f_i = P(H_li > 0) of every feature, float64 (n,), planting included."""
        f = self.support.frequencies(self.n).clone()
        if self.planted is not None:
            q = self.planted.probability
            for i, j in self.planted.pairs:
                either = float(f[i] + f[j]) - self.support.pair_probability(self.n, i, j)
                # A member is active if it was, or (with prob. q) if its partner was.
                f[i], f[j] = q * either + (1 - q) * f[i], q * either + (1 - q) * f[j]
        return f

    @property
    def expected_support(self) -> float:
        """Expected number of active features per row, E|supp(h)| = sum_i f_i."""
        return float(self.frequencies.sum())

    def population_cooccurrence(self) -> float:
        """max_{i != j} P(i and j) / P(i or j) under the model: the population value of H3.

        Exact for the base law, for every planted pair (q + (1 - q) r_ij) and for a planted
        feature against an unplanted one. Two features from two different planted pairs are
        treated like a planted feature against an unplanted one (the difference is second order
        in q s / n).
        """
        if self.n < 2:
            return 0.0
        law, f, n = self.support, self.frequencies, self.n
        q = 0.0 if self.planted is None else self.planted.probability
        planted = [] if self.planted is None else [x for p in self.planted.pairs for x in p]
        partner = {} if self.planted is None else {a: b for p in self.planted.pairs for a, b in (p, p[::-1])}

        def ratio(both: float, fi: float, fj: float) -> float:
            either = fi + fj - both
            return both / either if either > 0 else 0.0

        best = 0.0
        if isinstance(law, (Balanced, MixedSparsity)):
            f0, pb = float(law.frequencies(n)[0]), law.pair_probability(n, 0, 1)
            if n - len(planted) >= 2:
                best = ratio(pb, f0, f0)
            if planted and n - len(planted) >= 1:
                # i' = i or (coin and j): P(i' and k) = P(i,k) + q P(j, k, not i)
                both = pb + q * (pb - law.triple_probability(n))
                best = max(best, ratio(both, float(f[planted[0]]), f0))
        else:  # independent features: the ratio grows with both frequencies, so the top 3 suffice
            top = torch.argsort(f, descending=True)[:3].tolist()
            for a, i in enumerate(top):
                for j in top[a + 1 :]:
                    if partner.get(i) != j:
                        best = max(best, ratio(float(f[i] * f[j]), float(f[i]), float(f[j])))
        if self.planted is not None:
            base = law.frequencies(n)
            for i, j in self.planted.pairs:
                pb = law.pair_probability(n, i, j)
                either = float(base[i] + base[j]) - pb
                best = max(best, (q * either + (1 - q) * pb) / either)
        return best

    def describe(self) -> dict[str, Any]:
        """JSON-ready description of the model, for figure sidecars and checkpoints."""

        def law(x):
            return {"law": type(x).__name__, **(asdict(x) if is_dataclass(x) else {})}

        support = law(self.support)
        if isinstance(self.support, Bernoulli):
            support = {"law": "Bernoulli", "min_frequency": min(self.support.probabilities), "max_frequency": max(self.support.probabilities)}
        return dict(
            n_features=self.n,
            d=self.d,
            support=support,
            coefficients=law(self.coefficients),
            features=self._feature_kind,
            achieved_coherence=self.achieved_coherence,
            planted=None if self.planted is None else asdict(self.planted),
            seed=self.seed,
            dtype=str(self.dtype),
            device=str(self.device),
        )

    def __repr__(self) -> str:
        return f"SparseFeatureModel(n_features={self.n}, d={self.d}, support={self.support!r}, features={self._feature_kind!r}, seed={self.seed})"

    # ----------------------------------------------------------------------------------------
    def _check_generator(self, generator: torch.Generator | None) -> torch.Generator:
        if generator is None:
            return self._generator
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
        if torch.device(generator.device).type != self.device.type:
            raise ValueError(f"generator lives on {generator.device} but the model samples on {self.device}; create it with torch.Generator(device={str(self.device)!r}).")
        return generator

    def _chunk_triplets(self, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, cols = self.support.sample_support(m, self.n, gen, self.device)
        if self.planted is not None and self.planted.probability > 0 and rows.numel():
            rows, cols = self._plant(rows, cols, m, gen)
        vals = self.coefficients.sample(rows.numel(), gen, self.dtype, self.device)
        return rows, cols, vals

    def _plant(self, rows, cols, m, gen):
        pairs = torch.tensor(self.planted.pairs, dtype=torch.long, device=self.device)  # (P, 2)
        P = pairs.shape[0]
        pair_of = torch.full((self.n,), -1, dtype=torch.long, device=self.device)
        member = torch.zeros(self.n, dtype=torch.long, device=self.device)
        pair_of[pairs[:, 0]], pair_of[pairs[:, 1]] = torch.arange(P, device=self.device), torch.arange(P, device=self.device)
        member[pairs[:, 1]] = 1
        hit = pair_of[cols] >= 0
        key = rows[hit] * P + pair_of[cols[hit]]
        bits = torch.zeros(m * P, dtype=torch.long, device=self.device)
        bits.index_add_(0, key, 1 << member[cols[hit]])  # bit 0: first member present, bit 1: second
        keys = (bits > 0).nonzero().squeeze(1)
        present = bits[keys]
        u = torch.rand(keys.numel(), generator=gen, device=self.device, dtype=torch.float64)
        add = (present != 3) & (u < self.planted.probability)
        keys, present = keys[add], present[add]
        new_rows = keys // P
        new_cols = pairs[keys % P, (present == 1).long()]  # first present -> add the second
        return torch.cat([rows, new_rows]), torch.cat([cols, new_cols])

    def _chunk(self, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols, vals = self._chunk_triplets(m, gen)
        H = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (m, self.n), check_invariants=False).coalesce()
        X = torch.sparse.mm(H, self._V) if vals.numel() else self._V.new_zeros(m, self.d)
        return X, H

    def stream(
        self, n_samples: int, *, chunk_size: int | None = None, generator: torch.Generator | None = None, h_layout: str = "sparse"
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(X, H)`` chunks of at most ``chunk_size`` rows, ``n_samples`` rows in all.

        X is dense (chunk, d); H is a coalesced sparse COO (chunk, n) tensor by default
        (``h_layout="dense"`` for dense chunks). Uses the model's own stream unless a
        ``generator`` on the model's device is given.
        """
        N = check_int("n_samples", n_samples, minimum=0)
        C = check_int("chunk_size", chunk_size if chunk_size is not None else self.chunk_size, minimum=1)
        _check_layout(h_layout)
        gen = self._check_generator(generator)
        for start in range(0, N, C):
            X, H = self._chunk(min(C, N - start), gen)
            yield X, (H.to_dense() if h_layout == "dense" else H)

    def sample(
        self, n_samples: int, generator: torch.Generator | None = None, *, h_layout: str = "dense"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n_samples`` rows: X (N, d) dense and H (N, n), dense or sparse COO.

        Successive calls continue the model's own stream (deterministic per seed, see
        :meth:`reset`); pass a ``torch.Generator`` on the model's device to draw elsewhere.

        Raises
        ------
        ValueError
            If a dense H would exceed 2^28 entries: use ``h_layout="sparse"`` or :meth:`stream`.
        """
        N = check_int("n_samples", n_samples, minimum=0)
        _check_layout(h_layout)
        if h_layout == "dense" and N * self.n > MAX_DENSE_H_ENTRIES:
            raise ValueError(
                f"a dense H of shape ({N}, {self.n}) has more than 2^28 entries; pass h_layout='sparse' or iterate model.stream()."
            )
        gen = self._check_generator(generator)
        Xs, idx, vals, offset = [], [], [], 0
        for start in range(0, N, self.chunk_size):
            m = min(self.chunk_size, N - start)
            X, H = self._chunk(m, gen)
            Xs.append(X)
            i = H.indices()
            idx.append(torch.stack([i[0] + offset, i[1]]))
            vals.append(H.values())
            offset += m
        X = torch.cat(Xs) if Xs else self._V.new_zeros(0, self.d)
        if not idx:
            H = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long, device=self.device), self._V.new_zeros(0), (N, self.n), check_invariants=False)
        else:
            H = torch.sparse_coo_tensor(torch.cat(idx, 1), torch.cat(vals), (N, self.n), is_coalesced=True, check_invariants=False)
        return X, (H.to_dense() if h_layout == "dense" else H)
