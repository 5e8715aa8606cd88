"""Tests of (Group) Bias Adaptation, sae_theory/training/bias_adaptation.py (docs/papers.md#gba-algorithms):
Algorithm 2 on hand-made statistics (through ``bias_update`` and through the hook), the vectorised
update against the per-neuron oracle on many random cases, targets and groups, the hook's
buffering and state, config validation, and a planted recovery run with a control that fails.

Hand cases are float64, with the arithmetic in the comments."""

from __future__ import annotations

import io
import math
import random
from types import SimpleNamespace

import pytest
import torch

from _helpers import assert_close
from sae_theory.data import SparseFeatureModel
from sae_theory.metrics import feature_recovery_rate
from sae_theory.models import TiedSAE
from sae_theory.training import (
    GBAConfig,
    GroupBiasAdaptation,
    TrainConfig,
    bias_update,
    bias_update_reference,
    group_assignment,
    target_frequencies,
    train,
)
from sae_theory.training.bias_adaptation import quantile_bias, quantile_bias_reference

F64 = torch.float64




def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def out_of(pre_acts) -> SimpleNamespace:
    """What the trainer hands a hook, reduced to what bias adaptation reads."""
    return SimpleNamespace(pre_acts=t64(pre_acts))


def tiny_sae(b_enc, d: int = 2) -> TiedSAE:
    sae = TiedSAE(d=d, n_latents=len(b_enc), dtype=F64)
    with torch.no_grad():
        sae.b_enc.copy_(t64(b_enc))
    return sae


# ---------------------------------------------------------------------------------------------
# Algorithm 2 by hand
# ---------------------------------------------------------------------------------------------
# The shared hand case: M = 6 neurons, K = 2 contiguous groups {0, 1, 2}, {3, 4, 5} with targets
# p = [0.5, 0.25]; eps = 0.2, gamma_minus = 0.5, gamma_plus = 0.25; 4 tokens.
HAND_CFG = GBAConfig(n_groups=2, htf=0.5, ltf=0.25, gamma_minus=0.5, gamma_plus=0.25, dead_eps=0.2, buffer_size=4)
HAND_B = [-0.2, -0.5, -0.3, -0.1, -0.4, -0.9]
#               n0     n1    n2    n3    n4    n5
HAND_PRE = [
    [0.8, -0.3, 0.4, 0.2, -1.0, 0.6],
    [0.4, -0.2, -0.1, -0.1, -1.0, 0.3],
    [0.2, -0.5, -0.2, -0.1, -1.0, -0.2],
    [-0.1, -0.1, 0.1, -0.1, -1.0, -0.2],
]
# q = [3/4, 0, 2/4, 1/4, 0, 2/4]; r = [0.8, 0, 0.4, 0.2, 0, 0.6]
# group 0 peaks [0.8, 0.0, 0.4] -> r̄_0 = (0.8 + 0.4) / 2 = 0.6 (the zero peak is not counted)
# group 1 peaks [0.2, 0.0, 0.6] -> r̄_1 = (0.2 + 0.6) / 2 = 0.4
# n0: q = 0.75 > 0.5            -> b = -0.2 - 0.5 * 0.8 = -0.6
# n1: q = 0 < eps (dead)        -> b = -0.5 + 0.25 * 0.6 = -0.35
# n2: q = 0.5 == p_0, not above -> unchanged -0.3
# n3: q = 0.25 == p_1           -> unchanged -0.1
# n4: dead                      -> b = -0.4 + 0.25 * 0.4 = -0.3
# n5: q = 0.5 > 0.25            -> b = -0.9 - 0.5 * 0.6 = -1.2, clamped to -1
HAND_Q = [0.75, 0.0, 0.5, 0.25, 0.0, 0.5]
HAND_R = [0.8, 0.0, 0.4, 0.2, 0.0, 0.6]
HAND_NEW_B = [-0.6, -0.35, -0.3, -0.1, -0.3, -1.0]


def _hand_update(b, q, r, groups, targets, gm, gp, eps):
    new = bias_update(t64(b), t64(q), t64(r), torch.tensor(groups), t64(targets), gm, gp, eps)
    ref = bias_update_reference(b, q, r, groups, targets, gm, gp, eps)
    assert_close(new, ref)  # the two implementations agree on every hand case
    return new


def test_bias_update__hand_case_with_two_groups():
    new = _hand_update(HAND_B, HAND_Q, HAND_R, [0, 0, 0, 1, 1, 1], [0.5, 0.25], 0.5, 0.25, 0.2)
    assert_close(new, HAND_NEW_B)
    assert new.dtype == F64


def test_bias_update__neuron_above_target_drops_by_gamma_minus_times_its_peak():
    # q = 0.3 > p = 0.1: b = -0.25 - 0.125 * 0.8 = -0.35
    new = _hand_update([-0.25], [0.3], [0.8], [0], [0.1], 0.125, 0.5, 0.01)
    assert_close(new, [-0.35])


