"""Our MP-SAE training step against the official toy code's (issue 12: where the authors' code
exists, a test pins its behaviour on a small case).

The official ``MatchingPursuitSAE.step`` (github mpsae/MP-SAE, ``sae.py`` at acce7a28;
docs/papers.md#mp-sae-implementations) is restated below from its description: one tied weight W
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

import torch
import torch.nn.functional as F

from sae_theory.data.hierarchical import HierarchicalFeatureModel
from sae_theory.models import MPSAE
from sae_theory.training import TrainConfig, train

THRESHOLD, LR, BETAS, STEPS, BATCH = 0.05, 3e-2, (0.5, 0.9375), 6, 200


def official_pursuit(W: torch.Tensor, x: torch.Tensor, threshold: float) -> torch.Tensor:
    """The official training pursuit: codes z (B, p), differentiable in W."""
    r = x.clone()
    z = torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype)
    prev = torch.zeros_like(z, dtype=torch.bool)
    done = torch.zeros(x.shape[0], dtype=torch.bool)
    while not done.all():
        values, indices = torch.max(torch.relu(r @ W.T), dim=1, keepdim=True)
        step = torch.zeros_like(z).scatter(1, indices, values)
        z = torch.where(done[:, None], z, z + step)
        r = torch.where(done[:, None], r, r - step @ W)
        support = z != 0
        done = done | (support == prev).all(1) | (r.norm(dim=1) < threshold)
        prev = support
    return z


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
