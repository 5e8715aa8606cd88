"""Tests of MP-SAE (sae_theory/models/mp/): the fast batched pursuit against the per-input
reference (unit-norm atoms or not), the propositions (docs/papers.md#mp-sae-propositions) in float64, training
gradients against a naive unrolled autograd, the Gram cache, memory of the training graph, the
unit_norm_decoder and train_b_dec switches, options and bad configs."""

from __future__ import annotations

import math

import pytest
import torch

from _helpers import assert_close
from sae_theory.io import load_sae, save_sae
from sae_theory.metrics import feature_recovery_rate
from sae_theory.models import MPSAE, matching_pursuit_reference
from sae_theory.training import TrainConfig, train

F64 = torch.float64


def _data(B=200, d=16, seed=0, dtype=F64):
    return torch.randn(B, d, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def _sae(d=16, p=64, k=12, dtype=F64, **kw):
    return MPSAE(d=d, n_latents=p, k=k, dtype=dtype, seed=1, **kw)


MODES = [  # (threshold, stop_on_repeat)
    (None, False),
    (0.5, False),
    (None, True),
    (0.3, True),
]


# ---------------------------------------------------------------------------------------------
# fast path == reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gram", ["always", "never"])
@pytest.mark.parametrize("selection", ["relu", "abs"])
@pytest.mark.parametrize("threshold,repeat", MODES)
def test_pursuit__fast_equals_reference_in_float64(gram, selection, threshold, repeat):
    sae = _sae(selection=selection, gram=gram, threshold=threshold, stop_on_repeat=repeat)
    x = _data()
    fast = sae.pursuit(x)
    ref, _ = matching_pursuit_reference(x, sae.W_dec.detach(), 12, threshold=threshold, selection=selection, stop_on_repeat=repeat)
    assert torch.equal(fast.steps, ref.steps)
    assert torch.equal(fast.codes != 0, ref.codes != 0)
    assert torch.equal(fast.indices, ref.indices)  # -1 where no atom was added
    assert_close(fast.codes, ref.codes)
    assert_close(fast.alphas, ref.alphas)
    assert_close(fast.residual, ref.residual)
    if threshold is not None or repeat:  # the adaptive modes really stopped some inputs early
        assert int(ref.steps.min()) < 12


def test_pursuit__with_b_dec_equals_reference_on_centred_input():
    sae = _sae(train_b_dec=True)
    with torch.no_grad():
        sae.b_dec.copy_(torch.linspace(-1, 1, 16, dtype=F64))
    x = _data()
    ref, _ = matching_pursuit_reference(x, sae.W_dec.detach(), 12, b_dec=sae.b_dec.detach())
    assert_close(sae.encode(x), ref.codes)
    assert_close(sae(x), ref.codes @ sae.W_dec.detach() + sae.b_dec.detach())


def _min_gaps(x, D, trace, steps, selection):
    """Per input, the smallest gap between the best and second-best selection score over its steps."""
    gaps = []
    for b, hist in enumerate(trace):
        g = math.inf
        for t in range(int(steps[b])):
            c = D @ hist[t]
            score = torch.relu(c) if selection == "relu" else c.abs()
            top = score.topk(2).values
            g = min(g, float(top[0] - top[1]))
        gaps.append(g)
    return torch.tensor(gaps)


@pytest.mark.parametrize("selection", ["relu", "abs"])
def test_pursuit__float32_supports_agree_with_the_float64_reference(selection):
    B, d, p, k = 2000, 32, 256, 16
    sae = MPSAE(d=d, n_latents=p, k=k, dtype=torch.float32, seed=3, selection=selection, gram="always")
    x32 = _data(B, d, seed=4, dtype=torch.float32)
    D64 = sae.W_dec.detach().double()
    ref, trace = matching_pursuit_reference(x32.double(), D64, k, selection=selection)
    fast = sae.pursuit(x32)
    same = ((fast.codes != 0) == (ref.codes != 0)).all(1)
    # near-ties aside: inputs whose two best scores ever come within float32 rounding of each other
    near_tie = _min_gaps(x32.double(), D64, trace, ref.steps, selection) < 1e-4
    assert float(near_tie.double().mean()) < 0.05
    assert float(same[~near_tie].double().mean()) >= 0.999
    assert float(same.double().mean()) >= 0.99


def test_pursuit__gram_and_direct_paths_agree_in_float32():
    sae = _sae(d=32, p=256, k=16, dtype=torch.float32)
    x = _data(500, 32, dtype=torch.float32)
    a = sae.pursuit(x)
    sae_direct = MPSAE.from_dictionary(sae.W_dec.detach(), k=16, gram="never")
    b = sae_direct.pursuit(x)
    assert float(((a.codes != 0) == (b.codes != 0)).all(1).double().mean()) >= 0.99


def test_pursuit__blocks_of_rows_give_the_same_result(monkeypatch):
    import sae_theory.models.mp.pursuit as fast

    sae = _sae(threshold=0.3, stop_on_repeat=True, gram="always")
    x = _data(203)
    whole = sae.pursuit(x)
    monkeypatch.setattr(fast, "BLOCK_BYTES", 7 * 64 * 8)  # 7 rows per block, a ragged last block
    blocks = sae.pursuit(x)
    for a, b in zip(whole, blocks):
        assert torch.equal(a, b)


def test_pursuit__leading_dimensions_are_kept():
    sae = _sae()
    x = _data(24).reshape(2, 3, 4, 16)
    out = sae.pursuit(x)
    assert out.codes.shape == (2, 3, 4, 64) and out.steps.shape == (2, 3, 4) and out.indices.shape == (2, 3, 4, 12)
    assert_close(out.codes.reshape(24, 64), sae.encode(x.reshape(24, 16)))


# ---------------------------------------------------------------------------------------------
# atoms that are not unit norm (unit_norm_decoder=False lets them drift)
# ---------------------------------------------------------------------------------------------
def _non_unit(p=64, d=16, seed=11):
    """Atoms with norms spread over [0.6, 1.3] (below sqrt 2, so the residual still shrinks); seed
    11, not 0: _data(seed=0) draws the same numbers, and inputs parallel to atoms end in exact ties."""
    return _unit(p, d, seed) * torch.linspace(0.6, 1.3, p, dtype=F64)[:, None]


@pytest.mark.parametrize("gram", ["always", "never"])
@pytest.mark.parametrize("selection", ["relu", "abs"])
@pytest.mark.parametrize("threshold,repeat", MODES)
def test_pursuit__fast_equals_reference_with_non_unit_atoms_in_float64(gram, selection, threshold, repeat):
    # the coefficient is <r, D_j> in both (not divided by ||D_j||^2), and the threshold mode's
    # residual-norm update uses G_jj = ||D_j||^2
    D = _non_unit()
    sae = MPSAE.from_dictionary(D, normalize=False, k=12, selection=selection, gram=gram, threshold=threshold,
                                stop_on_repeat=repeat, unit_norm_decoder=False)
    assert torch.equal(sae.W_dec.detach(), D)
    x = _data()
    fast = sae.pursuit(x)
    ref, _ = matching_pursuit_reference(x, D, 12, threshold=threshold, selection=selection, stop_on_repeat=repeat)
    assert torch.equal(fast.steps, ref.steps)
    assert torch.equal(fast.indices, ref.indices)
    assert_close(fast.codes, ref.codes)
    assert_close(fast.alphas, ref.alphas)
    assert_close(fast.residual, ref.residual)


def test_training_forward__gradients_equal_the_naive_unrolled_autograd_with_non_unit_atoms():
    sae = MPSAE.from_dictionary(_non_unit(256, 16), normalize=False, k=12, unit_norm_decoder=False)
    x = _data(16)
    out = sae.training_forward(x)
    out.loss.backward()
    grad = sae.W_dec.grad.clone()
    sae.zero_grad()
    loss, z = _naive_training_loss(sae, x)
    loss.backward()
    assert_close(out.loss, loss)
    assert_close(out.codes, z)
    assert_close(grad, sae.W_dec.grad)


def test_unit_norm_decoder__off_the_atoms_drift_in_training_and_the_pursuit_follows_them():
    X = _data(2000, 16, seed=3)
    run = TrainConfig(steps=30, batch_size=100, lr=1e-2, progress=False)
    kept, drifted = _sae(gram="always"), _sae(gram="always", unit_norm_decoder=False)
    kept.encode(X[:64]), drifted.encode(X[:64])  # cache G before training: it must not go stale
    train(kept, X, run)
    train(drifted, X, run)
    assert_close(kept.W_dec.detach().norm(dim=1), torch.ones(64))
    assert float((drifted.W_dec.detach().norm(dim=1) - 1).abs().max()) > 1e-3
    D = drifted.W_dec.detach()
    assert_close(drifted.gram(), D @ D.T)
    ref, _ = matching_pursuit_reference(X[:200], D, 12)
    fast = drifted.pursuit(X[:200])
    assert torch.equal(fast.indices, ref.indices)
    assert_close(fast.codes, ref.codes)


def test_unit_norm_decoder__post_step_renormalises_only_when_on():
    on, off = _sae(), _sae(unit_norm_decoder=False)
    for sae in (on, off):
        with torch.no_grad():
            sae.W_dec.mul_(torch.linspace(0.5, 2.0, 64, dtype=F64)[:, None])
        sae.post_step()
    assert_close(on.W_dec.detach().norm(dim=1), torch.ones(64))
    assert_close(off.W_dec.detach().norm(dim=1), torch.linspace(0.5, 2.0, 64, dtype=F64))


# ---------------------------------------------------------------------------------------------
# the propositions (float64)
# ---------------------------------------------------------------------------------------------
def _unit(p, d, seed=0):
    D = torch.randn(p, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return D / D.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("selection", ["relu", "abs"])
def test_prop_c1__residual_is_orthogonal_to_the_last_selected_atom(selection):
    D, x = _unit(64, 16), _data(50)
    out, trace = matching_pursuit_reference(x, D, 20, selection=selection)
    worst = 0.0
    for b, hist in enumerate(trace):
        for t in range(int(out.steps[b])):
            if out.alphas[b, t] != 0:
                worst = max(worst, abs(float(D[out.indices[b, t]] @ hist[t + 1])))
    assert worst <= 1e-12


@pytest.mark.parametrize("selection", ["relu", "abs"])
def test_prop_c2__squared_residual_norm_falls_by_exactly_alpha_squared(selection):
    D, x = _unit(64, 16), _data(50)
    out, trace = matching_pursuit_reference(x, D, 20, selection=selection)
    for b, hist in enumerate(trace):
        n2 = torch.stack([h.pow(2).sum() for h in hist])
        drop = n2[:-1] - n2[1:]
        assert_close(drop, out.alphas[b, : len(drop)].pow(2), msg=f"input {b}")
        assert bool((drop >= -1e-12).all())


def test_prop_c2__breaks_when_atoms_are_not_unit_norm():
    D = _unit(64, 16) * torch.linspace(0.5, 2.0, 64, dtype=F64)[:, None]
    out, trace = matching_pursuit_reference(_data(50), D, 10)
    errors = []
    for b, hist in enumerate(trace):
        n2 = torch.stack([h.pow(2).sum() for h in hist])
        errors.append(float(((n2[:-1] - n2[1:]) - out.alphas[b, : len(hist) - 1].pow(2)).abs().max()))
    assert max(errors) > 1e-2  # the identity is off by far more than rounding


def test_prop_c3__full_rank_dictionary_reconstruction_converges_to_x():
    # seed 1: _data(seed=0) draws the numbers of _unit(seed=0), inputs parallel to atoms, which
    # one step represents (every later step only decomposes the rounding of that one)
    D, x = _unit(32, 8), _data(20, 8, seed=1)
    errs = [float((matching_pursuit_reference(x, D, k)[0].residual).norm(dim=1).max()) for k in (5, 50, 400)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-6


def test_prop_c3__rank_deficient_dictionary_converges_to_the_projection():
    # atoms span only the first 5 of 8 coordinates: x_hat -> the orthogonal projection onto them
    D = torch.zeros(24, 8, dtype=F64)
    D[:, :5] = _unit(24, 5)
    x = _data(20, 8)
    out, _ = matching_pursuit_reference(x, D, 400)
    x_hat = out.codes @ D
    proj = x.clone()
    proj[:, 5:] = 0
    assert float((x_hat - proj).abs().max()) < 1e-6


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def _naive_training_loss(sae: MPSAE, x):
    """Unrolled MP with full correlations under autograd (the authors' code's gradient)."""
    W = sae.W_dec
    r = x - sae.b_dec
    z = torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype)
    for _ in range(sae.k):
        c = r @ W.T
        j = torch.relu(c).detach().argmax(1)
        a = torch.relu(c.gather(1, j[:, None]))
        z = z + torch.zeros_like(z).scatter(1, j[:, None], a)
        r = r - a * W[j]
    x_hat = z @ W + sae.b_dec
    return (x_hat - x).pow(2).sum(-1).mean(), z


@pytest.mark.parametrize("train_b_dec", [False, True])
def test_training_forward__gradients_equal_the_naive_unrolled_autograd(train_b_dec):
    sae = _sae(p=256, train_b_dec=train_b_dec)
    x = _data(16)
    out = sae.training_forward(x)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters() if p.grad is not None}
    sae.zero_grad()
    loss, z = _naive_training_loss(sae, x)
    loss.backward()
    assert_close(out.loss, loss)
    assert_close(out.codes, z)
    assert_close(grads["W_dec"], sae.W_dec.grad)
    assert ("b_dec" in grads) == train_b_dec
    if train_b_dec:
        assert_close(grads["b_dec"], sae.b_dec.grad)
    # unselected atoms get no gradient (the source of dead atoms)
    unused = (z == 0).all(0)
    assert bool(unused.any()) and float(grads["W_dec"][unused].abs().max()) == 0.0


def test_training_forward__codes_and_reconstruction_match_encode_and_decode():
    sae = _sae(threshold=0.4)
    x = _data(64)
    out = sae.training_forward(x)
    assert_close(out.codes, sae.encode(x))
    assert_close(out.x_hat, sae.decode(out.codes))


def test_training_forward__saves_O_of_B_d_for_backward_whatever_k():
    B, d, p, k = 64, 8, 2048, 16
    sae = MPSAE(d=d, n_latents=p, k=k, dtype=torch.float32)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        sae.training_forward(torch.randn(B, d))
    # the final residual, the (B, k) coefficients, selections and masks, and the dictionary itself:
    # nothing per step of size (B, d), let alone (B, p)
    assert sum(saved) <= 4 * B * d + 4 * B * k + p * d


@pytest.mark.parametrize("relu", [True, False])
def test_unrolled_pursuit__hand_written_backward_equals_autograd(relu):
    from sae_theory.models.mp import UnrolledPursuit, unrolled_autograd

    g = torch.Generator().manual_seed(0)
    B, d, p, k = 20, 6, 30, 7
    W = torch.randn(p, d, generator=g, dtype=F64)
    W = (W / W.norm(dim=1, keepdim=True)).requires_grad_(True)
    x0 = torch.randn(B, d, generator=g, dtype=F64, requires_grad=True)
    idx = torch.randint(p, (B, k), generator=g)
    taken = torch.rand(B, k, generator=g) < 0.8
    w_r, w_A = torch.randn(B, d, generator=g, dtype=F64), torch.randn(B, k, generator=g, dtype=F64)
    grads = []
    for fn in (UnrolledPursuit.apply, unrolled_autograd):
        r, A = fn(x0, W, idx, taken, relu)
        ((r * w_r).sum() + (A * w_A).sum() + r.pow(2).sum()).backward()
        grads.append((r.detach(), A.detach(), x0.grad.clone(), W.grad.clone()))
        x0.grad = W.grad = None
    for a, b in zip(*grads):
        assert_close(a, b)
    assert bool((grads[0][1] == 0).any()) and bool((grads[0][1] != 0).any())  # void and real steps


def test_train__error_falls_features_are_found_and_atoms_stay_unit_norm():
    torch.manual_seed(0)
    D = _unit(48, 16, seed=5).float()
    H = (torch.rand(4000, 48) < 0.06).float() * (1 + torch.rand(4000, 48))
    X = H @ D
    sae = MPSAE(d=16, n_latents=48, k=4, seed=2)
    with torch.no_grad():
        before = float((sae(X) - X).pow(2).sum(1).mean())
    train(sae, X, TrainConfig(steps=300, batch_size=100, lr=1e-2, progress=False))
    with torch.no_grad():
        after = float((sae(X) - X).pow(2).sum(1).mean())
    assert after < 0.5 * before
    assert feature_recovery_rate(sae.W_dec.detach(), D, 0.9) >= 0.5  # measured 0.77
    assert_close(sae.W_dec.detach().norm(dim=1), torch.ones(48), torch.float32)


def test_train__checkpoint_resume_is_exact_with_dropout_and_aux(tmp_path):
    # the checkpoint falls inside the dropout phase: the pass counter must come back with the model
    X = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0))
    kw = dict(d=16, n_latents=64, k=4, seed=3, atom_dropout=0.2, atom_dropout_steps=30, aux_coefficient=1e-2, aux_min_dead=0)
    run = TrainConfig(steps=60, batch_size=100, lr=1e-2, progress=False, log_every=10, checkpoint_every=25, checkpoint_dir=str(tmp_path))
    whole = MPSAE(**kw)
    train(whole, X, TrainConfig(**{**run.to_dict(), "checkpoint_every": None, "checkpoint_dir": None}))
    train(MPSAE(**kw), X, TrainConfig(**{**run.to_dict(), "steps": 25}))
    resumed = MPSAE(**kw)
    train(resumed, X, run, resume="latest")
    assert torch.equal(resumed.W_dec, whole.W_dec)
    assert int(resumed.n_train_passes) == int(whole.n_train_passes) == 60


