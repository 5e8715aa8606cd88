"""Tests of the SAEs in sae_theory/models: the shared contract over every model
and dtype, hand-computed tiny cases of each activation and loss, and config validation.

Hand cases run in float64; the arithmetic is in the comments."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

from _helpers import assert_close
from sae_theory.models import MPSAE, BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, TiedReLUSAE, TiedSAE, TiedTopKSAE, TopKSAE
from sae_theory.models.base import SAE, unit_rows_

D, M = 6, 10
DTYPES = [torch.float32, torch.float64]




#: name -> builder(dtype, seed) of every SAE in the package (TiedSAE once per activation; the paper's
#: tied TopK and L1 baselines of models/tied_baselines.py, whose b_enc is a trained parameter, not in TIED).
BUILDERS: dict[str, Callable[[torch.dtype, int], SAE]] = {
    "tied_jumprelu_threshold": lambda dt, s: TiedSAE(d=D, n_latents=M, dtype=dt, seed=s),
    "tied_jumprelu_biased": lambda dt, s: TiedSAE(d=D, n_latents=M, dtype=dt, seed=s, activation="jumprelu_biased", theta=0.1),
    "tied_relu": lambda dt, s: TiedSAE(d=D, n_latents=M, dtype=dt, seed=s, activation="relu"),
    "topk": lambda dt, s: TopKSAE(d=D, n_latents=M, k=3, dtype=dt, seed=s),
    "topk_tied": lambda dt, s: TiedSAE(d=D, n_latents=M, dtype=dt, seed=s, activation="topk", k=3),
    "topk_tied_baseline": lambda dt, s: TiedTopKSAE(d=D, n_latents=M, k=3, dtype=dt, seed=s),
    "l1_tied_baseline": lambda dt, s: TiedReLUSAE(d=D, n_latents=M, l1_coefficient=0.1, dtype=dt, seed=s),
    "relu": lambda dt, s: ReLUSAE(d=D, n_latents=M, l1_coefficient=0.1, dtype=dt, seed=s),
    "mp": lambda dt, s: MPSAE(d=D, n_latents=M, k=3, dtype=dt, seed=s),
    "batchtopk": lambda dt, s: BatchTopKSAE(d=D, n_latents=M, k=3, dtype=dt, seed=s),
    "jumprelu": lambda dt, s: JumpReLUSAE(d=D, n_latents=M, l0_coefficient=0.1, dtype=dt, seed=s),
    "matryoshka": lambda dt, s: MatryoshkaSAE(d=D, n_latents=M, l1_coefficient=0.1, n_prefixes=3, dtype=dt, seed=s),
    "matryoshka_pareto": lambda dt, s: MatryoshkaSAE(d=D, n_latents=M, l1_coefficient=0.1, prefix_sampling="pareto", n_prefixes=3, dtype=dt, seed=s),
}
ALL = list(BUILDERS)
TIED = [name for name in ALL if name.startswith("tied")]


def _build(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> SAE:
    sae = BUILDERS[name](dtype, seed)
    if isinstance(sae, TiedSAE):
        # a non-zero bias in [-1, 0] (what bias adaptation produces) so the threshold matters
        with torch.no_grad():
            sae.b_enc.copy_(-0.3 * torch.rand(M, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype))
    return sae


def _x(dtype: torch.dtype, n: int = 16, seed: int = 7) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------------------------
# the contract, over every SAE and dtype
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__forward_equals_decode_of_encode(name, dtype):
    sae = _build(name, dtype)
    x = _x(dtype)
    codes = sae.encode(x)
    assert codes.shape == (16, M)
    assert torch.equal(sae(x), sae.decode(codes))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__training_forward_agrees_with_the_contract(name, dtype):
    sae = _build(name, dtype)
    x = _x(dtype)
    out = sae.training_forward(x)
    if isinstance(sae, BatchTopKSAE):  # training keeps a batch budget; inference uses the threshold
        assert_close(out.codes, sae.encode(x, batch=True), dtype)
        assert_close(out.x_hat, sae.decode(sae.encode(x, batch=True)), dtype)
    else:
        assert_close(out.codes, sae.encode(x), dtype)
        assert_close(out.x_hat, sae(x), dtype)
    assert_close(out.pre_acts, sae.pre_activations(x), dtype)
    assert out.loss.ndim == 0 and out.loss.dtype == dtype
    # metrics are detached 0-d tensors (no device sync until the trainer logs them)
    mse_metric = out.metrics["mse"]
    assert isinstance(mse_metric, torch.Tensor) and mse_metric.ndim == 0 and not mse_metric.requires_grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__keeps_the_input_dtype(name, dtype):
    sae = _build(name, dtype)
    x = _x(dtype)
    assert sae.encode(x).dtype == dtype
    assert sae(x).dtype == dtype
    assert sae.training_forward(x).loss.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__parameters_and_buffers_have_the_config_dtype(name, dtype):
    sae = _build(name, dtype)
    tensors = dict(sae.named_parameters()) | dict(sae.named_buffers())
    assert tensors, "an SAE with no parameters"
    for pname, t in tensors.items():
        # integer buffers are counters (MPSAE.n_train_passes); every floating tensor has the dtype
        assert t.dtype == dtype or not t.dtype.is_floating_point, f"{pname} is {t.dtype}, config asks {dtype}"
        assert t.device.type == "cpu"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__dictionary_has_shape_M_by_d(name, dtype):
    sae = _build(name, dtype)
    assert sae.dictionary.shape == (M, D)
    assert sae.dictionary.dtype == dtype


@pytest.mark.parametrize("name", ALL)
def test_sae__wrong_input_dtype_raises_typeerror_naming_the_fix(name):
    sae = _build(name, torch.float32)
    with pytest.raises(TypeError, match=r"cast the input.*x\.to\(torch\.float32\)|dtype=torch\.float64"):
        sae.encode(_x(torch.float64))
    with pytest.raises(TypeError, match=r"x\.to\(torch\.float32\)"):
        sae(_x(torch.float64))
    with pytest.raises(TypeError, match=r"x\.to\(torch\.float32\)"):
        sae.training_forward(_x(torch.float64))


@pytest.mark.parametrize("name", ALL)
def test_sae__wrong_last_dim_raises_valueerror(name):
    sae = _build(name)
    x = torch.randn(4, D + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"d={D}"):
        sae.encode(x)
    with pytest.raises(ValueError, match=rf"d={D}"):
        sae(x)
    with pytest.raises(ValueError, match=rf"n_latents={M}"):
        sae.decode(torch.zeros(4, M + 1, dtype=torch.float64))


@pytest.mark.parametrize("name", ALL)
def test_sae__has_saelens_names_and_shapes(name):
    sae = _build(name)
    assert sae.W_enc.shape == (D, M)
    assert sae.W_dec.shape == (M, D)
    if name == "mp":  # matching pursuit has no encoder bias
        assert not hasattr(sae, "b_enc")
    else:
        assert sae.b_enc.shape == (M,)
    assert sae.b_dec.shape == (D,)
    assert sae.dictionary is sae.W_dec


@pytest.mark.parametrize("name", ["topk", "relu"])
def test_untied_sae__all_four_saelens_tensors_are_trained(name):
    sae = _build(name)
    trained = {id(p) for p in sae.optimizer_parameters()}
    for pname in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert id(getattr(sae, pname)) in trained, pname


@pytest.mark.parametrize("name", TIED)
def test_tied_sae__W_enc_is_a_view_of_W_dec_transposed(name):
    sae = _build(name)
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert sae.W_enc.data_ptr() == sae.W_dec.data_ptr()  # a view: the weight is tied
    with torch.no_grad():
        sae.W_dec[0, 0] = 42.0
    assert sae.W_enc[0, 0] == 42.0


@pytest.mark.parametrize("name", TIED)
def test_tied_sae__b_enc_is_a_buffer_that_gets_no_gradient(name):
    sae = _build(name)
    assert "b_enc" in dict(sae.named_buffers())
    assert "b_enc" not in dict(sae.named_parameters())
    assert all(p is not sae.b_enc for p in sae.optimizer_parameters())
    assert "b_enc" in sae.state_dict()  # still checkpointed
    before = sae.b_enc.clone()
    sae.training_forward(_x(torch.float64)).loss.backward()
    assert sae.b_enc.grad is None and not sae.b_enc.requires_grad
    assert sae.W_dec.grad is not None and bool(sae.W_dec.grad.abs().sum() > 0)
    assert torch.equal(sae.b_enc, before)


def test_tied_sae__train_flags_remove_output_scale_and_b_dec_from_the_optimizer():
    trained = TiedSAE(d=D, n_latents=M, dtype=torch.float64)
    frozen = TiedSAE(d=D, n_latents=M, dtype=torch.float64, train_output_scale=False, train_b_dec=False, output_scale_init=0.01)
    ids = lambda sae: {id(p) for p in sae.optimizer_parameters()}  # noqa: E731
    assert ids(trained) == {id(trained.W_dec), id(trained.output_scale), id(trained.b_dec)}
    assert ids(frozen) == {id(frozen.W_dec)}
    assert torch.equal(frozen.output_scale, torch.full((M,), 0.01, dtype=torch.float64))
    frozen.training_forward(_x(torch.float64)).loss.backward()
    assert frozen.output_scale.grad is None and frozen.b_dec.grad is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__same_seed_same_init_other_seed_differs(name, dtype):
    a, b, c = BUILDERS[name](dtype, 3), BUILDERS[name](dtype, 3), BUILDERS[name](dtype, 4)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(a.W_dec, c.W_dec)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__init_does_not_touch_the_global_rng(name, dtype):
    state = torch.get_rng_state()
    BUILDERS[name](dtype, 0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_sae__atoms_start_unit_norm(name, dtype):
    sae = BUILDERS[name](dtype, 0)
    assert_close(sae.W_dec.norm(dim=1), torch.ones(M), dtype)


# ---------------------------------------------------------------------------------------------
# TopK sparsity
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(5))
def test_topk_sae__at_most_k_nonzeros_per_row(dtype, seed):
    sae = TopKSAE(d=D, n_latents=M, k=3, dtype=dtype, seed=seed)
    x = _x(dtype, n=64, seed=seed)
    codes = sae.encode(x)
    assert int((codes != 0).sum(-1).max()) <= 3
    assert bool((codes >= 0).all())
    # the non-zeros are ReLU of the top-3 pre-activations, in place
    pre = sae.pre_activations(x)
    top = pre.topk(3, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, top.indices, top.values.clamp(min=0))
    assert torch.equal(codes, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_sae__exactly_k_nonzeros_when_all_pre_activations_are_positive(dtype):
    sae = TopKSAE(d=D, n_latents=M, k=3, dtype=dtype)
    with torch.no_grad():
        sae.b_enc.fill_(100.0)  # |(x - b_dec) W_enc| <= ||x|| ~ 2.5 << 100: every pre-act > 0
    x = _x(dtype, n=64)
    assert bool((sae.pre_activations(x) > 0).all())
    assert torch.equal((sae.encode(x) != 0).sum(-1), torch.full((64,), 3))
    assert torch.equal((sae.encode(x, k=7) != 0).sum(-1), torch.full((64,), 7))
    assert torch.equal((sae.encode(x, k=M) != 0).sum(-1), torch.full((64,), M))
    assert torch.equal((sae.encode(x, k=1) != 0).sum(-1), torch.ones(64, dtype=torch.long))


def test_topk_sae__encode_with_another_k_keeps_the_trained_k():
    sae = TopKSAE(d=D, n_latents=M, k=3, dtype=torch.float64)
    x = _x(torch.float64)
    wide = sae.encode(x, k=5)
    assert int((wide != 0).sum(-1).max()) <= 5
    assert sae.k == 3
    assert torch.equal(sae.encode(x), sae.encode(x, k=3))
    # forward uses the trained k
    assert torch.equal(sae(x), sae.decode(sae.encode(x, k=3)))


@pytest.mark.parametrize("k", [0, -1, M + 1])
def test_topk_sae__k_out_of_range_raises(k):
    sae = TopKSAE(d=D, n_latents=M, k=3, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"k must lie in \[1, n_latents={M}\]"):
        sae.encode(_x(torch.float64), k=k)


def test_topk_sae__hand_case():
    # d = 2, M = 3, k = 2, b_dec = 0, b_enc = [0, 0, -1], W_enc columns e1, e2, e1 + e2
    sae = TopKSAE(d=2, n_latents=3, k=2, dtype=torch.float64)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
        sae.b_dec.zero_()
    x = torch.tensor([[3.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    # row 0: pre = [3, 2, 3 + 2 - 1 = 4] -> top 2 = {4 (m=2), 3 (m=0)} -> codes [3, 0, 4]
    # row 1: pre = [-1, -2, -1 - 2 - 1 = -4] -> top 2 = {-1, -2}, ReLU -> all zero
    assert_close(sae.encode(x), [[3.0, 0.0, 4.0], [0.0, 0.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# post_step: unit-norm atoms
# ---------------------------------------------------------------------------------------------
def _scramble_rows_(W: torch.Tensor, seed: int) -> torch.Tensor:
    """Rescale the rows of W by factors in [0.1, 5] and zero row 0; return the new W."""
    g = torch.Generator().manual_seed(seed)
    scales = 0.1 + 4.9 * torch.rand(W.shape[0], 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        W.add_(torch.randn(W.shape, generator=g, dtype=torch.float64).to(W.dtype))
        W.mul_(scales.to(W.dtype))
        W[0] = 0.0
    return W.detach().clone()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", TIED + ["topk"])
def test_post_step__renormalises_atoms_and_keeps_a_zero_row_zero(name, dtype, seed):
    sae = _build(name, dtype, seed)
    before = _scramble_rows_(sae.W_dec, seed)
    sae.post_step()
    W = sae.W_dec.detach()
    assert bool(torch.isfinite(W).all())
    assert torch.equal(W[0], torch.zeros(D, dtype=dtype))
    assert_close(W[1:].norm(dim=1), torch.ones(M - 1), dtype)
    # direction kept: W[m] = before[m] / ||before[m]||
    assert_close(W[1:], before[1:] / before[1:].norm(dim=1, keepdim=True), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_post_step__unit_rows_after_a_real_optimiser_step(dtype):
    sae = TiedSAE(d=D, n_latents=M, dtype=dtype)
    opt = torch.optim.SGD(sae.optimizer_parameters(), lr=1.0)
    sae.training_forward(_x(dtype)).loss.backward()
    opt.step()
    assert not torch.allclose(sae.W_dec.norm(dim=1), torch.ones(M, dtype=dtype))  # the step moved off the sphere
    sae.post_step()
    assert_close(sae.W_dec.norm(dim=1), torch.ones(M), dtype)


def test_post_step__relu_sae_and_unnormalised_topk_leave_the_decoder_alone():
    relu = _build("relu")
    topk = TopKSAE(d=D, n_latents=M, k=3, dtype=torch.float64, unit_norm_decoder=False)
    for sae in (relu, topk):
        before = _scramble_rows_(sae.W_dec, 0)
        sae.post_step()
        assert torch.equal(sae.W_dec, before)


# ---------------------------------------------------------------------------------------------
# the shared switches: unit_norm_decoder and train_b_dec, on every config, same names
# ---------------------------------------------------------------------------------------------
#: name -> (unit_norm_decoder, train_b_dec) by default: what each model did before the switches
#: were shared (ReLU and Matryoshka weight their L1 by the atom norms and never renormalised;
#: MP-SAE's pre-bias is off as in the paper).
SWITCH_DEFAULTS = {
    "tied_jumprelu_threshold": (True, True),
    "tied_jumprelu_biased": (True, True),
    "tied_relu": (True, True),
    "topk_tied": (True, True),
    "topk_tied_baseline": (True, True),
    "l1_tied_baseline": (True, True),
    "topk": (True, True),
    "relu": (False, True),
    "mp": (True, False),
    "batchtopk": (True, True),
    "jumprelu": (True, True),
    "matryoshka": (False, True),
    "matryoshka_pareto": (False, True),
}


def _with(name: str, **fields) -> SAE:
    """The SAE of ``name`` rebuilt from its config with ``fields`` replaced."""
    import dataclasses

    sae = _build(name)
    return type(sae)(dataclasses.replace(sae.config, **fields))


def test_switches__every_model_is_in_the_defaults_table():
    assert set(SWITCH_DEFAULTS) == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_switches__defaults_keep_each_models_behaviour(name):
    config = _build(name).config
    assert (config.unit_norm_decoder, config.train_b_dec) == SWITCH_DEFAULTS[name]


@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("name", ALL)
def test_switches__unit_norm_decoder_decides_what_post_step_does(name, on):
    sae = _with(name, unit_norm_decoder=on)
    before = _scramble_rows_(sae.W_dec, 1)
    sae.post_step()
    W = sae.W_dec.detach()
    if on:
        assert torch.equal(W[0], torch.zeros(D, dtype=W.dtype))
        assert_close(W[1:], before[1:] / before[1:].norm(dim=1, keepdim=True))
    else:
        assert torch.equal(W, before)


@pytest.mark.parametrize("on", [True, False])
@pytest.mark.parametrize("name", ALL)
def test_switches__train_b_dec_decides_whether_the_pre_bias_is_trained(name, on):
    sae = _with(name, train_b_dec=on)
    assert sae.b_dec.requires_grad == on
    assert any(p is sae.b_dec for p in sae.optimizer_parameters()) == on
    assert torch.equal(sae.b_dec, torch.zeros(D, dtype=torch.float64))  # starts at zero either way
    opt = torch.optim.SGD(sae.optimizer_parameters(), lr=0.1)
    sae.training_forward(_x(torch.float64)).loss.backward()
    opt.step()
    assert (sae.b_dec.grad is not None) == on
    assert bool((sae.b_dec != 0).any()) == on


@pytest.mark.parametrize("field", ["unit_norm_decoder", "train_b_dec"])
@pytest.mark.parametrize("name", ALL)
def test_switches__must_be_bools(name, field):
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match=f"{field} must be True or False"):
            _with(name, **{field: bad})


def test_unit_rows__zero_row_stays_zero_without_nan():
    W = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    unit_rows_(W)
    # [3, 4] / 5 = [0.6, 0.8]; [0, 0] stays; [0, -2] / 2 = [0, -1]
    assert_close(W, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])


# ---------------------------------------------------------------------------------------------
# hand-computed cases
# ---------------------------------------------------------------------------------------------
def test_relu_sae__loss_is_mse_plus_decoder_norm_weighted_l1_by_hand():
    sae = ReLUSAE(d=2, n_latents=2, l1_coefficient=0.1, dtype=torch.float64)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]], dtype=torch.float64))  # (d, M)
        sae.b_enc.copy_(torch.tensor([0.25, 0.5], dtype=torch.float64))
        sae.W_dec.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64))  # norms 5, 2
        sae.b_dec.copy_(torch.tensor([0.5, 0.0], dtype=torch.float64))
    x = torch.tensor([[1.5, 2.0], [0.5, -1.0]], dtype=torch.float64)
    # row 0: x - b_dec = [1, 2]; pre = [1*1 + 2*0.5, 1*0 + 2*(-1)] + b_enc = [2, -2] + [0.25, 0.5]
    #        = [2.25, -1.5]; z = [2.25, 0]; x_hat = 2.25 [3, 4] + [0.5, 0] = [7.25, 9]
    #        err = [5.75, 7]; ||err||^2 = 33.0625 + 49 = 82.0625; l1 = 5 * 2.25 = 11.25
    # row 1: x - b_dec = [0, -1]; pre = [-0.5, 1] + [0.25, 0.5] = [-0.25, 1.5]; z = [0, 1.5]
    #        x_hat = 1.5 [0, 2] + [0.5, 0] = [0.5, 3]; err = [0, 4]; ||err||^2 = 16; l1 = 2 * 1.5 = 3
    # mse = (82.0625 + 16) / 2 = 49.03125; l1 = (11.25 + 3) / 2 = 7.125
    # loss = 49.03125 + 0.1 * 7.125 = 49.74375
    out = sae.training_forward(x)
    assert_close(out.pre_acts, [[2.25, -1.5], [-0.25, 1.5]])
    assert_close(out.codes, [[2.25, 0.0], [0.0, 1.5]])
    assert_close(out.x_hat, [[7.25, 9.0], [0.5, 3.0]])
    assert_close(out.metrics["mse"], 49.03125)
    assert_close(out.metrics["l1"], 7.125)
    assert_close(out.loss, 49.74375)
    # lambda = 0: the loss is the reconstruction alone
    plain = ReLUSAE(d=2, n_latents=2, l1_coefficient=0.0, dtype=torch.float64)
    plain.load_state_dict({k: v for k, v in sae.state_dict().items() if k != "l1_coefficient"}, strict=False)
    assert_close(plain.training_forward(x).loss, 49.03125)
    # the coefficient is a buffer: a state dict (a checkpoint) carries a steered value along
    plain.load_state_dict(sae.state_dict())
    assert_close(plain.training_forward(x).loss, 49.74375)


def _hand_tied(activation: str) -> TiedSAE:
    sae = TiedSAE(d=2, n_latents=4, dtype=torch.float64, activation=activation, theta=0.3 if activation == "jumprelu_biased" else 0.0)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0], [0.8, -0.6]], dtype=torch.float64))
        sae.b_enc.copy_(torch.tensor([-0.5, -0.8, 0.0, -0.3], dtype=torch.float64))
        sae.output_scale.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0], dtype=torch.float64))
        sae.b_dec.copy_(torch.tensor([0.5, 0.25], dtype=torch.float64))
    return sae


# x = [1.5, 1.25]; x - b_dec = [1, 1]
# u = W (x - b_dec) = [0.6 + 0.8, 1, -1, 0.8 - 0.6] = [1.4, 1.0, -1.0, 0.2]
# y = u + b = [0.9, 0.2, -1.0, -0.1]
#   neuron 0: y > theta = 0.3; neuron 1: 0 < y <= theta; neuron 2: u < 0; neuron 3: u > 0 but y < 0
# a = [2, 0.5, 1, 3]
HAND_X = [[1.5, 1.25]]
HAND_Y = [[0.9, 0.2, -1.0, -0.1]]
HAND_CASES = {
    # z = u * 1[y > 0] = [1.4, 1.0, 0, 0]; a z = [2.8, 0.5, 0, 0]
    # x^ = 2.8 [0.6, 0.8] + 0.5 [1, 0] + b_dec = [1.68 + 0.5, 2.24] + [0.5, 0.25] = [2.68, 2.49]
    "jumprelu_threshold": ([[1.4, 1.0, 0.0, 0.0]], [[2.68, 2.49]]),
    # z = y * 1[y > 0.3] = [0.9, 0, 0, 0]; a z = [1.8, 0, 0, 0]
    # x^ = 1.8 [0.6, 0.8] + b_dec = [1.08, 1.44] + [0.5, 0.25] = [1.58, 1.69]
    "jumprelu_biased": ([[0.9, 0.0, 0.0, 0.0]], [[1.58, 1.69]]),
    # z = max(y, 0) = [0.9, 0.2, 0, 0]; a z = [1.8, 0.1, 0, 0]
    # x^ = 1.8 [0.6, 0.8] + 0.1 [1, 0] + b_dec = [1.18, 1.44] + [0.5, 0.25] = [1.68, 1.69]
    "relu": ([[0.9, 0.2, 0.0, 0.0]], [[1.68, 1.69]]),
}


@pytest.mark.parametrize("activation", list(HAND_CASES))
def test_tied_sae__activation_and_decode_by_hand(activation):
    sae = _hand_tied(activation)
    x = torch.tensor(HAND_X, dtype=torch.float64)
    z, x_hat = HAND_CASES[activation]
    assert_close(sae.pre_activations(x), HAND_Y)
    assert_close(sae.encode(x), z)
    assert_close(sae(x), x_hat)
    out = sae.training_forward(x)
    assert_close(out.pre_acts, HAND_Y)  # bias adaptation watches y, for every activation
    assert_close(out.codes, z)


def test_tied_sae__loss_by_hand():
    sae = _hand_tied("jumprelu_threshold")
    x = torch.tensor(HAND_X, dtype=torch.float64)
    # x^ - x = [2.68 - 1.5, 2.49 - 1.25] = [1.18, 1.24]; ||.||^2 = 1.3924 + 1.5376 = 2.93
    assert_close(sae.training_forward(x).loss, 2.93)


def test_tied_sae__jumprelu_biased_with_theta_zero_is_relu():
    x = _x(torch.float64, n=64)
    relu = _build("tied_relu")
    biased = TiedSAE(d=D, n_latents=M, dtype=torch.float64, activation="jumprelu_biased", theta=0.0)
    biased.load_state_dict(relu.state_dict())
    assert bool((relu.encode(x) > 0).any())
    assert torch.equal(biased.encode(x), relu.encode(x))


def test_tied_sae__jumprelu_threshold_outputs_unshifted_projection():
    # the bias only decides who fires: where a neuron fires, its code is u = y - b, whatever b is
    sae = _build("tied_jumprelu_threshold")
    x = _x(torch.float64, n=64)
    y = sae.pre_activations(x)
    u = y - sae.b_enc
    z = sae.encode(x)
    assert torch.equal(z != 0, y > 0)
    assert_close(z[y > 0], u[y > 0])


@pytest.mark.parametrize("activation", ["jumprelu_threshold", "relu"])
def test_tied_sae__fired_mask_is_positive_pre_activations(activation):
    sae = TiedSAE(d=D, n_latents=M, dtype=torch.float64, activation=activation, seed=0)
    sae.b_enc.copy_(-0.3 * torch.rand(M, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    out = sae.training_forward(_x(torch.float64, n=64))
    assert out.fired is not None and out.fired.dtype == torch.float64
    assert 0 < float(out.fired.mean()) < 1
    assert torch.equal(out.fired, (out.pre_acts > 0).to(torch.float64))


def test_tied_sae__jumprelu_biased_reports_no_fired_mask():
    sae = TiedSAE(d=D, n_latents=M, dtype=torch.float64, activation="jumprelu_biased", theta=0.1)
    assert sae.training_forward(_x(torch.float64, n=8)).fired is None


def test_tied_sae__relu_through_the_mask_equals_torch_relu_with_its_gradient():
    sae = TiedSAE(d=D, n_latents=M, dtype=torch.float64, activation="relu", seed=0)
    sae.b_enc.copy_(-0.3 * torch.rand(M, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    u = (_x(torch.float64, n=64) @ sae.W_dec.detach().T).requires_grad_(True)
    u2 = u.detach().clone().requires_grad_(True)
    z, y, _ = sae._activate(u)
    ref = torch.relu(u2 + sae.b_enc)
    assert torch.equal(z, ref)
    w = torch.randn_like(z)
    (z * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.equal(u.grad, u2.grad)


def test_tied_sae__topk_keeps_the_k_largest_pre_activations_by_hand():
    sae = TiedSAE(d=2, n_latents=4, dtype=torch.float64, activation="topk", k=2)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0], [0.8, -0.6]], dtype=torch.float64))
        sae.output_scale.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0], dtype=torch.float64))
        sae.b_dec.copy_(torch.tensor([0.5, 0.25], dtype=torch.float64))
    x = torch.tensor(HAND_X, dtype=torch.float64)
    # y = u = W (x - b_dec) = [1.4, 1.0, -1.0, 0.2] (b = 0): the two largest are neurons 0 and 1
    # x^ = 2 * 1.4 [0.6, 0.8] + 0.5 * 1.0 [1, 0] + b_dec = [1.68 + 0.5 + 0.5, 2.24 + 0.25] = [2.68, 2.49]
    assert_close(sae.encode(x), [[1.4, 1.0, 0.0, 0.0]])
    assert_close(sae(x), [[2.68, 2.49]])
    # a negative pre-activation among the top k is zeroed (ReLU), so L0 can be below k
    sae3 = TiedSAE(d=2, n_latents=4, dtype=torch.float64, activation="topk", k=4)
    sae3.load_state_dict(sae.state_dict())
    assert_close(sae3.encode(x), [[1.4, 1.0, 0.0, 0.2]])


def test_tied_sae__init_b_dec_sets_the_data_mean():
    sae = TiedSAE(d=2, n_latents=3, dtype=torch.float64)
    x = torch.tensor([[1.0, 2.0], [3.0, -4.0]], dtype=torch.float64)
    sae.init_b_dec_(x)
    assert_close(sae.b_dec, [2.0, -1.0])  # ([1, 2] + [3, -4]) / 2


# ---------------------------------------------------------------------------------------------
# config validation
# ---------------------------------------------------------------------------------------------
BAD_CONFIGS = [
    (TiedSAE, dict(d=4, n_latents=0), "n_latents"),
    (TopKSAE, dict(d=4, n_latents=0, k=1), "n_latents"),
    (ReLUSAE, dict(d=4, n_latents=0), "n_latents"),
    (TiedSAE, dict(d=0, n_latents=4), "d must"),
    (TiedSAE, dict(d=4, n_latents=4, dtype=torch.int64), "dtype"),
    (TopKSAE, dict(d=4, n_latents=3, k=4), "k must"),
    (TopKSAE, dict(d=4, n_latents=3, k=0), "k must"),
    (TiedSAE, dict(d=4, n_latents=4, activation="gelu"), "activation"),
    (TiedSAE, dict(d=4, n_latents=4, activation="topk"), "needs k"),
    (TiedSAE, dict(d=4, n_latents=4, activation="topk", k=5), "k must"),
    (TiedSAE, dict(d=4, n_latents=4, activation="topk", k=0), "k must"),
    (TiedSAE, dict(d=4, n_latents=4, k=2), "only used by"),
    (TiedSAE, dict(d=4, n_latents=4, activation="jumprelu_biased", theta=-0.1), "theta"),
    (TiedSAE, dict(d=4, n_latents=4, theta=float("nan")), "theta"),
    (TiedSAE, dict(d=4, n_latents=4, output_scale_init=0.0), "output_scale_init"),
    (TiedSAE, dict(d=4, n_latents=4, output_scale_init=-1.0), "output_scale_init"),
    (TiedSAE, dict(d=4, n_latents=4, output_scale_init=math.inf), "output_scale_init"),
    (ReLUSAE, dict(d=4, n_latents=4, l1_coefficient=-0.1), "l1_coefficient"),
    (ReLUSAE, dict(d=4, n_latents=4, l1_coefficient=math.nan), "l1_coefficient"),
    (TopKSAE, dict(d=4, n_latents=3, k=4), "lower k or raise n_latents"),
]

#: values of the wrong type: TypeError naming the field (they were ValueErrors before the shared
#: _checks; a non-integer is a type error).
BAD_TYPES = [
    (TiedSAE, dict(d=4.0, n_latents=4), "d must be an integer"),
    (ReLUSAE, dict(d=4, n_latents=True), "n_latents must be an integer"),
    (TopKSAE, dict(d=4, n_latents=4, k=2.0), "k must be an integer"),
    (TiedSAE, dict(d=4, n_latents=4, train_output_scale=0), "train_output_scale must be True or False"),
]


@pytest.mark.parametrize("cls, kwargs, message", BAD_TYPES, ids=[f"{c.__name__}-{m.split()[0]}" for c, _, m in BAD_TYPES])
def test_sae_config__values_of_the_wrong_type_raise_typeerror_naming_the_field(cls, kwargs, message):
    with pytest.raises(TypeError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("cls, kwargs, field", BAD_CONFIGS, ids=[f"{c.__name__}-{f.split()[0]}-{i}" for i, (c, _, f) in enumerate(BAD_CONFIGS)])
def test_sae_config__bad_values_raise_valueerror_naming_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)


@pytest.mark.parametrize("name", ALL)
def test_sae_config__round_trips_through_a_dict(name):
    config = _build(name).config
    assert type(config).from_dict(config.to_dict()) == config
    assert config.to_dict()["dtype"] == "float64"


@pytest.mark.parametrize("name", ALL)
def test_sae__train_and_eval_do_not_change_the_output(name):
    sae = _build(name)
    x = _x(torch.float64)
    y_train = sae.train()(x)
    y_eval = sae.eval()(x)
    assert torch.equal(y_train, y_eval)
    assert sae.config == _build(name).config
