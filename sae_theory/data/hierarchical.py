"""The MP-SAE hierarchical toy (docs/papers.md#mp-sae-hierarchical-toy): a concept tree,
conditionally orthogonal atoms.

Default tree (the official ``tree.json``): 20 atoms in R^20. Parents 0, 4, 8 each have three
children (1-3, 5-7, 9-11); atoms 12-19 are leaf parents. Exactly one parent is active per sample,
with probabilities 0.2, 0.2, 0.2 for the internal parents and 0.05 for each leaf parent; an active
internal parent picks exactly one of {child 1, child 2, child 3, none} with probabilities 0.2, 0.2,
0.2, 0.4. Expected L0 = 1 + 0.6 x 0.6 = 1.36 (the official sampler; the paper's prose, read as
independent events, would give 1.12). Active magnitudes are N(1.5, 0.25^2), independently per
entry; x = z D, rows of D are atoms.

Atoms: rows of a random orthogonal matrix, then epsilon-mixed inside each group (the 11 parents;
each sibling triple): q_i <- (1 - eps) q_i + eps/(m - 1) sum_{j in group, j != i} q_j, renormalised.
Different groups keep exactly orthogonal spans, so atoms of different levels (and of different
sibling groups) are exactly orthogonal: the dictionary is conditionally orthogonal. eps is solved in
closed form for a target within-group cosine rho (derived in
:func:`sae_theory.theory.symbolic.mixing_epsilon`):

    eps(rho, m) = (m - 1)/m * (1 - sqrt((1 - rho) / (1 + (m - 1) rho)))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import SAFE_NORMAL_Z, check_fits_dtype, check_floating_dtype, check_generator, check_int, check_real, check_same_length

__all__ = ["ConceptTree", "HierarchicalFeatureModel", "Magnitudes", "mixing_epsilon"]


def _check_rho(name: str, rho) -> float:
    try:
        return check_real(name, rho, minimum=0, maximum=1, include_maximum=False)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must lie in [0, 1) (a within-level cosine), got {rho!r}.") from None


def mixing_epsilon(rho: float, group_size: int) -> float:
    """The mixing weight eps giving within-group cosine ``rho`` for a group of ``group_size`` atoms."""
    rho = _check_rho("rho", rho)
    m = check_int("group_size", group_size, minimum=2)
    return (m - 1) / m * (1 - math.sqrt((1 - rho) / (1 + (m - 1) * rho)))


@dataclass(frozen=True)
class ConceptTree:
    """A two-level concept tree: parents (one active per sample) and their children.

    ``parents``: atom index of each parent; ``parent_probs``: probability that parent i is the
    active one (summing to 1); ``children``: per parent, the atom indices of its children (empty for
    a leaf parent); ``child_probs``: per parent with children, the probability of each child (the
    rest is "no child"). Atom indices must be 0..n_atoms-1, each used once.
    """

    parents: tuple[int, ...] = (0, 4, 8, 12, 13, 14, 15, 16, 17, 18, 19)
    parent_probs: tuple[float, ...] = (0.2, 0.2, 0.2) + (0.05,) * 8
    children: tuple[tuple[int, ...], ...] = ((1, 2, 3), (5, 6, 7), (9, 10, 11)) + ((),) * 8
    child_probs: tuple[tuple[float, ...], ...] = ((0.2, 0.2, 0.2),) * 3 + ((),) * 8

    def __post_init__(self):
        P = len(self.parents)
        for name in ("parent_probs", "children", "child_probs"):
            check_same_length(name, getattr(self, name), "parents", P)
        for i, a in enumerate(self.parents):
            check_int(f"parents[{i}]", a, minimum=0)
        for i, p in enumerate(self.parent_probs):
            check_real(f"parent_probs[{i}]", p, minimum=0, maximum=1)
        if abs(sum(self.parent_probs) - 1) > 1e-9:
            raise ValueError(f"parent_probs must be >= 0 and sum to 1 (one parent active per sample), got sum {sum(self.parent_probs)}.")
        for i, (ch, pr) in enumerate(zip(self.children, self.child_probs)):
            check_same_length(f"child_probs[{i}]", pr, f"children[{i}]", len(ch))
            for j, c in enumerate(ch):
                check_int(f"children[{i}][{j}]", c, minimum=0)
            for j, p in enumerate(pr):
                check_real(f"child_probs[{i}][{j}]", p, minimum=0, maximum=1)
            if sum(pr) > 1 + 1e-9:
                raise ValueError(f"child_probs[{i}] must be >= 0 with sum <= 1 (the rest is 'no child'), got sum {sum(pr)}.")
        atoms = list(self.parents) + [c for ch in self.children for c in ch]
        if sorted(atoms) != list(range(len(atoms))):
            raise ValueError("atom indices of parents and children must be 0..n_atoms-1, each once.")

    @property
    def n_atoms(self) -> int:
        return len(self.parents) + sum(len(c) for c in self.children)

    @property
    def levels(self) -> tuple[int, ...]:
        """Level of every atom: 0 for parents, 1 for children."""
        lv = [0] * self.n_atoms
        for ch in self.children:
            for c in ch:
                lv[c] = 1
        return tuple(lv)

    @property
    def groups(self) -> list[tuple[int, ...]]:
        """Mixing groups: all parents, then each sibling set of two or more children."""
        return [tuple(self.parents)] + [tuple(ch) for ch in self.children if len(ch) >= 2]

    def parent_of(self) -> dict[int, int]:
        """child atom -> parent atom."""
        return {c: p for p, ch in zip(self.parents, self.children) for c in ch}

    def expected_l0(self) -> float:
        return 1.0 + sum(pp * sum(cp) for pp, cp in zip(self.parent_probs, self.child_probs))


@dataclass(frozen=True)
class Magnitudes:
    """Normal magnitudes of active atoms: parents N(parent_mean, parent_std^2), children
    N(child_mean, child_std^2), drawn independently per entry (the toy: both N(1.5, 0.25^2); the
    absorption study, Table 1: parent N(1, 0.25^2) and a grid of child means and spreads)."""

    parent_mean: float = 1.5
    parent_std: float = 0.25
    child_mean: float = 1.5
    child_std: float = 0.25

    def __post_init__(self):
        for name in ("parent_mean", "child_mean"):
            check_real(name, getattr(self, name))
        for name in ("parent_std", "child_std"):
            check_real(name, getattr(self, name), minimum=0)

    def log_largest(self) -> float:
        """ln of the largest |magnitude| drawn: |mean| + 10 std over both levels (no normal draw
        reaches 10 standard deviations, :data:`~sae_theory._checks.SAFE_NORMAL_Z`)."""
        top = max(abs(self.parent_mean) + SAFE_NORMAL_Z * self.parent_std, abs(self.child_mean) + SAFE_NORMAL_Z * self.child_std)
        return math.log(top) if top > 0 else -math.inf


class HierarchicalFeatureModel:
    """Samples x = z D from a :class:`ConceptTree` with conditionally orthogonal atoms.

    Parameters
    ----------
    rho_parent, rho_child
        Within-level cosines of the parents' group and of each sibling group, in [0, 1).
    tree, magnitudes
        The concept tree (default: the MP-SAE toy) and the magnitude laws.
    d
        Ambient dimension, >= number of atoms (default: equal, as the toy).
    seed, dtype, device
        The atoms are drawn from ``seed`` (on the CPU, in float64, then cast).

    >>> model = HierarchicalFeatureModel(rho_parent=0.3, rho_child=0.3, seed=0)
    >>> X, Z = model.sample(1000)
    >>> X.shape, Z.shape
    (torch.Size([1000, 20]), torch.Size([1000, 20]))
    """

    def __init__(self, rho_parent: float = 0.0, rho_child: float = 0.0, *, tree: ConceptTree | None = None,
                 magnitudes: Magnitudes | None = None, d: int | None = None, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str = "cpu"):
        self.tree = tree if tree is not None else ConceptTree()
        self.magnitudes = magnitudes if magnitudes is not None else Magnitudes()
        if not isinstance(self.tree, ConceptTree):
            raise TypeError(f"tree must be a ConceptTree (or None for the MP-SAE toy's), got {type(self.tree).__name__}.")
        if not isinstance(self.magnitudes, Magnitudes):
            raise TypeError(f"magnitudes must be a Magnitudes (or None for the toy's), got {type(self.magnitudes).__name__}.")
        n = self.tree.n_atoms
        self.d = n if d is None else check_int("d", d, minimum=n)
        _check_rho("rho_parent", rho_parent)
        _check_rho("rho_child", rho_child)
        check_int("seed", seed)
        check_floating_dtype("dtype", dtype)
        check_fits_dtype(f"magnitudes={self.magnitudes!r}", self.magnitudes.log_largest(), dtype,
                         fix="use smaller means or spreads, or a wider dtype")
        self.rho_parent, self.rho_child = rho_parent, rho_child
        self.eps_parent = mixing_epsilon(rho_parent, len(self.tree.parents))
        sib = {len(g) for g in self.tree.groups[1:]}
        self.eps_child = {m: mixing_epsilon(rho_child, m) for m in sib}
        self.seed, self.dtype, self.device = seed, dtype, device
        self.features = self._atoms().to(dtype=dtype, device=device)
        self.levels = torch.tensor(self.tree.levels, device=device)
        # the tree's tables as tensors, built once (sample() runs every training step; the tree is
        # frozen): parent probabilities and atoms, and per parent with children its child atoms and
        # the probabilities of each child and of "no child"
        t = self.tree
        self._parent_probs = torch.tensor(t.parent_probs, dtype=torch.float64)
        self._parents = torch.tensor(t.parents)
        self._child_tables = [(i, torch.tensor(ch), torch.tensor(list(pr) + [max(0.0, 1 - sum(pr))], dtype=torch.float64))
                              for i, (ch, pr) in enumerate(zip(t.children, t.child_probs)) if ch]

    def _atoms(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        Q, _ = torch.linalg.qr(torch.randn(self.d, self.d, generator=g, dtype=torch.float64))
        Q = Q.T[: self.tree.n_atoms].clone()  # orthonormal rows
        D = Q.clone()
        for k, group in enumerate(self.tree.groups):
            m = len(group)
            eps = self.eps_parent if k == 0 else self.eps_child[m]
            idx = torch.tensor(group)
            G = Q[idx]
            mixed = (1 - eps) * G + eps / (m - 1) * (G.sum(0, keepdim=True) - G)
            D[idx] = mixed / mixed.norm(dim=1, keepdim=True)
        return D

    def sample(self, n_samples: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(X (N, d), Z (N, n_atoms)): codes Z with one parent (and at most one of its children)."""
        N = check_int("n_samples", n_samples, minimum=1)
        g = check_generator("generator", generator) or torch.Generator().manual_seed(self.seed + 1)
        mg = self.magnitudes
        Z = torch.zeros(N, self.tree.n_atoms, dtype=torch.float64)
        rows = torch.arange(N)
        which = torch.multinomial(self._parent_probs, N, replacement=True, generator=g)
        Z[rows, self._parents[which]] = mg.parent_mean + mg.parent_std * torch.randn(N, generator=g, dtype=torch.float64)
        for i, children, probs in self._child_tables:  # parents with children, in order (a leaf draws nothing)
            sel = (which == i).nonzero().squeeze(1)
            if len(sel) == 0:
                continue
            pick = torch.multinomial(probs, len(sel), replacement=True, generator=g)
            has = pick < len(children)
            Z[sel[has], children[pick[has]]] = mg.child_mean + mg.child_std * torch.randn(int(has.sum()), generator=g, dtype=torch.float64)
        Z = Z.to(dtype=self.dtype, device=self.device)
        return Z @ self.features, Z

    def describe(self) -> dict:
        return dict(n_atoms=self.tree.n_atoms, d=self.d, rho_parent=self.rho_parent, rho_child=self.rho_child,
                    eps_parent=self.eps_parent, eps_child=self.eps_child, expected_l0=self.tree.expected_l0())
