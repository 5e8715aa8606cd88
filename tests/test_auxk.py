"""The AuxK dead-latent loss of TopK and BatchTopK (issue 15 point 4; sae_theory.models.auxk)."""

from __future__ import annotations

import math

import pytest
import torch

from sae_theory.models import BatchTopKSAE, TopKSAE
from sae_theory.training import TrainConfig, train

D, M = 8, 32


def _saelens_aux(x, x_hat, pre, W_dec, dead, coefficient):
    """SAELens 6.54.12's TopKTrainingSAE.calculate_topk_aux_loss + calculate_topk_aux_acts, restated
    (rescale_acts_by_decoder_norm False, no reshaping)."""
    num_dead = int(dead.sum())
    if num_dead == 0:
        return torch.zeros((), dtype=x.dtype)
    residual = (x - x_hat).detach()
    k_aux = x.shape[-1] // 2
    scale = min(num_dead / k_aux, 1.0)
    k_aux = min(k_aux, num_dead)
    auxk_latents = torch.where(dead[None], pre, -torch.inf)
    auxk_topk = auxk_latents.topk(k_aux, sorted=False)
    auxk_acts = torch.zeros_like(pre)
    auxk_acts.scatter_(-1, auxk_topk.indices, auxk_topk.values)
    recons = auxk_acts @ W_dec
    return coefficient * scale * (recons - residual).pow(2).sum(dim=-1).mean()


@pytest.mark.parametrize("n_dead", [0, 2, 4, 9])
@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
def test_auxk__equals_saelens_loss_for_a_given_dead_mask(cls, n_dead):
    sae = cls(d=D, n_latents=M, k=3, seed=1, dtype=torch.float64, auxk_coefficient=0.5, dead_steps=10)
    plain = cls(d=D, n_latents=M, k=3, seed=1, dtype=torch.float64)
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dead = torch.zeros(M, dtype=torch.bool)
    dead[torch.randperm(M, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    with torch.no_grad():
        sae.steps_since_fired.copy_(torch.where(dead, 11, 3))
    out, ref = sae.training_forward(x), plain.training_forward(x)
    expected = _saelens_aux(x, ref.x_hat, ref.pre_acts, sae.W_dec, dead, 0.5)
    torch.testing.assert_close(out.loss - ref.loss, expected, rtol=1e-12, atol=1e-14)
    assert ("auxk" in out.metrics) == (n_dead > 0)
    # the counter: +1 for every latent, 0 for those that fired in this batch
    fired = (out.codes != 0).any(0)
    assert torch.equal(sae.steps_since_fired, torch.where(fired, 0, torch.where(dead, 12, 4)))


def test_auxk__off_by_default_leaves_state_and_loss_as_before():
    sae = TopKSAE(d=D, n_latents=M, k=3, seed=1)
    assert "steps_since_fired" not in sae.state_dict()
    on = TopKSAE(d=D, n_latents=M, k=3, seed=1, auxk_coefficient=1.0)
    assert "steps_since_fired" in on.state_dict()
    x = torch.randn(16, D, generator=torch.Generator().manual_seed(0))
    out = sae.training_forward(x)
    assert set(out.metrics) == {"mse"} and torch.equal(out.loss, on.training_forward(x).loss)  # nobody dead yet


def _dead_start(sae):
    """Half the latents start dead: a pre-activation bias of -10 keeps them out of every top k."""
    with torch.no_grad():
        sae.b_enc[: M // 2] = -10.0
    return sae


@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
def test_auxk__revives_dead_latents(cls):
    X = torch.randn(4096, D, generator=torch.Generator().manual_seed(2))
    cfg = TrainConfig(steps=400, batch_size=64, lr=1e-2, progress=False, seed=0)
    alive = {}
    for coef in (0.0, 1.0):
        sae = _dead_start(cls(d=D, n_latents=M, k=3, seed=1, auxk_coefficient=coef, dead_steps=5))
        train(sae, X, cfg)
        with torch.no_grad():
            codes = sae.encode(X[:2048]) if cls is TopKSAE else sae.encode(X[:2048], batch=True)
        alive[coef] = int((codes[:, : M // 2] != 0).any(0).sum())
    assert alive[0.0] == 0, alive  # without AuxK the gradient never reaches them
    assert alive[1.0] >= M // 4, alive  # with it, at least half of the dead half fires again


def test_auxk__counter_is_saved_and_resume_is_exact(tmp_path):
    X = torch.randn(2048, D, generator=torch.Generator().manual_seed(2))
    cfg = dict(batch_size=64, lr=1e-2, progress=False, seed=0)
    whole = _dead_start(TopKSAE(d=D, n_latents=M, k=3, seed=1, auxk_coefficient=1.0, dead_steps=5))
    train(whole, X, TrainConfig(steps=40, **cfg))
    part = _dead_start(TopKSAE(d=D, n_latents=M, k=3, seed=1, auxk_coefficient=1.0, dead_steps=5))
    train(part, X, TrainConfig(steps=20, checkpoint_dir=str(tmp_path / "ck"), **cfg))
    resumed = TopKSAE(d=D, n_latents=M, k=3, seed=1, auxk_coefficient=1.0, dead_steps=5)
    train(resumed, X, TrainConfig(steps=40, checkpoint_dir=str(tmp_path / "ck"), **cfg), resume="latest")
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("field, value, match", [
    ("auxk_coefficient", -1.0, "auxk_coefficient"),
    ("auxk_coefficient", math.inf, "auxk_coefficient"),
    ("auxk_k", 0, "auxk_k"),
    ("auxk_k", M + 1, "auxk_k"),
    ("dead_steps", 0, "dead_steps"),
])
@pytest.mark.parametrize("cls", [TopKSAE, BatchTopKSAE])
def test_auxk__bad_config_is_refused(cls, field, value, match):
    with pytest.raises(ValueError, match=match):
        cls(d=D, n_latents=M, k=3, **{field: value})
