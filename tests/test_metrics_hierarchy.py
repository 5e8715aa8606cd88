"""Tests of the hierarchical-study metrics (sae_theory/metrics/hierarchy.py) on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from sae_theory.data import HierarchicalFeatureModel
from sae_theory.metrics import COACTIVE_READINGS, absorption, babel, babel_coactive, coactive_readings, effective_rank, flat_mse, hierarchical_mse, match_latents

F64 = torch.float64


def test_match_latents__recovers_a_known_permutation_with_extra_latents():
    model = HierarchicalFeatureModel(0.3, 0.3, seed=0, dtype=F64)
    _, Z = model.sample(2000, torch.Generator().manual_seed(0))
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    learned = torch.zeros(2000, 24, dtype=F64)
    learned[:, perm[:20]] = 3.0 * Z  # scaled: matching normalises each column
    learned[:, perm[20:]] = torch.rand(2000, 4, dtype=F64, generator=torch.Generator().manual_seed(2)) * (torch.rand(2000, 4, generator=torch.Generator().manual_seed(3)) < 0.01)
    assert torch.equal(match_latents(learned, Z), perm[:20])


def test_flat_and_hierarchical_mse__zero_for_the_truth_and_hand_values():
    model = HierarchicalFeatureModel(0.6, 0.3, seed=0, dtype=F64)
    D, lv = model.features, model.levels
    assert flat_mse(D, D, lv) <= 1e-28 and hierarchical_mse(D, lv) <= 1e-28
    # two levels in R^2: atoms 0 (level 0) and 1 (level 1) at 60 degrees -> cross-level cos^2 = 1/4
    L = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]], dtype=F64)
    assert hierarchical_mse(L, [0, 1]) == pytest.approx(0.25)
    # same level: learned cos 0.5 where the truth is orthogonal -> (0.5 - 0)^2
    assert flat_mse(L, torch.eye(2, dtype=F64), [0, 0]) == pytest.approx(0.25)


def test_absorption__child_mixed_with_its_parent_and_nan_when_not_recovered():
    T = torch.eye(3, dtype=F64)  # parent 0, children 1 and 2
    L = T.clone()
    L[1] = torch.tensor([0.6, 0.8, 0.0], dtype=F64)  # child 1 absorbed 0.6 of its parent
    L[2] = torch.tensor([1.0, 0.0, 0.1], dtype=F64)  # child 2 not recovered (cos 0.0995 < 0.5)
    out = absorption(L, T, {1: 0, 2: 0})
    assert out[1] == pytest.approx(0.6) and math.isnan(out[2])


def test_babel__hand_computed():
    # cosines: |<0,1>| = 0.5, |<0,2>| = 0, |<1,2>| = 0.8 (built from unit vectors in R^3)
    a = torch.tensor([1.0, 0.0, 0.0], dtype=F64)
    b = torch.tensor([0.5, math.sqrt(0.75), 0.0], dtype=F64)
    c2 = 0.8 / math.sqrt(0.75)
    c = torch.tensor([0.0, c2, math.sqrt(1 - c2**2)], dtype=F64)
    D = torch.stack([a, b, c])
    assert babel(D, 1) == pytest.approx(0.8)  # mutual coherence
    assert babel(D, 2) == pytest.approx(1.3)  # atom 1: 0.5 + 0.8
    assert babel(2.0 * D, 2) == pytest.approx(1.3)  # on directions
    # co-active subsets: input 0 uses {0, 2} (0), input 1 uses {1, 2} (0.8), input 2 one atom (skipped)
    codes = torch.tensor([[1.0, 0, 2.0], [0, 1.0, 1.0], [1.0, 0, 0]], dtype=F64)
    assert babel_coactive(D, codes) == pytest.approx(0.4)
    # the other readings: a support of three atoms {0, 1, 2} with |cos| 0.5 (0-1), 0 (0-2), 0.8 (1-2)
    three = torch.tensor([[1.0, 1.0, 1.0]], dtype=F64)
    assert babel_coactive(D, three) == pytest.approx(1.3)  # mu_1(2): atom 1, 0.5 + 0.8
    assert babel_coactive(D, three, "mean_pair") == pytest.approx((0.5 + 0.0 + 0.8) / 3)
    assert babel_coactive(D, three, "max_pair") == pytest.approx(0.8)
    assert babel_coactive(D, codes, "mean_pair") == pytest.approx(0.4) == babel_coactive(D, codes, "max_pair")  # pairs: all agree
    # one pass gives every reading, each equal to the single reading
    both = torch.cat([codes, three])
    assert coactive_readings(D, both) == {r: babel_coactive(D, both, r) for r in COACTIVE_READINGS}
    with pytest.raises(ValueError, match="reading"):
        babel_coactive(D, codes, "median")
    with pytest.raises(ValueError, match="r must lie"):
        babel(D, 3)


def test_effective_rank__hand_cases():
    assert effective_rank(torch.eye(5, dtype=F64)) == pytest.approx(5.0)
    assert effective_rank(torch.ones(10, 4, dtype=F64)) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(3, 3, dtype=F64)) == 0.0
    Z = torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64))
    assert effective_rank(Z) == pytest.approx(2.0)
