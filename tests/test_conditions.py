"""Tests of the identifiability conditions H1, H2, H3, V1 (docs/papers.md#gba-identifiability) on hand-built cases with
known answers, against brute-force oracles, across input layouts, and at n = 65,536."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from _helpers import assert_close

from sae_theory.data import SparseFeatureModel
from sae_theory.theory.conditions import check_identifiability, cosine_extremes, mutual_coherence


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_rows(n: int, rows: list[list[int]], values: dict[tuple[int, int], float] | None = None) -> torch.Tensor:
    """Dense float64 H with H[l, i] = 1 (or values[(l, i)]) for i in rows[l]."""
    H = torch.zeros(len(rows), n, dtype=torch.float64)
    for l, r in enumerate(rows):
        for i in r:
            H[l, i] = 1.0 if values is None else values.get((l, i), 1.0)
    return H


def eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# V1 and the geometry of V
# --------------------------------------------------------------------------------------------


def test_V1__orthonormal_features_have_zero_coherence():
    V = eye(4)
    H = one_hot_rows(4, [[0, 1], [2, 3], [0, 2]])  # s_max = 2: threshold 1/(2*2-1) = 1/3
    r = check_identifiability(H, V)["V1"]
    assert r.value == 0.0 and r.holds
    assert_close(r.threshold, 1 / 3)
    # Random-Gaussian baseline sqrt(ln 4 / 4) is reported beside it.
    assert_close(r.details["random_baseline"], math.sqrt(math.log(4) / 4))


def test_V1__parallel_rows_have_coherence_one():
    # Rows 0 and 1 point the same way (lengths 1 and 2): cos = 2/(1*2) = 1.
    V = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    r = check_identifiability(one_hot_rows(3, [[0], [1], [2]]), V)["V1"]
    assert_close(r.value, 1.0)
    assert not r.holds


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_V1__hand_made_2x2_cosine(sign):
    # v0 = (1, 0), v1 = (+-3, 4): cos = +-3 / (1 * 5) = +-0.6; coherence |cos| = 0.6.
    V = torch.tensor([[1.0, 0.0], [sign * 3.0, 4.0]], dtype=torch.float64)
    hi, lo = cosine_extremes(V)
    assert_close(hi, sign * 0.6)
    assert_close(lo, sign * 0.6)
    assert_close(mutual_coherence(V), 0.6)
    H = one_hot_rows(2, [[0], [1]])  # s_max = 1: threshold 1/(2-1) = 1, 0.6 < 1 holds
    r = check_identifiability(H, V)["V1"]
    assert_close(r.value, 0.6)
    assert r.holds
    # With a caller threshold of 0.5 it fails.
    assert not check_identifiability(H, V, max_coherence=0.5)["V1"].holds


@pytest.mark.parametrize("block_rows", [None, 1, 7, 64, 299, 1000])
def test_cosine_extremes__matches_brute_force_gram(block_rows):
    V = torch.randn(300, 12, generator=gen(0), dtype=torch.float64)
    U = V.numpy() / np.linalg.norm(V.numpy(), axis=1, keepdims=True)
    G = U @ U.T
    off = G[~np.eye(300, dtype=bool)]
    hi, lo = cosine_extremes(V, block_rows=block_rows)
    assert_close(hi, off.max())
    assert_close(lo, off.min())
    assert_close(mutual_coherence(V), np.abs(off).max())


def test_cosine_extremes__single_row_and_float32_input():
    assert cosine_extremes(torch.ones(1, 3)) == (0.0, 0.0)
    assert mutual_coherence(np.ones((1, 3))) == 0.0
    V32 = torch.randn(50, 5, generator=gen(1))
    assert cosine_extremes(V32) == cosine_extremes(V32.double())  # computed in float64


# --------------------------------------------------------------------------------------------
# H3 low co-occurrence
# --------------------------------------------------------------------------------------------


def test_H3__always_together_pair_has_ratio_one():
    # Features 0 and 1 appear only together (rows 0, 1): both = either = 2, ratio 1 >= 6^-1/2.
    H = one_hot_rows(6, [[0, 1], [0, 1], [2], [3], [4], [5]])
    r = check_identifiability(H, eye(6))["H3"]
    assert r.value == 1.0 and not r.holds
    assert r.details["pair"] == (0, 1) and r.details["both"] == 2 and r.details["either"] == 2


def test_H3__never_cooccurring_pairs_give_zero():
    H = one_hot_rows(4, [[0], [1], [2], [3], [0], [2]])
    r = check_identifiability(H, eye(4))["H3"]
    assert r.value == 0.0 and r.holds and r.details["pair"] is None
    assert_close(r.threshold, 0.5)  # 4^-1/2


@pytest.mark.parametrize("n, holds", [(4, True), (16, False), (25, False)])
def test_H3__exact_ratio_against_n_to_minus_half(n, holds):
    # count_0 = 3 (rows 0, 1, 2), count_1 = 2 (rows 0, 3), both = 1 (row 0):
    # either = 3 + 2 - 1 = 4, ratio = 1/4. Other pairs never co-occur.
    # n = 4: 0.25 < 4^-1/2 = 0.5 holds; n = 16: 0.25 < 0.25 is false (strict); n = 25: 0.25 >= 0.2.
    H = one_hot_rows(n, [[0, 1], [0], [0], [1], [2], [3]])
    r = check_identifiability(H, eye(n))["H3"]
    assert_close(r.value, 0.25)
    assert_close(r.threshold, n**-0.5)
    assert r.holds is holds
    assert (r.details["both"], r.details["either"]) == (1, 4)


def test_H3__finite_sample_note_when_rare_features():
    # Every feature fires once; one co-occurrence gives 1/(1+1-1) = 1 and the message says N is small.
    H = one_hot_rows(9, [[0, 1], [2], [3], [4], [5], [6], [7], [8]])
    r = check_identifiability(H, eye(9))["H3"]
    assert r.value == 1.0 and "N is too small" in r.message


# --------------------------------------------------------------------------------------------
# H1 row-wise sparsity
# --------------------------------------------------------------------------------------------


def test_H1__max_and_mean_support_with_default_threshold():
    # Row supports 1, 2, 3, 2: max 3, mean 8/4 = 2. n = 20: ceil(ln 20) = ceil(2.996) = 3, holds.
    rows = [[0], [1, 2], [3, 4, 5], [6, 7]]
    r = check_identifiability(one_hot_rows(20, rows), eye(20))["H1"]
    assert r.value == 3.0 and r.threshold == 3.0 and r.holds
    assert r.details == {"max_support": 3, "mean_support": 2.0}
    assert "ceil(ln n)" in r.message
    # n = 21: ceil(ln 21) = ceil(3.04) = 4.
    assert check_identifiability(one_hot_rows(21, rows), eye(21))["H1"].threshold == 4.0
    # n = 2: ceil(ln 2) = 1; a row with 2 features fails.
    r2 = check_identifiability(one_hot_rows(2, [[0, 1]]), eye(2))["H1"]
    assert r2.threshold == 1.0 and not r2.holds


def test_H1__caller_threshold():
    rows = [[0], [1, 2], [3, 4, 5], [6, 7]]
    r = check_identifiability(one_hot_rows(20, rows), eye(20), max_support=2)["H1"]
    assert r.threshold == 2.0 and not r.holds and "max_support=2" in r.message


# --------------------------------------------------------------------------------------------
# H2 non-degeneracy
# --------------------------------------------------------------------------------------------


def test_H2__feature_with_tiny_coefficients_fails():
    # Per-feature mean non-zero coefficient: 1, 1, 1, 0.01; median of (1, 1, 1, 0.01) = 1,
    # threshold 0.1 * 1 = 0.1 > 0.01: fails, value = 0.01.
    rows = [[0, 3], [1, 3], [2], [0], [1, 2]]
    H = one_hot_rows(4, rows, values={(0, 3): 0.01, (1, 3): 0.01})
    r = check_identifiability(H, eye(4))["H2"]
    assert_close(r.value, 0.01)
    assert_close(r.threshold, 0.1)
    assert not r.holds
    # At h2_ratio = 0.005 the threshold is 0.005 and H2 holds.
    assert check_identifiability(H, eye(4), h2_ratio=0.005)["H2"].holds


def test_H2__balanced_coefficients_hold():
    # Means 1, 2, 1.5: median 1.5, threshold 0.15 <= min 1.
    H = one_hot_rows(3, [[0, 1], [2], [1]], values={(0, 1): 2.0, (1, 2): 1.5, (2, 1): 2.0})
    r = check_identifiability(H, eye(3))["H2"]
    assert_close(r.value, 1.0)
    assert_close(r.threshold, 0.15)
    assert r.holds


def test_H2__never_active_feature_fails_with_message():
    H = one_hot_rows(4, [[0], [1], [2], [0, 1]])  # feature 3 never fires
    r = check_identifiability(H, eye(4))["H2"]
    assert not r.holds and r.value == 0.0
    assert r.details["n_never_active"] == 1
    assert "never fire" in r.message


def test_H2__all_zero_H_fails():
    r = check_identifiability(torch.zeros(3, 4, dtype=torch.float64), eye(4))["H2"]
    assert not r.holds and r.details["n_never_active"] == 4


def test_H2__invariant_to_inverse_rescaling_of_V_rows_and_H_columns():
    # X = H V = (H D^-1)(D V): the reading scales column i of H by ||v_i||, so H2 is unchanged.
    model = SparseFeatureModel(n_features=30, d=8, sparsity=3, coefficients="uniform", seed=0, dtype=torch.float64)
    X, H = model.sample(2_000, gen(0))
    c = torch.rand(30, generator=gen(1), dtype=torch.float64) * 10 + 0.1
    V2, H2 = model.features * c[:, None], H / c[None, :]
    assert_close(H2 @ V2, X)
    a, b = check_identifiability(H, model.features)["H2"], check_identifiability(H2, V2)["H2"]
    assert_close(a.value, b.value)
    assert_close(a.threshold, b.threshold)
    assert a.holds == b.holds
    # Without the compensating V scaling the reading does change (the test can fail).
    assert abs(check_identifiability(H2, model.features)["H2"].value - a.value) > 1e-3


# --------------------------------------------------------------------------------------------
# the report, input layouts
# --------------------------------------------------------------------------------------------


def _report_values(report):
    return {k: (r.value, r.threshold, r.holds) for k, r in report.items()}


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_check_identifiability__all_layouts_give_the_same_report():
    model = SparseFeatureModel(n_features=40, d=10, sparsity=3, coefficients="lognormal", planted_pairs=1, seed=0, dtype=torch.float64)
    X, H = model.sample(500, gen(0))
    V = model.features
    ref = _report_values(check_identifiability(H, V))
    Hn = H.numpy()
    layouts = [
        H.to_sparse(),  # torch COO
        H.to_sparse_csr(),  # torch CSR
        H.float(),  # torch float32 dense: compared at float32 tolerance below
        Hn,  # numpy
        sp.csr_matrix(Hn),
        sp.coo_matrix(Hn),
        sp.csc_matrix(Hn),
    ]
    for Hx in layouts:
        got = _report_values(check_identifiability(Hx, V.numpy()))
        for k in ref:
            tol_dtype = torch.float32 if isinstance(Hx, torch.Tensor) and Hx.dtype == torch.float32 else torch.float64
            assert_close(got[k][0], ref[k][0], dtype=tol_dtype)
            assert_close(got[k][1], ref[k][1], dtype=tol_dtype)
            assert got[k][2] == ref[k][2]


def test_check_identifiability__sparse_H_with_explicit_zeros_matches_dense():
    # A COO entry storing 0 is not an active feature: H1/H3 must not count it.
    idx = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 1, 2, 3]])
    vals = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    Hs = torch.sparse_coo_tensor(idx, vals, (3, 4), check_invariants=True)
    ref = _report_values(check_identifiability(Hs.to_dense(), eye(4)))
    assert _report_values(check_identifiability(Hs, eye(4))) == ref
    assert ref["H1"][0] == 1.0 and ref["H3"][0] == 0.0


def test_check_identifiability__does_not_modify_scipy_input():
    M = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0]]))
    M.data[0] = 0.0  # an explicit stored zero
    before = (M.nnz, M.data.copy(), M.indices.copy(), M.indptr.copy())
    check_identifiability(M, np.eye(2))
    assert M.nnz == before[0]
    assert np.array_equal(M.data, before[1]) and np.array_equal(M.indices, before[2]) and np.array_equal(M.indptr, before[3])


def test_check_identifiability__report_mapping_and_holds():
    # Identity V, one feature per row, every feature fires: all four hold.
    H = one_hot_rows(4, [[0], [1], [2], [3]])
    report = check_identifiability(H, eye(4))
    assert list(report) == ["H1", "H2", "H3", "V1"] and len(report) == 4
    assert report.holds
    assert (report.n, report.d, report.N) == (4, 4, 4)
    with pytest.raises(KeyError, match="H4"):
        report["H4"]
    frame = report.to_frame()
    assert list(frame["condition"]) == ["H1", "H2", "H3", "V1"] and bool(frame["holds"].all())
    # One failing condition makes the report fail.
    assert not check_identifiability(one_hot_rows(4, [[0, 1], [2], [3]]), eye(4)).holds


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _nan(A: torch.Tensor, i: int, j: int) -> torch.Tensor:
    A = A.clone()
    A[i, j] = float("nan")
    return A


H_OK = one_hot_rows(3, [[0], [1], [2]])
V_OK = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    "H, V, exc, match",
    [
        (_nan(H_OK, 1, 1), V_OK, ValueError, "H contains NaN"),
        (sp.csr_matrix(_nan(H_OK, 1, 1).numpy()), V_OK, ValueError, "H contains NaN"),
        (_nan(H_OK, 1, 1).to_sparse(), V_OK, ValueError, "H contains NaN"),
        (H_OK, _nan(V_OK, 0, 1), ValueError, "V contains NaN"),
        (-H_OK, V_OK, ValueError, "H has negative"),
        (sp.csr_matrix(-H_OK.numpy()), V_OK, ValueError, "H has negative"),
        (one_hot_rows(4, [[0], [3]]), V_OK, ValueError, "H has 4 columns but V has 3 rows"),
        (H_OK[0], V_OK, ValueError, "H must be 2-D"),
        (H_OK, V_OK[0], ValueError, "V must be 2-D"),
        (H_OK, torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64), ValueError, "V row 1 is zero"),
        (H_OK.tolist(), V_OK, TypeError, "H must be"),
        (H_OK, V_OK.tolist(), TypeError, "V must be"),
        (H_OK[:0], V_OK, ValueError, "H has no rows"),
    ],
)
def test_check_identifiability__bad_input_raises_naming_argument(H, V, exc, match):
    with pytest.raises(exc, match=match):
        check_identifiability(H, V)


def test_check_identifiability__bad_h2_ratio_raises():
    with pytest.raises(ValueError, match="h2_ratio"):
        check_identifiability(H_OK, V_OK, h2_ratio=0.0)
    with pytest.raises(ValueError, match="h2_ratio"):
        check_identifiability(H_OK, V_OK, h2_ratio=float("nan"))


def test_cosine_extremes__zero_row_raises():
    with pytest.raises(ValueError, match="V row 0 is zero"):
        cosine_extremes(torch.zeros(2, 3))


# --------------------------------------------------------------------------------------------
# scale: n = 65,536
# --------------------------------------------------------------------------------------------


def _gba_scale_sample():
    # docs/papers.md#gba-llm-experiments: n = 65,536 features, s = 3. N = 100k rows: each feature fires ~4.6 times.
    model = SparseFeatureModel(n_features=65_536, d=16, sparsity=3, seed=0, chunk_size=65_536, dtype=torch.float64)
    X, H = model.sample(100_000, gen(0), h_layout="sparse")
    return model, H


def test_check_identifiability__H_statistics_at_n_65536():
    # V1 at n = 65,536 is a 2.1e9-entry blockwise Gram (10-55 s on 2 CPU cores; covered by the slow
    # test below). Here precomputed cosines (0.5, -0.25) skip it so the H path runs at full scale
    # in < 1 s; cosine_extremes itself is checked against a brute-force Gram above.
    model, H = _gba_scale_sample()
    report = check_identifiability(H, model.features, cosines=(0.5, -0.25))
    counts = torch.bincount(H.coalesce().indices()[1], minlength=65_536)
    # H1: every row has exactly 3; ceil(ln 65536) = ceil(11.09) = 12.
    assert report["H1"].value == 3.0 and report["H1"].threshold == 12.0 and report["H1"].holds
    assert report["H1"].details["mean_support"] == 3.0
    # H2: Constant(1) coefficients and unit V: every active feature has mean 1; any never-active
    # feature (P = (1 - 3/65536)^100000 ~ 1%, so ~660 of them) makes H2 fail.
    n_dead = int((counts == 0).sum())
    assert n_dead > 0 and report["H2"].details["n_never_active"] == n_dead and not report["H2"].holds
    assert_close(report["H2"].details["median_mean"], 1.0)
    # H3: some pair of features each firing ~4.6 times co-occurs, so #both/#either >= 1/9 far above
    # 65536^-1/2 = 1/256: it fails, and the message flags the finite sample.
    h3 = report["H3"]
    assert_close(h3.threshold, 1 / 256)
    assert not h3.holds
    i, j = h3.details["pair"]
    assert h3.details["either"] == int(counts[i] + counts[j]) - h3.details["both"]
    assert_close(h3.value, h3.details["both"] / h3.details["either"])
    assert report["V1"].value == 0.5  # the given cosines went through


def test_check_identifiability__precomputed_cosines_give_the_same_report():
    model = SparseFeatureModel(n_features=200, d=24, sparsity=2, seed=3, dtype=torch.float64)
    X, H = model.sample(2_000, gen(3))
    plain = check_identifiability(H, model.features)
    given = check_identifiability(H, model.features, cosines=cosine_extremes(model.features))
    for name in plain:
        assert (plain[name].value, plain[name].threshold, plain[name].holds) == (given[name].value, given[name].threshold, given[name].holds)
    # and the argument is really used: other cosines give another V1 value
    assert check_identifiability(H, model.features, cosines=(0.1, -0.05))["V1"].value == 0.1


@pytest.mark.slow
def test_check_identifiability__full_report_at_n_65536():
    # Full report including the blockwise Gram over 65,536 features (takes 25-55 s on 2 cores).
    model, H = _gba_scale_sample()
    report = check_identifiability(H, model.features)
    assert report["H1"].value == 3.0 and report["H1"].holds
    # Gaussian unit features in R^16: coherence far above 1/(2*3-1) = 0.2; the max over 2.1e9
    # pairs is close to 1.
    assert 0.8 < report["V1"].value < 1.0 and not report["V1"].holds
    assert_close(report["V1"].threshold, 0.2)
    details = report["V1"].details
    assert report["V1"].value == max(abs(details["max_cos"]), abs(details["min_cos"]))
