"""Our MP-SAE training step against the official toy code's (issue 12: where the authors' code
exists, a test pins its behaviour on a small case).

The official ``MatchingPursuitSAE.step`` (github mpsae/MP-SAE, ``sae.py`` at acce7a28;
docs/papers.md#mp-sae-implementations) is restated in :mod:`sae_theory.experiments.official_toy`,
whose pursuit (``official_pursuit``) the step below runs, the rest restated here: one tied weight W
(atoms as rows, unit norm at initialisation and never renormalised), a pursuit that runs until every
row has stopped (its support did not change, or ||r|| < threshold), differentiated through the
whole loop; loss sum_d (x_hat - x)^2 averaged over the batch; Adam with betas (0.5, 0.9375), the
gradient norm clipped at 1. The same initial atoms and the same batches go through
:func:`sae_theory.training.train` with :class:`~sae_theory.models.MPSAE` at the toy's settings
(threshold 0.05, stop on repeat, no renormalisation, a cap above any pursuit length reached), in
float64, and the atoms must agree after every step.

Not compared: the official learning-rate schedule, a ``LambdaLR`` whose factor for optimiser step t
is (t - 1) / 100 during warmup (0 at the first step), where ``TrainConfig(schedule="wsd")`` uses
t / 100 (one step earlier); the constant-lr run below isolates the step itself.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sae_theory.data.hierarchical import HierarchicalFeatureModel
from sae_theory.experiments.official_toy import official_pursuit
from sae_theory.models import MPSAE
from sae_theory.training import TrainConfig, train

THRESHOLD, LR, BETAS, STEPS, BATCH = 0.05, 3e-2, (0.5, 0.9375), 6, 200


class ListSource:
    """The given batches, in order (the trainer's source protocol)."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self, batch_size: int) -> torch.Tensor:
        b = self.batches[self.i]
        self.i += 1
        return b

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, state):
        self.i = state["i"]