# ---------------------------------------------------------------------------------------------
# the Gram matrix
# ---------------------------------------------------------------------------------------------
def test_gram__cached_until_the_dictionary_changes():
    sae = _sae()
    G1 = sae.gram()
    assert sae.gram() is G1
    with torch.no_grad():
        sae.W_dec[0].neg_()  # in place: a new version of W_dec
    assert sae.gram() is not G1
    with torch.no_grad():
        sae.W_dec.mul_(0.5)
    assert_close(sae.gram(), sae.W_dec.detach() @ sae.W_dec.detach().T)
    other = _sae()
    with torch.no_grad():
        other.W_dec.copy_(torch.flip(other.W_dec, [0]))
    sae.load_state_dict(other.state_dict())
    assert_close(sae.gram(), other.W_dec.detach() @ other.W_dec.detach().T)


@pytest.mark.parametrize("edit", ["data", "no_grad"])
def test_gram__writes_that_bypass_the_version_counter_invalidate_it(edit):
    # dead-atom resampling writes a new atom through .data or under no_grad: G must follow
    sae = _sae(gram="always")
    x = _data(64)
    sae.encode(x)  # builds and caches G
    new_atom = torch.nn.functional.normalize(torch.randn(sae.d, generator=torch.Generator().manual_seed(7), dtype=sae.W_dec.dtype), dim=0)
    if edit == "data":
        sae.W_dec.data[3].copy_(new_atom)
    else:
        with torch.no_grad():
            sae.W_dec[3].copy_(new_atom)
    assert_close(sae.gram(), sae.W_dec.detach() @ sae.W_dec.detach().T)
    ref, _ = matching_pursuit_reference(x, sae.W_dec.detach(), 12)
    assert_close(sae.encode(x), ref.codes)


