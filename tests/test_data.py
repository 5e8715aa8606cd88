"""Tests of the statistical feature model X = H V (docs/papers.md#gba-model): shapes, dtypes, determinism,
frequencies of every support law, coefficient laws, planted co-occurrence, feature construction
and argument checks.

Statistical checks use bounds that can fail: an empirical frequency from N rows is a Binomial(N, f)
count over N, so its standard error is sqrt(f (1 - f) / N); we demand every feature within 5 SE
(a false alarm per feature ~ 6e-7) and seed every generator, so the tests are deterministic.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from _helpers import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sae_theory.data import (
    Balanced,
    Bernoulli,
    Constant,
    LogNormal,
    MixedSparsity,
    SparseFeatureModel,
    Uniform,
    Zipf,
    coherent_features,
    gaussian_features,
    welch_bound,
)
from sae_theory.theory.conditions import check_identifiability, mutual_coherence

DTYPES = [torch.float32, torch.float64]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")),
]
Z = 5.0  # number of standard errors allowed in a statistical check


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def row_support(H: torch.Tensor) -> torch.Tensor:
    """Number of non-zeros of every row of H (dense or sparse), as a long tensor."""
    if H.is_sparse:
        H = H.coalesce()
        rows = H.indices()[0][H.values() != 0]
        return torch.bincount(rows, minlength=H.shape[0])
    return (H != 0).sum(dim=1)


def feature_counts(H: torch.Tensor) -> torch.Tensor:
    """Number of rows in which every feature (column) is active."""
    if H.is_sparse:
        H = H.coalesce()
        cols = H.indices()[1][H.values() != 0]
        return torch.bincount(cols, minlength=H.shape[1])
    return (H != 0).sum(dim=0)


def binomial_se(f: torch.Tensor | float, N: int) -> torch.Tensor:
    f = torch.as_tensor(f, dtype=torch.float64)
    return torch.sqrt(f * (1 - f) / N)


def pair_counts(H: torch.Tensor, i: int, j: int) -> tuple[int, int]:
    """(#rows with both i and j, #rows with either)."""
    Hd = H.to_dense() if H.is_sparse else H
    a, b = Hd[:, i] != 0, Hd[:, j] != 0
    return int((a & b).sum()), int((a | b).sum())


# --------------------------------------------------------------------------------------------
# shapes, dtypes, devices, X = H V
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_SparseFeatureModel__sample_shapes_dtype_device(dtype, device):
    model = SparseFeatureModel(n_features=50, d=8, sparsity=3, seed=0, dtype=dtype, device=device)
    X, H = model.sample(300, gen(1, device))
    assert X.shape == (300, 8) and H.shape == (300, 50)
    assert X.dtype == dtype and H.dtype == dtype and model.features.dtype == dtype
    assert X.device.type == device and H.device.type == device and model.features.device.type == device
    assert not H.is_sparse
    Xs, Hs = model.sample(300, gen(1, device), h_layout="sparse")
    assert Hs.is_sparse and Hs.shape == (300, 50) and Hs.dtype == dtype and Hs.device.type == device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_SparseFeatureModel__X_equals_H_times_V(dtype, device):
    model = SparseFeatureModel(n_features=64, d=16, sparsity=4, coefficients=Uniform(0.5, 1.5), seed=3, dtype=dtype, device=device)
    X, H = model.sample(500, gen(2, device))
    assert_close(X, H @ model.features, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_SparseFeatureModel__dense_and_sparse_layouts_agree(dtype):
    model = SparseFeatureModel(n_features=40, d=6, sparsity=5, coefficients=LogNormal(0.0, 0.5), seed=1, dtype=dtype, chunk_size=64)
    X_dense, H_dense = model.sample(200, gen(7))
    X_sparse, H_sparse = model.sample(200, gen(7), h_layout="sparse")
    assert H_sparse.is_sparse and not H_dense.is_sparse
    assert torch.equal(X_dense, X_sparse)
    assert torch.equal(H_dense, H_sparse.to_dense())


@pytest.mark.parametrize("h_layout", ["sparse", "dense"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_SparseFeatureModel__stream_concatenates_to_sample(dtype, h_layout):
    # 1000 rows in chunks of 300: three full chunks and a partial one of 100.
    model = SparseFeatureModel(n_features=100, d=8, sparsity=3, coefficients=Uniform(0.5, 2.0), seed=4, dtype=dtype, chunk_size=300)
    X, H = model.sample(1000, gen(5))
    chunks = list(model.stream(1000, chunk_size=300, generator=gen(5), h_layout=h_layout))
    assert [c[0].shape[0] for c in chunks] == [300, 300, 300, 100]
    assert all(c[1].is_sparse == (h_layout == "sparse") for c in chunks)
    assert torch.equal(torch.cat([c[0] for c in chunks]), X)
    assert torch.equal(torch.cat([c[1].to_dense() if c[1].is_sparse else c[1] for c in chunks]), H)


def test_SparseFeatureModel__default_stream_matches_default_sample():
    # The model's own stream (no generator) is the same in sample() and stream() for one seed.
    a = SparseFeatureModel(n_features=60, d=5, sparsity=2, seed=9, chunk_size=128)
    b = SparseFeatureModel(n_features=60, d=5, sparsity=2, seed=9, chunk_size=128)
    X, H = a.sample(500)
    chunks = list(b.stream(500))
    assert torch.equal(torch.cat([c[0] for c in chunks]), X)
    assert torch.equal(torch.cat([c[1].to_dense() for c in chunks]), H)


def test_SparseFeatureModel__same_seed_same_features_and_samples():
    kwargs = dict(n_features=80, d=10, sparsity=3, coefficients=LogNormal(0.0, 1.0), planted_pairs=2, planted_probability=0.5)
    a, b = SparseFeatureModel(seed=11, **kwargs), SparseFeatureModel(seed=11, **kwargs)
    assert torch.equal(a.features, b.features)
    assert a.planted == b.planted
    Xa, Ha = a.sample(400)
    Xb, Hb = b.sample(400)
    assert torch.equal(Xa, Xb) and torch.equal(Ha, Hb)
    # Explicit generators with the same seed also agree.
    assert torch.equal(a.sample(100, gen(3))[1], b.sample(100, gen(3))[1])


def test_SparseFeatureModel__different_seeds_differ():
    a = SparseFeatureModel(n_features=80, d=10, sparsity=3, seed=1)
    b = SparseFeatureModel(n_features=80, d=10, sparsity=3, seed=2)
    assert not torch.equal(a.features, b.features)
    assert not torch.equal(a.sample(200)[1], b.sample(200)[1])
    # Two explicit generators with different seeds differ too.
    assert not torch.equal(a.sample(200, gen(0))[1], a.sample(200, gen(1))[1])


def test_SparseFeatureModel__successive_samples_continue_and_reset_restarts():
    model = SparseFeatureModel(n_features=50, d=4, sparsity=3, seed=5)
    first = model.sample(100)[1]
    second = model.sample(100)[1]
    assert not torch.equal(first, second)  # the stream moved on
    model.reset()
    assert torch.equal(model.sample(100)[1], first)
    model.reset()
    chunk = next(iter(model.stream(100)))[1].to_dense()
    assert torch.equal(chunk, first)


def test_SparseFeatureModel__explicit_generator_leaves_own_stream_alone():
    a = SparseFeatureModel(n_features=50, d=4, sparsity=3, seed=5)
    b = SparseFeatureModel(n_features=50, d=4, sparsity=3, seed=5)
    a.sample(100, gen(99))  # draws from the given generator, not the model's stream
    assert torch.equal(a.sample(100)[1], b.sample(100)[1])


def test_SparseFeatureModel__zero_samples():
    model = SparseFeatureModel(n_features=10, d=3, sparsity=2, seed=0)
    X, H = model.sample(0)
    assert X.shape == (0, 3) and H.shape == (0, 10)
    Xs, Hs = model.sample(0, h_layout="sparse")
    assert Hs.is_sparse and Hs.shape == (0, 10) and Hs._nnz() == 0
    assert list(model.stream(0)) == []


# --------------------------------------------------------------------------------------------
# frequencies of the support laws
# --------------------------------------------------------------------------------------------


def test_Balanced__every_feature_has_frequency_s_over_n():
    n, s, N = 64, 4, 20_000
    model = SparseFeatureModel(n_features=n, d=8, sparsity=s, seed=0)
    _, H = model.sample(N, gen(0), h_layout="sparse")
    f = s / n  # = 1/16
    assert_close(model.frequencies, torch.full((n,), f))
    emp = feature_counts(H).double() / N
    se = float(binomial_se(f, N))  # sqrt(1/16 * 15/16 / 20000) ~ 1.7e-3
    assert float((emp - f).abs().max()) < Z * se
    # Every row has exactly s features, so the mean frequency is s/n exactly.
    assert int(feature_counts(H).sum()) == N * s
    # Spread across features matches the binomial variance (a non-uniform support would inflate
    # it): the sample variance of 64 counts has relative SE sqrt(2/63) ~ 0.18, allow ~3 SE.
    ratio = float(emp.var() / se**2)
    assert 0.45 < ratio < 1.55


def test_MixedSparsity__rows_are_3_or_20_and_frequency_is_mean_over_n():
    n, N = 128, 20_000
    model = SparseFeatureModel.imbalanced_toy(seed=0, d=16)
    assert isinstance(model.support, MixedSparsity) and model.n == n
    _, H = model.sample(N, gen(0), h_layout="sparse")
    supp = row_support(H)
    assert set(supp.unique().tolist()) == {3, 20}
    frac3 = float((supp == 3).double().mean())
    assert abs(frac3 - 0.5) < Z * math.sqrt(0.25 / N)
    f = 11.5 / 128  # (0.5 * 3 + 0.5 * 20) / 128 ~ 0.0898
    assert_close(model.frequencies, torch.full((n,), f))
    emp = feature_counts(H).double() / N
    assert float((emp - f).abs().max()) < Z * float(binomial_se(f, N))


def test_Zipf__empirical_frequencies_match_model_frequencies():
    # f_i = 3 (i+1)^-1 / H_200 spans ~0.51 down to ~0.0026: both the dense (f >= 0.05) and the
    # Binomial-count sampling paths are exercised.
    n, N = 200, 20_000
    model = SparseFeatureModel(n_features=n, d=8, sparsity=Zipf(exponent=1.0, mean_support=3.0), seed=0)
    f = model.frequencies
    harmonic = sum(1 / k for k in range(1, n + 1))
    assert_close(f[0], 3.0 / harmonic)
    assert_close(f.sum(), 3.0)
    assert bool((f >= 0.05).any()) and bool((f < 0.05).any())
    _, H = model.sample(N, gen(0), h_layout="sparse")
    emp = feature_counts(H).double() / N
    assert bool(((emp - f).abs() < Z * binomial_se(f, N)).all())


def test_Zipf__too_frequent_head_raises():
    with pytest.raises(ValueError, match="mean_support"):
        SparseFeatureModel(n_features=4, d=2, sparsity=Zipf(exponent=2.0, mean_support=3.0))


def test_Bernoulli__frequency_one_feature_always_active():
    n, N = 30, 5_000
    freqs = [1.0] + [0.02] * 14 + [0.3] * 15
    model = SparseFeatureModel(n_features=n, d=4, frequencies=freqs, seed=0)
    assert isinstance(model.support, Bernoulli)
    _, H = model.sample(N, gen(0), h_layout="sparse")
    counts = feature_counts(H)
    assert int(counts[0]) == N
    f = torch.tensor(freqs, dtype=torch.float64)
    se = binomial_se(f, N)
    assert bool(((counts.double() / N - f).abs() <= Z * se).all())


def test_Bernoulli__frequencies_given_as_tensor():
    f = torch.tensor([0.5, 0.25, 1.0])
    model = SparseFeatureModel(n_features=3, d=2, frequencies=f, seed=0)
    assert_close(model.frequencies, f.double())


def test_Constant__values_exact():
    model = SparseFeatureModel(n_features=20, d=3, sparsity=2, coefficients=Constant(2.5), seed=0, dtype=torch.float64)
    _, H = model.sample(500, gen(0), h_layout="sparse")
    vals = H.coalesce().values()
    assert vals.numel() == 500 * 2 and bool((vals == 2.5).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_Uniform__values_in_range_with_right_mean(dtype):
    a, b, k = 0.5, 2.0, 40_000
    model = SparseFeatureModel(n_features=100, d=3, sparsity=4, coefficients=Uniform(a, b), seed=0, dtype=dtype)
    vals = model.sample(k // 4, gen(0), h_layout="sparse")[1].coalesce().values().double()
    assert vals.numel() == k
    assert float(vals.min()) >= a and float(vals.max()) <= b
    se = (b - a) / math.sqrt(12 * k)  # SD of U(a, b) is (b - a)/sqrt(12)
    assert abs(float(vals.mean()) - (a + b) / 2) < Z * se
    assert model.coefficients.mean == (a + b) / 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_LogNormal__values_positive_with_right_mean_of_log(dtype):
    mu, sigma, k = 0.3, 0.7, 40_000
    model = SparseFeatureModel(n_features=100, d=3, sparsity=4, coefficients=LogNormal(mu, sigma), seed=0, dtype=dtype)
    vals = model.sample(k // 4, gen(0), h_layout="sparse")[1].coalesce().values().double()
    assert vals.numel() == k and bool((vals > 0).all())
    logs = vals.log()
    assert abs(float(logs.mean()) - mu) < Z * sigma / math.sqrt(k)
    assert abs(float(logs.std()) - sigma) < Z * sigma / math.sqrt(2 * k)
    assert_close(model.coefficients.mean, math.exp(mu + sigma**2 / 2))


def test_as_coefficient_law__names_and_numbers():
    assert SparseFeatureModel(4, 2, 1, coefficients=3.0).coefficients == Constant(3.0)
    assert isinstance(SparseFeatureModel(4, 2, 1, coefficients="uniform").coefficients, Uniform)
    assert isinstance(SparseFeatureModel(4, 2, 1, coefficients="lognormal").coefficients, LogNormal)
    with pytest.raises(ValueError, match="coefficients"):
        SparseFeatureModel(4, 2, 1, coefficients="gamma")


# --------------------------------------------------------------------------------------------
# properties over many draws (hypothesis)
# --------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.integers(1, 300), N=st.integers(0, 300), seed=st.integers(0, 2**31 - 1))
def test_Balanced__every_row_has_exactly_s_nonzeros(data, n, N, seed):
    # Covers both support samplers: rejection when s^2 <= n, top-s of random keys otherwise.
    s = data.draw(st.integers(1, n), label="s")
    model = SparseFeatureModel(n_features=n, d=2, sparsity=s, seed=seed % 1000, chunk_size=97)
    _, H = model.sample(N, gen(seed), h_layout="sparse")
    H = H.coalesce()
    assert bool((row_support(H) == s).all())
    # Constant(1) coefficients: a repeated index inside a row would coalesce to 2.
    assert bool((H.values() == 1).all())
    cols = H.indices()[1]
    assert bool(((cols >= 0) & (cols < n)).all())


LAWS = st.one_of(
    st.floats(0.01, 10).map(Constant),
    st.tuples(st.floats(0.01, 5), st.floats(0, 5)).map(lambda t: Uniform(t[0], t[0] + t[1])),
    st.tuples(st.floats(-3, 3), st.floats(0, 2)).map(lambda t: LogNormal(*t)),
)


@settings(max_examples=30, deadline=None)
@given(law=LAWS, seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES))
def test_CoefficientLaw__active_coefficients_positive_for_every_law(law, seed, dtype):
    model = SparseFeatureModel(n_features=30, d=2, sparsity=3, coefficients=law, seed=0, dtype=dtype)
    X, H = model.sample(200, gen(seed))
    assert bool((H >= 0).all())
    active = H[H != 0]
    assert active.numel() == 200 * 3  # no active entry rounded to zero
    assert bool((active > 0).all()) and bool(torch.isfinite(active).all())


# --------------------------------------------------------------------------------------------
# planted co-occurrence
# --------------------------------------------------------------------------------------------


def test_planted__probability_one_pair_always_together():
    model = SparseFeatureModel(n_features=32, d=4, sparsity=3, planted_pairs=[(0, 1), (5, 9)], planted_probability=1.0, seed=0)
    _, H = model.sample(5_000, gen(0))
    for i, j in [(0, 1), (5, 9)]:
        both, either = pair_counts(H, i, j)
        assert either > 0 and both == either
    assert model.population_cooccurrence() == 1.0
    report = check_identifiability(H, model.features)
    assert report["H3"].value == 1.0 and not report["H3"].holds


def test_planted__half_probability_ratio_and_population_cooccurrence():
    # Balanced s=3, n=32: base P(both) = 3*2/(32*31) = 6/992, P(either) = 6/32 - 6/992, base
    # ratio r ~ 0.0333. With q = 0.5 the pair fires together in a row where either fires with
    # probability q + (1 - q) r ~ 0.517.
    n, s, q, N = 32, 3, 0.5, 40_000
    model = SparseFeatureModel(n_features=n, d=4, sparsity=s, planted_pairs=[(2, 7)], planted_probability=q, seed=0)
    p_both = s * (s - 1) / (n * (n - 1))
    p_either = 2 * s / n - p_both
    base = p_both / p_either
    expected = q + (1 - q) * base
    assert_close(model.population_cooccurrence(), expected)
    _, H = model.sample(N, gen(0), h_layout="sparse")
    both, either = pair_counts(H, 2, 7)
    se = math.sqrt(expected * (1 - expected) / either)  # conditional on #either rows
    assert abs(both / either - expected) < Z * se
    # Empirical H3 (max over all pairs) is the planted pair and matches the population value.
    h3 = check_identifiability(H, model.features)["H3"]
    assert h3.details["pair"] == (2, 7)
    assert abs(h3.value - model.population_cooccurrence()) < Z * se


def test_planted__zero_probability_changes_nothing():
    a = SparseFeatureModel(n_features=32, d=4, sparsity=3, planted_pairs=[(0, 1)], planted_probability=0.0, seed=0)
    b = SparseFeatureModel(n_features=32, d=4, sparsity=3, seed=0)
    assert torch.equal(a.sample(300, gen(1))[1], b.sample(300, gen(1))[1])
    assert_close(a.frequencies, b.frequencies)


@pytest.mark.parametrize("q", [1.0, 0.5])
def test_planted__frequencies_account_for_planting(q):
    # A planted member i fires if it did, or (prob. q) if its partner did without it:
    # f_i' = f + q (f - P(both)) = 3/32 + q (3/32 - 6/992).
    n, s, N = 32, 3, 40_000
    model = SparseFeatureModel(n_features=n, d=4, sparsity=s, planted_pairs=[(0, 1)], planted_probability=q, seed=0)
    f, p_both = s / n, s * (s - 1) / (n * (n - 1))
    expected = torch.full((n,), f, dtype=torch.float64)
    expected[0] = expected[1] = f + q * (f - p_both)
    assert_close(model.frequencies, expected)
    assert_close(model.expected_support, float(expected.sum()))
    _, H = model.sample(N, gen(0), h_layout="sparse")
    emp = feature_counts(H).double() / N
    assert bool(((emp - expected).abs() < Z * binomial_se(expected, N)).all())


def test_planted__random_pairs_disjoint_and_inside_range():
    model = SparseFeatureModel(n_features=20, d=3, sparsity=2, planted_pairs=5, seed=0)
    members = [x for p in model.planted.pairs for x in p]
    assert len(model.planted.pairs) == 5 and len(set(members)) == 10
    assert all(0 <= x < 20 for x in members)


@pytest.mark.parametrize("sparsity", [Zipf(1.0, 2.0), MixedSparsity((2, 6))])
def test_planted__population_cooccurrence_matches_sample_for_other_laws(sparsity):
    n, q, N = 40, 0.5, 40_000
    model = SparseFeatureModel(n_features=n, d=4, sparsity=sparsity, planted_pairs=[(0, 1)], planted_probability=q, seed=0)
    _, H = model.sample(N, gen(0), h_layout="sparse")
    both, either = pair_counts(H, 0, 1)
    pop = model.population_cooccurrence()
    assert abs(both / either - pop) < Z * math.sqrt(pop * (1 - pop) / either)


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_SparseFeatureModel__supplied_features_kept(dtype):
    V = torch.randn(6, 3, generator=gen(0), dtype=torch.float64) * 2.0  # not unit rows on purpose
    model = SparseFeatureModel(n_features=6, d=3, sparsity=2, features=V, dtype=dtype)
    assert model.features.dtype == dtype
    assert torch.equal(model.features, V.to(dtype))
    assert model.describe()["features"] == "supplied"


def test_SparseFeatureModel__features_as_numpy_accepted():
    V = np.eye(3)
    model = SparseFeatureModel(n_features=3, d=3, sparsity=1, features=V, dtype=torch.float64)
    assert torch.equal(model.features, torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_SparseFeatureModel__default_features_unit_rows(dtype):
    model = SparseFeatureModel(n_features=100, d=7, sparsity=2, seed=0, dtype=dtype)
    assert_close(model.features.norm(dim=1), torch.ones(100), dtype=dtype)


@pytest.mark.parametrize("n, d, mu", [(10, 16, 0.2), (15, 16, 0.0), (200, 16, 0.92), (500, 32, 0.8)])
def test_SparseFeatureModel__coherence_exact(n, d, mu):
    # n <= d - 1: orthonormal base, every off-diagonal cosine is exactly mu. n > d: a Gaussian base
    # (coherence ~0.8 at n=200 in R^15, ~0.7 at n=500 in R^31) lifted to coherence mu.
    model = SparseFeatureModel(n_features=n, d=d, sparsity=1, coherence=mu, seed=0, dtype=torch.float64)
    V = model.features
    assert_close(V.norm(dim=1), torch.ones(n))
    assert_close(mutual_coherence(V), mu)
    assert_close(model.achieved_coherence, mu)


def test_coherent_features__orthonormal_base_gives_equiangular_rows():
    # n <= d - 1: v_i = (sqrt(1-t) g_i, sqrt(t)) with orthonormal g, so cos(v_i, v_j) = t = mu.
    V, achieved = coherent_features(5, 8, 0.3, gen(0))
    G = V @ V.T
    off = G[~torch.eye(5, dtype=torch.bool)]
    assert_close(off, torch.full_like(off, 0.3))
    assert_close(torch.diagonal(G), torch.ones(5))
    assert_close(achieved, 0.3)


def test_coherent_features__below_reachable_raises_quoting_welch():
    with pytest.raises(ValueError, match="Welch bound"):
        SparseFeatureModel(n_features=200, d=16, sparsity=1, coherence=0.1, seed=0)
    with pytest.raises(ValueError, match="coherence"):
        coherent_features(5, 8, 1.0, gen(0))


def test_gaussian_features__unit_rows_and_deterministic():
    a, b = gaussian_features(50, 4, gen(3)), gaussian_features(50, 4, gen(3))
    assert a.dtype == torch.float64 and a.shape == (50, 4)
    assert torch.equal(a, b)
    assert_close(a.norm(dim=1), torch.ones(50))


def test_welch_bound__hand_values():
    # 3 unit vectors in R^2: sqrt((3-2)/(2*(3-1))) = 1/2 (the Mercedes-Benz frame meets it).
    assert_close(welch_bound(3, 2), 0.5)
    # n=65536, d=128: sqrt(65408 / (128 * 65535)) ~ 0.088355
    assert_close(welch_bound(65536, 128), math.sqrt(65408 / (128 * 65535)))
    assert welch_bound(5, 5) == 0.0 and welch_bound(2, 10) == 0.0
    # Any construction is at or above the bound.
    V, achieved = coherent_features(200, 16, 0.92, gen(0))
    assert achieved >= welch_bound(200, 16)


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(n_features=0, d=4, sparsity=1), ValueError, "n_features"),
        (dict(n_features=-3, d=4, sparsity=1), ValueError, "n_features"),
        (dict(n_features=2.5, d=4, sparsity=1), TypeError, "n_features"),
        (dict(n_features=8, d=0, sparsity=1), ValueError, r"\bd must"),
        (dict(n_features=8, d=4, sparsity=9), ValueError, "sparsity"),
        (dict(n_features=8, d=4, sparsity=0), ValueError, "sparsity"),
        (dict(n_features=8, d=4, sparsity=1.5), TypeError, "sparsity"),
        (dict(n_features=2, d=4, frequencies=[0.5, 0.0]), ValueError, r"frequencies\[1\]"),
        (dict(n_features=2, d=4, frequencies=[1.5, 0.5]), ValueError, r"frequencies\[0\]"),
        (dict(n_features=2, d=4, frequencies=[0.5, float("nan")]), ValueError, r"frequencies\[1\]"),
        (dict(n_features=3, d=4, frequencies=[0.5, 0.5]), ValueError, "frequencies has 2"),
        (dict(n_features=8, d=4), ValueError, "sparsity=.*frequencies="),
        (dict(n_features=2, d=4, sparsity=1, frequencies=[0.5, 0.5]), ValueError, "sparsity=.*frequencies="),
        (dict(n_features=8, d=4, sparsity=MixedSparsity((3, 20))), ValueError, "sparsit"),
        (dict(n_features=8, d=4, sparsity=1, seed=-1), ValueError, "seed"),
        (dict(n_features=8, d=4, sparsity=1, chunk_size=0), ValueError, "chunk_size"),
        (dict(n_features=8, d=4, sparsity=1, dtype=torch.int64), TypeError, "dtype"),
        (dict(n_features=8, d=4, sparsity=1, coherence=0.2, features=torch.eye(8, 4)), ValueError, "features=.*coherence="),
        (dict(n_features=8, d=4, sparsity=1, coherence=-0.1), ValueError, "coherence"),
    ],
)
def test_SparseFeatureModel__bad_arguments_raise_naming_them(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        SparseFeatureModel(**kwargs)


def test_SparseFeatureModel__bad_features_raise():
    V = torch.randn(4, 3, generator=gen(0))
    bad = V.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="features contains"):
        SparseFeatureModel(n_features=4, d=3, sparsity=1, features=bad)
    with pytest.raises(ValueError, match="features must have shape"):
        SparseFeatureModel(n_features=4, d=3, sparsity=1, features=V.T)
    zero = V.clone()
    zero[2] = 0
    with pytest.raises(ValueError, match="features has a zero row"):
        SparseFeatureModel(n_features=4, d=3, sparsity=1, features=zero)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Uniform(0.0, 1.0), "Uniform.low"),
        (lambda: Uniform(-1.0, 1.0), "Uniform.low"),
        (lambda: Uniform(2.0, 1.0), "low <= high"),
        (lambda: Constant(0.0), "Constant.value"),
        (lambda: LogNormal(0.0, -1.0), "LogNormal.sigma"),
        (lambda: LogNormal(float("nan"), 1.0), "LogNormal.mu"),
        (lambda: MixedSparsity((3, 20), (0.5,)), "weights"),
        (lambda: MixedSparsity((3, 0)), "sparsities"),
        (lambda: Zipf(exponent=-1.0), "exponent"),
        (lambda: Balanced(0), "sparsity"),
    ],
)
def test_laws__bad_parameters_raise_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "pairs, q, match",
    [
        ([(0, 1), (1, 2)], 1.0, "disjoint"),
        ([(0, 8)], 1.0, "planted_pairs index 8"),
        ([(-1, 2)], 1.0, "planted_pairs index -1"),
        ([(3, 3)], 1.0, "two different features"),
        ([(0, 1)], 1.5, "planted_probability"),
        ([(0, 1)], -0.1, "planted_probability"),
        ([(0, 1)], float("nan"), "planted_probability"),
        (5, 1.0, "planted_pairs"),  # 5 disjoint pairs need 10 features, n = 8
    ],
)
def test_planted__bad_arguments_raise_naming_them(pairs, q, match):
    with pytest.raises(ValueError, match=match):
        SparseFeatureModel(n_features=8, d=3, sparsity=1, planted_pairs=pairs, planted_probability=q)


