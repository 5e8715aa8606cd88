"""Runs as data: what an experiment trains, declared as specs and built through the SAE registry.

A :class:`MethodSpec` names a registered SAE (:mod:`sae_theory.models.registry`) with its config
fields, the training hooks (:class:`HookSpec`) and the :class:`~sae_theory.training.TrainConfig`
fields it needs; an experiment combines it with the data's width, a seed and a device. No method
is rebuilt from its label, and a new SAE variant is usable in any study as soon as its model file
registers it::

    spec = MethodSpec.make("TopK K=20", "TopK", k=20, train=dict(lr=1e-3, input_norm="unit"))
    sae, hooks = spec.build(d=42, n_latents=512, seed=1, device="cpu")
    cfg = spec.train_config(steps=2_000, batch_size=256, seed=1, progress=False)

Specs are frozen and hashable, so they key caches, and :meth:`MethodSpec.to_dict` gives their JSON.

This module also holds the one rule for the seed of held-out evaluation data
(:func:`eval_generator`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from .._checks import check_int
from ..models.base import SAE
from ..models.registry import build_sae, get_sae
from ..training import GBAConfig, GroupBiasAdaptation, SparsityController, TrainConfig

__all__ = ["EVAL_SEED_OFFSET", "HOOK_BUILDERS", "HookSpec", "MethodSpec", "eval_generator", "eval_seed"]

#: Held-out data of seed s is drawn with seed ``EVAL_SEED_OFFSET + 100 s + stream``: far from every
#: training seed, and one stream per held-out population of the same seed.
EVAL_SEED_OFFSET = 10_000


def eval_seed(seed: int, stream: int = 0) -> int:
    """The seed of the held-out data of run ``seed`` (``stream`` < 100 separates several held-out
    populations of one run, e.g. one per row sparsity)."""
    seed = check_int("seed", seed, minimum=0)
    stream = check_int("stream", stream, minimum=0, maximum=99)
    return EVAL_SEED_OFFSET + 100 * seed + stream


def eval_generator(seed: int, device: str | torch.device = "cpu", stream: int = 0) -> torch.Generator:
    """A generator on ``device`` seeded with :func:`eval_seed`."""
    return torch.Generator(device=device).manual_seed(eval_seed(seed, stream))


def _frozen(fields: Mapping[str, Any] | None, what: str) -> tuple[tuple[str, Any], ...]:
    fields = dict(fields or {})
    for k, v in fields.items():
        if not isinstance(k, str):
            raise TypeError(f"{what} keys must be field names (str), got {k!r}.")
        if isinstance(v, list):
            fields[k] = tuple(v)
        try:
            hash(fields[k])
        except TypeError:
            raise TypeError(f"{what}[{k!r}] = {v!r} is not hashable; use a tuple or a number.") from None
    return tuple(sorted(fields.items()))


#: Hook kind -> builder from its config fields. The kinds a :class:`HookSpec` can name.
HOOK_BUILDERS: dict[str, Callable[..., Any]] = {
    "GroupBiasAdaptation": lambda **f: GroupBiasAdaptation(GBAConfig(**f)),
    "SparsityController": lambda **f: SparsityController(**f),
}


@dataclass(frozen=True)
class HookSpec:
    """A training hook by kind (a key of :data:`HOOK_BUILDERS`) and config fields."""

    kind: str
    config: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if self.kind not in HOOK_BUILDERS:
            raise ValueError(f"unknown hook kind {self.kind!r}; known: {sorted(HOOK_BUILDERS)}.")
        object.__setattr__(self, "config", _frozen(dict(self.config), f"HookSpec({self.kind}).config"))

    @classmethod
    def gba(cls, config: GBAConfig) -> "HookSpec":
        """The spec of ``GroupBiasAdaptation(config)``."""
        return cls("GroupBiasAdaptation", tuple(dataclasses.asdict(config).items()))

    @classmethod
    def controller(cls, **fields: Any) -> "HookSpec":
        """The spec of ``SparsityController(**fields)``."""
        return cls("SparsityController", tuple(fields.items()))

    def build(self) -> Any:
        """A fresh hook (hooks hold state: build one per run)."""
        return HOOK_BUILDERS[self.kind](**dict(self.config))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": dict(self.config)}


@dataclass(frozen=True)
class MethodSpec:
    """One method of a study: a registered SAE with its config fields, its hooks and the
    :class:`TrainConfig` fields it sets. Build with :meth:`make`."""

    label: str
    """Name in tables and plots (its family is the registered SAE: ``registry.family_of``)."""
    sae: str
    """Registered SAE: class name, label or alias (``"TopK"``, ``"TiedSAE"``, ...)."""
    sae_config: tuple[tuple[str, Any], ...] = ()
    """Config fields besides those of the run (``d``, ``n_latents``, ``seed``, ``device``, ``dtype``)."""
    hooks: tuple[HookSpec, ...] = ()
    """Training hooks, in call order."""
    train: tuple[tuple[str, Any], ...] = ()
    """:class:`TrainConfig` fields of the method (``lr``, ``optimizer``, ``input_norm``, ...)."""

    def __post_init__(self):
        entry = get_sae(self.sae)  # KeyError naming the registered SAEs
        object.__setattr__(self, "sae", entry.name)
        object.__setattr__(self, "sae_config", _frozen(dict(self.sae_config), f"{self.label}.sae_config"))
        object.__setattr__(self, "train", _frozen(dict(self.train), f"{self.label}.train"))
        object.__setattr__(self, "hooks", tuple(self.hooks))
        fields = {f.name for f in dataclasses.fields(entry.config_cls)}
        run_fields = {"d", "n_latents", "seed", "device", "dtype"}
        bad = [k for k, _ in self.sae_config if k not in fields or k in run_fields]
        if bad:
            raise ValueError(f"{self.label}: {entry.config_cls.__name__} fields {bad} are unknown or set by the run; "
                             f"choose from {sorted(fields - run_fields)}.")
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        bad = [k for k, _ in self.train if k not in train_fields]
        if bad:
            raise ValueError(f"{self.label}: {bad} are not TrainConfig fields.")

    @classmethod
    def make(cls, label: str, sae: str, *, hooks: tuple[HookSpec, ...] | list[HookSpec] = (),
             train: Mapping[str, Any] | None = None, **sae_config: Any) -> "MethodSpec":
        """``MethodSpec.make("TopK K=20", "TopK", k=20, train=dict(lr=1e-3))``."""
        return cls(label, sae, tuple(sae_config.items()), tuple(hooks), tuple((train or {}).items()))

    def build(self, *, d: int, n_latents: int, seed: int, device: str = "cpu",
              dtype: torch.dtype = torch.float32) -> tuple[SAE, list]:
        """A fresh SAE and fresh hooks for one run."""
        sae = build_sae(self.sae, d=d, n_latents=n_latents, seed=seed, device=device, dtype=dtype, **dict(self.sae_config))
        return sae, [h.build() for h in self.hooks]

    def train_config(self, **run: Any) -> TrainConfig:
        """The run's :class:`TrainConfig`: the run's fields (``steps``, ``batch_size``, ``seed``, ...)
        overridden by the method's own."""
        return TrainConfig(**{**run, **dict(self.train)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (label, SAE class, its fields, hooks, train fields)."""
        out = {"label": self.label, "sae": self.sae, "sae_config": dict(self.sae_config),
               "hooks": [h.to_dict() for h in self.hooks], "train": dict(self.train)}
        return json.loads(json.dumps(out, default=str))