def test_gram__an_optimizer_step_invalidates_it_and_encode_follows_the_new_dictionary():
    sae = _sae(gram="always")
    x = _data(64)
    sae.encode(x)  # builds G
    opt = torch.optim.SGD(sae.parameters(), lr=0.5)
    sae.training_forward(x).loss.backward()
    opt.step()
    ref, _ = matching_pursuit_reference(x, sae.W_dec.detach(), 12)
    assert_close(sae.encode(x), ref.codes)


def test_uses_gram__the_documented_rule():
    sae = _sae(d=16, p=64, k=4)
    assert sae.uses_gram(batch_size=16)  # p = 64 <= k B = 64
    assert not sae.uses_gram(batch_size=15)  # p > k B and no cached G: direct is cheaper
    sae.gram()
    assert sae.uses_gram(batch_size=1)  # cached: reuse it
    small = _sae(d=16, p=64, k=4, gram_max_bytes=64 * 64 * 8 - 1)
    assert not small.uses_gram(batch_size=10_000)  # too large
    assert _sae(gram="always").uses_gram(1) and not _sae(gram="never").uses_gram(10_000)


# ---------------------------------------------------------------------------------------------
# inference options
# ---------------------------------------------------------------------------------------------
def test_encode__k_override_bounds_the_support_and_error_is_non_increasing_in_k():
    sae = _sae(k=4)
    x = _data(100)
    errs = []
    for k in (1, 2, 4, 8, 16):
        z = sae.encode(x, k=k)
        assert int((z != 0).sum(1).max()) <= k
        errs.append(float((sae.decode(z) - x).pow(2).sum(1).mean().detach()))
    assert all(b <= a + 1e-12 for a, b in zip(errs, errs[1:])) and errs[-1] < errs[0]