def test_mp_sae_training_step_equals_the_official_toy_step_in_float64():
    data = HierarchicalFeatureModel(0.3, 0.3, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    batches = [data.sample(BATCH, gen)[0] for _ in range(STEPS)]
    W0 = F.normalize(torch.randn(20, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64), dim=1)

    W = torch.nn.Parameter(W0.clone())
    opt = torch.optim.Adam([W], lr=LR, betas=BETAS)
    official = []
    for x in batches:
        z = official_pursuit(W, x, THRESHOLD)
        loss = ((z @ W - x) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([W], 1.0)
        opt.step()
        official.append(W.detach().clone())

    ours = []
    for n in range(1, STEPS + 1):  # each prefix of the run: the atoms after step n
        sae = MPSAE.from_dictionary(W0.clone(), normalize=False, k=21, threshold=THRESHOLD, stop_on_repeat=True, unit_norm_decoder=False)
        cfg = TrainConfig(steps=n, batch_size=BATCH, lr=LR, betas=BETAS, grad_clip=1.0, progress=False, log_every=n)
        train(sae, ListSource(batches), cfg)
        ours.append(sae.W_dec.detach().clone())
    for n, (a, b) in enumerate(zip(official, ours), start=1):
        err = float((a - b).abs().max())
        assert err < 1e-12, f"atoms differ by {err:.1e} after step {n}"
    assert float((official[-1] - W0).abs().max()) > 1e-3  # the steps moved the atoms: the comparison is not vacuous


# ---------------------------------------------------------------------------------------------
# sae_theory.experiments.official_toy: the loop the exact-recovery verdict reads


def test_official_wsd_factor__the_official_lambda():
    from sae_theory.experiments.official_toy import official_wsd_factor

    n = 1000
    assert official_wsd_factor(0, n) == 0.0  # the first optimiser step has learning rate 0
    assert official_wsd_factor(50, n) == 0.5
    assert official_wsd_factor(100, n) == 1.0 and official_wsd_factor(799, n) == 1.0
    assert official_wsd_factor(900, n) == pytest.approx(1 - 0.9 * 100 / (200 + 1e-2))
    assert official_wsd_factor(n - 1, n) == pytest.approx(0.1, abs=5e-3)


def test_official_pursuit__equals_the_package_pursuit_with_threshold_and_stop_on_repeat():
    from sae_theory.models.mp.reference import matching_pursuit_reference

    data = HierarchicalFeatureModel(0.3, 0.3, seed=3, dtype=torch.float64)
    x = data.sample(64, torch.Generator().manual_seed(4))[0]
    W = F.normalize(torch.randn(20, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64), dim=1)
    ref, _ = matching_pursuit_reference(x, W, 21, threshold=THRESHOLD, stop_on_repeat=True, stop_at_rounding=False)
    with torch.no_grad():
        z = official_pursuit(W, x, THRESHOLD)
    assert float((z - ref.codes).abs().max()) < 1e-12
    assert int((ref.steps > 2).sum()) > 0  # random atoms: long pursuits, not only the trivial one-step case


def test_official_exact_recovery__rows_like_ours_and_the_same_start_and_data():
    import dataclasses

    from sae_theory.experiments import hierarchical as hx
    from sae_theory.experiments import official_toy
    from sae_theory.profiles import get_profile

    P = get_profile("quick", device="cpu")
    P = dataclasses.replace(P, hierarchy=dataclasses.replace(P.hierarchy, steps=30, eval_samples=200, exact_seeds=(0, 1)))
    off = official_toy.official_exact_recovery(P, rhos=(0.0,), progress=False)
    ours = hx.exact_recovery(P, rhos=(0.0,), progress=False)
    assert list(off.columns) == list(ours.columns)
    assert set(off.method) == {official_toy.METHOD} and list(off.seed) == [0, 1] and set(off.steps) == {30}
    # the same start: the official loop's atoms before any step are our MP-SAE's for seed + 1
    data = HierarchicalFeatureModel(0.0, 0.0, seed=0)
    W0 = official_toy.train_official_toy(data, steps=0, seed=0)
    assert torch.equal(W0, MPSAE(d=20, n_latents=20, seed=1).W_dec.detach())
    with pytest.raises(ValueError, match="seeds"):
        official_toy.official_exact_recovery(P, seeds=(), progress=False)


def test_train_official_toy_cached__a_stored_run_is_the_fresh_one_and_the_key_follows_the_run(tmp_path, monkeypatch):
    from sae_theory.experiments import official_toy

    monkeypatch.setenv("SAE_THEORY_CACHE", str(tmp_path))
    data = HierarchicalFeatureModel(0.3, 0.3, seed=0)
    key = dict(model="HierarchicalFeatureModel", rho=0.3, seed=0)
    fresh = official_toy.train_official_toy(data, steps=5, seed=0, batch_size=16)
    first = official_toy.train_official_toy_cached(data, data_key=key, steps=5, seed=0, batch_size=16)
    stored = list(tmp_path.glob("*/official_W.safetensors"))
    assert len(stored) == 1 and torch.equal(first, fresh)
    calls = []
    monkeypatch.setattr(official_toy, "train_official_toy", lambda *a, **k: calls.append(1) or fresh.clone())
    assert torch.equal(official_toy.train_official_toy_cached(data, data_key=key, steps=5, seed=0, batch_size=16), fresh)
    assert calls == []  # loaded, not trained
    # another length, seed or data key is another run
    for kw in (dict(steps=6, seed=0), dict(steps=5, seed=1)):
        official_toy.train_official_toy_cached(data, data_key=key, batch_size=16, **kw)
    official_toy.train_official_toy_cached(data, data_key={**key, "rho": 0.0}, steps=5, seed=0, batch_size=16)
    assert len(calls) == 3
    # a damaged stored run is trained again, with a warning
    stored[0].write_bytes(b"broken")
    monkeypatch.undo()
    monkeypatch.setenv("SAE_THEORY_CACHE", str(tmp_path))
    with pytest.warns(UserWarning, match="cannot be read"):
        again = official_toy.train_official_toy_cached(data, data_key=key, steps=5, seed=0, batch_size=16)
    assert torch.equal(again, fresh)
