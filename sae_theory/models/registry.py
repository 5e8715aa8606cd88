"""The SAE registry: one place that knows every SAE class.

A model file registers its class with a decorator, and from then on saving and loading
(:mod:`sae_theory.io`), checkpoints, the experiments' method specs and the plots' method order
and colours all know it::

    @register_sae("TopK", config=TopKSAEConfig)
    class TopKSAE(UntiedSAE):
        ...

* the **name** is the class name (what ``config.json`` and checkpoints record);
* the **label** is the method's short name in experiments, tables and plots (``"TopK"``), and
  ``aliases`` are other labels of the same family (``"L1"`` for the ReLU SAE); an experiment's
  method label such as ``"TopK K=20"`` belongs to the family whose label or alias starts it
  (:func:`family_of`);
* the order of registration is the order of methods in every plot (:func:`method_order`).

Every module of :mod:`sae_theory.models` is imported when the package is, so a new file in
``models/`` that registers its class needs no other edit (SAELens' ``register_sae_class`` has the
same shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from .base import SAE, SAEConfig

__all__ = ["RegisteredSAE", "build_sae", "family_of", "get_sae", "method_order", "register_sae", "registered_saes", "unregister_sae"]

S = TypeVar("S", bound=type)


@dataclass(frozen=True)
class RegisteredSAE:
    """One registered SAE class."""

    name: str
    """Class name: the key that saves and checkpoints record."""
    cls: type[SAE]
    """The SAE class (``cls(config)`` or ``cls(**config_fields)`` builds one)."""
    config_cls: type[SAEConfig]
    """Its config dataclass (``from_dict`` / ``to_dict``)."""
    label: str
    """Short method label for experiments, tables and plots."""
    aliases: tuple[str, ...] = ()
    """Other labels of the same family."""

    @property
    def labels(self) -> tuple[str, ...]:
        return (self.label, *self.aliases)


_REGISTRY: dict[str, RegisteredSAE] = {}


def register_sae(label: str, *, config: type[SAEConfig], aliases: Iterable[str] = ()) -> Callable[[S], S]:
    """Class decorator: register an :class:`~sae_theory.models.base.SAE` subclass under its class
    name, with the method ``label`` (and ``aliases``) and its ``config`` dataclass.

    Raises
    ------
    TypeError
        If the class is not an SAE or ``config`` not an SAEConfig subclass.
    ValueError
        If the class name, the label or an alias is taken by another class (re-registering the
        same name replaces it, so reloading a module in a notebook works).
    """
    # the arguments are checked when register_sae is called, not only once it decorates a class
    if not (isinstance(config, type) and issubclass(config, SAEConfig)):
        raise TypeError(f"config must be an SAEConfig subclass, got {config!r}.")
    if isinstance(aliases, str):
        raise TypeError(f"aliases must be an iterable of labels, not one string ({aliases!r}); write aliases=({aliases!r},).")
    aliases = tuple(aliases)
    for text in (label, *aliases):
        if not isinstance(text, str) or not text.strip() or text != text.strip():
            raise ValueError(f"labels must be non-empty strings without outer spaces, got {text!r}.")

    def decorate(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, SAE)):
            raise TypeError(f"register_sae decorates SAE subclasses, got {cls!r}.")
        name = cls.__name__
        for other in _REGISTRY.values():
            if other.name == name:
                continue
            clash = set(other.labels) & {label, *aliases}
            if clash:
                raise ValueError(f"label(s) {sorted(clash)} of {name} are already used by {other.name}; choose another label.")
        _REGISTRY[name] = RegisteredSAE(name, cls, config, label, aliases)
        return cls

    return decorate


def unregister_sae(name: str) -> None:
    """Remove a registered class (for tests that register throwaway variants)."""
    _REGISTRY.pop(get_sae(name).name)


def registered_saes() -> tuple[RegisteredSAE, ...]:
    """Every registered SAE, in registration (= plot) order."""
    return tuple(_REGISTRY.values())


def get_sae(name: str) -> RegisteredSAE:
    """The registered SAE with this class name, label or alias.

    Raises
    ------
    KeyError
        Naming the known classes and labels.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    for entry in _REGISTRY.values():
        if name in entry.labels:
            return entry
    known = ", ".join(f"{e.name} ({'/'.join(e.labels)})" for e in _REGISTRY.values())
    raise KeyError(f"no registered SAE is called {name!r}; known: {known}. Register a class with @register_sae.")


def build_sae(name: str, config: SAEConfig | None = None, **fields: Any) -> SAE:
    """A fresh SAE of the registered class ``name`` (class name, label or alias), from a config
    or from config fields: ``build_sae("TopK", d=42, n_latents=512, k=20)``."""
    entry = get_sae(name)
    if config is not None and fields:
        raise ValueError("pass either a config or config fields, not both.")
    if config is None:
        config = entry.config_cls(**fields)
    elif not isinstance(config, entry.config_cls):
        raise TypeError(f"{entry.name} needs a {entry.config_cls.__name__}, got {type(config).__name__}.")
    return entry.cls(config)


def family_of(method: str) -> RegisteredSAE | None:
    """The registered family a method label belongs to: the entry with the longest label or
    alias that equals ``method`` or starts it followed by a space (``"TopK K=20"`` -> TopK,
    ``"L1 lambda=0.03"`` -> ReLU, ``"GBA wrong range"`` -> the tied SAE). None if no family fits."""
    best: tuple[int, RegisteredSAE] | None = None
    for entry in _REGISTRY.values():
        for text in entry.labels:
            if (method == text or method.startswith(text + " ")) and (best is None or len(text) > best[0]):
                best = (len(text), entry)
    return None if best is None else best[1]


def method_order(methods: Iterable[str]) -> list[str]:
    """The distinct ``methods`` sorted by their family's registration order (unknown families
    last), keeping the given order within a family."""
    methods = list(dict.fromkeys(methods))
    rank = {e.name: i for i, e in enumerate(_REGISTRY.values())}

    def key(item: tuple[int, str]) -> tuple[int, int]:
        family = family_of(item[1])
        return (rank[family.name] if family is not None else len(rank), item[0])

    return [m for _, m in sorted(enumerate(methods), key=key)]