def test_encode__threshold_mode_stops_below_the_threshold_or_at_the_cap():
    sae = _sae(k=60)
    x = _data(100)
    out = sae.pursuit(x, threshold=0.8)
    norms = out.residual.norm(dim=1)
    assert bool(((norms < 0.8) | (out.steps == 60)).all())
    assert int(out.steps.min()) < int(out.steps.max())  # the number of steps adapts per input


def test_encode__zero_input_with_threshold_takes_no_step():
    sae = _sae(threshold=1e-3)
    out = sae.pursuit(torch.zeros(3, 16, dtype=F64))
    assert out.steps.tolist() == [0, 0, 0] and float(out.codes.abs().sum()) == 0.0


def test_relu_selection__codes_are_non_negative_and_abs_may_be_signed():
    x = _data(100)
    assert float(_sae().encode(x).min()) >= 0
    assert float(_sae(selection="abs").encode(x).min()) < 0


def test_stop_on_repeat__each_atom_appears_at_most_once_except_the_last_step():
    sae = _sae(k=40, stop_on_repeat=True)
    out = sae.pursuit(_data(100))
    for b in range(100):
        n = int(out.steps[b])
        chosen = out.indices[b, : n - 1].tolist()
        assert len(set(chosen)) == len(chosen)  # before the stopping step, every step adds an atom


