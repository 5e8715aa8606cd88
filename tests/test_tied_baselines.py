"""Tests of the GBA paper's tied TopK and L1 baselines (sae_theory/models/tied_baselines.py): the
shared contract over both models and both dtypes, hand-computed float64 cases (arithmetic in the
comments), a per-row loop as a second oracle, the switches, saving and config validation."""

from __future__ import annotations

import pytest
import torch

from _helpers import assert_close
from sae_theory.io import load_sae, save_sae
from sae_theory.models import TiedReLUSAE, TiedReLUSAEConfig, TiedTopKSAE, TiedTopKSAEConfig, build_sae, family_of, get_sae
from sae_theory.models.base import TiedWeightSAE

D, M = 6, 10
DTYPES = [torch.float32, torch.float64]
BUILDERS = {
    "tied_topk": lambda dt, s, **kw: TiedTopKSAE(d=D, n_latents=M, k=3, dtype=dt, seed=s, **kw),
    "tied_l1": lambda dt, s, **kw: TiedReLUSAE(d=D, n_latents=M, l1_coefficient=0.1, dtype=dt, seed=s, **kw),
}
ALL = list(BUILDERS)


def _build(name, dtype=torch.float64, seed=0, **kw):
    sae = BUILDERS[name](dtype, seed, **kw)
    with torch.no_grad():  # non-trivial biases and scales, so each term of the formulas matters
        g = torch.Generator().manual_seed(seed + 1)
        sae.b_enc.copy_((0.4 * torch.rand(M, generator=g, dtype=torch.float64) - 0.2).to(dtype))
        sae.b_dec.copy_((0.1 * torch.randn(D, generator=g, dtype=torch.float64)).to(dtype))
        sae.output_scale.copy_((0.5 + torch.rand(M, generator=g, dtype=torch.float64)).to(dtype))
    return sae


def _x(dtype, n=16, seed=7):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------------------------------------
# the contract, over both models and dtypes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__forward_equals_decode_of_encode_and_training_forward_agrees(name, dtype):
    sae, x = _build(name, dtype), _x(dtype)
    out = sae.training_forward(x)
    assert torch.equal(sae(x), sae.decode(sae.encode(x)))
    assert torch.equal(out.codes, sae.encode(x)) and torch.equal(out.x_hat, sae(x))
    assert torch.equal(out.pre_acts, sae.pre_activations(x))
    assert out.loss.dtype == dtype and sae(x).dtype == dtype and sae.encode(x).shape == (16, M)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__one_weight_with_saelens_names_in_the_config_dtype(name, dtype):
    sae = _build(name, dtype)
    assert isinstance(sae, TiedWeightSAE)
    assert sae.W_dec.shape == (M, D) and sae.W_enc.shape == (D, M) and sae.b_enc.shape == (M,) and sae.b_dec.shape == (D,)
    assert sae.W_enc.data_ptr() == sae.W_dec.data_ptr() and sae.dictionary is sae.W_dec  # W_enc is the view W_dec.T
    assert all(t.dtype == dtype for t in [*sae.parameters(), *sae.buffers()])
    assert_close(BUILDERS[name](dtype, 0).W_dec.norm(dim=1), torch.ones(M), dtype)  # rows start unit-norm


@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__same_seed_same_init_and_the_global_rng_untouched(name):
    state = torch.get_rng_state()
    a, b, c = BUILDERS[name](torch.float64, 3), BUILDERS[name](torch.float64, 3), BUILDERS[name](torch.float64, 4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.W_dec, b.W_dec) and not torch.equal(a.W_dec, c.W_dec)


@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__wrong_input_dtype_or_width_raises_naming_the_fix(name):
    sae = _build(name, torch.float32)
    with pytest.raises(TypeError, match="cast the input"):
        sae(_x(torch.float64))
    with pytest.raises(ValueError, match="d=6"):
        sae(torch.zeros(2, D + 1))