def test_bias_update__dead_neuron_rises_by_gamma_plus_times_mean_positive_group_peak():
    # group peaks [0.0, 0.4, 0.8]: r̄ = (0.4 + 0.8) / 2 = 0.6, not (0 + 0.4 + 0.8) / 3 = 0.4
    # neuron 0 is dead (q = 0 < eps = 0.01): b = -0.5 + 0.25 * 0.6 = -0.35
    # neurons 1, 2 fire at q = 0.05, inside [eps, p = 0.1]: unchanged
    new = _hand_update([-0.5, -0.2, -0.7], [0.0, 0.05, 0.05], [0.0, 0.4, 0.8], [0, 0, 0], [0.1], 0.5, 0.25, 0.01)
    assert_close(new, [-0.35, -0.2, -0.7])


def test_bias_update__group_peak_mean_ignores_other_groups():
    # group 0 peaks [0, 0.2] -> r̄_0 = 0.2; group 1 peaks [1.0, 0.6] -> r̄_1 = 0.8 (unused)
    # neuron 0 dead: b = -0.5 + 1.0 * 0.2 = -0.3 (a global mean would give -0.5 + 0.6 = +0.1 -> 0)
    new = _hand_update([-0.5, -0.1, -0.1, -0.1], [0.0, 0.05, 0.05, 0.05], [0.0, 0.2, 1.0, 0.6], [0, 0, 1, 1], [0.1, 0.1], 1.0, 1.0, 0.01)
    assert_close(new, [-0.3, -0.1, -0.1, -0.1])


@pytest.mark.parametrize("q", [0.01, 0.05, 0.1])
def test_bias_update__neuron_between_eps_and_target_is_unchanged(q):
    # eps = 0.01 <= q <= p = 0.1, including both ends exactly
    new = _hand_update([-0.4, -0.3], [q, 0.5], [0.7, 0.9], [0, 0], [0.1], 0.5, 0.5, 0.01)
    assert new[0] == -0.4  # untouched, bit for bit
    assert_close(new[1], -0.75)  # the other neuron (q = 0.5 > 0.1) moves: -0.3 - 0.5 * 0.9


def test_bias_update__clamps_to_minus_one_and_zero():
    # neuron 0: q = 0.9 > 0.5: -0.95 - 1.0 * 0.2 = -1.15 -> -1
    # neuron 1: dead, r̄ = (0.2 + 0.7) / 2 = 0.45: -0.05 + 1.0 * 0.45 = 0.4 -> 0
    # neuron 2: q = 0.3 in [eps, p]: unchanged
    new = _hand_update([-0.95, -0.05, -0.5], [0.9, 0.0, 0.3], [0.2, 0.0, 0.7], [0, 0, 0], [0.5], 1.0, 1.0, 0.01)
    assert_close(new, [-1.0, 0.0, -0.5])
    # already at the bounds: stays there
    new = _hand_update([-1.0, 0.0], [0.9, 0.0], [0.2, 0.0], [0, 0], [0.5], 1.0, 1.0, 0.01)
    assert_close(new, [-1.0, 0.0])


def test_bias_update__all_dead_group_uses_the_global_mean_positive_peak():
    # group 0 = {0, 1} has no positive peak (r̄_0 = 0/0); the global positive peaks [0.2, 0.6]
    # give r̄ = 0.4: b0 = -0.5 + 0.5 * 0.4 = -0.3, b1 = min(-0.2 + 0.2, 0) = 0
    # group 1 = {2, 3}: q = 0.3 in [eps = 0.1, p = 0.5]: unchanged
    new = _hand_update([-0.5, -0.2, -0.1, -0.1], [0.0, 0.0, 0.3, 0.3], [0.0, 0.0, 0.2, 0.6], [0, 0, 1, 1], [0.5, 0.5], 0.5, 0.5, 0.1)
    assert bool(torch.isfinite(new).all())
    assert_close(new, [-0.3, 0.0, -0.1, -0.1])


def test_bias_update__all_dead_network_leaves_b_unchanged_without_nan():
    b = [-0.5, -0.2, 0.0, -1.0]
    new = _hand_update(b, [0.0] * 4, [0.0] * 4, [0, 0, 1, 1], [0.5, 0.1], 0.5, 0.5, 0.01)
    assert bool(torch.isfinite(new).all())
    assert torch.equal(new, t64(b))


def test_bias_update__keeps_b_dtype():
    b = torch.tensor([-0.5, -0.2], dtype=torch.float32)
    new = bias_update(b, t64([0.9, 0.0]), t64([0.5, 0.0]), torch.tensor([0, 0]), t64([0.5]), 0.5, 0.5, 0.01)
    assert new.dtype == torch.float32
    assert_close(new, [-0.75, 0.0], torch.float32)  # -0.5 - 0.25; -0.2 + 0.5 * 0.5 -> 0