# ---------------------------------------------------------------------------------------------
# the stop at rounding level (float64)
# ---------------------------------------------------------------------------------------------
def _orthonormal(d=16, seed=21):
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=F64))
    return Q.T.contiguous()  # rows: an orthonormal basis


def _all_paths(D, x, k, **kw):
    """L0-relevant results of every implementation on x: name -> (codes, steps or None)."""
    ref, _ = matching_pursuit_reference(x, D, k, selection=kw.get("selection", "relu"))
    out = {"reference": (ref.codes, ref.steps)}
    for gram in ("always", "never"):
        sae = MPSAE.from_dictionary(D, normalize=False, k=k, gram=gram, **kw)
        fast = sae.pursuit(x)
        out[f"{gram}: pursuit"] = (fast.codes, fast.steps)
        out[f"{gram}: encode"] = (sae.encode(x), None)
        out[f"{gram}: training_forward"] = (sae.training_forward(x).codes.detach(), None)
    return out


@pytest.mark.parametrize("selection", ["relu", "abs"])
def test_rounding_stop__an_input_equal_to_an_atom_takes_exactly_one_atom(selection):
    # measured before the stop: most of these 64 inputs took 6-8 atoms, the 7 after the first
    # with coefficients ~1e-16 (rounding of the first step), and each path took different ones
    D = _unit(64, 16)
    x = torch.cat([D, 2 * D])  # every atom, and twice every atom (exact in floating point)
    for name, (codes, steps) in _all_paths(D, x, 8, selection=selection).items():
        assert (codes != 0).sum(1).tolist() == [1] * 128, name
        assert_close(codes.sum(1), torch.cat([torch.ones(64, dtype=F64), 2 * torch.ones(64, dtype=F64)]), msg=name)
        assert torch.equal(codes.argmax(1), torch.arange(128) % 64), name
        if steps is not None:
            assert steps.tolist() == [1] * 128, name


