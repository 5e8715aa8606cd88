"""Where the trainer's batches come from: one small protocol, four kinds of data.

A *source* is any object with

* ``next_batch(batch_size) -> Tensor (batch_size, d)``: the next batch of the stream;
* ``state_dict() -> dict`` / ``load_state_dict(state)``: everything needed to continue the
  *exact same* stream after a checkpoint (generator states are saved with ``get_state()``).

:func:`as_source` wraps the three kinds of data the package produces:

* a ``Tensor`` (N, d): :class:`TensorSource`, epochs of random permutations;
* a :class:`~sae_theory.data.HierarchicalFeatureModel`: :class:`HierarchicalSource`, fresh samples;
* a :class:`~sae_theory.data.SparseFeatureModel`: :class:`FeatureModelSource`, fresh samples
  every step;

and passes any object that already follows the protocol through unchanged. Every source draws
its randomness from its own ``torch.Generator`` seeded by ``TrainConfig.seed``; the global RNG
is never touched. Sources return batches on their own device and dtype; the trainer moves them
to the SAE's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..data import SparseFeatureModel

if TYPE_CHECKING:  # pragma: no cover
    from .config import TrainConfig

__all__ = ["BatchSource", "FeatureModelSource", "TensorSource", "as_source"]


@runtime_checkable
class BatchSource(Protocol):
    """What :func:`~sae_theory.training.train` needs from its data."""

    def next_batch(self, batch_size: int) -> Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TensorSource:
    """Batches from a fixed data set X (N, d): epochs of random permutations.

    Each epoch draws a permutation of the N rows from a CPU ``torch.Generator`` seeded with
    ``seed`` and serves consecutive slices of ``batch_size`` rows. **The last partial batch of
    an epoch is dropped** (the next epoch starts instead), so every batch has exactly
    ``batch_size`` rows and every row is seen at most once per epoch.

    Parameters
    ----------
    X : Tensor (N, d)
        The data, kept where it is (any device); batches are gathered there.
    seed : int
        Seed of the permutation generator.
    """

    def __init__(self, X: Tensor, seed: int = 0):
        if not isinstance(X, Tensor):
            raise TypeError(f"X must be a torch.Tensor, got {type(X).__name__}.")
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must have shape (N, d) with N >= 1, got {tuple(X.shape)}.")
        if X.is_sparse:
            raise ValueError("X must be a dense tensor; call X.to_dense() first.")
        self.X = X
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self._epoch_state = self.generator.get_state()  # generator state before this epoch's permutation
        self._perm: Tensor | None = None
        self._pos = 0
        self.epoch = 0

    def __repr__(self) -> str:
        return f"TensorSource(X of shape {tuple(self.X.shape)}, seed={self.seed})"

    def _new_epoch(self) -> None:
        self._epoch_state = self.generator.get_state()
        self._perm = torch.randperm(self.X.shape[0], generator=self.generator).to(self.X.device)
        self._pos = 0
        self.epoch += 1

    def next_batch(self, batch_size: int) -> Tensor:
        """Rows ``perm[pos : pos + batch_size]`` of X; a new epoch when fewer remain."""
        N = self.X.shape[0]
        if batch_size > N:
            raise ValueError(
                f"batch_size={batch_size} exceeds the {N} rows of the data tensor; lower TrainConfig.batch_size or pass more data."
            )
        if self._perm is None or self._pos + batch_size > N:
            self._new_epoch()
        idx = self._perm[self._pos : self._pos + batch_size]
        self._pos += batch_size
        return self.X[idx]

    def state_dict(self) -> dict[str, Any]:
        # The permutation is not stored: it is re-drawn from the generator state at the start of
        # the epoch, which leaves the generator exactly where it was.
        return {
            "kind": "TensorSource",
            "n_rows": int(self.X.shape[0]),
            "epoch_generator_state": self._epoch_state.clone(),
            "in_epoch": self._perm is not None,
            "position": self._pos,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "TensorSource":
            raise ValueError(f"this source state was saved by a {state.get('kind')!r}, not a TensorSource; pass the same kind of data as the checkpointed run.")
        if state["n_rows"] != self.X.shape[0]:
            raise ValueError(f"the checkpoint was trained on {state['n_rows']} rows but this data tensor has {self.X.shape[0]}; pass the same data to resume.")
        self.generator.set_state(state["epoch_generator_state"])
        self._perm, self._pos, self.epoch = None, 0, int(state["epoch"])
        if state["in_epoch"]:
            self._new_epoch()  # re-draws the same permutation and bumps epoch; undo the bump
            self.epoch = int(state["epoch"])
            self._pos = int(state["position"])
        else:
            self._epoch_state = self.generator.get_state()


class _GeneratorSource:
    """Shared state of the fresh-sample sources: everything they draw comes from ``self.generator``,
    so the saved state is its state, tagged with the class name so a checkpoint is only resumed
    with the same kind of data."""

    generator: torch.Generator

    def state_dict(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "generator_state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = type(self).__name__
        if state.get("kind") != kind:
            raise ValueError(f"this source state was saved by a {state.get('kind')!r}, not a {kind}; pass the same kind of data as the checkpointed run.")
        self.generator.set_state(state["generator_state"])


class FeatureModelSource(_GeneratorSource):
    """Fresh batches from a :class:`~sae_theory.data.SparseFeatureModel`, never repeated.

    Batch t is ``next(model.stream(batch_size, chunk_size=batch_size, generator=gen))[0]``
    with ``gen`` a generator on the model's device seeded with ``seed``, so the stream depends on
    (model, seed, batch_size) only and never on the model's own default stream.
    """

    def __init__(self, model: SparseFeatureModel, seed: int = 0):
        if not isinstance(model, SparseFeatureModel):
            raise TypeError(f"model must be a SparseFeatureModel, got {type(model).__name__}.")
        self.model = model
        self.seed = int(seed)
        self.generator = torch.Generator(device=model.device).manual_seed(self.seed)

    def __repr__(self) -> str:
        return f"FeatureModelSource({self.model!r}, seed={self.seed})"

    def next_batch(self, batch_size: int) -> Tensor:
        X, _ = next(self.model.stream(batch_size, chunk_size=batch_size, generator=self.generator, h_layout="sparse"))
        return X


class HierarchicalSource(_GeneratorSource):
    """Fresh batches from a :class:`~sae_theory.data.HierarchicalFeatureModel` (the MP-SAE toy
    samples a new batch every step): batch t is ``model.sample(batch_size, gen)[0]`` with ``gen``
    a CPU generator seeded with ``seed``."""

    def __init__(self, model, seed: int = 0):
        from ..data.hierarchical import HierarchicalFeatureModel

        if not isinstance(model, HierarchicalFeatureModel):
            raise TypeError(f"model must be a HierarchicalFeatureModel, got {type(model).__name__}.")
        self.model = model
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def next_batch(self, batch_size: int) -> Tensor:
        return self.model.sample(batch_size, self.generator)[0]


def as_source(data: Any, cfg: "TrainConfig | None" = None) -> BatchSource:
    """Wrap ``data`` as a batch source seeded by ``cfg.seed`` (0 without a config).

    Parameters
    ----------
    data : Tensor (N, d), SparseFeatureModel or source
        A tensor becomes a :class:`TensorSource`, a feature model a :class:`FeatureModelSource`;
        an object with ``next_batch``, ``state_dict`` and ``load_state_dict`` is returned as is.
    cfg : TrainConfig, optional
        Supplies the seed.
    """
    seed = 0 if cfg is None else cfg.seed
    if isinstance(data, Tensor):
        return TensorSource(data, seed)
    if isinstance(data, SparseFeatureModel):
        return FeatureModelSource(data, seed)
    from ..data.hierarchical import HierarchicalFeatureModel

    if isinstance(data, HierarchicalFeatureModel):
        return HierarchicalSource(data, seed)
    missing = [m for m in ("next_batch", "state_dict", "load_state_dict") if not callable(getattr(data, m, None))]
    if missing:
        raise TypeError(
            f"data must be a Tensor (N, d), a SparseFeatureModel or an object with next_batch(batch_size), "
            f"state_dict() and load_state_dict(); {type(data).__name__} lacks {', '.join(missing)}."
        )
    return data