def _random_case(seed: int):
    """A random Algorithm-2 input with the edge cases mixed in: zero peaks, q exactly at p and at
    eps, b at the clamps, empty and all-dead groups, contiguous or random groups."""
    rng = random.Random(seed)
    M = rng.randint(1, 40)
    K = rng.randint(1, min(M, 6))
    if rng.random() < 0.5:
        groups = [m * K // M for m in range(M)]
    else:
        groups = [rng.randrange(K) for _ in range(M)]  # may leave a group empty
    targets = sorted((rng.uniform(0.02, 0.6) for _ in range(K)), reverse=True)
    eps = rng.uniform(0.0, min(targets))
    all_dead = rng.random() < 0.1
    q, r, b = [], [], []
    for m in range(M):
        p = targets[groups[m]]
        q.append(0.0 if all_dead else rng.choice([0.0, p, eps, rng.uniform(0, 1), rng.uniform(0, eps), rng.uniform(eps, p)]))
        r.append(0.0 if all_dead or rng.random() < 0.3 else rng.uniform(0.0, 1.5))
        b.append(rng.choice([-1.0, 0.0, rng.uniform(-1.0, 0.0), rng.uniform(-1.0, 0.0)]))
    gm, gp = rng.uniform(1e-3, 1.0), rng.uniform(1e-3, 1.0)
    return b, q, r, groups, targets, gm, gp, eps


@pytest.mark.parametrize("seed", range(200))
def test_bias_update__vectorised_equals_per_neuron_reference(seed):
    b, q, r, groups, targets, gm, gp, eps = _random_case(seed)
    new = bias_update(t64(b), t64(q), t64(r), torch.tensor(groups), t64(targets), gm, gp, eps)
    ref = bias_update_reference(b, q, r, groups, targets, gm, gp, eps)
    assert new.shape == (len(b),)
    assert_close(new, ref)
    assert bool(torch.isfinite(new).all())
    assert bool((new >= -1).all() and (new <= 0).all())


# ---------------------------------------------------------------------------------------------
# reading: two-sided control (GBAConfig.raise_below_target)
# ---------------------------------------------------------------------------------------------
def _two_sided(b, q, r, groups, targets, gm, gp, eps):
    new = bias_update(t64(b), t64(q), t64(r), torch.tensor(groups), t64(targets), gm, gp, eps, raise_below_target=True)
    ref = bias_update_reference(b, q, r, groups, targets, gm, gp, eps, raise_below_target=True)
    assert_close(new, ref)
    return new


def test_two_sided__hand_case():
    # one group, p = 0.5, eps = 0.1, gamma_minus = 0.5, gamma_plus = 0.25; peaks r = [0.4, 0, 0.8, 0.6, 0.8]
    # r̄ = (0.4 + 0.8 + 0.6 + 0.8) / 4 = 0.65
    # n0: q = 0.3 in [eps, p): raised by its own peak, -0.5 + 0.25 * 0.4 = -0.4
    # n1: q = 0 dead: raised by the group mean, -0.5 + 0.25 * 0.65 = -0.3375
    # n2: q = 0.5 == p: unchanged -0.2
    # n3: q = 0.7 > p: lowered, -0.2 - 0.5 * 0.6 = -0.5
    # n4: q = 0.1 == eps, below target: -0.1 + 0.25 * 0.8 = 0.1, clamped to 0
    new = _two_sided([-0.5, -0.5, -0.2, -0.2, -0.1], [0.3, 0.0, 0.5, 0.7, 0.1], [0.4, 0.0, 0.8, 0.6, 0.8], [0] * 5, [0.5], 0.5, 0.25, 0.1)
    assert_close(new, [-0.4, -0.3375, -0.2, -0.5, 0.0])


def test_two_sided__off_is_the_printed_algorithm():
    # the same neurons with the reading off: n0 and n4 (between eps and p) stay where they are
    new = bias_update(t64([-0.5, -0.5, -0.2, -0.2, -0.1]), t64([0.3, 0.0, 0.5, 0.7, 0.1]), t64([0.4, 0.0, 0.8, 0.6, 0.8]),
                      torch.tensor([0] * 5), t64([0.5]), 0.5, 0.25, 0.1)
    assert_close(new, [-0.5, -0.3375, -0.2, -0.5, -0.1])


def test_two_sided__all_dead_network_still_leaves_b_unchanged():
    b = [-0.5, -0.2]
    new = _two_sided(b, [0.0, 0.0], [0.0, 0.0], [0, 0], [0.5], 0.5, 0.5, 0.01)
    assert torch.equal(new, t64(b))


@pytest.mark.parametrize("seed", range(100))
def test_two_sided__vectorised_equals_per_neuron_reference(seed):
    b, q, r, groups, targets, gm, gp, eps = _random_case(seed)
    new = _two_sided(b, q, r, groups, targets, gm, gp, eps)
    assert bool(torch.isfinite(new).all())
    assert bool((new >= -1).all() and (new <= 0).all())


def test_hook__two_sided_reading_reaches_the_update():
    # one neuron, p = 0.5 (BA), eps = 0.1, buffer 4: fires on 1 of 4 tokens (q = 0.25 in [eps, p)),
    # peak 0.4: b = -0.3 + 0.5 * 0.4 = -0.1 with the reading, unchanged without it
    for two_sided, expected in ((True, -0.1), (False, -0.3)):
        cfg = GBAConfig.bias_adaptation(0.5, gamma_plus=0.5, dead_eps=0.1, buffer_size=4, raise_below_target=two_sided)
        sae = tiny_sae([-0.3])
        GroupBiasAdaptation(cfg)(sae, 1, out_of([[0.4], [-0.1], [-0.2], [-0.3]]))
        assert_close(sae.b_enc, [expected])


# ---------------------------------------------------------------------------------------------
# reading: bias initialised at the target frequency (GBAConfig.bias_init = "target_quantile")
# ---------------------------------------------------------------------------------------------
def test_quantile_bias__hand_case():
    # B = 5 tokens; column 0 sorted = [0.1, 0.2, 0.3, 0.4, 0.5]
    #   p = 0.25: h = 0.75 * 4 = 3 -> Q = s[3] = 0.4 -> b = -0.4
    #   p = 0.1 (column 1, the same values): h = 3.6 -> Q = 0.4 + 0.6 * 0.1 = 0.46 -> b = -0.46
    # column 2 all negative: Q = -0.1 at p = 0.25 (h = 3 -> sorted [-0.5, -0.4, -0.3, -0.1, -0.05][3]) -> b = 0.1 -> clamped 0
    # column 3 large: sorted [1, 2, 3, 4, 5], p = 0.5: h = 2 -> Q = 3 -> b = -3 -> clamped -1
    col = [0.1, 0.4, 0.2, 0.3, 0.5]
    neg = [-0.5, -0.05, -0.3, -0.1, -0.4]
    big = [5.0, 1.0, 3.0, 2.0, 4.0]
    u = [[col[i], col[i], neg[i], big[i]] for i in range(5)]
    p = [0.25, 0.1, 0.25, 0.5]
    expected = [-0.4, -0.46, 0.0, -1.0]
    assert_close(quantile_bias_reference(u, p), expected)
    got = quantile_bias(t64(u), t64(p))
    assert got.dtype == F64
    assert_close(got, expected)


@pytest.mark.parametrize("seed", range(20))
def test_quantile_bias__equals_reference_and_torch_quantile(seed):
    g = torch.Generator().manual_seed(seed)
    B, M = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 12, (1,), generator=g))
    u = 0.3 * torch.randn(B, M, generator=g, dtype=F64)
    p = torch.rand(M, generator=g, dtype=F64) * 0.98 + 0.01
    got = quantile_bias(u, p)
    assert_close(got, quantile_bias_reference(u.tolist(), p.tolist()))
    by_torch = torch.stack([torch.quantile(u[:, m], 1 - p[m]) for m in range(M)])
    assert_close(got, (-by_torch).clamp(-1, 0))


