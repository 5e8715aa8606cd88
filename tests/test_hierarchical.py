"""Tests of the MP-SAE hierarchical toy (sae_theory/data/hierarchical.py), the closed-form mixing
weight and its sympy derivation, and the conditional-orthogonality check."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch

from _helpers import assert_close
from sae_theory.data import ConceptTree, HierarchicalFeatureModel, Magnitudes, mixing_epsilon
from sae_theory.theory.conditions import check_conditional_orthogonality
from sae_theory.theory.symbolic import mixing_cosine, mixing_epsilon as mixing_epsilon_sym

F64 = torch.float64

# docs/papers.md#mp-sae-hierarchical-toy, from the official notebook: within-group cosine 0.1 * l for l = 0..8
EPS_CHILD = [0, 0.0895, 0.163, 0.226, 0.282, 0.3335, 0.3825, 0.431, 0.482]
EPS_PARENT = [0, 0.3, 0.44, 0.529, 0.594, 0.6467, 0.692, 0.733, 0.7739]


@pytest.mark.parametrize("table,m", [(EPS_CHILD, 3), (EPS_PARENT, 11)])
def test_mixing_epsilon__reproduces_every_tabulated_value(table, m):
    for level, eps in enumerate(table):
        assert abs(mixing_epsilon(0.1 * level, m) - eps) <= 1e-3, (level, eps)  # the table has 3-4 digits


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.6, 0.9])
def test_generated_atoms_have_the_target_within_group_cosine(rho):
    model = HierarchicalFeatureModel(rho, rho, seed=3, dtype=F64)
    D = model.features
    for group in model.tree.groups:
        idx = torch.tensor(group)
        C = D[idx] @ D[idx].T
        off = C[~torch.eye(len(group), dtype=torch.bool)]
        assert_close(off, torch.full_like(off, rho))
    assert_close(D.norm(dim=1), torch.ones(20))


def test_symbolic_mixing_cosine_and_epsilon_agree_with_the_float_closed_form():
    rho = sp.Symbol("rho", nonnegative=True)
    eps = sp.Symbol("epsilon", nonnegative=True)
    general = mixing_cosine()
    assert sp.simplify(general.subs(sp.Symbol("m", positive=True), 3) - mixing_cosine(3)) == 0  # coordinates vs formula
    for m in (2, 3, 5, 11):
        e_expr = mixing_epsilon_sym(m)
        for r in (0.0, 0.25, 0.5, 0.9, 0.99):
            e = float(e_expr.subs(rho, r))
            assert abs(e - mixing_epsilon(r, m)) <= 1e-12
            assert abs(float(mixing_cosine(m).subs(eps, e)) - r) <= 1e-12


def test_sampler__one_parent_children_only_with_their_parent_and_expected_l0():
    model = HierarchicalFeatureModel(0.3, 0.3, seed=0, dtype=F64)
    N = 100_000
    X, Z = model.sample(N, torch.Generator().manual_seed(1))
    active = Z != 0
    parents = list(model.tree.parents)
    assert bool((active[:, parents].sum(1) == 1).all())
    for child, parent in model.tree.parent_of().items():
        assert bool(active[active[:, child], parent].all())
    l0 = active.sum(1).double()
    assert model.tree.expected_l0() == pytest.approx(1.36)
    se = float(l0.std()) / math.sqrt(N)
    assert abs(float(l0.mean()) - 1.36) <= 4 * se
    # marginals: internal parent 0.2, leaf parent 0.05, child 0.2 * 0.2
    freq = active.double().mean(0)
    for atom, p in [(0, 0.2), (12, 0.05), (1, 0.04), (11, 0.04)]:
        assert abs(float(freq[atom]) - p) <= 4 * math.sqrt(p * (1 - p) / N), atom
    assert_close(X, Z @ model.features)


def _reference_sample(model: HierarchicalFeatureModel, N: int, g: torch.Generator) -> torch.Tensor:
    """The sampler's draws written out plainly, in their order: the active parent of every row,
    its magnitude, then for each parent with children (in tree order) the child of its rows (or
    none, with the rest of the probability) and the magnitudes of the children drawn."""
    t, mg = model.tree, model.magnitudes
    Z = torch.zeros(N, t.n_atoms, dtype=F64)
    which = torch.multinomial(torch.tensor(t.parent_probs, dtype=F64), N, replacement=True, generator=g)
    mags = mg.parent_mean + mg.parent_std * torch.randn(N, generator=g, dtype=F64)
    for r in range(N):
        Z[r, t.parents[which[r]]] = mags[r]
    for i, (children, probs) in enumerate(zip(t.children, t.child_probs)):
        rows = [r for r in range(N) if which[r] == i]
        if not children or not rows:
            continue
        pick = torch.multinomial(torch.tensor([*probs, max(0.0, 1 - sum(probs))], dtype=F64), len(rows), replacement=True, generator=g)
        with_child = [(r, int(c)) for r, c in zip(rows, pick) if c < len(children)]
        child_mags = mg.child_mean + mg.child_std * torch.randn(len(with_child), generator=g, dtype=F64)
        for (r, c), m in zip(with_child, child_mags):
            Z[r, children[c]] = m
    return Z


@pytest.mark.parametrize("rho,N", [(0.0, 1), (0.3, 7), (0.9, 300)])
def test_sampler__draws_in_the_documented_order_bit_for_bit(rho, N):
    """The sampler (its tables built once) takes the same draws from the generator as the plain loop (so a
    cached run's batches, and every later draw, stay the same), over several batches."""
    model = HierarchicalFeatureModel(rho, rho, seed=2, dtype=F64, magnitudes=Magnitudes(1.0, 0.25, 0.5, 1 / 40))
    g, g_ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):
        X, Z = model.sample(N, g)
        Z_ref = _reference_sample(model, N, g_ref)
        assert torch.equal(Z, Z_ref)
        assert torch.equal(X, Z_ref @ model.features)