@pytest.mark.parametrize("selection", ["relu", "abs"])
def test_rounding_stop__a_sparse_combination_on_an_orthonormal_dictionary_gives_its_exact_codes(selection):
    Q = _orthonormal()
    g = torch.Generator().manual_seed(5)
    Z = torch.zeros(40, 16, dtype=F64)
    for b in range(40):  # 2 atoms in the first 20 rows, 3 in the others; distinct positive coefficients
        s = 2 if b < 20 else 3
        Z[b, torch.randperm(16, generator=g)[:s]] = torch.tensor([1.0, 0.6, 0.3][:s], dtype=F64) + 0.05 * torch.rand(s, generator=g, dtype=F64)
    x = Z @ Q
    for name, (codes, steps) in _all_paths(Q, x, 8, selection=selection).items():
        assert torch.equal(codes != 0, Z != 0), name  # later codes are exactly 0
        assert_close(codes, Z, msg=name)
        if steps is not None:
            assert steps.tolist() == [2] * 20 + [3] * 20, name


@pytest.mark.parametrize("gram", ["always", "never"])
def test_rounding_stop__a_row_at_rounding_level_stops_while_the_others_continue(gram, monkeypatch):
    import sae_theory.models.mp.pursuit as fast

    D = _unit(64, 16)
    x = _data(30, seed=7)  # not seed 0: those are the numbers of _unit(64, 16), scaled atoms
    x[::3] = D[:10]  # rows 0, 3, .., 27 are atoms: one step each; the others take all 12
    sae = MPSAE.from_dictionary(D, normalize=False, k=12, gram=gram)
    out = sae.pursuit(x)
    ref, _ = matching_pursuit_reference(x, D, 12)
    atom = torch.arange(30) % 3 == 0
    assert out.steps[atom].tolist() == [1] * 10 and out.steps[~atom].tolist() == [12] * 20
    assert torch.equal(out.steps, ref.steps) and torch.equal(out.indices, ref.indices)
    assert_close(out.codes, ref.codes)
    alone = sae.pursuit(x[~atom])  # the rows that continue do not notice the ones that stopped
    assert torch.equal(alone.indices, out.indices[~atom])
    assert_close(alone.codes, out.codes[~atom])
    monkeypatch.setattr(fast, "BLOCK_BYTES", 7 * 64 * 8)  # blocks of 7 rows: the stops fall inside blocks
    blocks = sae.pursuit(x)
    for a, b in zip(out, blocks):
        assert torch.equal(a, b)


@pytest.mark.parametrize("selection", ["relu", "abs"])
def test_rounding_stop__zero_rows_give_zero_codes_and_take_no_step(selection):
    D = _unit(64, 16)
    x = _data(6, seed=7)
    x[[1, 4]] = 0
    for name, (codes, steps) in _all_paths(D, x, 8, selection=selection).items():
        assert bool(torch.isfinite(codes).all()), name
        assert float(codes[[1, 4]].abs().sum()) == 0.0, name
        assert bool((codes[[0, 2, 3, 5]] != 0).any(1).all()), name
        if steps is not None:
            assert steps.tolist() == [8, 0, 8, 8, 0, 8], name
    # centred as the model centres it: an input equal to b_dec is a zero row
    sae = MPSAE.from_dictionary(D, normalize=False, k=8, train_b_dec=True, selection=selection)
    with torch.no_grad():
        sae.b_dec.copy_(torch.linspace(-1, 1, 16, dtype=F64))
    xb = torch.stack([sae.b_dec.detach().clone(), x[0]])
    out = sae.training_forward(xb)
    out.loss.backward()
    assert sae.pursuit(xb).steps.tolist() == [0, 8]
    assert float(out.codes.detach()[0].abs().sum()) == 0.0 and bool(torch.isfinite(sae.W_dec.grad).all())
    assert bool(torch.isfinite(sae.b_dec.grad).all())


