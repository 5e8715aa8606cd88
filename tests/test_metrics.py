"""Tests of ``sae_theory.metrics`` (docs/papers.md#gba-metrics): FRR and MCS on planted and hand-made
dictionaries, chunked paths against dense brute force (two oracles), reconstruction metrics on
hand-made cases, and the streaming activation statistics against one-shot torch on the
concatenation. All theory tolerances are float64 (1e-12), including for float32 inputs, since
the metrics compute in float64."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import assert_close

from sae_theory import metrics
from sae_theory.metrics import reconstruction, recovery

F64 = torch.float64


def orthonormal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random orthonormal basis V (n, n), float64, rows are the features."""
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=F64, generator=generator))
    return q


def dense_best_cosine(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Brute-force oracle: the whole (m, k) cosine matrix, zero rows of B count as cosine 0."""
    A = A.to(F64)
    B = B.to(F64)
    a = A / A.norm(dim=1, keepdim=True)
    nb = B.norm(dim=1, keepdim=True)
    b = torch.where(nb > 0, B / nb.clamp_min(1e-300), torch.zeros_like(B))
    return (a @ b.T).max(dim=1).values.clamp(-1, 1)


# ---------------------------------------------------------------------------------------------
# FRR / best cosine
# ---------------------------------------------------------------------------------------------
def test_feature_recovery_rate__planted_permutation_is_one(cpu_generator):
    n = 16
    V = orthonormal(n, cpu_generator)
    perm = torch.randperm(n, generator=cpu_generator)
    scales = torch.rand(n, 1, dtype=F64, generator=cpu_generator) + 0.5  # norms do not matter
    extra = torch.randn(3 * n, n, dtype=F64, generator=cpu_generator)  # M = 4n, extra junk rows
    learned = torch.cat([extra[: n], scales * V[perm], extra[n:]])
    assert metrics.feature_recovery_rate(learned, V) == 1.0
    assert_close(metrics.best_cosine(learned, V), torch.ones(n, dtype=F64))


def test_feature_recovery_rate__one_sign_flip_gives_n_minus_one_over_n(cpu_generator):
    n = 16
    V = orthonormal(n, cpu_generator)
    learned = V[torch.randperm(n, generator=cpu_generator)].clone()
    learned[5] = -learned[5]  # cos -1 with its feature, 0 with the others -> best cosine 0
    assert metrics.feature_recovery_rate(learned, V) == (n - 1) / n
    best = metrics.best_cosine(learned, V)
    assert int((best < 0.5).sum()) == 1
    assert abs(float(best.min())) < 1e-12


def test_best_cosine__hand_made_2d():
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    learned = torch.tensor([[3.0, 4.0], [-1.0, 0.0]], dtype=F64)
    # t0 = (1,0):  cos with (3,4) = 3/5 = 0.6;      with (-1,0) = -1       -> 0.6
    # t1 = (0,1):  cos with (3,4) = 4/5 = 0.8;      with (-1,0) = 0        -> 0.8
    # t2 = (1,1):  cos with (3,4) = 7/(5 sqrt 2);   with (-1,0) = -1/sqrt2 -> 7/(5 sqrt 2) ~ 0.98995
    expected = torch.tensor([0.6, 0.8, 7 / (5 * math.sqrt(2))], dtype=F64)
    assert_close(metrics.best_cosine(learned, true), expected)
    # thresholds: 0.6 < 0.7 <= 0.8 < 0.9 <= 0.98995
    assert metrics.feature_recovery_rate(learned, true, tau=0.7) == 2 / 3
    assert metrics.feature_recovery_rate(learned, true, tau=0.9) == 1 / 3


def test_best_cosine__signed_not_absolute():
    true = torch.tensor([[-1.0, 0.0]], dtype=F64)
    learned = torch.tensor([[2.0, 0.0], [0.0, -1.0]], dtype=F64)
    # cos((-1,0), (2,0)) = -1 and cos((-1,0), (0,-1)) = 0: the signed max is 0, the |cos| max would be 1
    assert_close(metrics.best_cosine(learned, true), torch.tensor([0.0], dtype=F64))
    assert metrics.feature_recovery_rate(learned, true, tau=0.5) == 0.0


def test_best_cosine__dead_learned_rows_count_as_zero_not_nan():
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    learned = torch.tensor([[0.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], dtype=F64)
    # t0: cosines (0 dead, -1, 0 dead) -> 0;  t1: (0, 0, 0) -> 0
    best = metrics.best_cosine(learned, true)
    assert not bool(torch.isnan(best).any())
    assert_close(best, torch.zeros(2, dtype=F64))
    all_dead = torch.zeros(4, 2, dtype=torch.float32)
    assert_close(metrics.best_cosine(all_dead, true), torch.zeros(2, dtype=F64))
    assert metrics.feature_recovery_rate(all_dead, true) == 0.0


def test_best_cosine__returns_float64_on_cpu_for_float32_input(cpu_generator):
    true = torch.randn(5, 4, generator=cpu_generator)
    learned = torch.randn(7, 4, generator=cpu_generator)
    best = metrics.best_cosine(learned, true)
    assert best.dtype == F64 and best.device.type == "cpu" and best.shape == (5,)
    assert_close(best, dense_best_cosine(true, learned))


def test_best_cosine__small_chunks_match_dense(monkeypatch, cpu_generator):
    d = 4
    true = torch.randn(7, d, dtype=F64, generator=cpu_generator)
    learned = torch.randn(10, d, dtype=F64, generator=cpu_generator)
    learned[3] = 0.0  # a dead row inside a block
    dense = dense_best_cosine(true, learned)
    monkeypatch.setattr(recovery, "_CHUNK_ENTRIES", 12)
    assert recovery._block_rows(d) == 3  # 3 x 3 cosine blocks, uneven at the edges (7, 10 rows)
    assert_close(metrics.best_cosine(learned, true), dense)
    _, idx = recovery._max_cosine(
        true,
        recovery._inverse_row_norms("true", true, zero_rows="raise"),
        learned,
        recovery._inverse_row_norms("learned", learned, zero_rows="zero"),
    )
    t = true / true.norm(dim=1, keepdim=True)
    assert torch.equal(idx, (t @ learned.T / learned.norm(dim=1).clamp_min(1e-300)).argmax(dim=1))
    monkeypatch.setattr(recovery, "_CHUNK_ENTRIES", 1)  # one row at a time
    assert_close(metrics.best_cosine(learned, true), dense)
    assert_close(metrics.max_cosine_similarity(learned[:3], true), dense_best_cosine(learned[:3], true))


# ---------------------------------------------------------------------------------------------
# MCS
# ---------------------------------------------------------------------------------------------
def test_max_cosine_similarity__run_against_itself_is_one(cpu_generator):
    A = torch.randn(50, 8, generator=cpu_generator)
    assert_close(metrics.max_cosine_similarity(A, A), torch.ones(50, dtype=F64))
    assert_close(metrics.max_cosine_similarity(A, 3.0 * A.flip(0)), torch.ones(50, dtype=F64))


def test_max_cosine_similarity__hand_made_and_zero_rows():
    A = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=F64)
    B = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=F64)
    # a0 = (1,0): cos with (3,4) = 0.6, with the zero row 0 -> 0.6;  a1 = 0: every cosine 0 -> 0
    assert_close(metrics.max_cosine_similarity(A, B), torch.tensor([0.6, 0.0], dtype=F64))


def test_mcs_fraction__min_vs_mean_hand_made_three_runs():
    run = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    other1 = torch.tensor([[0.0, 2.0], [5.0, 0.0]], dtype=F64)  # MCS: r0 -> 1, r1 -> 1
    other2 = torch.tensor([[3.0, 4.0]], dtype=F64)  # MCS: r0 -> 3/5 = 0.6, r1 -> 4/5 = 0.8
    others = [other1, other2]
    # min over runs:  r0 = min(1, 0.6) = 0.6,       r1 = min(1, 0.8) = 0.8
    # mean over runs: r0 = (1 + 0.6)/2 = 0.8,      r1 = (1 + 0.8)/2 = 0.9
    assert metrics.mcs_fraction(run, others, 0.75, reduce="min") == 0.5  # r1 only
    assert metrics.mcs_fraction(run, others, 0.75, reduce="mean") == 1.0  # both
    assert metrics.mcs_fraction(run, others, 0.85, reduce="min") == 0.0
    assert metrics.mcs_fraction(run, others, 0.85, reduce="mean") == 0.5  # r1 (0.9)
    # select restricts the rows scored: r0 alone
    assert metrics.mcs_fraction(run, others, 0.75, select=torch.tensor([0]), reduce="min") == 0.0
    assert metrics.mcs_fraction(run, others, 0.75, select=[0], reduce="mean") == 1.0
    assert metrics.mcs_fraction(run, others, 0.75, select=torch.tensor([False, True])) == 1.0


def test_mcs_fraction__small_chunks_match_dense(monkeypatch, cpu_generator):
    run = torch.randn(9, 3, generator=cpu_generator)
    others = [torch.randn(5, 3, generator=cpu_generator), torch.randn(11, 3, generator=cpu_generator)]
    mcs = torch.stack([dense_best_cosine(run, o) for o in others])
    # a threshold halfway between two neighbouring values: a threshold equal to a value would
    # make the answer depend on the last bit of two differently ordered float64 sums
    ordered = mcs.amin(0).sort().values
    threshold = float(ordered[3:5].mean())
    expected = float((mcs.amin(0) >= threshold).to(F64).mean())
    assert metrics.mcs_fraction(run, others, threshold) == expected
    monkeypatch.setattr(recovery, "_CHUNK_ENTRIES", 4)
    assert metrics.mcs_fraction(run, others, threshold) == expected


def test_top_fraction__picks_highest_scores():
    scores = torch.tensor([0.1, 5.0, 3.0, 2.0, 4.0])
    # alpha = 0.4: k = round(0.4 * 5) = 2 -> scores 5 (index 1), 4 (index 4)
    idx = metrics.top_fraction(scores, 0.4)
    assert idx.dtype == torch.int64 and idx.tolist() == [1, 4]
    assert metrics.top_fraction(scores, 1e-6).tolist() == [1]  # at least one
    assert sorted(metrics.top_fraction(scores, 1.0).tolist()) == [0, 1, 2, 3, 4]
    # 0.3 * 10 = 3.0000000000000004 in floats: still 3 rows, not 4
    assert metrics.top_fraction(torch.arange(10.0), 0.3).tolist() == [9, 8, 7]


# ---------------------------------------------------------------------------------------------
# recovery: bad inputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.0, -0.1, 1.5, float("nan")])
def test_feature_recovery_rate__tau_outside_unit_interval_raises(tau):
    V = torch.eye(3, dtype=F64)
    with pytest.raises(ValueError, match="tau"):
        metrics.feature_recovery_rate(V, V, tau=tau)


def test_best_cosine__mismatched_d_raises_naming_both_shapes():
    with pytest.raises(ValueError, match=r"learned.*\(5, 3\).*true.*\(4, 2\)"):
        metrics.best_cosine(torch.zeros(5, 3), torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"A.*\(2, 3\).*B.*\(2, 4\)"):
        metrics.max_cosine_similarity(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"others\[1\].*\(2, 4\)"):
        metrics.mcs_fraction(torch.ones(2, 3), [torch.ones(2, 3), torch.ones(2, 4)], 0.5)


@pytest.mark.parametrize("which", ["learned", "true"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_best_cosine__nan_or_inf_raises_naming_argument(which, bad):
    learned = torch.eye(3, dtype=F64)
    true = torch.eye(3, dtype=F64)
    {"learned": learned, "true": true}[which][1, 2] = bad
    with pytest.raises(ValueError, match=which):
        metrics.best_cosine(learned, true)


def test_best_cosine__zero_true_row_raises():
    true = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"true has 1 zero row"):
        metrics.best_cosine(torch.eye(2), true)


def test_best_cosine__not_2d_or_not_float_raises_naming_argument():
    with pytest.raises(ValueError, match="learned must be 2-D"):
        metrics.best_cosine(torch.ones(3), torch.eye(3))
    with pytest.raises(TypeError, match="true must have a floating dtype"):
        metrics.best_cosine(torch.eye(3), torch.eye(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="true must have at least one row"):
        metrics.best_cosine(torch.eye(3), torch.ones(0, 3))


def test_mcs_fraction__bad_arguments_raise_naming_them():
    run = torch.eye(3)
    with pytest.raises(ValueError, match="reduce"):
        metrics.mcs_fraction(run, [run], 0.5, reduce="max")
    with pytest.raises(ValueError, match="threshold"):
        metrics.mcs_fraction(run, [run], 1.2)
    with pytest.raises(ValueError, match="others"):
        metrics.mcs_fraction(run, [], 0.5)
    with pytest.raises(TypeError, match="others"):
        metrics.mcs_fraction(run, run, 0.5)
    with pytest.raises(ValueError, match="select"):
        metrics.mcs_fraction(run, [run], 0.5, select=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="select"):
        metrics.mcs_fraction(run, [run], 0.5, select=[])
    with pytest.raises(ValueError, match="select"):
        metrics.mcs_fraction(run, [run], 0.5, select=torch.tensor([True, False]))


def test_top_fraction__bad_arguments_raise_naming_them():
    with pytest.raises(ValueError, match="alpha"):
        metrics.top_fraction(torch.ones(4), 0.0)
    with pytest.raises(ValueError, match="scores"):
        metrics.top_fraction(torch.ones(2, 2), 0.5)
    with pytest.raises(ValueError, match="scores"):
        metrics.top_fraction(torch.tensor([1.0, float("nan")]), 0.5)


# ---------------------------------------------------------------------------------------------
# reconstruction
# ---------------------------------------------------------------------------------------------
def test_fvu__zero_for_perfect_and_one_for_mean(cpu_generator):
    x = torch.randn(64, 5, dtype=F64, generator=cpu_generator) * 3 + 1
    assert metrics.fvu(x, x.clone()) == 0.0
    assert_close(metrics.fvu(x, x.mean(dim=0, keepdim=True).expand_as(x)), 1.0)


def test_fvu__and_mse_hand_made():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=F64)
    x_hat = torch.tensor([[0.0, 0.0], [2.0, 1.0]], dtype=F64)
    # mean_x = (1, 0); denominator = ||(-1,0)||^2 + ||(1,0)||^2 = 2; numerator = 0 + 1 = 1
    assert metrics.fvu(x, x_hat) == 0.5
    # mse = mean over rows of ||x - x_hat||^2 = (0 + 1)/2 = 0.5 (no 1/2 factor, not divided by d)
    assert metrics.mse(x, x_hat) == 0.5


def test_fvu__constant_data_raises():
    x = torch.full((4, 3), 0.1)
    with pytest.raises(ValueError, match="fvu is undefined"):
        metrics.fvu(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="fvu is undefined"):
        metrics.fvu(torch.ones(1, 3), torch.zeros(1, 3))  # B = 1 is constant too


def test_fvu__shape_mismatch_raises_naming_both():
    with pytest.raises(ValueError, match=r"x of shape \(4, 3\).*x_hat of shape \(4, 2\)"):
        metrics.fvu(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"x of shape \(4, 3\).*x_hat of shape \(5, 3\)"):
        metrics.mse(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="x_hat"):
        metrics.mse(torch.ones(2, 2), torch.tensor([[1.0, float("nan")], [0.0, 0.0]]))


def test_fvu__small_chunks_match_dense(monkeypatch, cpu_generator):
    x = torch.randn(23, 4, dtype=F64, generator=cpu_generator)
    x_hat = x + 0.1 * torch.randn(23, 4, dtype=F64, generator=cpu_generator)
    dense_fvu = float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    dense_mse = float(((x - x_hat) ** 2).sum(1).mean())
    monkeypatch.setattr(reconstruction, "_CHUNK_ENTRIES", 9)  # 2 rows per block
    assert_close(metrics.fvu(x, x_hat), dense_fvu)
    assert_close(metrics.mse(x, x_hat), dense_mse)


def test_l0__hand_made_codes():
    codes = torch.tensor([[0.0, 1.5, 0.0, -2.0], [0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    # non-zeros per row: 2, 0, 1 -> L0 = 3/3 = 1.0; fraction active = 1/4
    assert metrics.l0(codes) == 1.0
    assert metrics.fraction_active(codes) == 0.25


def test_l0__small_chunks_match_dense(monkeypatch, cpu_generator):
    codes = torch.relu(torch.randn(17, 6, generator=cpu_generator))
    expected = float((codes != 0).sum()) / 17
    monkeypatch.setattr(reconstruction, "_CHUNK_ENTRIES", 7)  # 1 row per block
    assert metrics.l0(codes) == expected


def test_l0__bad_codes_raise_naming_codes():
    with pytest.raises(ValueError, match="codes must be 2-D"):
        metrics.l0(torch.ones(4))
    with pytest.raises(ValueError, match="codes"):
        metrics.l0(torch.tensor([[1.0, float("nan")]]))
    with pytest.raises(ValueError, match="codes has no rows"):
        metrics.l0(torch.ones(0, 4))
    with pytest.raises(ValueError, match="codes must be 2-D"):
        metrics.z_score(torch.ones(4))


# ---------------------------------------------------------------------------------------------
# activation statistics
# ---------------------------------------------------------------------------------------------
def make_codes(dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """(61, 6) codes: neuron 0 dead (always 0), neuron 1 constant 0.7, neurons 2-5 ReLU'd and
    scaled Gaussians with different means, so means, stds and Z-scores differ."""
    B = 61
    codes = torch.relu(torch.randn(B, 6, dtype=F64, generator=generator) + torch.tensor([0, 0, -1.0, 0, 1, 3]))
    codes = codes * torch.tensor([1, 1, 2.0, 0.5, 1, 10])
    codes[:, 0] = 0.0
    codes[:, 1] = 0.7
    return codes.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_activation_stats__batches_match_one_shot_on_concatenation(dtype, cpu_generator, monkeypatch):
    codes = make_codes(dtype, cpu_generator)
    monkeypatch.setattr(reconstruction, "_CHUNK_ENTRIES", 24)  # 4-row blocks inside each batch too
    stats = metrics.ActivationStats()
    for start, stop in [(0, 7), (7, 20), (20, 21), (21, 21), (21, 61)]:  # includes an empty batch
        stats.update(codes[start:stop])
    assert stats.count == 61 and stats.n_neurons == 6
    # oracle 1: plain torch on the concatenation, float64 (the float32 values are exact in float64)
    c = codes.to(F64)
    mean, std, mx = c.mean(0), c.std(0, correction=0), c.amax(0)
    assert_close(stats.frequency, (c > 0).to(F64).mean(0))
    assert_close(stats.mean, mean)
    assert_close(stats.std, std)
    assert_close(stats.max, mx)
    varying = slice(2, 6)  # neurons 0 and 1 are constant: exactly 0 there, see the next test
    assert_close(stats.z_score[varying], ((mx - mean) / (std + 1e-8))[varying])
    assert stats.z_score[:2].tolist() == [0.0, 0.0]
    assert stats.dead_fraction() == 1 / 6
    # oracle 2: the one-shot functions on the concatenation
    assert_close(stats.frequency, metrics.activation_frequency(codes))
    assert_close(stats.max, metrics.max_activation(codes))
    assert_close(stats.z_score, metrics.z_score(codes))
    assert stats.dead_fraction() == metrics.dead_fraction(codes)
    for v in (stats.frequency, stats.mean, stats.std, stats.max, stats.z_score):
        assert v.dtype == F64 and v.device.type == "cpu" and v.shape == (6,)


def test_activation_stats__constant_neuron_z_score_is_zero_not_nan():
    # 0.1 is not exactly summable: 0.1 + 0.1 + 0.1 = 0.30000000000000004, so a naive mean is off by
    # an ulp and a naive z-score would be ~1e-9 (or NaN without the 1e-8); ours is exactly 0
    stats = metrics.ActivationStats()
    stats.update(torch.full((3, 2), 0.1, dtype=F64))
    stats.update(torch.full((4, 2), 0.1, dtype=F64))
    assert stats.mean.tolist() == [0.1, 0.1]
    assert stats.std.tolist() == [0.0, 0.0]
    assert stats.z_score.tolist() == [0.0, 0.0]
    assert metrics.z_score(torch.zeros(5, 3)).tolist() == [0.0, 0.0, 0.0]


def test_activation_stats__hand_made_values():
    codes = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 3.0]], dtype=F64)
    # neuron 1: values 1, 0, 0, 3 -> frequency 2/4, mean 1, population var (0 + 1 + 1 + 4)/4 = 1.5,
    # max 3, z = (3 - 1)/(sqrt 1.5 + 1e-8)
    stats = metrics.ActivationStats().update(codes)
    assert stats.frequency.tolist() == [0.0, 0.5]
    assert_close(stats.std, torch.tensor([0.0, math.sqrt(1.5)], dtype=F64))
    assert_close(stats.z_score, torch.tensor([0.0, 2 / (math.sqrt(1.5) + 1e-8)], dtype=F64))
    # dead: frequency <= eps -> eps = 0: neuron 0 only; eps = 0.5: both
    assert stats.dead_fraction(0.0) == 0.5
    assert stats.dead_fraction(0.5) == 1.0


def test_activation_stats__empty_raises_on_access():
    stats = metrics.ActivationStats()
    assert stats.count == 0
    for name in ("frequency", "mean", "std", "max", "z_score"):
        with pytest.raises(RuntimeError, match="ActivationStats is empty"):
            getattr(stats, name)
    with pytest.raises(RuntimeError, match="ActivationStats is empty"):
        stats.dead_fraction()
    stats.update(torch.ones(0, 3))  # an empty batch fixes M but sees no token
    with pytest.raises(RuntimeError, match="ActivationStats is empty"):
        stats.mean


def test_activation_stats__bad_batches_raise_naming_codes():
    stats = metrics.ActivationStats().update(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"codes must have M = 3"):
        stats.update(torch.ones(2, 4))
    with pytest.raises(ValueError, match="codes"):
        stats.update(torch.tensor([[0.0, float("inf"), 1.0]]))
    # a rejected batch changes nothing
    assert stats.count == 2 and stats.mean.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="eps"):
        stats.dead_fraction(1.0)
    with pytest.raises(ValueError, match="codes has no rows"):
        metrics.activation_frequency(torch.ones(0, 3))


# ---------------------------------------------------------------------------------------------
# device
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics__cuda_inputs_match_cpu(cpu_generator):
    learned = torch.randn(40, 6, generator=cpu_generator)
    true = torch.randn(9, 6, generator=cpu_generator)
    codes = torch.relu(torch.randn(30, 5, generator=cpu_generator))
    expected = metrics.best_cosine(learned, true)
    got = metrics.best_cosine(learned.cuda(), true)  # true stays on CPU, moved to learned's device
    assert got.device.type == "cpu"
    assert_close(got, expected)
    assert_close(metrics.max_cosine_similarity(learned.cuda(), learned.cuda()), torch.ones(40, dtype=F64))
    assert_close(metrics.ActivationStats().update(codes.cuda()).z_score, metrics.z_score(codes))
    assert_close(metrics.fvu(codes.cuda(), codes.cuda() * 0.5), metrics.fvu(codes, codes * 0.5))


def test_metric_settled__compares_the_last_two_readings():
    from sae_theory.metrics import metric_settled

    assert metric_settled([0.0, 0.45, 0.97, 0.98])  # settled late: only the last two count
    assert not metric_settled([0.9, 0.9, 0.5, 0.6])
    assert metric_settled([0.25, 0.27]) and metric_settled([0.27, 0.25]) and not metric_settled([0.25, 0.29])
    assert metric_settled([0.5, 0.6], atol=0.1) and not metric_settled([0.5, 0.61], atol=0.1)
    with pytest.raises(ValueError, match="at least two"):
        metric_settled([0.5])
    with pytest.raises(ValueError, match="NaN/Inf"):
        metric_settled([0.5, float("nan")])
    with pytest.raises(ValueError, match="atol"):
        metric_settled([0.5, 0.5], atol=-1)


# ---------------------------------------------------------------------------------------------
# decoder_mcc (SynthSAEBench's decoder-cosine MCC)
# ---------------------------------------------------------------------------------------------
def test_decoder_mcc__permuted_sign_flipped_scaled_copy_is_one(cpu_generator):
    true = torch.randn(12, 7, generator=cpu_generator, dtype=F64)
    perm = torch.randperm(12, generator=cpu_generator)
    signs = torch.where(torch.rand(12, generator=cpu_generator, dtype=F64) < 0.5, -1.0, 1.0)
    learned = (true * signs[:, None] * 3.0)[perm]
    assert metrics.decoder_mcc(learned, true) == pytest.approx(1.0, abs=1e-12)


def test_decoder_mcc__orthogonal_sets_give_zero():
    eye = torch.eye(4, dtype=F64)
    assert metrics.decoder_mcc(eye[:2], eye[2:]) == 0.0
    assert metrics.decoder_mcc(torch.zeros(3, 4, dtype=F64), eye[:2]) == 0.0  # dead learned rows: |cos| 0


def test_decoder_mcc__hand_computed_2x2_is_a_matching_not_a_best_match():
    # true e1, e2 in R^3; learned l0 = (0.6, 0.6, sqrt(0.28)) (unit), l1 = (0.5, 0, sqrt(0.75)) (unit)
    # |cos|:  e1: l0 0.6, l1 0.5;   e2: l0 0.6, l1 0.0
    # both true directions prefer l0 (best-match mean 0.6), but one to one:
    # (e1-l0, e2-l1) = 0.6 + 0 = 0.6;  (e1-l1, e2-l0) = 0.5 + 0.6 = 1.1  ->  MCC = 1.1 / 2 = 0.55
    true = torch.eye(3, dtype=F64)[:2]
    learned = torch.tensor([[0.6, 0.6, math.sqrt(0.28)], [0.5, 0.0, math.sqrt(0.75)]], dtype=F64)
    assert metrics.decoder_mcc(learned, true) == pytest.approx(0.55, abs=1e-12)
    assert float(metrics.best_cosine(learned, true).mean()) == pytest.approx(0.6, abs=1e-12)


def test_decoder_mcc__extra_learned_ignored_missing_learned_count_zero():
    eye = torch.eye(3, dtype=F64)
    learned = torch.cat([eye, torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)])  # 4 learned, 3 true: the extra one is left over
    assert metrics.decoder_mcc(learned, eye) == pytest.approx(1.0, abs=1e-12)
    assert metrics.decoder_mcc(eye[:1], eye[:2]) == pytest.approx(0.5, abs=1e-12)  # 1 learned, 2 true: (1 + 0) / 2


def test_decoder_mcc__matched_reading_divides_by_the_pairs_as_sae_lens_does():
    """SynthSAEBench's MCC (SAELens ``mean_correlation_coefficient``: Hungarian on 1 - |cos|, the
    mean of the matched |cos|) by hand: 2 learned directions, 3 true ones."""
    true = torch.eye(3, dtype=F64)
    learned = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]], dtype=F64)
    # the matching: learned 0 -> true 0 (|cos| 1), learned 1 -> true 2 (0.8); true 1 is left over
    assert metrics.decoder_mcc(learned, true, mean_over="matched") == pytest.approx((1.0 + 0.8) / 2, abs=1e-12)
    assert metrics.decoder_mcc(learned, true) == pytest.approx((1.0 + 0.8) / 3, abs=1e-12)
    # more learned than true: the two readings agree
    more = torch.cat([true, learned])
    assert metrics.decoder_mcc(more, true, mean_over="matched") == metrics.decoder_mcc(more, true) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="mean_over"):
        metrics.decoder_mcc(learned, true, mean_over="pairs")


def test_decoder_mcc__small_blocks_match_dense(monkeypatch, cpu_generator):
    learned = torch.randn(9, 5, generator=cpu_generator)
    true = torch.randn(6, 5, generator=cpu_generator)
    expected = metrics.decoder_mcc(learned, true)
    monkeypatch.setattr(recovery, "_CHUNK_ENTRIES", 4)
    assert metrics.decoder_mcc(learned, true) == pytest.approx(expected, abs=1e-12)


def test_decoder_mcc__bad_inputs_raise_naming_the_argument():
    good = torch.eye(3)
    with pytest.raises(ValueError, match=r"learned and true .*\(3, 3\).*\(3, 2\)"):
        metrics.decoder_mcc(good, good[:, :2])
    with pytest.raises(ValueError, match="learned contains NaN"):
        metrics.decoder_mcc(torch.tensor([[float("nan"), 0.0, 0.0]]), good)
    with pytest.raises(ValueError, match="true contains NaN"):
        metrics.decoder_mcc(good, torch.tensor([[float("inf"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="true has 1 zero row"):
        metrics.decoder_mcc(good, torch.zeros(1, 3))
    with pytest.raises(TypeError, match="learned must be a torch.Tensor"):
        metrics.decoder_mcc([[1.0]], good)
    with pytest.raises(ValueError, match="true must be 2-D"):
        metrics.decoder_mcc(good, torch.ones(3))
    with pytest.raises(TypeError, match="learned must have a floating dtype"):
        metrics.decoder_mcc(torch.eye(3, dtype=torch.int64), good)


def test_modality_score__synthetic_two_modality_codes():
    """Latent 0 fires on images only, 1 on text only, 2 equally on both (per input), 3 never; with
    5 captions per image the default weight (image/text input ratio) and the paper's 1/5 agree."""
    from sae_theory.metrics import modality_score

    n_img, n_txt = 20, 100
    is_image = torch.cat([torch.ones(n_img, dtype=torch.bool), torch.zeros(n_txt, dtype=torch.bool)])
    codes = torch.zeros(n_img + n_txt, 4)
    codes[:n_img, 0] = 2.0
    codes[n_img:, 1] = 1.5
    codes[:, 2] = 0.7
    s = modality_score(codes, is_image)
    assert s[0] == 1.0 and s[1] == 0.0 and s[2] == pytest.approx(0.5, abs=1e-12) and torch.isnan(s[3])
    torch.testing.assert_close(modality_score(codes, is_image, text_weight=0.2), s, equal_nan=True)
    # without the correction the shared latent looks text-heavy: 20 / (20 + 100)
    assert modality_score(codes, is_image, text_weight=1.0)[2] == pytest.approx(20 / 120)
    for bad, match in ((codes[:, 0], "2-D"), (codes.masked_fill(codes > 1.9, float("nan")), "NaN")):
        with pytest.raises(ValueError, match=match):
            modality_score(bad, is_image)
    with pytest.raises(ValueError, match="both modalities"):
        modality_score(codes, torch.ones(n_img + n_txt, dtype=torch.bool))
    with pytest.raises(ValueError, match="is_image"):
        modality_score(codes, is_image.float())
    with pytest.raises(ValueError, match="text_weight"):
        modality_score(codes, is_image, text_weight=0.0)


def test_unit_rows__unit_norm_rows_zero_rows_stay_zero_dtype_kept():
    X = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=torch.float32)
    U = metrics.unit_rows(X)
    assert U.dtype == torch.float32 and torch.equal(U[1], torch.zeros(2))
    assert torch.allclose(U[[0, 2]].norm(dim=1), torch.ones(2)) and torch.equal(U[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(X[0], torch.tensor([3.0, 4.0]))  # a new tensor: the input is untouched