def test_quantile_bias__fires_at_the_target_on_its_batch():
    g = torch.Generator().manual_seed(0)
    u = 0.2 * torch.randn(1000, 3, generator=g, dtype=F64)
    p = t64([0.5, 0.1, 0.01])
    q = ((u + quantile_bias(u, p)) > 0).to(F64).mean(0)
    assert float((q - p).abs().max()) <= 1 / 1000  # one token of a thousand at most (continuous u: no ties)


def test_quantile_bias__bad_shapes_raise():
    with pytest.raises(ValueError, match=r"need u \(B, M\) and p \(M,\)"):
        quantile_bias(torch.zeros(4, 3, dtype=F64), torch.full((2,), 0.1, dtype=F64))
    with pytest.raises(ValueError, match="at least one token"):
        quantile_bias(torch.zeros(0, 3, dtype=F64), torch.full((3,), 0.1, dtype=F64))


def test_hook__target_quantile_init_sets_b_at_the_first_call_and_counts_nothing():
    # BA with p = 0.25 on 4 tokens; b starts at 0, so u = y: column sorted [-0.1, 0.2, 0.4, 0.8]
    # h = 0.75 * 3 = 2.25 -> Q = 0.4 + 0.25 * (0.8 - 0.4) = 0.5 -> b = -0.5
    cfg = GBAConfig.bias_adaptation(0.25, buffer_size=4, bias_init="target_quantile")
    hook, sae = GroupBiasAdaptation(cfg), tiny_sae([0.0])
    assert not hook.bias_initialised
    hook(sae, 1, out_of([[0.8], [0.2], [-0.1], [0.4]]))
    assert_close(sae.b_enc, [-0.5])
    assert hook.bias_initialised and hook._tokens == 0 and hook.n_updates == 0  # the step was not counted
    # from then on Algorithm 2 as usual: 4 tokens with q = 1/4 (not above p): unchanged
    hook(sae, 2, out_of([[0.1], [-0.2], [-0.3], [-0.4]]))
    assert hook.n_updates == 1
    assert_close(sae.b_enc, [-0.5])


def test_hook__target_quantile_state_round_trip():
    cfg = GBAConfig.bias_adaptation(0.25, buffer_size=8, bias_init="target_quantile")
    hook, sae = GroupBiasAdaptation(cfg), tiny_sae([0.0])
    hook(sae, 1, out_of([[0.8], [0.2], [-0.1], [0.4]]))
    fresh = GroupBiasAdaptation(cfg)
    fresh.load_state_dict(hook.state_dict())
    assert fresh.bias_initialised


def test_hook__state_saved_before_the_readings_existed_loads():
    hook = GroupBiasAdaptation(GBAConfig.bias_adaptation(0.25, buffer_size=8))
    hook(tiny_sae([0.0]), 1, out_of([[0.8], [0.2]]))
    state = hook.state_dict()
    state.pop("bias_initialised")
    for name in ("bias_init", "raise_below_target"):
        state["config"].pop(name)
    fresh = GroupBiasAdaptation(GBAConfig.bias_adaptation(0.25, buffer_size=8))
    fresh.load_state_dict(state)
    assert fresh.bias_initialised and fresh._tokens == 2