@pytest.mark.parametrize("gram", ["always", "never"])
def test_rounding_stop__only_removes_codes_below_the_tolerance_and_can_be_switched_off(gram):
    from sae_theory.models.mp.reference import rounding_tolerance

    assert rounding_tolerance(F64) == 32 * torch.finfo(F64).eps
    assert rounding_tolerance(torch.float32) == 32 * torch.finfo(torch.float32).eps
    D = _unit(64, 16)
    x = torch.cat([D[:20], _data(20, seed=7)])
    on = MPSAE.from_dictionary(D, normalize=False, k=8, gram=gram)
    off = MPSAE.from_dictionary(D, normalize=False, k=8, gram=gram, stop_at_rounding=False)
    a, b = on.pursuit(x), off.pursuit(x)
    assert torch.equal(a.codes[20:], b.codes[20:]) and torch.equal(a.steps[20:], b.steps[20:])  # never near rounding
    assert b.steps[:20].tolist() == [8] * 20 and int((b.codes[:20] != 0).sum(1).max()) > 1  # the plain loop goes on
    # what the stop removes: the later steps of rows whose residual was already below tol ||x||
    extra = (b.codes - a.codes)[:20].abs().max(1).values
    assert bool((extra <= 8 * rounding_tolerance(F64) * x[:20].norm(dim=1)).all())
    assert torch.equal(on.pursuit(x, stop_at_rounding=False).codes, b.codes)  # the per-call override
    ref_off, _ = matching_pursuit_reference(x, D, 8, stop_at_rounding=False)
    assert ref_off.steps.tolist() == [8] * 40


# ---------------------------------------------------------------------------------------------
# dropout and the auxiliary loss
# ---------------------------------------------------------------------------------------------
def test_atom_dropout__dropped_atoms_are_never_selected_and_it_ends_on_time():
    sae = _sae(k=8, atom_dropout=0.5, atom_dropout_steps=2)
    x = _data(200)
    usage = []
    for _ in range(3):
        out = sae.training_forward(x)
        usage.append((out.codes != 0).any(0))
    assert int(usage[0].sum()) < 40 and int(usage[1].sum()) < 40  # about half the 64 atoms removed
    assert not torch.equal(usage[0], usage[1])  # a new mask every pass
    assert int(usage[2].sum()) > int(usage[0].sum())
    sae.eval()
    fresh = _sae(k=8, atom_dropout=0.5, atom_dropout_steps=2).eval()
    assert_close(fresh.training_forward(x).codes, fresh.encode(x))  # no dropout in eval mode


def test_aux_loss__by_hand_and_it_reaches_dead_atoms():
    sae = _sae(k=2, aux_coefficient=0.1, aux_min_dead=0)
    x = _data(32)
    out = sae.training_forward(x)
    dead = out.codes.detach().amax(0) < 1e-2
    sel = sae.pursuit(x)
    aux = (sel.residual @ sae.W_dec.detach()[dead].T).mean()
    assert_close(out.loss, out.metrics["mse"] - 0.1 * aux)
    out.loss.backward()
    assert float(sae.W_dec.grad[dead].abs().sum(1).min()) > 0


def test_aux_loss__off_below_the_dead_count():
    sae = _sae(k=2, aux_coefficient=0.1, aux_min_dead=10_000)
    out = sae.training_forward(_data(32))
    assert "aux" not in out.metrics and torch.equal(out.loss, out.metrics["mse"])


# ---------------------------------------------------------------------------------------------
# contract, construction, bad input
# ---------------------------------------------------------------------------------------------
def test_contract__tied_names_and_save_load(tmp_path):
    sae = _sae(train_b_dec=True, threshold=0.2)
    assert sae.W_enc.data_ptr() == sae.W_dec.data_ptr() and sae.W_enc.shape == (16, 64)
    assert sae.dictionary is sae.W_dec
    assert [p is sae.W_dec or p is sae.b_dec for p in sae.optimizer_parameters()] == [True, True]
    plain = _sae()
    assert len(plain.optimizer_parameters()) == 1 and plain.optimizer_parameters()[0] is plain.W_dec
    save_sae(sae, tmp_path / "mp")
    back = load_sae(tmp_path / "mp")
    assert isinstance(back, MPSAE) and back.config == sae.config
    x = _data(10)
    assert torch.equal(back.encode(x), sae.encode(x))


def test_from_dictionary__normalises_and_keeps_dtype():
    D = torch.randn(30, 6, dtype=F64) * 3
    sae = MPSAE.from_dictionary(D, k=3)
    assert sae.config.dtype == F64 and sae.n_latents == 30 and sae.d == 6
    assert_close(sae.W_dec.norm(dim=1), torch.ones(30))
    raw = MPSAE.from_dictionary(D, k=3, normalize=False)
    assert torch.equal(raw.W_dec.detach(), D)
    with pytest.raises(ValueError, match="zero rows"):
        MPSAE.from_dictionary(torch.zeros(3, 4), k=1)
    with pytest.raises(ValueError, match="NaN"):
        MPSAE.from_dictionary(torch.full((3, 4), float("nan")), k=1)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(k=0), "k must be >= 1"),
        (dict(threshold=-0.1), "threshold must be None or a finite number >= 0"),
        (dict(threshold=float("nan")), "threshold must be None"),
        (dict(selection="max"), "selection must be one of"),
        (dict(gram="sometimes"), "gram must be one of"),
        (dict(atom_dropout=1.0), r"atom_dropout must lie in \[0, 1\)"),
        (dict(atom_dropout=0.1), "atom_dropout > 0 needs atom_dropout_steps > 0"),
        (dict(aux_coefficient=-1.0), "aux_coefficient must be"),
        (dict(aux_min_dead=-1), "aux_min_dead must be >= 0"),
        (dict(gram_max_bytes=-1), "gram_max_bytes must be >= 0"),
    ],
)
def test_config__bad_values_raise_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MPSAE(d=4, n_latents=8, **kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(k=2.5), "k must be an integer"),
        (dict(k=True), "k must be an integer"),
        (dict(atom_dropout_steps=1.0), "atom_dropout_steps must be an integer"),
        (dict(stop_on_repeat=1), "stop_on_repeat must be True or False"),
        (dict(train_b_dec="yes"), "train_b_dec must be True or False"),
        (dict(unit_norm_decoder=None), "unit_norm_decoder must be True or False"),
        (dict(stop_at_rounding=1), "stop_at_rounding must be True or False"),
    ],
)
def test_config__values_of_the_wrong_type_raise_typeerror(kwargs, message):
    with pytest.raises(TypeError, match=message):
        MPSAE(d=4, n_latents=8, **kwargs)