@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__every_parameter_is_trained_by_default_and_the_switches_remove_them(name):
    sae = _build(name)
    sae.training_forward(_x(torch.float64)).loss.backward()
    for p in (sae.W_dec, sae.output_scale, sae.b_enc, sae.b_dec):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    frozen = _build(name, train_b_enc=False, train_output_scale=False, train_b_dec=False)
    assert [p.data_ptr() for p in frozen.optimizer_parameters()] == [frozen.W_dec.data_ptr()]
    frozen.training_forward(_x(torch.float64)).loss.backward()
    assert frozen.b_enc.grad is None and frozen.output_scale.grad is None and frozen.b_dec.grad is None


@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__post_step_renormalises_rows_unless_switched_off(name):
    for on in (True, False):
        sae = _build(name, unit_norm_decoder=on)
        with torch.no_grad():
            sae.W_dec.mul_(3.0)
        sae.post_step()
        norms = sae.W_dec.norm(dim=1)
        assert_close(norms, torch.full((M,), 1.0 if on else 3.0, dtype=torch.float64))


@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__saves_loads_and_round_trips_its_config(name, tmp_path):
    sae, x = _build(name), _x(torch.float64)
    save_sae(sae, tmp_path / name)
    loaded = load_sae(tmp_path / name)
    assert type(loaded) is type(sae) and loaded.config == sae.config
    assert type(sae.config).from_dict(sae.config.to_dict()) == sae.config
    assert torch.equal(loaded(x), sae(x))
    sae.eval()
    assert torch.equal(sae(x), loaded.train()(x))  # train/eval do not change the output


def test_tied_baselines__registered_with_labels_of_their_own_families():
    assert get_sae("Tied TopK").cls is TiedTopKSAE and get_sae("Tied L1").cls is TiedReLUSAE and get_sae("Tied ReLU").cls is TiedReLUSAE
    assert family_of("Tied TopK K=20").cls is TiedTopKSAE and family_of("Tied L1 lambda=0.03").cls is TiedReLUSAE
    assert family_of("TopK K=20").name == "TopKSAE" and family_of("GBA").name == "TiedSAE"
    assert isinstance(build_sae("Tied TopK", d=4, n_latents=8, k=2), TiedTopKSAE)


# ---------------------------------------------------------------------------------------------
# hand cases (float64) and a per-row oracle
# ---------------------------------------------------------------------------------------------
def _hand(sae):
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, -1.0], [0.8, -0.6]], dtype=torch.float64))
        sae.output_scale.copy_(torch.tensor([2.0, 0.5, 1.0, 3.0], dtype=torch.float64))
        sae.b_enc.copy_(torch.tensor([0.1, -0.5, 0.3, 0.6], dtype=torch.float64))
        sae.b_dec.copy_(torch.tensor([0.5, 0.25], dtype=torch.float64))
    return sae


def test_tied_topk__keeps_the_k_largest_biased_pre_activations_by_hand():
    sae = _hand(TiedTopKSAE(d=2, n_latents=4, k=2, dtype=torch.float64))
    x = torch.tensor([[1.5, 1.5]], dtype=torch.float64)
    # x - b_dec = [1.0, 1.25]; u = W (x - b_dec) = [0.6 + 1.0, 1.0, -1.25, 0.8 - 0.75] = [1.6, 1.0, -1.25, 0.05]
    # y = u + b_enc = [1.7, 0.5, -0.95, 0.65]: the bias moves neuron 3 (0.65) above neuron 1 (0.5)
    assert_close(sae.pre_activations(x), [[1.7, 0.5, -0.95, 0.65]])
    assert_close(sae.encode(x), [[1.7, 0.0, 0.0, 0.65]])
    # x^ = 2 * 1.7 [0.6, 0.8] + 3 * 0.65 [0.8, -0.6] + b_dec = [2.04 + 1.56 + 0.5, 2.72 - 1.17 + 0.25] = [4.1, 1.8]
    assert_close(sae(x), [[4.1, 1.8]])
    # loss = (4.1 - 1.5)^2 + (1.8 - 1.5)^2 = 6.76 + 0.09, no penalty
    assert_close(sae.training_forward(x).loss, 6.85)
    # with k = 4 the negative pre-activation is zeroed (ReLU): fewer than k non-zeros
    sae4 = TiedTopKSAE(d=2, n_latents=4, k=4, dtype=torch.float64)
    sae4.load_state_dict(sae.state_dict())
    assert_close(sae4.encode(x), [[1.7, 0.5, 0.0, 0.65]])