# ---------------------------------------------------------------------------------------------
# targets and groups
# ---------------------------------------------------------------------------------------------
def test_target_frequencies__geometric_from_htf_to_ltf_by_hand():
    # K = 3, HTF = 0.5, LTF = 1e-3: p = 0.5, 0.5 (0.002)^(1/2) = sqrt(0.5 * 1e-3) = sqrt(5e-4)
    # = 0.0223606797749979, 0.5 * 0.002 = 1e-3
    p = target_frequencies(GBAConfig(n_groups=3, htf=0.5, ltf=1e-3))
    assert p.dtype == F64
    assert_close(p, [0.5, math.sqrt(5e-4), 1e-3])


def test_target_frequencies__constant_ratio():
    # K = 10, HTF = 0.1, LTF = 1e-3: p_k / p_{k+1} = (0.1 / 1e-3)^(1/9) = 100^(1/9)
    p = target_frequencies(GBAConfig(n_groups=10, htf=0.1, ltf=1e-3))
    assert p.shape == (10,)
    assert_close(p[:-1] / p[1:], torch.full((9,), 100 ** (1 / 9), dtype=F64))
    assert_close(p[[0, -1]], [0.1, 1e-3])


def test_target_frequencies__one_group_is_the_single_target():
    cfg = GBAConfig.bias_adaptation(0.05)
    assert (cfg.n_groups, cfg.htf, cfg.ltf) == (1, 0.05, 0.05)
    p = target_frequencies(cfg)
    assert p.shape == (1,) and float(p[0]) == 0.05


def test_group_assignment__contiguous_by_hand():
    # M = 10, K = 3: group floor(3 m / 10) for m = 0..9:
    # 0, 3//10=0, 6//10=0, 9//10=0, 12//10=1, 15//10=1, 18//10=1, 21//10=2, 24//10=2, 27//10=2
    g = group_assignment(10, GBAConfig(n_groups=3, htf=0.5, ltf=1e-3))
    assert g.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # sizes 4, 3, 3
    assert g.dtype == torch.long
    # M = 10, K = 4: floor(4 m / 10) = 0, 0, 0, 1, 1, 2, 2, 2, 3, 3 -> sizes 3, 2, 3, 2
    g = group_assignment(10, GBAConfig(n_groups=4, htf=0.5, ltf=1e-3))
    assert g.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]