def test_config__integral_numbers_are_stored_as_int():
    import numpy as np

    config = MPSAE(d=4, n_latents=8, k=np.int64(3), aux_min_dead=np.int32(2)).config
    assert type(config.k) is int and type(config.aux_min_dead) is int and config.k == 3


def test_config__reads_a_saved_config_with_the_old_name_use_b_dec():
    from sae_theory.models import MPSAEConfig

    saved = {**MPSAEConfig(d=4, n_latents=8, train_b_dec=True).to_dict()}
    saved["use_b_dec"] = saved.pop("train_b_dec")
    assert MPSAEConfig.from_dict(saved) == MPSAEConfig(d=4, n_latents=8, train_b_dec=True)
    with pytest.raises(ValueError, match="keep train_b_dec only"):
        MPSAEConfig.from_dict({**saved, "train_b_dec": True})


def test_encode__bad_arguments_raise():
    sae = _sae()
    x = _data(4)
    with pytest.raises(ValueError, match="k must be >= 1"):
        sae.encode(x, k=0)
    with pytest.raises(TypeError, match="k must be an integer"):
        sae.encode(x, k=2.0)
    with pytest.raises(ValueError, match="threshold must be None"):
        sae.encode(x, threshold=-1.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., d=16\)"):
        sae.encode(torch.zeros(4, 5, dtype=F64))
    with pytest.raises(TypeError, match="dtype"):
        sae.encode(x.float())


# ---------------------------------------------------------------------------------------------
# symbolic derivations and the theory experiments
# ---------------------------------------------------------------------------------------------
def test_symbolic__mp_step_identities_vanish_and_closed_forms_match_numbers():
    import sympy as sp

    from sae_theory.theory.symbolic import mp_step_identities

    ids = mp_step_identities(dim=3)
    for name in ("orthogonality", "norm_drop", "orthogonality_unit", "norm_drop_unit"):
        assert ids[name] == 0, name
    # the closed forms evaluated at numbers equal one numeric step, for a non-unit atom
    r, D = torch.tensor([0.3, -1.2, 0.7], dtype=F64), torch.tensor([1.5, 0.2, -0.4], dtype=F64)
    a = float(r @ D)
    r_new = r - a * D
    subs = {sp.Symbol(f"r{i}", real=True): float(r[i]) for i in range(3)} | {sp.Symbol(f"D{i}", real=True): float(D[i]) for i in range(3)}
    assert_close(float(ids["inner_after"].subs(subs)), float(D @ r_new))
    assert_close(float(ids["drop_after"].subs(subs)), float(r @ r - r_new @ r_new))


def test_mp_theory__tiny_profile_checks_hold():
    import dataclasses

    from sae_theory.experiments import mp_theory
    from sae_theory.profiles import MPScale, get_profile

    P = dataclasses.replace(get_profile("quick"), seeds=(0,), mp=MPScale(n=32, d=8, s=2, n_latents=32, k=3, steps=20, batch_size=32,
                                                                          n_samples=2000, theory_inputs=10, theory_steps=12, inference_k_max_multiple=2))
    dicts = mp_theory.dictionaries(P)
    props = mp_theory.proposition_checks(P, dicts)
    worst = props.groupby("dictionary")[["last_inner", "norm_drop_error"]].max()
    assert (worst.loc[["random unit", "trained"]] <= 1e-12).all().all()
    assert (worst.loc["non-unit"] > 1e-6).all()
    earlier = mp_theory.earlier_atom_cosines(P, dicts)
    assert float(earlier[earlier.lag == 0].cosine.max()) <= 1e-12
    assert set(earlier.kind) == {"selected atom", "unselected atom"}
    conv = mp_theory.convergence(P)
    final = conv[(conv.step == conv.step.max()) & (conv.selection == "abs")].set_index("dictionary")
    assert final.loc["full rank", "distance_to_x"] <= 1e-6 and final.loc["rank d/2", "distance_to_projection"] <= 1e-6  # 8d = 64 steps
