"""Trained runs cached on disk, keyed by their full spec.

A run is (method spec, data, width, seed, dtype, train config). :func:`train_cached` trains it once
and stores, under a key of all of it, the trained SAE (a :func:`~sae_theory.io.save_sae` folder)
and its training :class:`~sae_theory.training.History`; the next call with the same spec loads it
(bit-identical weights and buffers), so an interrupted study resumes where it stopped, notebooks
that share runs train them once, and figures redraw without retraining. A run may also keep
*snapshots*: the model's state at chosen steps along the way (``snapshots=``), from which a metric
is read against training steps without training a run per length.

Where: ``$SAE_THEORY_CACHE`` when set, else ``$XDG_CACHE_HOME/sae_theory/runs`` (by default
``~/.cache/sae_theory/runs``): outside the checkout. Clear it by deleting that folder;
``SAE_THEORY_CACHE=off`` disables the cache.

A long run (at least :data:`CHECKPOINT_MIN_STEPS` steps) also checkpoints itself while it trains,
every twentieth of its length (``$SAE_THEORY_CHECKPOINT_EVERY`` sets the cadence in steps; 0 turns
it off), into ``.<key>.partial/`` beside the runs, keeping the newest checkpoint only: a run killed
half-way (a session that ends, an out-of-memory kill) continues from there the next time it is asked
for, bit for bit the run an uninterrupted call trains, and the folder is deleted once the run is
stored. One process at a time checkpoints a key (a lock file beside it); a second process that asks
for the same run meanwhile trains it without checkpoints, as before.

The key also holds a fingerprint of the source code that trains (``sae_theory/models``,
``sae_theory/training``, ``sae_theory/data``): a change there starts fresh runs instead of reusing
runs of other code.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from .._checks import check_int
from ..io import load_sae, save_sae
from ..models.base import SAE
from ..training import History, train
from ..training.checkpoint import RESUMABLE_TRAIN_FIELDS, latest_checkpoint
from .specs import MethodSpec

__all__ = ["CACHE_ENV", "CachedRun", "cache_dir", "code_fingerprint", "run_key", "train_cached"]

CACHE_ENV = "SAE_THEORY_CACHE"
#: Bump when the stored layout changes.
CACHE_FORMAT = 1
#: Runs of at least this many steps checkpoint while they train (module docstring).
CHECKPOINT_MIN_STEPS = 10_000
#: Environment variable: the checkpoint cadence of cached runs in steps (0: none).
CHECKPOINT_ENV = "SAE_THEORY_CHECKPOINT_EVERY"
_RUN_FILE = "run.json"
_SNAPSHOT_FILE = "snapshots.safetensors"


def cache_dir() -> Path | None:
    """The run cache folder (module docstring), or None when ``$SAE_THEORY_CACHE`` is ``off``."""
    raw = os.environ.get(CACHE_ENV, "").strip()
    if raw.lower() in ("off", "0", "none", "false"):
        return None
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "sae_theory" / "runs"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 (16 hex digits) of the code under ``sae_theory/models``, ``training`` and ``data``:
    what decides the weights a spec trains to. Each file counts as its syntax tree without
    docstrings, so editing a comment, a docstring or the layout keeps the cached runs."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for sub in ("models", "training", "data"):
        for path in sorted((root / sub).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(_code_without_docstrings(path.read_text()).encode())
    return h.hexdigest()[:16]


def _code_without_docstrings(source: str) -> str:
    """The syntax tree of ``source`` without bare string statements (module, class, function and
    attribute docstrings); comments and layout never reach the tree."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [b for b in body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant)
                                                 and isinstance(b.value.value, str))] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _input_norm_key(input_norm: dict[str, Any]) -> dict[str, Any]:
    """``input_norm`` (keyword arguments of ``SAE.set_input_norm``) as JSON: tensors and arrays as
    float64 lists, so equal statistics give equal keys."""
    if not isinstance(input_norm, dict) or "kind" not in input_norm:
        raise TypeError(f"input_norm must be a dict of SAE.set_input_norm arguments with a 'kind', got {input_norm!r}.")
    out = {}
    for k, v in sorted(input_norm.items()):
        if isinstance(v, torch.Tensor):
            v = v.detach().to("cpu", torch.float64).tolist()
        elif hasattr(v, "tolist"):
            v = v.tolist()
        out[k] = v
    return out


