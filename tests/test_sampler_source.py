"""train() on a plain sampler (issue 15 point 4): a callable batch_size -> Tensor or an iterator of
batches, and the resume it cannot promise."""

from __future__ import annotations

import pytest
import torch

from sae_theory.models import TopKSAE
from sae_theory.training import SamplerSource, TensorSource, TrainConfig, as_source, train

D, M = 6, 12


def _X(n=512, seed=0):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def test_callable_sampler_trains_like_the_same_batches_given_as_a_source():
    # the sampler hands out exactly the batches a TensorSource of the same seed would
    ref_source = TensorSource(_X(), seed=4)
    replay = TensorSource(_X(), seed=4)
    a, b = TopKSAE(d=D, n_latents=M, k=2, seed=1), TopKSAE(d=D, n_latents=M, k=2, seed=1)
    cfg = TrainConfig(steps=12, batch_size=32, lr=1e-2, progress=False)
    train(a, ref_source, cfg)
    train(b, lambda n: replay.next_batch(n), cfg)
    for (k, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), k


def test_iterator_of_uneven_chunks_is_recut_into_exact_batches():
    X = _X(200)
    chunks = [X[:7], X[7:60], X[60:61], X[61:200]]
    src = as_source(iter(chunks))
    assert isinstance(src, SamplerSource)
    got = [src.next_batch(32) for _ in range(6)]
    assert all(g.shape == (32, D) for g in got)
    assert torch.equal(torch.cat(got), X[:192])  # in order, nothing dropped or repeated
    with pytest.raises(ValueError, match="ran out after 6 batches of 32"):
        src.next_batch(32)
    # a list (an iterable) works too, and train() takes it
    sae = TopKSAE(d=D, n_latents=M, k=2, seed=1)
    history = train(sae, [X[i:i + 50] for i in range(0, 200, 50)], TrainConfig(steps=6, batch_size=32, lr=1e-2, progress=False))
    assert history.steps_run == 6


@pytest.mark.parametrize("sampler, error, match", [
    (lambda n: _X(n + 1), ValueError, "returned 33 rows when asked for batch_size=32"),
    (lambda n: _X(n).numpy(), TypeError, "must be a Tensor"),
    (lambda n: torch.randn(n, D, 2), ValueError, "shape"),
])
def test_bad_sampler_output_is_named(sampler, error, match):
    with pytest.raises(error, match=match):
        train(TopKSAE(d=D, n_latents=M, k=2), sampler, TrainConfig(steps=2, batch_size=32, progress=False))


def test_what_is_not_data_is_refused_naming_the_kinds():
    with pytest.raises(TypeError, match="callable batch_size -> Tensor or an iterator"):
        as_source(3.5)
    with pytest.raises(TypeError, match="inexact_resume must be True or False"):
        SamplerSource(lambda n: _X(n), inexact_resume="yes")


def test_resume_from_a_sampler_run_is_refused_unless_inexact_resume_is_asked(tmp_path):
    gen = torch.Generator().manual_seed(0)
    sampler = lambda n: torch.randn(n, D, generator=gen)  # noqa: E731 - a stream sae_theory cannot save
    cfg = dict(batch_size=32, lr=1e-2, progress=False, checkpoint_dir=str(tmp_path / "ck"))
    sae = TopKSAE(d=D, n_latents=M, k=2, seed=1)
    train(sae, sampler, TrainConfig(steps=5, **cfg))
    resumed = TopKSAE(d=D, n_latents=M, k=2, seed=1)
    before = {k: v.clone() for k, v in resumed.state_dict().items()}
    with pytest.raises(ValueError, match="cannot restore.*inexact_resume=True"):
        train(resumed, sampler, TrainConfig(steps=10, **cfg), resume="latest")
    assert all(torch.equal(before[k], v) for k, v in resumed.state_dict().items())  # nothing changed
    history = train(resumed, SamplerSource(sampler, inexact_resume=True), TrainConfig(steps=10, **cfg), resume="latest")
    assert history.steps_run == 10
