"""The CPU selection path of TopK-style codes (models.base.selection_mask, topk_relu, batch_topk)
against the torch.topk path it replaces on the CPU: the same codes bit for bit, the same gradients,
the same trained weights; the cases where it must hand over to torch.topk (ties above 0, NaN,
other dtypes) do."""

from __future__ import annotations

import pytest
import torch

import sae_theory.models.base as base
import sae_theory.models.batchtopk as batchtopk_module
from sae_theory.models import BatchTopKSAE, TiedSAE, TopKSAE
from sae_theory.models.base import SELECT_MAX_WIDTH, SELECT_MIN_K, selection_applies, selection_mask, topk_relu
from sae_theory.models.batchtopk import batch_topk
from sae_theory.training import TrainConfig, train


def _reference_topk_relu(pre: torch.Tensor, k: int) -> torch.Tensor:
    """The docstring's rule through torch.topk: ReLU of the k largest entries of every row."""
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))


def _reference_batch_topk(acts: torch.Tensor, budget: int) -> torch.Tensor:
    flat = acts.reshape(-1)
    top = flat.topk(budget, sorted=False)
    return torch.zeros_like(flat).scatter(0, top.indices, top.values).reshape(acts.shape)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns (a negative zero differs from a zero here, unlike in torch.equal)."""
    return t.detach().contiguous().view(torch.int64 if t.dtype == torch.float64 else torch.int32)


def _pre(shape, dtype, seed=0, shift=0.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) + shift


def _same_codes_and_gradient(fast_fn, ref_fn, pre: torch.Tensor, k: int):
    weights = _pre(pre.shape, pre.dtype, seed=99)
    a, b = pre.clone().requires_grad_(), pre.clone().requires_grad_()
    ca, cb = fast_fn(a, k), ref_fn(b, k)
    assert torch.equal(_bits(ca), _bits(cb))  # the same codes, zeros included, bit for bit
    (ca * weights).sum().backward()
    (cb * weights).sum().backward()
    assert torch.equal(a.grad, b.grad)  # the same gradient (a zero may be negative on one side)


@pytest.fixture(autouse=True)
def _one_thread():
    """Selection runs with one torch thread only (selection_applies); the tests pin it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, k, shift", [
    ((256, 512), 20, 0.0),    # a notebook's training batch
    ((64, 40), 16, 0.0),
    ((64, 40), 40, 0.0),      # k = n: every entry
    ((32, 50), 16, -2.0),     # most rows have fewer than k positive entries: k-th largest <= 0
    ((4, 6, 30), 16, 0.0),    # leading dimensions (B, T, M)
])
def test_topk_relu_matches_torch_topk(dtype, shape, k, shift):
    pre = _pre(shape, dtype, shift=shift)
    assert selection_mask(pre, k, positive=True) is not None  # the selection path is the one tested
    _same_codes_and_gradient(topk_relu, _reference_topk_relu, pre, k)


def test_a_strided_view_and_inference_mode_give_the_same_codes():
    pre = _pre((64, 300), torch.float32)[:, :48].T  # (48, 64), not contiguous
    assert not pre.is_contiguous() and selection_mask(pre, 20) is not None
    _same_codes_and_gradient(topk_relu, _reference_topk_relu, pre, 20)
    with torch.inference_mode():
        assert torch.equal(topk_relu(pre, 20), _reference_topk_relu(pre, 20))


def test_ties_at_or_below_zero_keep_the_selection_path_and_ties_above_zero_hand_over():
    pre = _pre((8, 24), torch.float64)
    pre[0, :] = -1.0                  # a row all tied below 0: its codes are zeros either way
    pre[1, :20] = 0.0                 # zeros tied at the k-th value
    pre[1, 20:] = -2.0
    assert selection_mask(pre, 16, positive=True) is not None
    _same_codes_and_gradient(topk_relu, _reference_topk_relu, pre, 16)
    pre[2, :] = torch.arange(24, 0, -1, dtype=torch.float64)
    pre[2, 14:18] = 5.0               # four entries tied above 0 at the 16th place
    assert selection_mask(pre, 16) is None
    _same_codes_and_gradient(topk_relu, _reference_topk_relu, pre, 16)  # torch.topk decides, as before


def test_nan_hands_over_to_torch_topk():
    pre = _pre((6, 40), torch.float32)
    pre[2, 5] = float("nan")
    assert selection_mask(pre, 16) is None
    got, want = topk_relu(pre, 16), _reference_topk_relu(pre, 16)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))