def test_sampler__magnitudes_follow_their_laws():
    model = HierarchicalFeatureModel(magnitudes=Magnitudes(parent_mean=1.0, parent_std=0.25, child_mean=0.1, child_std=0.025), seed=0, dtype=F64)
    _, Z = model.sample(50_000, torch.Generator().manual_seed(2))
    par = Z[:, list(model.tree.parents)]
    par = par[par != 0]
    ch = Z[:, [1, 2, 3, 5, 6, 7, 9, 10, 11]]
    ch = ch[ch != 0]
    assert abs(float(par.mean()) - 1.0) < 0.01 and abs(float(par.std()) - 0.25) < 0.01
    assert abs(float(ch.mean()) - 0.1) < 0.002 and abs(float(ch.std()) - 0.025) < 0.002


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_conditional_orthogonality__holds_for_generated_and_fails_for_perturbed(dtype):
    model = HierarchicalFeatureModel(0.9, 0.6, seed=1, dtype=dtype)
    ok = check_conditional_orthogonality(model.features, model.levels)
    assert ok.holds and ok.details["max_within_level"] == pytest.approx(0.9, abs=1e-5)
    noisy = model.features + 1e-3 * torch.randn(model.features.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    bad = check_conditional_orthogonality(noisy, model.levels)
    assert not bad.holds and bad.value > 1e-4
    # a child moved towards its parent: the classic absorption geometry breaks it
    D = model.features.clone()
    D[1] = D[1] + 0.5 * D[0]
    assert not check_conditional_orthogonality(D, model.levels).holds


def test_bad_inputs_raise_with_the_fix():
    with pytest.raises(ValueError, match=r"rho_parent must lie in \[0, 1\)"):
        HierarchicalFeatureModel(1.0, 0.0)
    with pytest.raises(ValueError, match=r"rho must lie in \[0, 1\)"):
        mixing_epsilon(-0.1, 3)
    with pytest.raises(ValueError, match="sum to 1"):
        ConceptTree(parent_probs=(0.5,) * 11)
    with pytest.raises(ValueError, match="each once"):
        ConceptTree(parents=(0, 4, 8, 12, 13, 14, 15, 16, 17, 18, 18))
    with pytest.raises(ValueError, match="one level per atom"):
        check_conditional_orthogonality(torch.eye(3), [0, 1])
