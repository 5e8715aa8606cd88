"""Audit a trained SAE on activations: reconstruction, GBA's view, MP-SAE's view, and consistency
with a second SAE (issue 15, point 2).

>>> report = audit("runs/topk", "acts/layer6/")                       # doctest: +SKIP
>>> report = audit("runs/topk", "acts.safetensors:resid", second="runs/topk_seed1", out="audit_topk")  # doctest: +SKIP
>>> report.to_dict()["reconstruction"]["fvu"], print(report.summary())  # doctest: +SKIP

The same from the command line: ``sae-theory audit SAE_FOLDER --activations SOURCE [--second
SAE_FOLDER] [--out DIR] [--max-rows N] [--batch-size B]``.

What can be audited
-------------------
``sae`` (and ``second``) is an :class:`~sae_theory.models.SAE` or a folder, recognised by the files
in it: ``sae.safetensors`` + ``config.json`` (a :func:`~sae_theory.io.save_sae` folder or a
training checkpoint's step folder), ``step_XXXXXXXX`` subfolders (a ``checkpoint_dir``: its latest
step), both read by :func:`~sae_theory.io.load_sae`; ``cfg.json`` + ``sae_weights.safetensors`` (a
SAELens save, read by :func:`~sae_theory.saelens.import_saelens`).

Activation sources
------------------
* a tensor file: ``.pt`` / ``.pth`` (``torch.save`` of one tensor, or of a dict holding exactly one
  tensor), ``.safetensors`` (one tensor, or name it: ``file.safetensors:key``; ``file.pt:key``
  picks a tensor of a dict), ``.npy``. Shape (..., d): leading axes are flattened into rows (a
  (batch, seq, d) tensor gives batch * seq rows). Files are memory-mapped where the format
  allows (``.npy``, ``.safetensors``, ``.pt`` of torch's zip format), so only the rows of the
  current batch are read into memory;
* a folder of such files (shards), each holding one tensor, read in natural name order
  (``shard_2`` before ``shard_10``), one batch at a time; other files are ignored;
* ``synthetic:<spec>``: rows of a :class:`~sae_theory.data.SparseFeatureModel` X = H V of the
  SAE's width d, e.g. ``synthetic:n=256,s=4,rows=20000,seed=0``. Keys (all optional): ``n`` the
  number of features (default: the SAE's number of latents), ``s`` the active features per row
  (default 3), ``rows`` (default 10,000), ``seed`` (default 0; it seeds the features and the
  rows). Features are unit Gaussian directions, coefficients 1. The source's true features are
  known, so the report adds feature recovery (meaningful when the SAE was trained on the same
  model: the same n, s and seed);
* ``real:MODEL:PLACE:LAYER[:TOKENS]``: activations of a real transformer on the Wikipedia sample
  inside gensim, extracted into (or read from) the activation cache of
  :mod:`sae_theory.data.activations`, e.g. ``real:minilm:resid_post:3:50000`` (MODEL: ``minilm``,
  ``smollm2``, a local folder or a model in the local Hugging Face cache; PLACE ``resid_post`` or
  ``mlp_out``; TOKENS default 100,000); an extracted cache folder also reads as a folder of shards;
* in the Python API also a tensor (..., d) or a numpy array.

Rows are cast to the SAE's dtype and device; a source of another width, of integers, without
rows, or holding NaN or infinity is refused (:class:`AuditError` naming the argument, the file
and the fix). At most ``max_rows`` rows are read, ``batch_size`` at a time; nothing beyond one
batch and the random sample below is held in memory.

What is measured
----------------
One streamed pass over the rows gives the **reconstruction** numbers (FVU, MSE, L0, dead and
dense latents) and every latent's **firing frequency** (fraction of rows with code > 0). A
uniform random sample of ``sample_rows`` rows (reservoir sampling, seeded) kept during the pass
gives the rest, each on the rows stated in the report:

* GBA's view (docs/papers.md#gba-identifiability): H1, H2, H3 and V1 of
  :func:`~sae_theory.theory.conditions.check_identifiability`, with H = |codes| of the sample (rows x
  latents) and V = the dictionary (rows of ``W_dec``), on the latents that fire in the sample and
  have a non-zero atom (a latent that never fires has no co-occurrence to measure and fails H2 by
  definition; the numbers excluded are reported);
* MP-SAE's view (docs/papers.md#mp-sae-babel): Babel mu_1(r) of the whole dictionary (the
  value of :func:`~sae_theory.metrics.babel`, computed in row blocks, so no p x p matrix is
  built) for r = 1, 2, 4, ... and at r = s - 1, s with s the mean L0 rounded (Tropp's exact
  recovery condition mu_1(s - 1) + mu_1(s) < 1); Babel on co-active atoms
  (:func:`~sae_theory.metrics.babel_coactive`, on at most 1,024 sample rows); the effective rank of
  the codes (:func:`~sae_theory.metrics.effective_rank`, on the sample rows, fewer when rows x
  active latents would pass 2^24 entries); the error against inference sparsity:
  FVU of the sample at k = 1 .. k_max, where k is the number of matching-pursuit steps for an
  :class:`~sae_theory.models.MPSAE` (``encode(x, k=k)``, read off one pursuit of k_max steps)
  and for every other SAE the k
  largest-magnitude entries of its codes (``encode(x)``, the rest set to 0, then ``decode``: as
  x_hat in MP-SAE's Fig. 20), so beyond the SAE's own L0 its curve is flat;
* with ``second``: the maximum cosine similarity (MCS) of every atom against the other
  dictionary, both ways (:func:`~sae_theory.metrics.max_cosine_similarity`), the fractions at or
  above 0.5 ... 0.99 (:func:`~sae_theory.metrics.mcs_fraction`), and the Hungarian-matched
  |cos| (:func:`~sae_theory.metrics.decoder_mcc`) when both dictionaries have at most 4,096 atoms;
* with a ``synthetic:`` source: FRR at 0.8 and 0.9 and the decoder MCC against its true features.

Outputs
-------
:func:`audit` returns an :class:`AuditReport`. With ``out``, it also writes into that folder
``audit.json`` (every number, and the conditions: rows read, the sample, the source, the SAE's
class and config), ``summary.md`` (one line of explanation per number) and the figures
(``.png`` at the package's resolution and ``.pdf``, drawn in the package's seaborn style):
``firing_frequency``, ``inference_sparsity``, ``babel`` and, with ``second``, ``mcs``. The folder
is written atomically (:func:`~sae_theory.io.atomic_folder`): a kill leaves the previous audit or
none, never half of one. An existing ``out`` is replaced only when it holds nothing but an
audit's files.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ._checks import check_bool, check_int, check_real
from ._json import to_jsonable
from .io import CONFIG as SAVE_CONFIG
from .io import WEIGHTS as SAVE_WEIGHTS
from .io import atomic_folder, load_sae
from .metrics import (
    ActivationStats,
    babel_coactive,
    decoder_mcc,
    effective_rank,
    feature_recovery_rate,
    max_cosine_similarity,
    mcs_fraction,
    unit_rows,
)
from .models import SAE, MPSAE
from .saelens import CFG as SAELENS_CFG
from .saelens import WEIGHTS as SAELENS_WEIGHTS
from .saelens import import_saelens
from .theory.conditions import check_identifiability

__all__ = [
    "ACTIVATION_SUFFIXES",
    "AuditError",
    "AuditReport",
    "ActivationSource",
    "DENSE_THRESHOLD",
    "OUTPUT_FILES",
    "SYNTHETIC_DEFAULTS",
    "audit",
    "babel_curve",
    "load_any_sae",
    "open_activations",
]

#: A latent is *dense* when it fires on more than this fraction of rows.
DENSE_THRESHOLD = 0.1
#: File suffixes read as activation tensors.
ACTIVATION_SUFFIXES = (".pt", ".pth", ".safetensors", ".npy")
#: Keys of a ``synthetic:`` spec and their defaults (None: the SAE's number of latents).
SYNTHETIC_DEFAULTS: dict[str, int | None] = {"n": None, "s": 3, "rows": 10_000, "seed": 0}
#: Figures of an audit (each written as .png and .pdf).
FIGURES = ("firing_frequency", "inference_sparsity", "babel", "mcs")
#: Every file an audit writes; an existing output folder holding anything else is not replaced.
OUTPUT_FILES = ("audit.json", "summary.md", *(f"{f}{ext}" for f in FIGURES for ext in (".png", ".pdf")))
#: Quantiles of the firing frequency, of the per-row L0 and of the MCS reported.
QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
#: MCS thresholds at which the fraction of atoms is reported.
MCS_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.99)
#: Rows of the sample used for Babel on co-active atoms (a Python loop over rows).
COACTIVE_ROWS = 1024
#: Largest dense float64 block built at once (codes for the effective rank, cosine blocks).
_MAX_ENTRIES = 1 << 24
#: Largest dictionaries matched by the Hungarian algorithm (decoder_mcc).
MCC_MAX_ATOMS = 4096


class AuditError(ValueError):
    """An input of :func:`audit` that cannot be audited. ``argument`` names it, as the Python
    argument (``"sae"``, ``"activations"``, ``"second"``, ``"out"``, ``"max_rows"``, ...); the
    message starts with it and says what to give instead."""

    def __init__(self, argument: str, detail: str):
        super().__init__(f"{argument}: {detail}")
        self.argument, self.detail = argument, detail


# ---------------------------------------------------------------------------------------------
# loading the SAE
# ---------------------------------------------------------------------------------------------


def load_any_sae(folder: str | os.PathLike, *, device: str | torch.device | None = None, argument: str = "sae") -> tuple[SAE, dict[str, Any]]:
    """The SAE in ``folder`` and where it came from, deciding the reader by the files present
    (module docstring): ``(model, {"path", "format"})``.

    Raises :class:`AuditError` (naming ``argument``) for a folder that is neither kind, listing
    what is missing, and for a folder its reader refuses (with the reader's message)."""
    path = Path(folder)
    if not path.exists():
        raise AuditError(argument, f"{path} does not exist; give the folder of a saved SAE.")
    if not path.is_dir():
        raise AuditError(argument, f"{path} is a file; give the folder that holds the SAE's files "
                                   f"({SAVE_WEIGHTS} + {SAVE_CONFIG}, or SAELens's {SAELENS_CFG} + {SAELENS_WEIGHTS}).")
    ours = [(path / f).is_file() for f in (SAVE_WEIGHTS, SAVE_CONFIG)]
    lens = [(path / f).is_file() for f in (SAELENS_CFG, SAELENS_WEIGHTS)]
    steps = any(p.is_dir() for p in path.glob("step_*"))
    try:
        if all(ours) or (steps and not any(lens)):
            kind = "sae_theory save" if all(ours) else "sae_theory checkpoint_dir (latest step)"
            return load_sae(path, device=device), {"path": str(path), "format": kind}
        if all(lens):
            arch = None
            try:
                arch = json.loads((path / SAELENS_CFG).read_text()).get("architecture")
            except (OSError, ValueError, AttributeError):
                pass  # import_saelens says what is wrong with it
            return import_saelens(path, device=device), {"path": str(path), "format": f"SAELens ({arch})"}
    except (OSError, ValueError) as exc:
        raise AuditError(argument, f"{path} cannot be loaded: {exc}") from None
    if any(ours):
        missing = [f for f, ok in zip((SAVE_WEIGHTS, SAVE_CONFIG), ours) if not ok]
        what = f"it has {SAVE_CONFIG if ours[1] else SAVE_WEIGHTS} of a sae_theory save but no {missing[0]}"
    elif any(lens):
        missing = [f for f, ok in zip((SAELENS_CFG, SAELENS_WEIGHTS), lens) if not ok]
        what = f"it has {SAELENS_WEIGHTS if lens[1] else SAELENS_CFG} of a SAELens save but no {missing[0]}"
    else:
        what = (f"it holds neither {SAVE_WEIGHTS} + {SAVE_CONFIG} (a sae_theory save or checkpoint step), nor "
                f"step_XXXXXXXX folders (a checkpoint_dir), nor {SAELENS_CFG} + {SAELENS_WEIGHTS} (a SAELens save)")
    raise AuditError(argument, f"{path} is not an SAE folder: {what}; give the folder save_sae, a training "
                               "checkpoint or SAELens wrote.")


def _where(info: dict[str, Any]) -> str:
    return f"`{info['path']}` ({info['format']})" if info.get("path") else "an SAE object passed in memory"


def _sae_info(model: SAE, where: dict[str, Any]) -> dict[str, Any]:
    return {**where, "class": type(model).__name__, "config": model.config.to_dict(), "d": model.d, "n_latents": model.n_latents,
            "input_norm": dict(model.input_norm)}


# ---------------------------------------------------------------------------------------------
# activation sources
# ---------------------------------------------------------------------------------------------


@dataclass
class _Shard:
    """One tensor of a source: ``rows`` rows of width ``d`` (leading axes flattened), read by
    ``read(start, stop)``."""

    name: str
    rows: int
    d: int
    dtype: str
    read: Callable[[int, int], Tensor]


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _shape_rows(argument: str, name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        raise AuditError(argument, f"{name} holds a tensor of shape {tuple(shape)}; activations must be (rows, d) or "
                                   "(..., d) with the features on the last axis.")
    return int(np.prod(shape[:-1], dtype=np.int64)), int(shape[-1])


def _flat_reader(t, d: int) -> Callable[[int, int], Tensor]:
    """Rows [start, stop) of the (..., d) array or tensor ``t`` (memory-mapped or not) as a tensor."""
    flat = t if t.ndim == 2 else t.reshape(-1, d)

    def read(start: int, stop: int) -> Tensor:
        block = flat[start:stop]
        return block if isinstance(block, Tensor) else torch.from_numpy(np.array(block))  # a copy: memory maps are read-only

    return read


def _open_npy(argument: str, path: Path) -> _Shard:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AuditError(argument, f"{path} cannot be read as a .npy array ({exc}); save it with numpy.save.") from None
    if arr.dtype.kind != "f":
        raise AuditError(argument, f"{path} holds {arr.dtype} values; activations must be floating point (cast them first).")
    rows, d = _shape_rows(argument, str(path), arr.shape)
    return _Shard(str(path), rows, d, str(arr.dtype), _flat_reader(arr, d))


def _pick(argument: str, name: str, keys: list[str], key: str | None) -> str:
    if key is not None:
        if key not in keys:
            raise AuditError(argument, f"{name} has no tensor {key!r}; it holds {keys}.")
        return key
    if len(keys) != 1:
        hint = f"name one: {name}:{keys[0]}" if keys else "save the activations into it"
        raise AuditError(argument, f"{name} holds {len(keys)} tensors {keys}; {hint}.")
    return keys[0]


def _open_pt(argument: str, path: Path, key: str | None) -> _Shard:
    def load(mmap: bool):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            obj = load(True)
        except RuntimeError as exc:  # a file of torch's legacy (non-zip) format cannot be mapped
            if "mmap" not in str(exc):
                raise
            obj = load(False)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike: say which file
        raise AuditError(argument, f"{path} cannot be read as a torch file ({type(exc).__name__}: {exc}); save a tensor "
                                   "with torch.save(tensor, path).") from None
    if isinstance(obj, dict):
        tensors = [k for k, v in obj.items() if isinstance(v, Tensor)]
        obj = obj[_pick(argument, str(path), tensors, key)]
    elif key is not None:
        raise AuditError(argument, f"{path} holds one {type(obj).__name__}, not a dict; drop ':{key}'.")
    if not isinstance(obj, Tensor):
        raise AuditError(argument, f"{path} holds a {type(obj).__name__}, not a tensor; save a tensor with torch.save(tensor, path).")
    if not obj.is_floating_point():
        raise AuditError(argument, f"{path} holds {obj.dtype} values; activations must be floating point (cast them first).")
    name = f"{path}:{key}" if key else str(path)
    rows, d = _shape_rows(argument, name, tuple(obj.shape))
    return _Shard(name, rows, d, str(obj.dtype).removeprefix("torch."), _flat_reader(obj, d))


def _open_safetensors(argument: str, path: Path, key: str | None) -> _Shard:
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        keys = list(handle.keys())
    except (OSError, SafetensorError) as exc:
        raise AuditError(argument, f"{path} cannot be read as a safetensors file ({exc}).") from None
    key = _pick(argument, str(path), keys, key)
    sl = handle.get_slice(key)
    dtype, shape = sl.get_dtype(), tuple(sl.get_shape())
    name = f"{path}:{key}"
    if not (dtype.startswith("F") or dtype == "BF16"):
        raise AuditError(argument, f"{name} holds {dtype} values; activations must be floating point (cast them first).")
    rows, d = _shape_rows(argument, name, shape)
    per = int(np.prod(shape[1:-1], dtype=np.int64)) if len(shape) > 2 else 1  # rows per index of the first axis

    def read(start: int, stop: int, _handle=handle) -> Tensor:  # the handle stays open with the reader
        i0, i1 = start // per, -(-stop // per)
        block = sl[i0:i1].reshape(-1, d)
        return block[start - i0 * per : stop - i0 * per]

    return _Shard(name, rows, d, dtype, read)


def _open_file(argument: str, path: Path, key: str | None) -> _Shard:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise AuditError(argument, f"{path} is a .npy file, which holds one array; drop ':{key}'.")
        return _open_npy(argument, path)
    if suffix in (".pt", ".pth"):
        return _open_pt(argument, path, key)
    if suffix == ".safetensors":
        return _open_safetensors(argument, path, key)
    raise AuditError(argument, f"{path} is a {suffix or 'suffix-less'} file; give a tensor file ({', '.join(ACTIVATION_SUFFIXES)}), "
                               "a folder of them, or synthetic:<spec>.")


def _parse_synthetic(argument: str, spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in SYNTHETIC_DEFAULTS:
            raise AuditError(argument, f"synthetic:{spec} has {part!r}; a spec is key=value pairs separated by commas, with keys "
                                       f"{', '.join(SYNTHETIC_DEFAULTS)} (e.g. synthetic:n=256,s=4,rows=20000,seed=0).")
        try:
            out[name] = int(value.strip().replace("_", ""))
        except ValueError:
            raise AuditError(argument, f"synthetic:{spec} gives {name}={value.strip()!r}; {name} must be a whole number.") from None
    return out


@dataclass
class ActivationSource:
    """Activations opened for an audit (:func:`open_activations`): what they are, how many rows,
    and the batches."""

    description: str
    """The source as given (a path, ``path:key``, ``synthetic:...``, or ``tensor (shape)``)."""
    kind: str
    """``"file"``, ``"folder"``, ``"synthetic"`` or ``"tensor"``."""
    d: int
    """Width of every row."""
    rows: int
    """Rows available in the source (before ``max_rows``)."""
    shards: list[str] = field(default_factory=list)
    """Files (or tensors) read, in order."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The ``synthetic:`` spec with its defaults filled in; the dtypes of the files otherwise."""
    true_features: Tensor | None = None
    """The synthetic source's features V (n, d); None for data."""
    _parts: list[_Shard] = field(default_factory=list, repr=False)
    _synthetic: Any = field(default=None, repr=False)

    def batches(self, batch_size: int, max_rows: int | None = None, *, dtype: torch.dtype, device: torch.device | str,
                argument: str = "activations") -> Iterator[Tensor]:
        """Rows (B, d) in ``dtype`` on ``device``, ``batch_size`` at a time (fewer at a shard's end),
        at most ``max_rows`` in all. Raises :class:`AuditError` naming the first row that holds
        NaN or infinity (after the cast)."""
        budget = self.rows if max_rows is None else min(self.rows, max_rows)
        if self._synthetic is not None:
            for X, _ in self._synthetic.stream(budget, chunk_size=batch_size):
                yield X.to(dtype=dtype, device=device)
            return
        seen = 0
        for part in self._parts:
            for start in range(0, part.rows, batch_size):
                if seen >= budget:
                    return
                stop = min(part.rows, start + batch_size, start + budget - seen)
                x = part.read(start, stop).to(dtype=dtype, device=device)
                bad = ~torch.isfinite(x).all(dim=1)
                if bool(bad.any()):
                    row = start + int(bad.nonzero()[0])
                    cast = f" (after the cast from {part.dtype} to {str(dtype).removeprefix('torch.')})" if part.dtype != str(dtype).removeprefix("torch.") else ""
                    raise AuditError(argument, f"{part.name} row {row} holds NaN or infinite values{cast}; clean the activations, "
                                               f"or read only the rows before it (--max-rows / max_rows={seen + row - start}).")
                seen += stop - start
                yield x


def open_activations(source: Any, sae: SAE, *, argument: str = "activations") -> ActivationSource:
    """Open ``source`` (module docstring, "Activation sources") for ``sae``: every check that needs
    no data (the path, the format, the dtype, the width against ``sae.d``, at least one row) is
    done here; NaN and infinity are found while the rows are read
    (:meth:`ActivationSource.batches`). Raises :class:`AuditError` naming ``argument``."""
    d = sae.d
    if isinstance(source, (Tensor, np.ndarray)):
        t = source if isinstance(source, Tensor) else torch.from_numpy(np.asarray(source))
        if not t.is_floating_point():
            raise AuditError(argument, f"the tensor holds {t.dtype} values; activations must be floating point.")
        rows, width = _shape_rows(argument, "the tensor", tuple(t.shape))
        parts = [_Shard(f"tensor {tuple(t.shape)}", rows, width, str(t.dtype).removeprefix("torch."), _flat_reader(t.detach(), width))]
        src = ActivationSource(f"tensor {tuple(t.shape)}", "tensor", width, rows, [parts[0].name], {}, None, parts)
    elif isinstance(source, (str, os.PathLike)):
        src = _open_path(argument, os.fspath(source), sae)
    else:
        raise AuditError(argument, f"got a {type(source).__name__}; give a tensor file, a folder of them, synthetic:<spec>, or a tensor.")
    if src.d != d:
        where = f" ({src.shards[0]})" if src.kind == "folder" else ""
        raise AuditError(argument, f"{src.description}{where} has rows of width {src.d} but the SAE's input width d is {d}; give the "
                                   "activations of the layer the SAE was trained on (same d), or the SAE of this layer.")
    if src.rows == 0:
        raise AuditError(argument, f"{src.description} holds no rows; give activations with at least one row.")
    return src


def _open_real(argument: str, text: str) -> str:
    """``real:MODEL:PLACE:LAYER[:TOKENS]`` -> the folder of its activation cache, extracted (or
    finished, or opened) through :func:`~sae_theory.data.activations.extract_activations` on the
    default corpus (the Wikipedia sample inside gensim)."""
    from .data.activations import ActivationRequest, extract_activations

    parts = text.split(":")[1:]
    if len(parts) < 3 or len(parts) > 4:
        raise AuditError(argument, f"{text!r}: a real source is real:MODEL:PLACE:LAYER[:TOKENS], e.g. real:minilm:resid_post:3:50000.")
    if len(parts) == 4 and not parts[3].isdigit():
        raise AuditError(argument, f"{text!r}: TOKENS must be a positive whole number, got {parts[3]!r}.")
    if not parts[2].isdigit():
        raise AuditError(argument, f"{text!r}: LAYER must be a whole number, got {parts[2]!r}.")
    try:
        req = ActivationRequest(model=parts[0], place=parts[1], layer=int(parts[2]),
                                **({"max_tokens": int(parts[3])} if len(parts) == 4 else {}))
        return str(extract_activations(req).folder)
    except (ValueError, ModuleNotFoundError, FileNotFoundError) as exc:
        raise AuditError(argument, f"{text!r}: {exc}") from None


def _open_path(argument: str, text: str, sae: SAE) -> ActivationSource:
    if text.startswith("synthetic:"):
        return _open_synthetic(argument, text, sae)
    if text.startswith("real:"):
        text = _open_real(argument, text)
    path, key = Path(text), None
    if not path.exists():
        head, colon, tail = text.rpartition(":")
        if colon and Path(head).is_file() and Path(head).suffix.lower() in (".pt", ".pth", ".safetensors", ".npy"):
            path, key = Path(head), tail
        elif re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*:.*", text) and not Path(text.split(":")[0]).exists():
            raise AuditError(argument, f"{text!r}: unknown source kind {text.split(':')[0]!r}; give a tensor file "
                                       f"({', '.join(ACTIVATION_SUFFIXES)}), a folder of them, synthetic:<spec> or "
                                       "real:MODEL:PLACE:LAYER[:TOKENS].")
        else:
            raise AuditError(argument, f"{text} does not exist; give a tensor file ({', '.join(ACTIVATION_SUFFIXES)}), a folder of "
                                       "them, or synthetic:<spec>.")
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in ACTIVATION_SUFFIXES and not p.name.startswith(".")),
                       key=_natural_key)
        if not files:
            raise AuditError(argument, f"the folder {path} holds no tensor files ({', '.join(ACTIVATION_SUFFIXES)}); give a folder of "
                                       "activation shards.")
        parts = [_open_file(argument, f, None) for f in files]
        widths = {p.d for p in parts}
        if len(widths) > 1:
            first = parts[0]
            odd = next(p for p in parts if p.d != first.d)
            raise AuditError(argument, f"the shards of {path} differ in width: {first.name} has d = {first.d}, {odd.name} d = {odd.d}; "
                                       "a folder must hold the activations of one layer.")
        return ActivationSource(str(path), "folder", parts[0].d, sum(p.rows for p in parts), [p.name for p in parts],
                                {"dtypes": sorted({p.dtype for p in parts})}, None, parts)
    part = _open_file(argument, path, key)
    return ActivationSource(part.name, "file", part.d, part.rows, [part.name], {"dtype": part.dtype}, None, [part])


def _open_synthetic(argument: str, text: str, sae: SAE) -> ActivationSource:
    from .data import SparseFeatureModel

    given = _parse_synthetic(argument, text.removeprefix("synthetic:"))
    spec = {**SYNTHETIC_DEFAULTS, "n": sae.n_latents, **given}
    limits = {"n": 1, "s": 1, "rows": 1, "seed": 0}
    for name, low in limits.items():
        if spec[name] < low:
            raise AuditError(argument, f"{text} gives {name}={spec[name]}; {name} must be >= {low}.")
    if spec["s"] > spec["n"]:
        raise AuditError(argument, f"{text} gives s={spec['s']} active features per row out of n={spec['n']}; s must be <= n.")
    try:
        model = SparseFeatureModel(spec["n"], sae.d, spec["s"], seed=spec["seed"], dtype=torch.float64)
    except (TypeError, ValueError) as exc:
        raise AuditError(argument, f"{text}: {exc}") from None
    desc = "synthetic:" + ",".join(f"{k}={v}" for k, v in spec.items())
    return ActivationSource(desc, "synthetic", sae.d, spec["rows"], [desc], {**spec, "d": sae.d, "coefficients": 1.0, "features": "gaussian"},
                            model.features, [], model)


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------


def _quantiles(values: Tensor) -> dict[str, float]:
    q = torch.quantile(values.to(torch.float64), torch.tensor(QUANTILES, dtype=torch.float64))
    return {f"{p:g}": float(v) for p, v in zip(QUANTILES, q)}


def _hist_quantiles(counts: Tensor) -> dict[str, float]:
    """Quantiles (lower) of a distribution of integers given as its histogram ``counts[v]``."""
    cdf = counts.cumsum(0).to(torch.float64) / float(counts.sum())
    out = {}
    for p in QUANTILES:
        out[f"{p:g}"] = float(int((cdf >= p - 1e-12).nonzero()[0])) if p > 0 else float(int(counts.nonzero()[0]))
    return out


def _unit_rows64(D: Tensor) -> Tensor:
    return unit_rows(D.detach().to(torch.float64))  # a zero atom has cosine 0 with everything


def babel_curve(D: Tensor, rs: list[int]) -> dict[int, float]:
    """Babel mu_1(r) of the rows of ``D`` (p, d) for every r in ``rs`` (each in [1, p - 1]): the
    value of :func:`~sae_theory.metrics.babel` (the largest, over atoms j, of the sum of the r
    largest |cos(D_j, D_i)|, i != j), computed in row blocks of at most 2^24 cosines."""
    U = _unit_rows64(D)
    p = U.shape[0]
    r_max = max(rs)
    best = torch.full((len(rs),), -math.inf, dtype=torch.float64)
    idx = torch.tensor([r - 1 for r in rs], device=U.device)
    rows = max(1, _MAX_ENTRIES // p)
    for i0 in range(0, p, rows):
        C = (U[i0 : i0 + rows] @ U.T).abs_()
        b = torch.arange(C.shape[0], device=U.device)
        C[b, b + i0] = -1.0  # never among the top r
        sums = C.topk(r_max, dim=1).values.cumsum(dim=1)[:, idx]  # (b, len(rs))
        best = torch.maximum(best, sums.amax(dim=0).cpu())
    return {r: float(v) for r, v in zip(rs, best)}


def _k_grid(k_max: int, natural: int | None) -> list[int]:
    ks = set(range(1, min(k_max, 16) + 1))
    if k_max > 16:
        ks |= {int(round(v)) for v in np.geomspace(16, k_max, 10)}
    if natural is not None and natural <= k_max:
        ks.add(natural)
    return sorted(ks)


def _top_k_codes(codes: Tensor, k: int) -> Tensor:
    """``codes`` with all but the k largest-magnitude entries of every row set to 0."""
    k = min(k, codes.shape[-1])
    top = codes.abs().topk(k, dim=-1).indices
    return torch.zeros_like(codes).scatter_(-1, top, codes.gather(-1, top))


def _mp_codes_at(model: MPSAE, x: Tensor, ks: list[int]) -> Iterator[tuple[int, Tensor]]:
    """``(k, encode(x, k=k))`` for every k in ``ks`` (ascending) from one pursuit of max(ks) steps:
    the pursuit is greedy and deterministic, so its first k steps are the k-step pursuit (every
    stop rule included; tested against ``encode(x, k=k)``). The yielded tensor is a fresh copy."""
    out = model.pursuit(x, k=ks[-1])
    codes = torch.zeros_like(out.codes)
    done = 0
    for k in ks:
        idx, alphas = out.indices[:, done:k], out.alphas[:, done:k]
        codes.scatter_add_(1, idx.clamp(min=0), torch.where(idx >= 0, alphas, torch.zeros_like(alphas)))
        done = k
        yield k, codes.clone()


class _Moments:
    """Streaming column means and sums of squared deviations (Chan et al.'s merge), float64."""

    def __init__(self, d: int, device):
        self.n, self.mean, self.m2 = 0, torch.zeros(d, dtype=torch.float64, device=device), torch.zeros(d, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        xb = x.to(torch.float64)
        nb, mb = xb.shape[0], xb.mean(0)
        m2b = (xb - mb).pow(2).sum(0)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta.pow(2) * (self.n * nb / n)
        self.n = n

    @property
    def total_variance(self) -> float:
        """sum_b ||x_b - mean||^2."""
        return float(self.m2.sum())


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


@dataclass
class AuditReport:
    """Everything an audit measured (module docstring); every section is a JSON-ready dict.

    ``to_dict()`` is ``audit.json``, ``summary()`` is ``summary.md``, ``figures()`` draws the
    figures. ``out`` is the folder written (None when the audit wrote nothing)."""

    conditions: dict[str, Any]
    """Rows read and sampled, the source, the SAE (and ``second``): class, config, where from."""
    reconstruction: dict[str, Any]
    """FVU, MSE, L0 (mean and quantiles), dead and dense latents."""
    firing_frequency: dict[str, Any]
    """Quantiles and mean of the per-latent firing frequency, and every latent's frequency."""
    identifiability: dict[str, Any]
    """H1, H2, H3, V1 on the sample's codes and the dictionary (as check_identifiability)."""
    hierarchy: dict[str, Any]
    """Babel of the dictionary (and Tropp's condition), Babel on co-active atoms, effective rank."""
    inference_sparsity: dict[str, Any]
    """FVU of the sample against inference k."""
    comparison: dict[str, Any] | None = None
    """MCS and decoder MCC against ``second``; None without it."""
    recovery: dict[str, Any] | None = None
    """FRR and decoder MCC against a synthetic source's true features; None for data."""
    out: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every section, as written to ``audit.json``."""
        keys = ("conditions", "reconstruction", "firing_frequency", "identifiability", "hierarchy", "inference_sparsity",
                "comparison", "recovery")
        return to_jsonable({k: getattr(self, k) for k in keys}, "audit report")

    # -- summary.md ----------------------------------------------------------------------------
    def summary(self) -> str:
        """``summary.md``: the conditions, then one line per number with what it means."""
        c, r, f, idf, h, s = self.conditions, self.reconstruction, self.firing_frequency, self.identifiability, self.hierarchy, self.inference_sparsity
        sae = c["sae"]
        L = [f"# SAE audit: {sae['class']} ({sae['d']} -> {sae['n_latents']} latents)", ""]
        L += [f"- SAE: {_where(sae)}; class and config in audit.json.",
              f"- Activations: `{c['source']['description']}` ({c['source']['kind']}), {c['rows_read']:,} of {c['source']['rows']:,} "
              f"rows read (max_rows {c['max_rows'] if c['max_rows'] is not None else 'none'}), in batches of {c['batch_size']}.",
              f"- Sample: {c['sample']['rows']:,} rows ({c['sample']['note']}); the GBA and MP-SAE views below use it.", ""]
        L += ["## Reconstruction", "",
              f"- **FVU** {r['fvu']:.4g}: fraction of variance unexplained, sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the "
              f"{c['rows_read']:,} rows (0 perfect, 1 no better than the mean), in the activations' own units: the SAE's input "
              f"normalisation ({sae.get('input_norm', {}).get('kind', 'none')}) is applied on the way in and undone on the way out.",
              f"- **MSE** {r['mse']:.4g}: mean over rows of ||x - x_hat||^2 (summed over the d coordinates).",
              f"- **Mean L0** {r['mean_l0']:.4g}: mean number of non-zero codes per row (median {r['l0_quantiles']['0.5']:g}, "
              f"99% of rows at most {r['l0_quantiles']['0.99']:g}, largest {r['l0_quantiles']['1']:g}).",
              f"- **Dead latents** {r['dead_latents']:,} of {sae['n_latents']:,} ({r['dead_fraction']:.2%}): latents whose code is never > 0 "
              f"on the rows read.",
              f"- **Dense latents** {r['dense_latents']:,} ({r['dense_fraction']:.2%}): latents that fire (code > 0) on more than "
              f"{r['dense_threshold'] * 100:g}% of the rows.", ""]
        q = f["quantiles"]
        L += ["## GBA's view", "",
              f"- **Firing frequency** (fraction of rows with code > 0, per latent): median {q['0.5']:.3g}, 10% of latents at most "
              f"{q['0.1']:.3g}, 90% at most {q['0.9']:.3g}, largest {q['1']:.3g}; mean {f['mean']:.3g} (= mean L0 / latents when codes "
              "are >= 0). Histogram: firing_frequency.png.",
              ]
        if idf.get("skipped"):
            L.append(f"- Identifiability not measured: {idf['skipped']}")
        else:
            L.append(f"- Conditions of docs/papers.md#gba-identifiability measured on H = |codes| ({idf['rows']:,} sample rows x "
                     f"{idf['latents']:,} latents that fire in the sample and have a non-zero atom; {idf['excluded_never_fire']:,} "
                     f"latents that never fire there and {idf['excluded_zero_atom']:,} zero atoms left out) and V = those rows of W_dec:")
            if idf["negative_codes"]:
                L.append(f"  - {idf['negative_codes']:,} codes of the sample are negative: they enter H by their magnitude, count in L0 "
                         "(non-zero) but not as firing (code > 0).")
            for name, what in (("H1", "row sparsity"), ("H2", "non-degenerate coefficients"), ("H3", "low co-occurrence"),
                               ("V1", "incoherent dictionary")):
                res = idf[name]
                L.append(f"  - **{name}** ({what}) {'holds' if res['holds'] else 'FAILS'}: value {res['value']:.4g}, threshold "
                         f"{res['threshold']:.4g}. {res['message']}")
        L += ["", "## MP-SAE's view", ""]
        b = h["babel"]
        L.append("- **Babel mu_1(r)** of the whole dictionary (largest, over atoms, sum of the r largest |cos| with the other "
                 "atoms; mu_1(1) is the mutual coherence): " + ", ".join(f"r={k}: {v:.4g}" for k, v in b.items()) + ".")
        t = h["tropp"]
        if t is not None:
            L.append(f"- **Tropp's condition** at s = {t['s']} (mean L0 rounded): mu_1(s-1) + mu_1(s) = {t['value']:.4g} "
                     f"{'<' if t['holds'] else '>='} 1, so matching pursuit is {'guaranteed' if t['holds'] else 'not guaranteed'} "
                     "to recover every s-sparse combination of these atoms (Tropp 2004).")
        bc = h["babel_coactive"]
        L.append(f"- **Babel on co-active atoms** {bc['value']:.4g}: mean over rows using >= 2 atoms of mu_1(|S| - 1) of the atoms S "
                 f"the row uses ({bc['rows_used']:,} of {bc['rows']:,} sample rows use two or more); small = the atoms used together "
                 "are near-orthogonal.")
        er = h["effective_rank"]
        L.append(f"- **Effective rank of the codes** {er['value']:.4g}: exp of the entropy of the normalised eigenvalues of Z^T Z "
                 f"(Z = codes of {er['rows']:,} sample rows; between 1 and the {er['latents']:,} latents active there).")
        ks, fv = s["k"], s["fvu"]
        L.append(f"- **Error against inference sparsity** ({s['method']}; {s['rows']:,} sample rows): FVU "
                 + ", ".join(f"k={k}: {v:.4g}" for k, v in zip(ks, fv) if k in s["shown"])
                 + f"; the SAE's own encode gives FVU {s['natural']['fvu']:.4g} at mean L0 {s['natural']['l0']:.4g}. "
                 "Curve: inference_sparsity.png.")
        if self.comparison is not None:
            m = self.comparison
            L += ["", "## Against the second SAE", "",
                  f"- Second SAE: {_where(c['second'])}, a {c['second']['class']} with {c['second']['n_latents']:,} latents.",
                  f"- **MCS** (each atom's largest cosine with any atom of the other dictionary, signed): mean {m['mcs']['mean']:.4g}, "
                  f"median {m['mcs']['quantiles']['0.5']:.4g}; the second's atoms against this one: mean {m['mcs_reverse']['mean']:.4g}.",
                  "- **Fraction of atoms with MCS >= t**: " + ", ".join(f"t={k}: {v:.2%}" for k, v in m["mcs_fraction"].items())
                  + " (reverse: " + ", ".join(f"{v:.2%}" for v in m["mcs_fraction_reverse"].values()) + "). Histogram: mcs.png."]
            if m["decoder_mcc"] is not None:
                L.append(f"- **Decoder MCC** {m['decoder_mcc']:.4g}: mean |cos| over the Hungarian one-to-one matching of the smaller "
                         "dictionary's atoms to distinct atoms of the larger (1 = the same dictionary up to order and sign).")
            else:
                L.append(f"- Decoder MCC not computed: {m['decoder_mcc_note']}")
        if self.recovery is not None:
            v = self.recovery
            L += ["", "## Against the synthetic source's true features", "",
                  f"- **FRR@0.9** {v['frr_0.9']:.2%} / **FRR@0.8** {v['frr_0.8']:.2%}: fraction of the {v['n_features']:,} true features "
                  "with an atom at cosine >= 0.9 / 0.8 (meaningful when the SAE was trained on this model: same n, s, seed).",
                  f"- **Decoder MCC** {v['decoder_mcc']:.4g}: mean |cos| over the one-to-one matching of true features to atoms."
                  if v["decoder_mcc"] is not None else f"- Decoder MCC not computed: {v['decoder_mcc_note']}"]
        return "\n".join(L) + "\n"

    # -- figures -------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The audit's matplotlib figures by name (``firing_frequency``, ``inference_sparsity``,
        ``babel``, and ``mcs`` with a second SAE). The caller closes them."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        from .plotting import use_style

        use_style()
        figs = {}
        freq = np.asarray(self.firing_frequency["per_latent"], dtype=np.float64)
        live = freq[freq > 0]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        if live.size:
            sns.histplot(x=live, log_scale=True, bins=min(50, max(5, live.size // 4)), ax=ax)
        thr = self.reconstruction["dense_threshold"]
        ax.axvline(thr, color="k", ls="--", lw=1, label=f"dense above {thr:g}")
        ax.set(xlabel="firing frequency (fraction of rows where the code is > 0), log scale", ylabel="number of latents",
               title=f"{live.size:,} latents fire; {freq.size - live.size:,} never fire (not shown)")
        ax.legend(fontsize=7)
        figs["firing_frequency"] = fig

        s = self.inference_sparsity
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot(s["k"], s["fvu"], marker="o", markersize=3, label="FVU at inference k")
        ax.plot([s["natural"]["l0"]], [s["natural"]["fvu"]], marker="*", markersize=10, ls="none", color="C3",
                label="the SAE's own encode (at its mean L0)")
        ax.set(xlabel=f"inference sparsity k ({s['unit']})", ylabel="fraction of variance unexplained (FVU)",
               title="error against inference sparsity")
        if min(s["fvu"] + [s["natural"]["fvu"]]) > 0:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        figs["inference_sparsity"] = fig

        b = self.hierarchy["babel"]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        ax.plot([int(k) for k in b], list(b.values()), marker="o", markersize=3, label="Babel mu_1(r) of the dictionary")
        ax.axhline(1.0, color="k", ls="--", lw=1, label="1 (Tropp's condition needs mu_1(s-1) + mu_1(s) < 1)")
        ax.set(xlabel="r (number of other atoms summed)", ylabel="largest sum of the r largest |cos|", title="Babel function")
        ax.legend(fontsize=7)
        figs["babel"] = fig

        if self.comparison is not None:
            m = self.comparison
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            data = [("this SAE's atoms vs the second", v) for v in m["mcs"]["per_atom"]] + \
                   [("the second's atoms vs this SAE", v) for v in m["mcs_reverse"]["per_atom"]]
            import pandas as pd

            df = pd.DataFrame(data, columns=["direction", "mcs"])
            sns.histplot(df, x="mcs", hue="direction", element="step", stat="probability", common_norm=False, bins=40, ax=ax)
            ax.set(xlabel="maximum cosine similarity with the other dictionary's atoms", ylabel="fraction of atoms",
                   title="consistency between the two SAEs")
            figs["mcs"] = fig
        return figs

    def write(self, out: str | os.PathLike) -> Path:
        """Write ``audit.json``, ``summary.md`` and the figures into ``out``, atomically."""
        import matplotlib.pyplot as plt

        from .plotting import PNG_DPI

        out = Path(out)
        figs = self.figures()
        try:
            with atomic_folder(out, replaceable=OUTPUT_FILES) as tmp:
                (tmp / "audit.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
                (tmp / "summary.md").write_text(self.summary())
                for name, fig in figs.items():
                    fig.savefig(tmp / f"{name}.png", dpi=PNG_DPI, bbox_inches="tight")
                    fig.savefig(tmp / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
        finally:
            for fig in figs.values():
                plt.close(fig)
        self.out = out
        return out


# ---------------------------------------------------------------------------------------------
# the audit
# ---------------------------------------------------------------------------------------------


def _check_out(out) -> Path:
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise AuditError("out", f"{path} is a file; give a folder for the audit's files.")
        foreign = sorted(p.name for p in path.iterdir() if p.name not in OUTPUT_FILES)
        if foreign:
            raise AuditError("out", f"{path} holds {foreign[:5]}{' ...' if len(foreign) > 5 else ''}, which the audit would delete "
                                    "(it replaces its whole folder); give a new folder or one holding only an earlier audit.")
    parent = path.parent if path.parent != Path("") else Path(".")
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AuditError("out", f"cannot write into {parent}; give a folder you can write to.")
    return path


def _positive(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    try:
        return check_int(name, value, minimum=1)
    except ValueError as exc:
        raise AuditError(name, str(exc).removeprefix(f"{name} ") + " Give a whole number >= 1.") from None


@torch.no_grad()
def audit(
    sae: SAE | str | os.PathLike,
    activations: Any,
    *,
    second: SAE | str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    max_rows: int | None = None,
    batch_size: int = 4096,
    sample_rows: int = 4096,
    dense_threshold: float = DENSE_THRESHOLD,
    k_max: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> AuditReport:
    """Audit ``sae`` on ``activations`` (module docstring: what is read, measured and written).

    Parameters
    ----------
    sae : SAE or path
        The SAE, or its folder (a save, a checkpoint step or checkpoint_dir, or a SAELens save).
    activations : path, ``synthetic:<spec>``, Tensor (..., d) or numpy array
        The rows to audit on (module docstring, "Activation sources").
    second : SAE or path, optional
        Another SAE of the same d: adds the MCS comparison of the two dictionaries.
    out : path, optional
        Folder to write ``audit.json``, ``summary.md`` and the figures into (atomically); None
        writes nothing. An existing folder is replaced only if it holds nothing but audit files.
    max_rows : int, optional
        Read at most this many rows (>= 1); None: every row of the source.
    batch_size : int, default 4096
        Rows per batch (>= 1).
    sample_rows : int, default 4096
        Size of the uniform random sample (>= 1) on which the GBA and MP-SAE views are measured.
    dense_threshold : float, default 0.1
        A latent firing on more than this fraction of rows is dense; in (0, 1).
    k_max : int, optional
        Largest inference k of the error curve; default 4 x the MP-SAE's k, else 4 x the mean L0
        (rounded up), at most the number of latents for the non-MP SAEs.
    device : str or torch.device, optional
        Where to load an SAE folder; default: where it was saved (the CPU for a SAELens folder).
        An SAE object is used where it is; a ``second`` folder is loaded where ``sae`` is.
    seed : int, default 0
        Seeds the sample.
    progress : bool, default True
        A tqdm bar over the rows read.

    Returns
    -------
    AuditReport

    Raises
    ------
    AuditError (a ValueError)
        Every input that cannot be audited, naming the argument (``.argument``): an SAE folder
        of neither kind (naming the missing files) or that its reader refuses; activations that do
        not exist, of an unknown kind or format, of another width than the SAE's d, of integers,
        without rows, or holding NaN or infinity (found while reading: nothing is written then);
        a ``second`` SAE of another d; a value out of range. Checks that need no data run before
        any row is read.
    TypeError
        An argument of the wrong type (``max_rows="10"``).
    """
    # -- every check that needs no data ---------------------------------------------------------
    max_rows = _positive("max_rows", max_rows, allow_none=True)
    batch_size = _positive("batch_size", batch_size)
    sample_rows = _positive("sample_rows", sample_rows)
    k_max = _positive("k_max", k_max, allow_none=True)
    try:
        dense_threshold = check_real("dense_threshold", dense_threshold, minimum=0, maximum=1, include_minimum=False, include_maximum=False)
    except ValueError as exc:
        raise AuditError("dense_threshold", str(exc).removeprefix("dense_threshold ")) from None
    seed = check_int("seed", seed, minimum=0)
    check_bool("progress", progress)
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise AuditError("device", f"{device!r} is not a torch device; give e.g. cpu or cuda:0.") from None
    model, where = _as_sae("sae", sae, device)
    dev = next(iter(model.parameters())).device
    other = where2 = None
    if second is not None:
        other, where2 = _as_sae("second", second, dev)
        if other.d != model.d:
            raise AuditError("second", f"{where2.get('path', 'the second SAE')} has input width d = {other.d} but the SAE's is {model.d}; "
                                       "compare SAEs of the same layer.")
    source = open_activations(activations, model)
    out_path = _check_out(out) if out is not None else None
    dtype = model.config.dtype

    # -- one streamed pass ----------------------------------------------------------------------
    from tqdm.auto import tqdm

    budget = source.rows if max_rows is None else min(source.rows, max_rows)
    M = model.n_latents
    stats, moments = ActivationStats(), _Moments(model.d, dev)
    sse = 0.0
    l0_hist = torch.zeros(M + 1, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    keep_keys = torch.empty(0, dtype=torch.float64)
    keep_rows = torch.empty(0, model.d, dtype=dtype, device=dev)
    keep_index = torch.empty(0, dtype=torch.int64)
    seen = 0
    with tqdm(total=budget, desc="audit", unit="row", disable=not progress, leave=False) as bar:
        for x in source.batches(batch_size, max_rows, dtype=dtype, device=dev):
            codes = model.encode(x)
            x_hat = model.denormalize(model.decode(codes), x)  # raw units, whatever the model's input norm
            sse += float((x_hat - x).to(torch.float64).pow(2).sum())
            moments.update(x)
            stats.update(codes)
            l0_hist += torch.bincount((codes != 0).sum(dim=1).cpu(), minlength=M + 1)
            keys = torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
            keep_keys = torch.cat([keep_keys, keys])
            keep_rows = torch.cat([keep_rows, x])
            keep_index = torch.cat([keep_index, torch.arange(seen, seen + x.shape[0])])
            if keep_keys.shape[0] > sample_rows:
                sel = keep_keys.topk(sample_rows, largest=False).indices
                keep_keys, keep_rows, keep_index = keep_keys[sel], keep_rows[sel.to(dev)], keep_index[sel]
            seen += x.shape[0]
            bar.update(x.shape[0])
    order = keep_index.argsort()
    sample = keep_rows[order.to(dev)]
    S = sample.shape[0]

    # -- reconstruction and firing frequency ----------------------------------------------------
    total_var = moments.total_variance
    freq = stats.frequency
    dead = int((freq == 0).sum())
    dense = int((freq > dense_threshold).sum())
    mean_l0 = float((l0_hist * torch.arange(M + 1)).sum()) / seen
    reconstruction = {
        "fvu": sse / total_var if total_var > 0 else math.nan,
        "fvu_note": None if total_var > 0 else "every row read is the same, so the variance is 0 and FVU undefined",
        "mse": sse / seen,
        "mean_l0": mean_l0,
        "l0_quantiles": _hist_quantiles(l0_hist),
        "dead_latents": dead,
        "dead_fraction": dead / M,
        "dense_latents": dense,
        "dense_fraction": dense / M,
        "dense_threshold": dense_threshold,
    }
    firing = {"quantiles": _quantiles(freq), "mean": float(freq.mean()), "per_latent": freq.tolist()}

    # -- the sample's codes, kept sparse: (row, latent, value) of every non-zero code ---------------
    D = model.dictionary.detach()
    trip_r, trip_c, trip_v = [], [], []
    for i in range(0, S, batch_size):
        codes = model.encode(sample[i : i + batch_size])
        r, c = codes.nonzero(as_tuple=True)
        trip_r.append((r + i).cpu()), trip_c.append(c.cpu()), trip_v.append(codes[r, c].to(torch.float64).cpu())
    Zr, Zc_, Zv = torch.cat(trip_r), torch.cat(trip_c), torch.cat(trip_v)
    fires = torch.bincount(Zc_, minlength=M) > 0
    nonzero_atom = D.norm(dim=1).cpu() > 0

    def dense_codes(rows: int, cols: Tensor) -> Tensor:
        """The codes of the first ``rows`` sample rows in the latents ``cols``, dense float64 (rows, len(cols))."""
        col_of = torch.full((M,), -1, dtype=torch.int64)
        col_of[cols] = torch.arange(cols.numel())
        keep = (Zr < rows) & (col_of[Zc_] >= 0)
        out = torch.zeros(rows, cols.numel(), dtype=torch.float64)
        out[Zr[keep], col_of[Zc_[keep]]] = Zv[keep]
        return out

    identifiability: dict[str, Any]
    cols = (fires & nonzero_atom).nonzero().flatten()
    if cols.numel() == 0:
        identifiability = {"skipped": "no latent with a non-zero atom fires on the sample rows."}
    else:
        import scipy.sparse as sp

        col_of = torch.full((M,), -1, dtype=torch.int64)
        col_of[cols] = torch.arange(cols.numel())
        keep = col_of[Zc_] >= 0
        H = sp.csr_matrix((Zv[keep].abs().numpy(), (Zr[keep].numpy(), col_of[Zc_[keep]].numpy())), shape=(S, cols.numel()))
        report = check_identifiability(H, D[cols.to(D.device)])
        identifiability = {
            "rows": S, "latents": int(cols.numel()), "excluded_never_fire": int((~fires).sum()),
            "excluded_zero_atom": int((fires & ~nonzero_atom).sum()), "negative_codes": int((Zv < 0).sum()),
            "holds": report.holds,
            **{name: {"value": res.value, "threshold": res.threshold, "holds": res.holds, "message": res.message,
                      "details": res.details} for name, res in report.items()},
        }

    # -- MP-SAE's view ------------------------------------------------------------------------------
    rs = sorted({r for r in (1, 2, 4, 8, 16, 32, 64) if r <= M - 1})
    s_tropp = max(1, int(round(mean_l0)))
    if M >= 2:
        rs = sorted(set(rs) | {r for r in (s_tropp - 1, s_tropp) if 1 <= r <= M - 1})
        babel_values = babel_curve(D, rs)
    else:
        babel_values = {}
    tropp = None
    if M >= 2 and s_tropp <= M - 1:
        value = (babel_values[s_tropp - 1] if s_tropp > 1 else 0.0) + babel_values[s_tropp]
        tropp = {"s": s_tropp, "value": value, "holds": value < 1.0}
    co_rows = min(S, COACTIVE_ROWS)
    in_co = Zr < co_rows
    used = torch.unique(Zc_[in_co])
    rows_used = int((torch.bincount(Zr[in_co], minlength=co_rows) >= 2).sum())
    bc = babel_coactive(D[used.to(D.device)], dense_codes(co_rows, used)) if used.numel() else math.nan
    live = fires.nonzero().flatten()
    er_rows = min(S, max(1, _MAX_ENTRIES // max(1, live.numel())))
    Zer = dense_codes(er_rows, live)
    er = effective_rank(Zer.T if Zer.shape[0] < Zer.shape[1] else Zer) if live.numel() else 0.0
    hierarchy = {
        "babel": {str(r): v for r, v in babel_values.items()},
        "tropp": tropp,
        "babel_coactive": {"value": bc, "rows": co_rows, "rows_used": rows_used},
        "effective_rank": {"value": er, "rows": er_rows, "latents": int(live.numel())},
    }

    # -- error against inference sparsity ---------------------------------------------------------
    is_mp = isinstance(model, MPSAE)
    if k_max is None:
        k_max = 4 * model.k if is_mp else min(M, 4 * max(1, math.ceil(mean_l0)))
    elif not is_mp:
        k_max = min(k_max, M)
    natural_k = model.k if is_mp else None
    ks = _k_grid(k_max, natural_k)
    s_mom = _Moments(model.d, dev)
    s_mom.update(sample)
    s_var = s_mom.total_variance
    s_sse = [0.0] * len(ks)
    s_l0 = [0.0] * len(ks)
    nat_sse = nat_l0 = 0.0
    for i in range(0, S, batch_size):
        x = sample[i : i + batch_size]
        codes = model.encode(x)
        nat_sse += float((model.denormalize(model.decode(codes), x) - x).to(torch.float64).pow(2).sum())
        nat_l0 += float((codes != 0).sum())
        at_k = _mp_codes_at(model, x, ks) if is_mp else ((k, _top_k_codes(codes, k)) for k in ks)
        for j, (k, ck) in enumerate(at_k):
            s_sse[j] += float((model.denormalize(model.decode(ck), x) - x).to(torch.float64).pow(2).sum())
            s_l0[j] += float((ck != 0).sum())
    fvu_of = (lambda v: v / s_var) if s_var > 0 else (lambda v: math.nan)
    shown = [k for k in ks if k in (1, 2, 4, 8, 16, 32, 64, 128, 256, natural_k, ks[-1])]
    inference = {
        "method": "matching-pursuit steps, encode(x, k=k)" if is_mp else "the k largest-magnitude codes of encode(x), then decode",
        "unit": "matching-pursuit steps" if is_mp else "largest codes kept",
        "rows": S, "k": ks, "fvu": [fvu_of(v) for v in s_sse], "l0": [v / S for v in s_l0], "shown": shown,
        "natural": {"k": natural_k, "fvu": fvu_of(nat_sse), "l0": nat_l0 / S},
    }

    # -- the second SAE ----------------------------------------------------------------------------
    comparison = None
    if other is not None:
        D2 = other.dictionary.detach()
        mcs = max_cosine_similarity(D, D2)
        back = max_cosine_similarity(D2, D)
        small, large = (D, D2) if D.shape[0] <= D2.shape[0] else (D2, D)
        mcc_ok = large.shape[0] <= MCC_MAX_ATOMS and bool((small.norm(dim=1) > 0).all())
        comparison = {
            "mcs": {"mean": float(mcs.mean()), "quantiles": _quantiles(mcs), "per_atom": mcs.tolist()},
            "mcs_reverse": {"mean": float(back.mean()), "quantiles": _quantiles(back), "per_atom": back.tolist()},
            "mcs_fraction": {f"{t:g}": mcs_fraction(D, [D2], t) for t in MCS_THRESHOLDS},
            "mcs_fraction_reverse": {f"{t:g}": mcs_fraction(D2, [D], t) for t in MCS_THRESHOLDS},
            "decoder_mcc": decoder_mcc(large, small) if mcc_ok else None,
            "decoder_mcc_note": None if mcc_ok else (
                f"a dictionary has more than {MCC_MAX_ATOMS:,} atoms (the Hungarian matching is O(n^2 M))"
                if large.shape[0] > MCC_MAX_ATOMS else "the smaller dictionary has a zero atom, which has no direction"),
        }

    # -- a synthetic source's true features ---------------------------------------------------------
    recovery = None
    if source.true_features is not None:
        V = source.true_features
        mcc_ok = max(V.shape[0], M) <= MCC_MAX_ATOMS
        recovery = {
            "n_features": V.shape[0], "frr_0.9": feature_recovery_rate(D, V, 0.9), "frr_0.8": feature_recovery_rate(D, V, 0.8),
            "decoder_mcc": decoder_mcc(D, V) if mcc_ok else None,
            "decoder_mcc_note": None if mcc_ok else f"more than {MCC_MAX_ATOMS:,} atoms or features",
        }

    from . import __version__

    sample_note = ("every row read" if S == seen else
                   f"a uniform random sample of the {seen:,} rows read, reservoir sampling with seed {seed}")
    conditions = {
        "rows_read": seen, "max_rows": max_rows, "batch_size": batch_size, "seed": seed,
        "sample": {"rows": S, "note": sample_note, "coactive_rows": co_rows, "effective_rank_rows": er_rows},
        "source": {"description": source.description, "kind": source.kind, "rows": source.rows, "d": source.d, "shards": source.shards,
                   "spec": source.spec},
        "sae": _sae_info(model, where),
        "second": _sae_info(other, where2) if other is not None else None,
        "dtype": str(dtype).removeprefix("torch."), "device": str(dev), "sae_theory_version": __version__,
    }
    result = AuditReport(conditions, reconstruction, firing, identifiability, hierarchy, inference, comparison, recovery)
    if out_path is not None:
        result.write(out_path)
    return result


def _as_sae(argument: str, value: Any, device) -> tuple[SAE, dict[str, Any]]:
    """An SAE object as it is (``device`` applies to folders only), or the SAE of a folder."""
    if isinstance(value, SAE):
        return value, {"path": None, "format": "an SAE object"}
    if isinstance(value, (str, os.PathLike)):
        return load_any_sae(value, device=device, argument=argument)
    raise TypeError(f"{argument} must be an SAE or the folder of one, got {type(value).__name__}.")
