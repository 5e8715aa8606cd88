"""Tests of the hierarchy study's baselines: BatchTopK's batch budget and threshold, JumpReLU's
straight-through gradients, Matryoshka's prefixes, and the sparsity controller (rules by hand, exact
resume through the trainer). The shared contract is in test_models.py. Hand cases in float64."""

from __future__ import annotations

import math

import pytest
import torch

from _helpers import assert_close
from sae_theory.models import BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, TopKSAE
from sae_theory.models.base import TrainOutput
from sae_theory.models.batchtopk import batch_topk
from sae_theory.models.jumprelu import jumprelu, step
from sae_theory.models.matryoshka import pareto_prefix_ends
from sae_theory.training import SparsityController, TrainConfig, train

F64 = torch.float64


def _x(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------------------------------------
# TopK / BatchTopK sparsity
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 7])
def test_topk__every_row_has_exactly_k_codes_when_pre_acts_are_positive(k):
    sae = TopKSAE(d=8, n_latents=12, k=k, dtype=F64)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # every pre-activation positive: ReLU removes none of the top k
    codes = sae.encode(_x(32, 8))
    assert ((codes != 0).sum(-1) == k).all()


@pytest.mark.parametrize("k", [0.5, 1.36, 3.0])
def test_batchtopk__training_keeps_exactly_round_k_b_entries_of_the_batch(k):
    sae = BatchTopKSAE(d=8, n_latents=12, k=k, dtype=F64)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)
    x = _x(50, 8)
    out = sae.training_forward(x)
    assert int((out.codes != 0).sum()) == round(k * 50)
    # the kept entries are the largest of the batch: every kept one >= every dropped one
    acts = torch.relu(out.pre_acts)
    kept, dropped = acts[out.codes != 0], acts[out.codes == 0]
    assert kept.min() >= dropped.max()
    # single rows are free: the per-row L0 is not constant for a fractional k
    if k != int(k):
        assert (out.codes != 0).sum(-1).unique().numel() > 1


def test_batch_topk__keeps_the_largest_by_hand():
    acts = torch.tensor([[0.0, 5.0, 1.0], [4.0, 0.0, 2.0]], dtype=F64)
    assert_close(batch_topk(acts, 3), [[0.0, 5.0, 0.0], [4.0, 0.0, 2.0]])
    assert_close(batch_topk(acts, 0), torch.zeros(2, 3))
    assert_close(batch_topk(acts, 99), acts)


def test_batchtopk__threshold_is_the_moving_average_of_the_smallest_kept_activation():
    sae = BatchTopKSAE(d=4, n_latents=6, k=2.0, threshold_lr=0.5, dtype=F64)
    x1, x2 = _x(10, 4, 1), _x(10, 4, 2)
    m1 = sae.training_forward(x1).codes
    m1 = m1[m1 > 0].min()
    assert_close(sae.threshold, 0.5 * m1)  # 0.5 * 0 + 0.5 * m1
    m2 = sae.training_forward(x2).codes
    m2 = m2[m2 > 0].min()
    assert_close(sae.threshold, 0.5 * (0.5 * m1) + 0.5 * m2)
    # inference: ReLU above the threshold, no batch dependence
    sae.eval()
    x = _x(7, 4, 3)
    a = torch.relu(sae.pre_activations(x))
    assert_close(sae.encode(x), torch.where(a > sae.threshold, a, 0.0))
    assert_close(sae.encode(x[:3]), sae.encode(x)[:3])


def test_batchtopk__k_schedule_switches_after_k_initial_steps():
    sae = BatchTopKSAE(d=4, n_latents=6, k=1.0, k_initial=3.0, k_initial_steps=2, dtype=F64)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)
    x = _x(10, 4)
    counts = [int((sae.training_forward(x).codes != 0).sum()) for _ in range(4)]
    assert counts == [30, 30, 10, 10]
    assert int(sae.n_train_passes) == 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0.0), "k must"), (dict(k=7.0), "k must"), (dict(k=math.nan), "k must"),
    (dict(k=1.0, k_initial_steps=5), "k_initial"), (dict(k=1.0, threshold_lr=0.0), "threshold_lr"),
])
def test_batchtopk__bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchTopKSAE(d=4, n_latents=6, **kwargs)