@pytest.mark.parametrize("M, K", [(1, 1), (7, 7), (10, 3), (10, 4), (64, 10), (100, 7), (128, 10)])
def test_group_assignment__contiguous_blocks_of_nearly_equal_size(M, K):
    g = group_assignment(M, GBAConfig(n_groups=K, htf=0.5, ltf=1e-3) if K > 1 else GBAConfig.bias_adaptation(0.1))
    assert g.shape == (M,)
    assert bool((g[1:] >= g[:-1]).all())  # contiguous: non-decreasing
    sizes = torch.bincount(g, minlength=K)
    assert sizes.numel() == K and int(sizes.sum()) == M
    assert set(sizes.tolist()) <= {M // K, -(-M // K)}  # floor or ceil of M / K


def test_group_assignment__random_is_a_seeded_permutation_of_the_blocks():
    cfg = dict(n_groups=10, htf=0.5, ltf=1e-3, assignment="random")
    contiguous = group_assignment(64, GBAConfig(n_groups=10, htf=0.5, ltf=1e-3))
    a = group_assignment(64, GBAConfig(**cfg, seed=0))
    assert torch.equal(a, group_assignment(64, GBAConfig(**cfg, seed=0)))  # seeded
    assert not torch.equal(a, group_assignment(64, GBAConfig(**cfg, seed=1)))
    assert not torch.equal(a, contiguous)
    assert torch.equal(torch.sort(a).values, contiguous)  # same group sizes
    assert torch.equal(torch.bincount(a, minlength=10), torch.bincount(contiguous, minlength=10))


def test_group_assignment__more_groups_than_neurons_raises():
    with pytest.raises(ValueError, match="n_groups=5 exceeds the number of neurons 3; use fewer groups"):
        group_assignment(3, GBAConfig(n_groups=5, htf=0.5, ltf=1e-3))


# ---------------------------------------------------------------------------------------------
# the hook
# ---------------------------------------------------------------------------------------------
def test_hook__hand_case_updates_after_buffer_size_tokens_then_resets():
    sae = tiny_sae(HAND_B)
    W_before = sae.W_dec.detach().clone()
    hook = GroupBiasAdaptation(HAND_CFG)
    hook(sae, 1, out_of(HAND_PRE[:2]))  # 2 < B = 4 tokens: no update yet
    assert torch.equal(sae.b_enc, t64(HAND_B))
    state = hook.state_dict()
    assert state["tokens"] == 2 and state["n_updates"] == 0
    # after rows 0-1: fires = [2, 0, 1, 1, 0, 2], peaks = [0.8, 0, 0.4, 0.2, 0, 0.6]
    assert state["fires"].tolist() == [2, 0, 1, 1, 0, 2]
    assert_close(state["peak"], HAND_R)
    hook(sae, 2, out_of(HAND_PRE[2:]))  # 4 tokens: Algorithm 2 on all four rows
    assert_close(sae.b_enc, HAND_NEW_B)
    assert torch.equal(sae.W_dec, W_before)  # only the bias moves
    state = hook.state_dict()
    assert state["tokens"] == 0 and state["n_updates"] == 1
    assert torch.equal(state["fires"], torch.zeros(6, dtype=torch.long))
    assert torch.equal(state["peak"], torch.zeros(6, dtype=F64))


def test_hook__counts_tokens_not_calls():
    # B = 5, batches of 2 tokens: updates at the calls where the running count reaches >= 5:
    # call 3 (6 tokens), then again after 3 more calls (6 tokens) -> call 6
    sae = tiny_sae([0.0, 0.0])
    hook = GroupBiasAdaptation(GBAConfig.bias_adaptation(0.5, buffer_size=5, dead_eps=0.1))
    updates = []
    for step in range(1, 7):
        hook(sae, step, out_of([[1.0, -1.0], [1.0, -1.0]]))
        updates.append(hook.n_updates)
    assert updates == [0, 0, 1, 1, 1, 2]
    # neuron 0 fires always (q = 1 > 0.5, r = 1): b = 0 - 0.01 * 1, twice = -0.02
    # neuron 1 is dead (q = 0): r̄ = (1 + 0) / 1 = 1, b = min(0 + 0.01 * 1, 0) = 0, twice
    assert_close(sae.b_enc, [-0.02, 0.0])


def test_hook__agrees_with_the_reference_on_random_pre_activations():
    g = torch.Generator().manual_seed(3)
    M = 12
    sae = tiny_sae((-0.5 * torch.rand(M, generator=g, dtype=F64)).tolist())
    b0 = sae.b_enc.tolist()
    cfg = GBAConfig(n_groups=3, htf=0.5, ltf=0.05, gamma_minus=0.3, gamma_plus=0.2, dead_eps=0.01, buffer_size=40, assignment="random", seed=5)
    hook = GroupBiasAdaptation(cfg)
    batches = [torch.randn(10, M, generator=g, dtype=F64) - torch.linspace(-1, 4, M, dtype=F64) for _ in range(4)]
    for step, y in enumerate(batches, 1):
        hook(sae, step, SimpleNamespace(pre_acts=y))
    assert hook.n_updates == 1
    Y = torch.cat(batches)  # (40, M)
    q = ((Y > 0).sum(0) / 40).tolist()
    r = Y.amax(0).clamp(min=0).tolist()
    assert min(q) < 0.01 and max(q) > 0.5  # the case has dead and over-active neurons
    groups = group_assignment(M, cfg).tolist()
    expected = bias_update_reference(b0, q, r, groups, target_frequencies(cfg).tolist(), 0.3, 0.2, 0.01)
    assert_close(sae.b_enc, expected)


def test_hook__fired_mask_from_the_forward_gives_the_same_statistics():
    # the tied SAE hands the hook its 1[y > 0] mask; counting from it must equal counting from y
    sae = TiedSAE(d=6, n_latents=10, dtype=F64, seed=0)
    sae.b_enc.copy_(-0.2 * torch.rand(10, dtype=F64, generator=torch.Generator().manual_seed(2)))
    cfg = GBAConfig(n_groups=2, htf=0.5, ltf=0.1, buffer_size=10**6)
    with_mask, without = GroupBiasAdaptation(cfg), GroupBiasAdaptation(cfg)
    g = torch.Generator().manual_seed(4)
    for step in range(1, 4):
        out = sae.training_forward(torch.randn(50, 6, generator=g, dtype=F64))
        assert out.fired is not None
        with_mask(sae, step, out)
        without(sae, step, SimpleNamespace(pre_acts=out.pre_acts))
    a, b = with_mask.state_dict(), without.state_dict()
    assert 0 < int(a["fires"].sum()) < 150 * 10
    assert torch.equal(a["fires"], b["fires"]) and torch.equal(a["peak"], b["peak"]) and a["tokens"] == b["tokens"] == 150


def test_hook__statistics_are_O_of_M():
    M = 8
    sae = tiny_sae([0.0] * M)
    hook = GroupBiasAdaptation(GBAConfig(n_groups=2, htf=0.5, ltf=0.1, buffer_size=10**6))
    for step in range(1, 4):
        hook(sae, step, SimpleNamespace(pre_acts=torch.randn(1000, M, dtype=F64)))
    state = hook.state_dict()
    assert state["tokens"] == 3000
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    assert len(tensors) == 2 and all(t.numel() == M for t in tensors)
    # nothing the hook holds grows with the number of tokens seen
    assert all(v.numel() <= M for v in vars(hook).values() if isinstance(v, torch.Tensor))


def test_hook__state_dict_round_trip_continues_identically():
    cfg = GBAConfig(n_groups=2, htf=0.5, ltf=0.1, gamma_minus=0.1, gamma_plus=0.1, dead_eps=0.05, buffer_size=30)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(10, 6, generator=g, dtype=F64) - 0.5 for _ in range(6)]
    sae_a, sae_b = tiny_sae([-0.1] * 6), tiny_sae([-0.1] * 6)
    a = GroupBiasAdaptation(cfg)
    for step in (1, 2, 3, 4):  # one update at step 3, then a partial buffer
        a(sae_a, step, SimpleNamespace(pre_acts=batches[step - 1]))
    # through torch.save / torch.load(weights_only=True), as the trainer checkpoints it
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = GroupBiasAdaptation(cfg)
    b.load_state_dict(state)
    sae_b.load_state_dict(sae_a.state_dict())
    for step in (5, 6):
        a(sae_a, step, SimpleNamespace(pre_acts=batches[step - 1]))
        b(sae_b, step, SimpleNamespace(pre_acts=batches[step - 1]))
    assert a.n_updates == b.n_updates == 2
    assert torch.equal(sae_a.b_enc, sae_b.b_enc)
    assert not torch.equal(sae_a.b_enc, torch.full((6,), -0.1, dtype=F64))


