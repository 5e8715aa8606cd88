"""Tests of the GBA toy's sensitivity studies at a tiny scale (the science is in notebook 03):
the DataFrame contracts, the group tracing, argument checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sae_theory.experiments import gba
from sae_theory.profiles import get_profile
from sae_theory.training.bias_adaptation import group_assignment, target_frequencies


@pytest.fixture(scope="module")
def tiny():
    P = get_profile("quick", device="cpu")
    toy = dataclasses.replace(P.toy, n_latents=64, steps=20, n_samples=4000, widths=(32, 64), sweep_topk=(3, 5))
    return dataclasses.replace(P, toy=toy, seeds=(0,))


def test_width_sweep__one_row_per_method_width_tau(tiny):
    df = gba.width_sweep(tiny, progress=False)
    assert len(df) == 3 * 2 * 2 and set(df.width) == {32, 64} and set(df.tau) == {0.8, 0.9}
    assert df.frr.between(0, 1).all()


def test_topk_sweep__frr_and_frontier_columns(tiny):
    df = gba.topk_sweep(tiny, progress=False)
    assert set(df.k) == {3, 5} and set(df.columns) >= {"k", "seed", "tau", "frr", "l2_loss", "fraction_active"}
    frac = df.groupby("k").fraction_active.first()
    assert all(frac[k] <= k / 64 + 1e-9 for k in frac.index)  # TopK: at most k of the M = 64 latents per row


def test_recovering_groups__traces_each_feature_to_its_best_neurons_group(tiny):
    df = gba.recovering_groups(tiny, width=64)
    cfg = gba.GBAConfig(**gba.TOY_GBA["GBA"], buffer_size=gba.algorithm2_buffer(tiny.toy.batch_size))
    groups, targets = group_assignment(64, cfg), target_frequencies(cfg).double()
    assert len(df) == 128 and df.neuron.between(0, 63).all()
    assert (torch.tensor(df.group.tolist()) == groups[torch.tensor(df.neuron.tolist())]).all()
    assert torch.allclose(torch.tensor(df.target.tolist(), dtype=torch.float64), targets[torch.tensor(df.group.tolist())])
    assert (df.recovered == (df.cosine >= 0.9)).all()
    with pytest.raises(ValueError, match="method must be one of"):
        gba.recovering_groups(tiny, method="TopK K=20")