def test_planted__bad_probability_raises_even_without_pairs():
    with pytest.raises(ValueError, match="planted_probability"):
        SparseFeatureModel(n_features=8, d=3, sparsity=1, planted_probability=2.0)


def test_SparseFeatureModel__dense_H_too_large_raises_mentioning_h_layout():
    model = SparseFeatureModel(n_features=65_536, d=4, sparsity=3, seed=0)
    # 10,000 x 65,536 = 6.6e8 entries > 2^28 = 2.7e8.
    with pytest.raises(ValueError, match="h_layout"):
        model.sample(10_000)
    X, H = model.sample(10_000, h_layout="sparse")  # the sparse layout is fine
    assert H.is_sparse and H.shape == (10_000, 65_536)


def test_SparseFeatureModel__bad_sampling_arguments_raise():
    model = SparseFeatureModel(n_features=8, d=3, sparsity=1)
    with pytest.raises(ValueError, match="h_layout"):
        model.sample(10, h_layout="csr")
    with pytest.raises(ValueError, match="h_layout"):
        next(model.stream(10, h_layout="csr"))
    with pytest.raises(ValueError, match="n_samples"):
        model.sample(-1)
    with pytest.raises(ValueError, match="chunk_size"):
        next(model.stream(10, chunk_size=0))
    with pytest.raises(TypeError, match="generator"):
        model.sample(10, generator=np.random.default_rng(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to build a generator on another device")
def test_SparseFeatureModel__generator_on_wrong_device_raises():
    model = SparseFeatureModel(n_features=8, d=3, sparsity=1, device="cpu")
    with pytest.raises(ValueError, match="generator lives on"):
        model.sample(10, generator=torch.Generator(device="cuda"))


def test_SparseFeatureModel__describe_is_json_ready():
    model = SparseFeatureModel(n_features=16, d=3, sparsity=MixedSparsity((2, 4)), coefficients=Uniform(0.5, 1.5), planted_pairs=1, seed=2)
    desc = json.loads(json.dumps(model.describe()))
    assert desc["n_features"] == 16 and desc["support"]["law"] == "MixedSparsity" and desc["seed"] == 2
    assert desc["coefficients"] == {"law": "Uniform", "low": 0.5, "high": 1.5}
    bern = SparseFeatureModel(n_features=3, d=2, frequencies=[0.1, 0.5, 1.0])
    assert json.loads(json.dumps(bern.describe()))["support"]["max_frequency"] == 1.0


# --------------------------------------------------------------------------------------------
# scale
# --------------------------------------------------------------------------------------------


def test_SparseFeatureModel__streams_200k_rows_at_n_65536():
    # GBA scale (docs/papers.md#gba-llm-experiments): n = 65,536, s = 3. Sparse chunks never build N x n.
    n, s, N, C = 65_536, 3, 200_000, 65_536
    model = SparseFeatureModel(n_features=n, d=64, sparsity=s, seed=0)
    total, nnz = 0, 0
    for X, H in model.stream(N, chunk_size=C):
        m = X.shape[0]
        assert X.shape == (m, 64) and H.shape == (m, n) and H.is_sparse
        assert bool((row_support(H) == s).all())
        total += m
        nnz += H._nnz()
    assert total == N and nnz == N * s
    assert_close(model.frequencies[:3], torch.full((3,), s / n))