# ---------------------------------------------------------------------------------------------
# JumpReLU: forward and the straight-through estimators
# ---------------------------------------------------------------------------------------------
def test_jumprelu__forward_and_pseudo_gradients_by_hand():
    eps = 0.1
    pre = torch.tensor([[0.96, 1.2, 0.3], [1.04, 0.98, -1.0]], dtype=F64, requires_grad=True)
    theta = torch.tensor([1.0, 1.0, 0.3], dtype=F64, requires_grad=True)
    z = jumprelu(pre, theta, eps)
    # pre > theta: (0.96 no, 1.2 yes, 0.3 no (not strictly)), (1.04 yes, 0.98 no, -1 no)
    assert_close(z, [[0.0, 1.2, 0.0], [1.04, 0.0, 0.0]])
    z.sum().backward()
    assert_close(pre.grad, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # H(pre - theta)
    # d/dtheta = -(theta/eps) K((pre - theta)/eps), K = 1[|u| < 1/2]: |pre - theta| < 0.05
    # latent 0: 0.96 (|-0.04| yes), 1.04 (yes) -> -(1/0.1) * 2 = -20
    # latent 1: 1.2 (no), 0.98 (yes) -> -10 ; latent 2: 0.3 (|0| yes), -1 (no) -> -(0.3/0.1) = -3
    assert_close(theta.grad, [-20.0, -10.0, -3.0])

    pre.grad = theta.grad = None
    h = step(pre, theta, eps)
    assert_close(h, [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    h.sum().backward()
    assert_close(pre.grad, torch.zeros(2, 3))  # no gradient through the step to pre
    assert_close(theta.grad, [-20.0, -10.0, -10.0])  # -(1/eps) * count within the band


def test_jumprelu_sae__loss_is_mse_plus_lambda_l0_and_thresholds_learn():
    sae = JumpReLUSAE(d=4, n_latents=6, l0_coefficient=0.5, initial_threshold=0.2, bandwidth=0.5, dtype=F64)
    x = _x(16, 4)
    out = sae.training_forward(x)
    pre = sae.pre_activations(x)
    l0 = (pre > 0.2).to(F64).sum(-1).mean()
    mse = (sae.decode(pre * (pre > 0.2)) - x).pow(2).sum(-1).mean()
    assert_close(out.loss, mse + 0.5 * l0)
    assert_close(out.codes, pre * (pre > 0.2))
    out.loss.backward()
    assert sae.log_threshold.grad is not None and sae.log_threshold.grad.abs().sum() > 0
    # the L0 term alone pushes every threshold with pre-activations in its band up
    sae.zero_grad()
    (sae.l0_coefficient * step(pre.detach(), sae.threshold, 0.5).sum(-1).mean()).backward()
    assert (sae.log_threshold.grad <= 0).all() and (sae.log_threshold.grad < 0).any()


@pytest.mark.parametrize("kwargs, match", [
    (dict(l0_coefficient=-1.0), "l0_coefficient"), (dict(initial_threshold=0.0), "initial_threshold"),
    (dict(bandwidth=-0.1), "bandwidth"),
])
def test_jumprelu__bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        JumpReLUSAE(d=4, n_latents=6, **kwargs)


# ---------------------------------------------------------------------------------------------
# Matryoshka: prefixes decode alone; the loss is the mean over prefixes
# ---------------------------------------------------------------------------------------------
def test_matryoshka__a_prefix_decodes_alone():
    sae = MatryoshkaSAE(d=5, n_latents=8, prefixes=(2, 5, 8), dtype=F64)
    codes = torch.relu(_x(6, 8))
    for m in (1, 2, 5, 8):
        zeroed = codes.clone()
        zeroed[:, m:] = 0
        assert_close(sae.decode(codes, prefix=m), sae.decode(zeroed))
        assert_close(sae.decode(codes, prefix=m), codes[:, :m] @ sae.W_dec[:m] + sae.b_dec)
    with pytest.raises(ValueError, match="prefix"):
        sae.decode(codes, prefix=9)


def test_matryoshka__loss_is_the_mean_of_the_prefix_losses():
    sae = MatryoshkaSAE(d=5, n_latents=8, prefixes=(2, 5, 8), l1_coefficient=0.3, dtype=F64)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 8, dtype=F64)[:, None])  # atoms of different norms
    x = _x(10, 5)
    out = sae.training_forward(x)
    z = torch.relu(sae.pre_activations(x))
    norms = sae.W_dec.norm(dim=1)
    errs = [(sae.decode(z, prefix=m) - x).pow(2).sum(-1).mean() for m in (2, 5, 8)]
    pens = [(z[:, :m] * norms[:m]).sum(-1).mean() for m in (2, 5, 8)]
    assert_close(out.loss, sum(errs) / 3 + 0.3 * sum(pens) / 3)
    assert_close(out.x_hat, sae.decode(z))
    assert_close(out.metrics["mse"], errs[-1])


def test_matryoshka__default_fixed_prefixes_double():
    assert MatryoshkaSAE(d=4, n_latents=20, n_prefixes=5).config.fixed_prefix_ends() == (2, 3, 5, 10, 20)
    assert MatryoshkaSAE(d=4, n_latents=20, n_prefixes=1).config.fixed_prefix_ends() == (20,)


def test_pareto_prefix_ends__valid_and_distributed_as_the_law():
    g = torch.Generator().manual_seed(0)
    M, G, m0, a = 20, 5, 2, 0.5
    counts = torch.zeros(M)
    for _ in range(4000):
        ends = pareto_prefix_ends(M, G, m0, a, g)
        assert len(ends) == G and ends[-1] == M and list(ends) == sorted(set(ends)) and ends[0] >= m0
        counts[list(ends[:-1])] += 1
    assert counts[:m0].sum() == 0
    # short prefixes are favoured: ends are drawn more often the smaller they are
    assert counts[m0] > counts[M // 2] > counts[M - 1]


def test_matryoshka__pareto_prefixes_follow_the_pass_counter():
    a = MatryoshkaSAE(d=4, n_latents=12, prefix_sampling="pareto", n_prefixes=4, seed=3)
    b = MatryoshkaSAE(d=4, n_latents=12, prefix_sampling="pareto", n_prefixes=4, seed=3)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    draws = []
    for _ in range(5):
        draws.append(a.prefix_ends())
        a.training_forward(x)
    assert len(set(draws)) > 1  # a new draw every pass
    b.n_train_passes.fill_(3)
    assert b.prefix_ends() == draws[3]


@pytest.mark.parametrize("kwargs, match", [
    (dict(prefixes=(3, 2, 8)), "prefixes"), (dict(prefixes=(2, 5)), "prefixes"),
    (dict(prefix_sampling="pareto", prefixes=(2, 8)), "fixed"), (dict(prefix_sampling="nested"), "prefix_sampling"),
    (dict(n_prefixes=9), "n_prefixes"), (dict(n_prefixes=4, min_prefix_length=6), "min_prefix_length"),
    (dict(pareto_power=1.5), "pareto_power"),
])
def test_matryoshka__bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MatryoshkaSAE(d=4, n_latents=8, **kwargs)


@pytest.mark.parametrize("cls, kwargs, match", [
    (BatchTopKSAE, dict(k=1.0, k_initial_steps=2.0), "k_initial_steps must be an integer"),
    (MatryoshkaSAE, dict(n_prefixes=2.0), "n_prefixes must be an integer"),
    (MatryoshkaSAE, dict(prefixes=(4, 8.0)), r"prefixes\[1\] must be an integer"),
    (MatryoshkaSAE, dict(min_prefix_length=True), "min_prefix_length must be an integer"),
])
def test_baselines__integer_fields_of_another_type_raise_typeerror(cls, kwargs, match):
    with pytest.raises(TypeError, match=match):
        cls(d=4, n_latents=8, **kwargs)


def test_matryoshka__bounds_from_other_fields_say_how_to_fix():
    with pytest.raises(ValueError, match="n_prefixes must be <= n_latents=8.*fewer prefixes"):
        MatryoshkaSAE(d=4, n_latents=8, n_prefixes=9)
    with pytest.raises(ValueError, match="min_prefix_length must be <= n_latents - n_prefixes \\+ 1 = 5"):
        MatryoshkaSAE(d=4, n_latents=8, n_prefixes=4, min_prefix_length=6)
    with pytest.raises(TypeError, match="prefix must be an integer"):
        MatryoshkaSAE(d=4, n_latents=8).decode(torch.zeros(1, 8), prefix=2.0)


# ---------------------------------------------------------------------------------------------
# the sparsity controller
# ---------------------------------------------------------------------------------------------
def _out(codes: torch.Tensor) -> TrainOutput:
    return TrainOutput(torch.zeros(()), codes, codes, codes)


def test_controller__sign_rule_and_warmup_by_hand():
    sae = ReLUSAE(d=4, n_latents=8, l1_coefficient=0.0, dtype=F64)
    c = SparsityController(target_l0=2.0, coefficient=0.1, gain=0.5, rule="sign", warmup_steps=2, log_every=1)
    dense, sparse = torch.ones(3, 8), torch.zeros(3, 8)
    c(sae, 1, _out(dense))  # warmup: lambda = 0.1 * (1 + 1) / 2 for step 2
    assert_close(sae.l1_coefficient, 0.1)
    c(sae, 2, _out(dense))  # rule starts: L0 8 >= 2 -> 0.1 * 1.5
    assert_close(sae.l1_coefficient, 0.15)
    c(sae, 3, _out(sparse))  # L0 0 < 2 -> 0.15 * 0.5
    assert_close(sae.l1_coefficient, 0.075)
    assert c.history[-1] == (3, 0.0, pytest.approx(0.075))


def test_controller__log_proportional_rule_by_hand_and_other_attributes():
    sae = JumpReLUSAE(d=4, n_latents=8, l0_coefficient=0.1, dtype=F64)
    c = SparsityController(target_l0=2.0, coefficient=0.1, gain=0.1, attribute="l0_coefficient")
    c(sae, 1, _out(torch.cat([torch.ones(2, 3), torch.zeros(2, 5)], 1)))  # L0 3: err = 0.5
    assert_close(sae.l0_coefficient, 0.1 * math.exp(0.05))
    c(sae, 2, _out(torch.ones(2, 8)))  # L0 8: err clipped to 1
    assert_close(sae.l0_coefficient, 0.1 * math.exp(0.05) * math.exp(0.1))
    with pytest.raises(TypeError, match="l0_coefficient"):
        c(TopKSAE(d=4, n_latents=8, k=2), 3, _out(torch.ones(2, 8)))
    with pytest.raises(ValueError, match="rule"):
        SparsityController(target_l0=1.0, rule="pid")
    with pytest.raises(ValueError, match="gain"):
        SparsityController(target_l0=1.0, rule="sign", gain=1.0)


def _hier_data(n: int = 600, d: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.relu(torch.randn(n, d, generator=g, dtype=torch.float32)) + 0.1


@pytest.mark.parametrize("build", [
    lambda: (ReLUSAE(d=6, n_latents=8, l1_coefficient=0.0, seed=1), "l1_coefficient"),
    lambda: (MatryoshkaSAE(d=6, n_latents=8, l1_coefficient=0.0, prefix_sampling="pareto", n_prefixes=3, seed=1), "l1_coefficient"),
    lambda: (JumpReLUSAE(d=6, n_latents=8, l0_coefficient=0.0, initial_threshold=0.05, bandwidth=0.05, seed=1), "l0_coefficient"),
    lambda: (BatchTopKSAE(d=6, n_latents=8, k=1.5, k_initial=3.0, k_initial_steps=7, seed=1), None),
], ids=["relu", "matryoshka", "jumprelu", "batchtopk"])
def test_baselines__resume_is_bit_identical_with_the_controller(build, tmp_path):
    """Interrupted at step 10 of 20 (inside the controller's warmup, the BatchTopK k schedule and
    the Pareto draws), resumed, and compared with the uninterrupted run."""
    X = _hier_data()

    def run(steps, **kw):
        return TrainConfig(steps=steps, batch_size=32, lr=1e-2, progress=False, log_every=5, **kw)

    def hooks(attribute):
        return [SparsityController(target_l0=2.0, coefficient=0.05, gain=0.05, rule="sign", warmup_steps=12, attribute=attribute)] if attribute else []

    ref, attribute = build()
    ref_hooks = hooks(attribute)
    train(ref, X, run(20), hooks=ref_hooks)
    first, _ = build()
    cfg = run(20, checkpoint_every=10, checkpoint_dir=str(tmp_path))
    train(first, X, TrainConfig(**{**cfg.to_dict(), "steps": 10}), hooks=hooks(attribute))
    model, _ = build()
    h = hooks(attribute)
    train(model, X, cfg, hooks=h, resume="latest")
    sa, sb = model.state_dict(), ref.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"state {k!r} differs"
    if attribute:
        assert h[0].state_dict() == ref_hooks[0].state_dict()
        assert float(getattr(model, attribute)) > 0