def run_key(payload: dict[str, Any]) -> str:
    """sha256 (24 hex digits) of the JSON of ``payload`` (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class CachedRun:
    """A trained run: ``model`` (in eval mode), ``history``, ``seconds`` (training time of the
    run that produced it), ``cached`` (loaded rather than trained now), ``key``, ``summary``
    (what ``summarize`` returned when the run was trained) and ``snapshots`` (step -> the model's
    state dict after that step, for the steps asked for; :meth:`at` builds the model)."""

    def __init__(self, model: SAE, history: History, seconds: float, cached: bool, key: str, summary: dict | None = None,
                 snapshots: dict[int, dict[str, torch.Tensor]] | None = None):
        self.model, self.history, self.seconds, self.cached, self.key = model, history, seconds, cached, key
        self.summary = summary or {}
        self.snapshots = dict(sorted((snapshots or {}).items()))

    @property
    def steps(self) -> int:
        """Steps the run trained for."""
        return int(self.history.steps_run)

    def at(self, step: int) -> SAE:
        """The model as it was after ``step`` (a snapshot step, or the last step: ``model`` itself),
        in eval mode. A constant learning rate makes it the model a run of ``step`` steps ends with."""
        if step == self.steps:
            return self.model
        if step not in self.snapshots:
            raise KeyError(f"no snapshot at step {step}; this run kept {sorted(self.snapshots)} and ended at {self.steps}. "
                           "Ask train_cached for it with snapshots=.")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.snapshots[step])
        return model.eval()


class _Snapshots:
    """Training hook: a copy of the model's state dict after each of ``steps``."""

    def __init__(self, steps):
        self.steps, self.states = set(steps), {}

    def __call__(self, model, step: int, out) -> None:
        if step in self.steps:
            self.states[step] = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}

    def state_dict(self) -> dict:
        """The snapshots taken so far (a checkpointed run keeps them across a resume)."""
        return {"steps": sorted(self.steps), "states": self.states}

    def load_state_dict(self, state: dict) -> None:
        if sorted(self.steps) != list(state["steps"]):
            raise ValueError(f"the checkpoint kept snapshots at steps {state['steps']}, this run asks for {sorted(self.steps)}; "
                             "resume with the same snapshots.")
        self.states = {int(k): v for k, v in state["states"].items()}


def _check_snapshots(snapshots, steps: int) -> tuple[int, ...]:
    """Snapshot steps, sorted and unique; each an integer in [1, steps) (the last step is the run's model)."""
    return tuple(sorted({check_int(f"snapshots[{i}]", s, minimum=1, maximum=steps - 1) for i, s in enumerate(snapshots)}))