def test_hook__state_dict_is_a_copy():
    sae = tiny_sae([0.0, 0.0])
    hook = GroupBiasAdaptation(GBAConfig.bias_adaptation(0.5, buffer_size=100))
    hook(sae, 1, out_of([[1.0, -1.0]]))
    state = hook.state_dict()
    hook(sae, 2, out_of([[1.0, 2.0]]))
    assert state["fires"].tolist() == [1, 0] and state["tokens"] == 1


def test_hook__loading_a_fresh_state_forgets_the_current_buffer():
    cfg = GBAConfig.bias_adaptation(0.5, buffer_size=4, dead_eps=0.1)
    fresh_state = GroupBiasAdaptation(cfg).state_dict()
    sae_used, sae_fresh = tiny_sae([-0.2, -0.2]), tiny_sae([-0.2, -0.2])
    used = GroupBiasAdaptation(cfg)
    used(sae_used, 1, out_of([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]))  # 3 tokens buffered
    used.load_state_dict(fresh_state)
    fresh = GroupBiasAdaptation(cfg)
    batch = [[1.0, -1.0], [-1.0, -1.0]]
    for hook, sae in ((used, sae_used), (fresh, sae_fresh)):
        hook(sae, 2, out_of(batch))
    assert used.state_dict()["tokens"] == fresh.state_dict()["tokens"] == 2
    assert used.n_updates == fresh.n_updates == 0
    assert torch.equal(used.state_dict()["fires"], fresh.state_dict()["fires"])
    assert torch.equal(sae_used.b_enc, sae_fresh.b_enc)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hook__state_loaded_on_cpu_follows_a_cuda_model():
    # the trainer loads hook states with map_location="cpu"; a resumed GPU run must still work
    cfg = GBAConfig.bias_adaptation(0.5, buffer_size=4, dead_eps=0.1)
    cpu_sae, cpu_hook = tiny_sae([-0.2, -0.2]), GroupBiasAdaptation(cfg)
    cpu_hook(cpu_sae, 1, out_of([[1.0, -1.0], [1.0, -1.0]]))
    gpu_sae, gpu_hook = tiny_sae([-0.2, -0.2]).cuda(), GroupBiasAdaptation(cfg)
    gpu_hook.load_state_dict(cpu_hook.state_dict())
    batch = [[1.0, -1.0], [0.5, -1.0]]
    cpu_hook(cpu_sae, 2, out_of(batch))
    gpu_hook(gpu_sae, 2, SimpleNamespace(pre_acts=t64(batch).cuda()))
    assert gpu_hook.n_updates == cpu_hook.n_updates == 1
    assert torch.equal(gpu_sae.b_enc.cpu(), cpu_sae.b_enc)


def test_hook__load_with_another_config_raises():
    a = GroupBiasAdaptation(GBAConfig(n_groups=2, htf=0.5, ltf=0.1))
    b = GroupBiasAdaptation(GBAConfig(n_groups=2, htf=0.5, ltf=0.01))
    with pytest.raises(ValueError, match="build the hook with the saved config"):
        b.load_state_dict(a.state_dict())


def test_hook__more_groups_than_neurons_raises_at_setup():
    hook = GroupBiasAdaptation(GBAConfig(n_groups=5, htf=0.5, ltf=1e-3))  # fine until it meets a model
    with pytest.raises(ValueError, match="use fewer groups"):
        hook(tiny_sae([0.0, 0.0, 0.0]), 1, out_of([[1.0, 1.0, 1.0]]))


def test_hook__pre_acts_of_the_wrong_width_raise():
    hook = GroupBiasAdaptation(GBAConfig.bias_adaptation(0.5))
    with pytest.raises(ValueError, match="pre_acts has 2 neurons but model.b_enc has 3"):
        hook(tiny_sae([0.0, 0.0, 0.0]), 1, out_of([[1.0, 1.0]]))


def test_hook__keyword_construction_equals_config():
    assert GroupBiasAdaptation(n_groups=3, htf=0.5, ltf=1e-3).config == GBAConfig(n_groups=3, htf=0.5, ltf=1e-3)


