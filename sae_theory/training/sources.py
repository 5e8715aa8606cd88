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

passes any object that already follows the protocol through unchanged, and wraps anything else
that gives batches (a callable ``batch_size -> Tensor``, such as a synthetic-data generator of
another library, or an iterator / iterable of batches) as a :class:`SamplerSource`, whose stream
cannot be restored after a checkpoint (its docstring says what resume then loses). Every source draws
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

__all__ = ["BatchSource", "FeatureModelSource", "SamplerSource", "TensorSource", "as_source"]


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


class SamplerSource:
    """Batches from a plain sampler: a callable ``batch_size -> Tensor (batch_size, d)`` (e.g.
    ``lambda b: synthetic_model.sample(b)``), or an iterator / iterable of ``(rows, d)`` tensors,
    re-cut into batches of exactly ``batch_size`` rows (rows left over wait for the next batch).

    **What resume loses.** sae_theory cannot save or restore a sampler's stream (its generator, a
    file position, a network stream). Checkpoints still hold the model, optimiser, hooks and history,
    and the number of batches drawn; but a resumed run would continue on whatever the sampler gives
    next, not on the batches an uninterrupted run would have drawn, so it is not the same run. Resuming
    a run whose data was a plain sampler is therefore refused (ValueError), unless the sampler is
    wrapped as ``SamplerSource(sampler, inexact_resume=True)``: then the run resumes on the sampler's
    next batches, and only the model, optimiser and hook states are those of the saved step. For
    resume bit for bit, give a source with ``state_dict`` / ``load_state_dict`` (module docstring).

    Parameters
    ----------
    sampler : callable or iterator or iterable
        What gives the batches.
    inexact_resume : bool
        Allow resuming from a checkpoint (above). Default False.
    """

    def __init__(self, sampler: Any, *, inexact_resume: bool = False):
        if isinstance(inexact_resume, bool) is False:
            raise TypeError(f"inexact_resume must be True or False, got {inexact_resume!r}.")
        if isinstance(sampler, Tensor):
            raise TypeError("a Tensor is data, not a sampler: pass it to train() as it is (a TensorSource).")
        if callable(sampler) and not hasattr(sampler, "__next__"):
            self._call, self._iter = sampler, None
        elif hasattr(sampler, "__next__") or hasattr(sampler, "__iter__"):
            self._call, self._iter = None, iter(sampler)
        else:
            raise TypeError(f"sampler must be a callable batch_size -> Tensor, or an iterator / iterable of Tensors; got "
                            f"{type(sampler).__name__}.")
        self.sampler, self.inexact_resume = sampler, inexact_resume
        self.batches = 0
        self._rest: Tensor | None = None

    def __repr__(self) -> str:
        return f"SamplerSource({self.sampler!r})"

    def _check(self, x: Any, what: str) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{what} of {self!r} is a {type(x).__name__}; it must be a Tensor (rows, d).")
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{what} of {self!r} has shape {tuple(x.shape)}; it must be a Tensor (rows >= 1, d).")
        return x

    def next_batch(self, batch_size: int) -> Tensor:
        if self._call is not None:
            x = self._check(self._call(batch_size), f"the batch {self.batches + 1}")
            if x.shape[0] != batch_size:
                raise ValueError(f"the sampler of {self!r} returned {x.shape[0]} rows when asked for batch_size={batch_size}; "
                                 "it must return exactly batch_size rows.")
        else:
            parts, have = ([] if self._rest is None else [self._rest]), (0 if self._rest is None else self._rest.shape[0])
            while have < batch_size:
                try:
                    chunk = next(self._iter)
                except StopIteration:
                    raise ValueError(f"the iterator of {self!r} ran out after {self.batches} batches of {batch_size} "
                                     f"(and {have} rows); give it more data or train fewer steps.") from None
                chunk = self._check(chunk, "an item")
                if parts and chunk.shape[1] != parts[0].shape[1]:
                    raise ValueError(f"an item of {self!r} has width {chunk.shape[1]}, the earlier ones {parts[0].shape[1]}.")
                parts.append(chunk)
                have += chunk.shape[0]
            x = parts[0] if len(parts) == 1 else torch.cat([p.to(parts[0].device, parts[0].dtype) for p in parts])
            x, self._rest = x[:batch_size], (x[batch_size:] if x.shape[0] > batch_size else None)
        self.batches += 1
        return x

    def state_dict(self) -> dict[str, Any]:
        """The number of batches drawn (the stream itself cannot be saved)."""
        return {"kind": "SamplerSource", "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refused unless ``inexact_resume`` (class docstring)."""
        if state.get("kind") != "SamplerSource":
            raise ValueError(f"this source state was saved by a {state.get('kind')!r}, not a SamplerSource; pass the same kind of "
                             "data as the checkpointed run.")
        if not self.inexact_resume:
            raise ValueError(
                f"the checkpointed run drew its {state.get('batches')} batches from a plain sampler, whose stream sae_theory cannot "
                "restore: a resumed run would train on other batches than the uninterrupted one. Resume anyway with "
                "data=SamplerSource(sampler, inexact_resume=True) (the model, optimiser and hooks are the saved step's; the batches "
                "are the sampler's next ones), or give a source with state_dict()/load_state_dict() for an exact resume.")
        self.batches = int(state.get("batches", 0))


def as_source(data: Any, cfg: "TrainConfig | None" = None) -> BatchSource:
    """Wrap ``data`` as a batch source seeded by ``cfg.seed`` (0 without a config).

    Parameters
    ----------
    data : Tensor (N, d), SparseFeatureModel, HierarchicalFeatureModel, source or sampler
        A tensor becomes a :class:`TensorSource`, a feature model a :class:`FeatureModelSource`;
        an object with ``next_batch``, ``state_dict`` and ``load_state_dict`` is returned as is;
        a callable ``batch_size -> Tensor`` or an iterator / iterable of Tensors becomes a
        :class:`SamplerSource` (resume from its checkpoints is refused: see there).
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
    if not missing:
        return data
    if callable(data) or hasattr(data, "__next__") or (hasattr(data, "__iter__") and not isinstance(data, (str, bytes, dict))):
        return SamplerSource(data)
    raise TypeError(
        f"data must be a Tensor (N, d), a SparseFeatureModel, a HierarchicalFeatureModel, an object with next_batch(batch_size), "
        f"state_dict() and load_state_dict(), a callable batch_size -> Tensor or an iterator of Tensors; {type(data).__name__} "
        f"lacks {', '.join(missing)} and is none of these."
    )