def test_tied_l1__loss_is_mse_plus_the_row_norm_weighted_l1_by_hand():
    sae = TiedReLUSAE(d=2, n_latents=2, l1_coefficient=0.1, unit_norm_decoder=False, dtype=torch.float64)
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.2, 1.6], [0.0, 0.5]], dtype=torch.float64))  # ||w|| = 2 and 0.5
        sae.output_scale.copy_(torch.tensor([1.0, 2.0], dtype=torch.float64))
        sae.b_enc.copy_(torch.tensor([-1.0, 0.2], dtype=torch.float64))
    x = torch.tensor([[1.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    # row 1: u = [2.8, 0.5], y = [1.8, 0.7], z = [1.8, 0.7]; x^ = 1.8 [1.2, 1.6] + 2 * 0.7 [0, 0.5] = [2.16, 3.58]
    #        mse = 1.16^2 + 2.58^2 = 8.002; l1 = 2 * 1.8 + 0.5 * 0.7 = 3.95
    # row 2: u = [-1.6, -0.5], y = [-2.6, -0.3], z = 0; x^ = 0; mse = 1; l1 = 0
    assert_close(sae.encode(x), [[1.8, 0.7], [0.0, 0.0]])
    assert_close(sae(x), [[2.16, 3.58], [0.0, 0.0]])
    out = sae.training_forward(x)
    assert_close(out.metrics["mse"], (8.002 + 1.0) / 2)
    assert_close(out.metrics["l1"], 3.95 / 2)
    assert_close(out.loss, (8.002 + 1.0) / 2 + 0.1 * 3.95 / 2)


@pytest.mark.parametrize("name", ALL)
def test_tied_baseline__batch_equals_a_per_row_loop_of_the_formula(name):
    sae, x = _build(name, seed=5), _x(torch.float64, n=12)
    W, a, b, c = sae.W_dec.detach(), sae.output_scale.detach(), sae.b_enc.detach(), sae.b_dec.detach()
    for i in range(x.shape[0]):
        y = torch.stack([W[m] @ (x[i] - c) + b[m] for m in range(M)])
        if name == "tied_topk":
            keep = sorted(range(M), key=lambda m: -float(y[m]))[:3]
            z = torch.stack([y[m].clamp_min(0) if m in keep else y.new_zeros(()) for m in range(M)])
        else:
            z = y.clamp_min(0)
        x_hat = sum(a[m] * z[m] * W[m] for m in range(M)) + c
        assert_close(sae.encode(x[i : i + 1])[0], z)
        assert_close(sae(x[i : i + 1])[0], x_hat)


def test_tied_topk__at_most_k_nonzeros_per_row():
    sae = _build("tied_topk", seed=2)
    assert int((sae.encode(_x(torch.float64, n=64)) != 0).sum(1).max()) <= 3


BAD = [
    (TiedTopKSAEConfig, dict(d=4, n_latents=3, k=4), ValueError, "k must"),
    (TiedTopKSAEConfig, dict(d=4, n_latents=3, k=0), ValueError, "k must"),
    (TiedTopKSAEConfig, dict(d=4, n_latents=3, output_scale_init=0.0), ValueError, "output_scale_init"),
    (TiedTopKSAEConfig, dict(d=4, n_latents=3, output_scale_init="1"), TypeError, "output_scale_init"),
    (TiedTopKSAEConfig, dict(d=4, n_latents=3, train_b_enc=1), TypeError, "train_b_enc"),
    (TiedReLUSAEConfig, dict(d=4, n_latents=3, l1_coefficient=-0.1), ValueError, "l1_coefficient"),
    (TiedReLUSAEConfig, dict(d=4, n_latents=3, l1_coefficient=float("nan")), ValueError, "l1_coefficient"),
    (TiedReLUSAEConfig, dict(d=4, n_latents=3, train_output_scale="yes"), TypeError, "train_output_scale"),
]


@pytest.mark.parametrize("cls, kwargs, error, field", BAD)
def test_tied_baseline_config__bad_values_raise_naming_the_field(cls, kwargs, error, field):
    with pytest.raises(error, match=field):
        cls(**kwargs)