def test_selection_applies_only_where_it_was_measured_to_pay():
    pre = _pre((8, 64), torch.float32)
    assert selection_mask(pre, SELECT_MIN_K) is not None
    assert selection_mask(pre, SELECT_MIN_K - 1) is None                      # torch.topk is cheap at small k
    assert selection_mask(_pre((2, SELECT_MAX_WIDTH + 1), torch.float32), 20) is None  # wide rows
    assert selection_applies(_pre((2, SELECT_MAX_WIDTH + 1), torch.float32), 20, max_width=None)
    assert selection_mask(pre, 65) is None and selection_mask(pre[:0], 20) is None
    for dtype in (torch.float16, torch.bfloat16):
        assert selection_mask(pre.to(dtype), 20) is None
        assert torch.equal(topk_relu(pre.to(dtype), 20), _reference_topk_relu(pre.to(dtype), 20))
    torch.set_num_threads(2)  # torch.topk shares rows among threads; selection is not measured there
    assert selection_mask(pre, 20) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shift, budget", [
    (0.0, 2048),     # half the entries are zeros after the ReLU
    (-1.3, 2048),    # about 90% zeros, as a trained BatchTopK
    (-3.5, 2048),    # fewer positive entries than the budget
    (0.0, 16),
])
def test_batch_topk_matches_torch_topk(dtype, shift, budget):
    # BatchTopKSAE's use: batch_topk(relu(pre)); the gradient is compared at pre (at the zeros of
    # relu(pre) torch.topk's scatter may pass a gradient to acts where the selection does not,
    # which the ReLU's zero gradient there removes: see batch_topk's docstring)
    pre = _pre((256, 512), dtype, shift=shift)
    assert batchtopk_module._budget_mask(torch.relu(pre).reshape(-1), budget) is not None
    _same_codes_and_gradient(lambda p, b: batch_topk(torch.relu(p), b), lambda p, b: _reference_batch_topk(torch.relu(p), b), pre, budget)


def test_batch_topk_small_batches_and_ties_above_zero_go_through_torch_topk():
    acts = torch.relu(_pre((200, 20), torch.float32))  # the hierarchy toy's batch: torch.topk is faster there
    assert batchtopk_module._budget_mask(acts.reshape(-1), 272) is None
    acts = torch.relu(_pre((256, 256), torch.float32)).clamp(max=5.0)
    acts[0, :18] = 100.0 + torch.arange(18, dtype=torch.float32)  # the 18 largest, distinct
    acts[1, :4] = 50.0  # then four tied above 0 across the 20th place of the batch
    assert batchtopk_module._budget_mask(acts.reshape(-1), 20) is None
    assert torch.equal(batch_topk(acts, 20), _reference_batch_topk(acts, 20))


def _torch_topk_everywhere(monkeypatch):
    monkeypatch.setattr(base, "selection_mask", lambda *args, **kwargs: None)
    monkeypatch.setattr(batchtopk_module, "_budget_mask", lambda *args, **kwargs: None)


@pytest.mark.parametrize("make, batch_size", [
    (lambda: TopKSAE(d=12, n_latents=64, k=16, seed=3), 64),
    (lambda: TiedSAE(d=12, n_latents=64, activation="topk", k=16, seed=3), 64),
    (lambda: BatchTopKSAE(d=12, n_latents=256, k=3, seed=3), 256),  # 65,536 entries a batch
])
def test_training_is_bit_identical_to_training_through_torch_topk(make, batch_size, monkeypatch):
    X = torch.randn(4096, 12, generator=torch.Generator().manual_seed(0))
    cfg = TrainConfig(steps=120, batch_size=batch_size, lr=3e-3, seed=1, progress=False)
    selected = []

    def counting(select):
        def wrapper(*args, **kwargs):
            mask = select(*args, **kwargs)
            selected.append(mask is not None)
            return mask
        return wrapper

    monkeypatch.setattr(base, "selection_mask", counting(base.selection_mask))
    monkeypatch.setattr(batchtopk_module, "_budget_mask", counting(batchtopk_module._budget_mask))
    fast = make()
    train(fast, X, cfg)
    assert sum(selected) >= cfg.steps  # the codes came from the selection path at every step
    _torch_topk_everywhere(monkeypatch)
    ref = make()
    train(ref, X, cfg)
    for (name, p), (_, q) in zip(fast.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(p, q), name