# ---------------------------------------------------------------------------------------------
# config validation
# ---------------------------------------------------------------------------------------------
BAD_GBA = [
    (dict(n_groups=0), r"n_groups \(K\) must be >= 1"),
    (dict(n_groups=3, htf=0.01, ltf=0.1), r"need ltf < htf .* swap them"),
    (dict(n_groups=3, htf=0.1, ltf=0.1), r"need ltf < htf"),
    (dict(n_groups=1, htf=0.1, ltf=0.01), r"set htf == ltf .* or use GBAConfig\.bias_adaptation\(p\)"),
    (dict(htf=1.0), r"htf must be a target frequency in \(0, 1\)"),
    (dict(htf=0.5, ltf=0.0), r"ltf must be a target frequency in \(0, 1\)"),
    (dict(ltf=-0.1), r"ltf must be a target frequency in \(0, 1\)"),
    (dict(htf=math.nan), r"htf must be a target frequency"),
    (dict(ltf=1e-3, dead_eps=1e-3), r"dead_eps must lie in \[0, ltf=0\.001\)"),
    (dict(ltf=1e-3, dead_eps=-1e-6), r"dead_eps must lie in"),
    (dict(gamma_minus=0.0), r"gamma_minus must be > 0"),
    (dict(gamma_plus=-0.01), r"gamma_plus must be > 0"),
    (dict(buffer_size=0), r"buffer_size \(tokens between updates\) must be >= 1"),
    (dict(assignment="interleaved"), r"assignment must be 'contiguous' or 'random'"),
    (dict(bias_init="negative"), r"bias_init must be one of \('zero', 'target_quantile'\)"),
]


@pytest.mark.parametrize("kwargs, message", BAD_GBA, ids=[str(i) for i in range(len(BAD_GBA))])
def test_gba_config__bad_values_raise_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GBAConfig(**kwargs)


@pytest.mark.parametrize("kwargs, message", [(dict(n_groups=2.0), r"n_groups \(K\) must be an integer"),
                                             (dict(buffer_size=True), r"buffer_size .* must be an integer"),
                                             (dict(raise_below_target=1), r"raise_below_target must be True or False")])
def test_gba_config__non_integer_counts_are_type_errors(kwargs, message):
    with pytest.raises(TypeError, match=message):
        GBAConfig(**kwargs)


def test_gba_config__defaults_follow_the_paper():
    cfg = GBAConfig()
    assert (cfg.gamma_minus, cfg.gamma_plus, cfg.buffer_size) == (0.01, 0.01, 25_600)  # docs/papers.md#gba-constants
    assert (cfg.bias_init, cfg.raise_below_target) == ("zero", False)  # the readings are off: Algorithm 2 as printed
    assert GBAConfig(**cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------------
# planted recovery (CPU, a few seconds each)
# ---------------------------------------------------------------------------------------------
N_FEAT = 32


@pytest.fixture(scope="module")
def planted_features() -> torch.Tensor:
    """Orthonormal V (n = d = 32): Q of the QR of a seeded Gaussian matrix."""
    G = torch.randn(N_FEAT, N_FEAT, generator=torch.Generator().manual_seed(0), dtype=F64)
    Q, _ = torch.linalg.qr(G)
    return Q.to(torch.float32)


def _planted_run(V: torch.Tensor, hooks) -> TiedSAE:
    n = d = N_FEAT
    data = SparseFeatureModel(n, d, 1, features=V, seed=0)  # s = 1: one feature per row, f = 1/n
    sae = TiedSAE(d=d, n_latents=4 * n, seed=1, output_scale_init=0.01, train_output_scale=False, train_b_dec=False)
    cfg = TrainConfig(steps=3000, batch_size=256, lr=5.0, optimizer="sgd", input_norm="unit", progress=False)
    train(sae, data, cfg, hooks=hooks)
    return sae


def test_planted_features_are_orthonormal(planted_features):
    V = planted_features.to(F64)
    assert_close(V @ V.T, torch.eye(N_FEAT), torch.float32)


def test_gba__recovers_planted_orthonormal_features(planted_features):
    hook = GroupBiasAdaptation(GBAConfig(n_groups=10, htf=0.5, ltf=1e-3, buffer_size=1280))
    sae = _planted_run(planted_features, [hook])
    assert hook.n_updates == 3000 * 256 // 1280  # 600 updates, one every 5 steps
    assert bool((sae.b_enc >= -1).all() and (sae.b_enc <= 0).all())
    assert feature_recovery_rate(sae.dictionary, planted_features, 0.9) >= 0.95


def test_ba__recovers_planted_orthonormal_features(planted_features):
    s, n = 1, N_FEAT
    hook = GroupBiasAdaptation(GBAConfig.bias_adaptation(1.5 * s / n, buffer_size=1280, dead_eps=1e-6))
    sae = _planted_run(planted_features, [hook])
    assert bool((sae.b_enc < 0).all())  # every neuron was pushed below its initial 0
    assert feature_recovery_rate(sae.dictionary, planted_features, 0.9) >= 0.95


def test_no_adaptation__control_fails_to_recover(planted_features):
    # without the hook the biases stay at 0, so each neuron fires on about half the inputs and
    # learns a mixture of features: the recovery test above can fail
    sae = _planted_run(planted_features, [])
    assert torch.equal(sae.b_enc, torch.zeros(4 * N_FEAT))
    assert feature_recovery_rate(sae.dictionary, planted_features, 0.9) < 0.5