def _save_snapshots(states: dict[int, dict[str, torch.Tensor]], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({f"{step}/{name}": t for step, state in states.items() for name, t in state.items()}, str(path))


def _load_snapshots(path: Path, steps: tuple[int, ...]) -> dict[int, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    states: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in load_file(str(path)).items():
        step, _, param = name.partition("/")
        states.setdefault(int(step), {})[param] = t
    if sorted(states) != list(steps):
        raise ValueError(f"{path} holds snapshots at {sorted(states)}, the key says {list(steps)}")
    return states


def train_cached(spec: MethodSpec, data: Any, *, data_key: dict[str, Any], d: int, n_latents: int, seed: int,
                 run: dict[str, Any], device: str = "cpu", dtype: torch.dtype = torch.float32,
                 summarize: Callable[[SAE, History, list], dict] | None = None, snapshots=(),
                 input_norm: dict[str, Any] | None = None) -> CachedRun:
    """Train ``spec`` on ``data`` (anything :func:`~sae_theory.training.train` accepts) or load it.

    Parameters
    ----------
    spec : MethodSpec
        The method; its SAE is built with ``d``, ``n_latents``, ``seed``, ``device``, ``dtype``.
    data
        The training data (anything :func:`~sae_theory.training.train` accepts), or a function
        of no argument that returns it: called only when the run is not cached, so a large
        training set is not built for a run that is loaded.
    data_key : dict
        JSON-able description that identifies ``data`` completely (model, its parameters and
        seed): part of the key, so two different data sets never share a run.
    run : dict
        The run's :class:`~sae_theory.training.TrainConfig` fields (``steps``, ``batch_size``,
        ``seed``, ...); the spec's own fields override them. ``progress`` and the checkpoint
        fields are not part of the key.
    summarize : callable, optional
        ``summarize(model, history, hooks) -> dict`` (JSON-able) right after training, for what
        only the live hooks know (e.g. a controller's final coefficient); stored with the run and
        returned as ``CachedRun.summary``.
    snapshots : sequence of int, optional
        Steps in [1, steps) after which the model's state is kept (``CachedRun.snapshots``,
        ``CachedRun.at(step)``): a metric against training steps from one run. Part of the key.
    input_norm : dict, optional
        Keyword arguments of :meth:`~sae_theory.models.base.SAE.set_input_norm` applied to the
        fresh SAE before training (e.g. ``ActivationCache.normalisation("mp")``), for a run whose
        ``run`` has ``input_norm="model"``. Part of the key (its values, as float64 lists).
    """
    cfg = spec.train_config(**run)
    snapshots = _check_snapshots(snapshots, cfg.steps)
    # what may change between a run and its resume, but for its length, does not make another run
    train_fields = {k: v for k, v in cfg.to_dict().items() if k == "steps" or k not in RESUMABLE_TRAIN_FIELDS}
    payload = dict(format=CACHE_FORMAT, code=code_fingerprint(), spec=spec.to_dict(), data=data_key, d=d, n_latents=n_latents,
                   seed=seed, dtype=str(dtype), train=train_fields, log_every=cfg.log_every)
    if snapshots:  # absent when none: the keys of runs without snapshots are those of before
        payload["snapshots"] = list(snapshots)
    if input_norm is not None:  # absent when none, likewise
        payload["input_norm"] = _input_norm_key(input_norm)
    key = run_key(payload)
    root = cache_dir()
    folder = None if root is None else root / key
    if folder is not None and (folder / _RUN_FILE).is_file():
        try:
            meta = json.loads((folder / _RUN_FILE).read_text())
            model = load_sae(folder, device=device)
            h = meta["history"]
            history = History(rows=h["rows"], steps_run=h["steps_run"], input_scale=h["input_scale"])
            states = _load_snapshots(folder / _SNAPSHOT_FILE, snapshots) if snapshots else {}
        except Exception as exc:  # a damaged run (any read error, e.g. a truncated safetensors file) is trained again, never used
            warnings.warn(f"the cached run {folder} cannot be read ({type(exc).__name__}: {exc}); training it again.", stacklevel=2)
            shutil.rmtree(folder, ignore_errors=True)
        else:
            model.eval()
            return CachedRun(model, history, float(meta["seconds"]), True, key, meta.get("summary"), states)

    if callable(data) and not isinstance(data, torch.Tensor) and not hasattr(data, "next_batch"):
        data = data()
    every = checkpoint_cadence(cfg.steps) if folder is not None else None
    lock = None
    if every is not None:
        lock = _try_lock(folder.with_name(f".{key}.lock"))
        every = every if lock is not None else None  # another process trains this key: no shared checkpoints
    try:
        if every is None:
            model, hooks, snap = _fresh(spec, d, n_latents, seed, device, dtype, input_norm, snapshots)
            t0 = time.perf_counter()
            history = train(model, data, cfg, hooks=[*hooks, snap] if snapshots else hooks)
            seconds = time.perf_counter() - t0
        else:
            model, hooks, snap, history, seconds = _train_checkpointed(spec, data, cfg, every, folder.with_name(f".{key}.partial"),
                                                                       d, n_latents, seed, device, dtype, input_norm, snapshots)
        model.eval()
        summary = {} if summarize is None else dict(summarize(model, history, hooks))
        if folder is not None:
            # write beside the final folder and rename: a kill leaves no half run that a later call would load
            tmp = folder.with_name(f".{key}.tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            save_sae(model, tmp)
            if snapshots:
                _save_snapshots(snap.states, tmp / _SNAPSHOT_FILE)
            meta = dict(key=payload, seconds=seconds, summary=summary,
                        history=dict(rows=history.rows, steps_run=history.steps_run, input_scale=history.input_scale))
            (tmp / _RUN_FILE).write_text(json.dumps(meta, indent=1, default=str) + "\n")
            try:
                os.replace(tmp, folder)
            except OSError:  # another process stored the same run first: keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
            if every is not None:
                shutil.rmtree(folder.with_name(f".{key}.partial"), ignore_errors=True)
    finally:
        if lock is not None:
            lock.close()  # releases the lock
    return CachedRun(model, history, seconds, False, key, summary, snap.states)


def checkpoint_cadence(steps: int) -> int | None:
    """How often (in steps) a cached run of ``steps`` steps checkpoints while it trains, or None:
    ``$SAE_THEORY_CHECKPOINT_EVERY`` when set (0: never), else every ``steps // 20`` steps for a run
    of at least :data:`CHECKPOINT_MIN_STEPS` steps and never for a shorter one."""
    raw = os.environ.get(CHECKPOINT_ENV, "").strip()
    if raw:
        try:
            every = int(raw)
        except ValueError:
            raise ValueError(f"${CHECKPOINT_ENV} must be a whole number of steps (0: no checkpoints), got {raw!r}.") from None
        check_int(f"${CHECKPOINT_ENV} (0: no checkpoints)", every, minimum=0)
        return every or None
    return steps // 20 if steps >= CHECKPOINT_MIN_STEPS else None


def _try_lock(path: Path):
    """An open file holding an exclusive lock on ``path``, or None when another process holds it (or
    the lock file cannot be made: the run then trains without checkpoints, as a short one)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")
    except OSError:
        return None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def _fresh(spec, d, n_latents, seed, device, dtype, input_norm, snapshots):
    model, hooks = spec.build(d=d, n_latents=n_latents, seed=seed, device=device, dtype=dtype)
    if input_norm is not None:
        model.set_input_norm(**input_norm)
    return model, hooks, _Snapshots(snapshots)


def _train_checkpointed(spec, data, cfg, every, partial: Path, d, n_latents, seed, device, dtype, input_norm, snapshots):
    """Train with checkpoints in ``partial`` (the newest kept), continuing from its latest one when
    there is one; a checkpoint that cannot be resumed (damaged, or another run's) is deleted, with a
    warning, and the run starts afresh. Returns (model, hooks, snapshots hook, history, seconds of
    this call's training)."""
    cfg = dataclasses.replace(cfg, checkpoint_every=every, checkpoint_dir=str(partial), keep_checkpoints=1, overwrite_checkpoints=True)
    resume = "latest" if latest_checkpoint(partial) is not None else None
    model, hooks, snap = _fresh(spec, d, n_latents, seed, device, dtype, input_norm, snapshots)
    t0 = time.perf_counter()
    try:
        history = train(model, data, cfg, hooks=[*hooks, snap] if snapshots else hooks, resume=resume)
    except ValueError as exc:
        if resume is None:
            raise
        # every check of a resume runs before anything changes: the fresh model and hooks are untouched
        warnings.warn(f"the checkpoint of an interrupted run in {partial} cannot be resumed ({exc}); training the run afresh.", stacklevel=3)
        shutil.rmtree(partial, ignore_errors=True)
        model, hooks, snap = _fresh(spec, d, n_latents, seed, device, dtype, input_norm, snapshots)
        history = train(model, data, cfg, hooks=[*hooks, snap] if snapshots else hooks)
    return model, hooks, snap, history, time.perf_counter() - t0
