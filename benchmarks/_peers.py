"""Run the peer matching-pursuit SAE implementations on a given dictionary.

Run this with the peers venv's python (made by ``benchmarks/setup_peers.sh``),
never with the main venv: it must not import ``sae_theory``::

    benchmarks/.venv-peers/bin/python benchmarks/_peers.py \
        --dictionary D.pt --x X.pt --k K --repeats R --out result.json \
        [--codes-out codes.pt] [--threads N] [--check]
    benchmarks/.venv-peers/bin/python benchmarks/_peers.py --versions

Inputs: ``D.pt`` holds a float32 tensor (p, d), one unit-norm atom per row;
``X.pt`` holds a float32 tensor (B, d).  Both are loaded with
``torch.load(weights_only=True)``.

For each peer this script builds the peer's own model class around exactly
that dictionary, then

* ``encode_s``: median wall time of R calls of the peer's ``encode(X)`` after
  one warm-up call, under ``torch.no_grad()``, float32, CPU;
* ``train_step_s``: median of R (after one warm-up) of one forward pass plus
  ``loss.backward()`` of the peer's MSE reconstruction loss (no optimizer
  step; gradients are reset to None before each step);
* the codes (B, p) of X, saved to ``--codes-out`` as
  ``{"sae_lens": Tensor, "overcomplete": Tensor}`` (a peer that failed is left
  out).

A failure in a peer (import, construction, encode, train step) is recorded as
the ``error`` string of that peer in the JSON; the script carries on and exits
0.  The JSON looks like::

    {"sae_lens": {"version": "6.54.12", "encode_s": 0.01, "train_step_s": 0.03,
                  "error": null, ...extra keys...},
     "overcomplete": {...}, "meta": {...}}

``--check`` also runs a plain-torch matching pursuit in this script and prints,
for each peer, the max abs difference of its codes from it and how often the
supports agree (and stores that under ``"check"`` in the JSON).

How each peer is set up, and how it differs from plain K-step MP
------------------------------------------------------------------
Plain MP here (``plain_mp(relu=True)``): K steps of
``j = argmax_j relu(r . D_j)``, ``c = relu(r . D_j)``, ``z_j += c``,
``r -= c D_j``.  An atom picked twice accumulates its coefficients.

SAELens (``sae_lens.saes.matching_pursuit_sae``):

* ``MatchingPursuitSAE`` (inference class) is used for ``encode`` and codes;
  ``MatchingPursuitTrainingSAE`` (training class, same encoder function
  ``_encode_matching_pursuit``) for the train step, via its own
  ``training_forward_pass`` (loss = MSE summed over d, mean over batch, no aux
  loss; ``loss.backward()``).
* Weights: ``W_dec`` (d_sae=p, d_in=d) is set to D; the encoder is tied
  (``W_enc`` is the property ``W_dec.T``).  ``b_dec`` is set to 0 and
  ``apply_b_dec_to_input=False`` (no centering), ``normalize_activations=
  "none"``.
* Stopping: defaults are ``residual_threshold=1e-2``,
  ``stop_on_duplicate_support=True`` and ``max_iterations=None`` (=> d_in
  steps), i.e. by default it stops EARLY (a row is frozen once its residual
  norm < 1e-2 or its support did not change in a step, e.g. when an atom is
  re-picked or the coefficient is 0).  Here we set ``residual_threshold=0``
  (that disables the check: it is only used when > 0),
  ``stop_on_duplicate_support=False`` and ``max_iterations=K``, so it runs
  exactly K steps.  With that, its codes are the same as plain MP with relu
  (same selection, relu coefficient, accumulation via ``scatter_add_``), up
  to float rounding (~1e-6 at d=32: its coefficient is ``(r * D_j).sum()``,
  not the matmul entry), same supports.  With the defaults it runs a
  row-dependent number of steps (B=256, d=32, p=256: mean nnz 19.3, 4..32).
* ``encode`` returns just the codes (B, p).  Selection runs under no_grad;
  gradients flow through the relu coefficient of the gathered row
  ``W_dec[idx]`` and the residual chain.  The residual update is a gather
  (O(B d) per step), not a dense matmul.
* If every correlation is <= 0 the argmax of relu(.) is an arbitrary index of
  a zero (torch tie-breaking) but its coefficient is 0, so codes still equal
  plain MP's.

overcomplete (``overcomplete.sae.mp_sae.MpSAE``):

* Built as ``MpSAE(d, p, k=K, dropout=None, encoder_module="identity",
  dictionary_params={"normalization": "identity"})``; D is copied into
  ``model.dictionary._weights`` (the multiplier buffer stays 0, i.e. scale
  exp(0) = 1).  The default dictionary normalisation "l2" would rescale the
  rows in place by 1/(||D_j|| + 1e-8) on every call in train mode; "identity"
  keeps D exactly.  There is no input normalisation, no bias/centering in
  MpSAE, and dropout is None (and ``eval()`` forces it to None).
* ``encode(x)`` returns a PAIR ``(residual, codes)`` - not (pre_codes, codes)
  as other overcomplete SAEs; ``forward`` returns ``(residual, codes,
  x_hat)``.  Codes are timed in ``eval()`` mode, where the dictionary is the
  copy "fused" at ``eval()`` time; the train step runs in ``train()`` mode with
  loss = ``(x - x_hat).square().mean()`` (overcomplete's own MSE convention,
  mean over all elements) and ``loss.backward()``.
* Always exactly k steps; no stopping rule.
* Selection is ``torch.max`` of the RAW correlations ``r D^T`` (no relu), and
  the coefficient is that raw value, so it can pick an atom with a negative
  coefficient when all correlations are negative (plain MP with relu would
  add 0 instead).  On inputs where some correlation is always positive (e.g.
  random X with p >> d) codes match relu-MP; ``--check`` reports both the
  relu and the raw (``plain_mp(relu=False)``) reference.  Codes can be
  negative.
* Each step builds a dense one-hot (B, p) matrix and does ``one_hot @ W``
  (O(B p d) per step) for the residual update, and accumulates dense (B, p)
  codes; gradients flow through the max value (w.r.t. residual and W).
* Import: ``overcomplete/__init__.py`` eagerly imports the package's vision
  models (torchvision) and plotting helpers (matplotlib, opencv, scikit-image),
  none of which MpSAE uses.  The torchvision wheel that PyPI has for torch
  2.13 is a CUDA build that cannot load with the CPU torch
  (``RuntimeError: operator torchvision::nms does not exist``), so this script
  registers an empty ``overcomplete`` package object (with the installed
  package's path) and imports ``overcomplete.sae.mp_sae`` from it, i.e. it
  skips only the top-level ``__init__.py``; the MpSAE code that runs is the
  installed, unmodified one.  (``overcomplete.sae`` still needs numpy, scipy,
  scikit-learn, einops, tqdm and pillow.)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import statistics
import sys
import time
import traceback
import types
import warnings
from pathlib import Path

import torch

PEERS = ("sae_lens", "overcomplete")


# --------------------------------------------------------------------------
# imports of the peers


def _import_sae_lens():
    t0 = time.perf_counter()
    from sae_lens.saes.matching_pursuit_sae import (
        MatchingPursuitSAE,
        MatchingPursuitSAEConfig,
        MatchingPursuitTrainingSAE,
        MatchingPursuitTrainingSAEConfig,
    )
    from sae_lens.saes.sae import TrainStepInput

    ns = types.SimpleNamespace(
        MatchingPursuitSAE=MatchingPursuitSAE,
        MatchingPursuitSAEConfig=MatchingPursuitSAEConfig,
        MatchingPursuitTrainingSAE=MatchingPursuitTrainingSAE,
        MatchingPursuitTrainingSAEConfig=MatchingPursuitTrainingSAEConfig,
        TrainStepInput=TrainStepInput,
        module=MatchingPursuitSAE.__module__,
        version=importlib.metadata.version("sae-lens"),
        import_s=0.0,
    )
    ns.import_s = time.perf_counter() - t0
    return ns


def _import_overcomplete():
    """Import overcomplete.sae.mp_sae without running overcomplete/__init__.py."""
    t0 = time.perf_counter()
    if "overcomplete" not in sys.modules:
        spec = importlib.util.find_spec("overcomplete")  # does not execute it
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("package 'overcomplete' is not installed")
        pkg = types.ModuleType("overcomplete")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        pkg.__package__ = "overcomplete"
        pkg.__version__ = importlib.metadata.version("overcomplete")
        sys.modules["overcomplete"] = pkg
    from overcomplete.sae.mp_sae import MpSAE

    return types.SimpleNamespace(
        MpSAE=MpSAE,
        module=MpSAE.__module__,
        version=importlib.metadata.version("overcomplete"),
        import_mode="top-level overcomplete/__init__.py skipped",
        import_s=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------
# model builders (exactly D, no bias, exactly K steps)


def build_sae_lens(ns, D: torch.Tensor, k: int, training: bool = False):
    p, d = D.shape
    common = {
        "d_in": d,
        "d_sae": p,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "residual_threshold": 0.0,  # 0 disables the residual-norm stop
        "max_iterations": k,
        "stop_on_duplicate_support": False,
    }
    if training:
        cfg = ns.MatchingPursuitTrainingSAEConfig(decoder_init_norm=1.0, **common)
        sae = ns.MatchingPursuitTrainingSAE(cfg)
        sae.train()
    else:
        cfg = ns.MatchingPursuitSAEConfig(**common)
        sae = ns.MatchingPursuitSAE(cfg)
        sae.eval()
    with torch.no_grad():
        sae.W_dec.copy_(D)
        sae.b_dec.zero_()
    assert torch.equal(sae.W_dec.detach(), D)
    assert torch.equal(sae.W_enc.detach(), D.T)
    return sae


def build_overcomplete(ns, D: torch.Tensor, k: int):
    p, d = D.shape
    model = ns.MpSAE(
        d,
        p,
        k=k,
        dropout=None,
        encoder_module="identity",
        dictionary_params={"normalization": "identity"},
        device="cpu",
    )
    with torch.no_grad():
        model.dictionary._weights.copy_(D)
        model.dictionary.multiplier.zero_()
    model.eval()  # fuses the dictionary; also forces dropout=None
    assert model.dropout is None
    assert torch.equal(model.get_dictionary().detach(), D)
    return model


# --------------------------------------------------------------------------
# timing helpers


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _zero_grad(model):
    for prm in model.parameters():
        prm.grad = None


def _fmt_exc(stage: str, exc: BaseException) -> str:
    return f"{stage}: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------
# the two peers


def run_sae_lens(D, X, k, repeats, result, codes_out):
    try:
        ns = _import_sae_lens()
    except Exception as exc:  # noqa: BLE001
        result["error"] = _fmt_exc("import", exc)
        result["traceback"] = traceback.format_exc()
        return
    result.update(
        version=ns.version,
        module=ns.module,
        cls="MatchingPursuitSAE",
        import_s=ns.import_s,
    )
    errors = []
    try:
        sae = build_sae_lens(ns, D, k)
        with torch.no_grad():
            codes = sae.encode(X)
            result["encode_s"] = _median_time(lambda: sae.encode(X), repeats)
        codes_out["sae_lens"] = codes.detach().clone()
    except Exception as exc:  # noqa: BLE001
        errors.append(_fmt_exc("encode", exc))
        result["traceback"] = traceback.format_exc()
    try:
        tsae = build_sae_lens(ns, D, k, training=True)

        def step():
            _zero_grad(tsae)
            out = tsae.training_forward_pass(
                ns.TrainStepInput(
                    sae_in=X,
                    coefficients={},
                    dead_neuron_mask=None,
                    n_training_steps=0,
                    is_logging_step=False,
                )
            )
            out.loss.backward()

        result["train_step_s"] = _median_time(step, repeats)
        result["train_cls"] = "MatchingPursuitTrainingSAE"
        with torch.no_grad():
            result["train_cls_codes_equal"] = (
                bool(
                    torch.equal(
                        build_sae_lens(ns, D, k, training=True).encode(X), codes
                    )
                )
                if "sae_lens" in codes_out
                else None
            )
    except Exception as exc:  # noqa: BLE001
        errors.append(_fmt_exc("train_step", exc))
        result["traceback"] = traceback.format_exc()
    result["error"] = "; ".join(errors) or None


def run_overcomplete(D, X, k, repeats, result, codes_out):
    try:
        ns = _import_overcomplete()
    except Exception as exc:  # noqa: BLE001
        result["error"] = _fmt_exc("import", exc)
        result["traceback"] = traceback.format_exc()
        return
    result.update(
        version=ns.version,
        module=ns.module,
        cls="MpSAE",
        import_mode=ns.import_mode,
        import_s=ns.import_s,
    )
    errors = []
    try:
        model = build_overcomplete(ns, D, k)
        with torch.no_grad():
            _residual, codes = model.encode(X)
            result["encode_s"] = _median_time(lambda: model.encode(X), repeats)
        codes_out["overcomplete"] = codes.detach().clone()
        result["encode_returns"] = "(residual, codes)"
    except Exception as exc:  # noqa: BLE001
        errors.append(_fmt_exc("encode", exc))
        result["traceback"] = traceback.format_exc()
    try:
        model = build_overcomplete(ns, D, k)
        model.train()

        def step():
            _zero_grad(model)
            _residual, _codes, x_hat = model(X)
            loss = (X - x_hat).square().mean()
            loss.backward()

        result["train_step_s"] = _median_time(step, repeats)
        result["dictionary_unchanged_after_train"] = bool(
            torch.equal(model.dictionary._weights.detach(), D)
        )
    except Exception as exc:  # noqa: BLE001
        errors.append(_fmt_exc("train_step", exc))
        result["traceback"] = traceback.format_exc()
    result["error"] = "; ".join(errors) or None


# --------------------------------------------------------------------------
# plain-torch reference and the check


@torch.no_grad()
def plain_mp(
    X: torch.Tensor, D: torch.Tensor, k: int, relu: bool = True
) -> torch.Tensor:
    """K steps of matching pursuit; relu=True: argmax/coef of relu(r D^T)."""
    B, p = X.shape[0], D.shape[0]
    r = X.clone()
    codes = torch.zeros(B, p, dtype=X.dtype)
    rows = torch.arange(B)
    for _ in range(k):
        c = r @ D.T
        if relu:
            c = c.clamp_min(0)
        val, idx = c.max(dim=1)
        codes[rows, idx] += val
        r = r - val[:, None] * D[idx]
    return codes


def compare(codes: torch.Tensor, ref: torch.Tensor) -> dict:
    s, sr = codes != 0, ref != 0
    return {
        "max_abs_diff": float((codes - ref).abs().max()),
        "support_rows_equal": float((s == sr).all(dim=1).float().mean()),
        "support_entries_equal": float((s == sr).float().mean()),
        "mean_nnz": float(s.sum(1).float().mean()),
        "ref_mean_nnz": float(sr.sum(1).float().mean()),
    }


def run_check(D, X, k, codes_out) -> dict:
    ref_relu = plain_mp(X, D, k, relu=True)
    ref_raw = plain_mp(X, D, k, relu=False)
    check = {"relu_vs_raw_reference": compare(ref_raw, ref_relu)}
    for name in PEERS:
        if name not in codes_out:
            check[name] = None
            continue
        check[name] = {
            "vs_relu_mp": compare(codes_out[name], ref_relu),
            "vs_raw_mp": compare(codes_out[name], ref_raw),
        }
    if all(n in codes_out for n in PEERS):
        check["sae_lens_vs_overcomplete"] = compare(
            codes_out["overcomplete"], codes_out["sae_lens"]
        )
    return check


def _print_check(check: dict) -> None:
    def line(label, c):
        print(
            f"  {label:<34} max|diff|={c['max_abs_diff']:.3e}  "
            f"support rows equal={c['support_rows_equal']:.4f}  "
            f"entries equal={c['support_entries_equal']:.6f}  "
            f"nnz={c['mean_nnz']:.2f} (ref {c['ref_mean_nnz']:.2f})"
        )

    print("check (codes vs plain-torch MP in this script):")
    for name in PEERS:
        if check.get(name) is None:
            print(f"  {name}: no codes (failed)")
            continue
        line(f"{name} vs relu-MP", check[name]["vs_relu_mp"])
        line(f"{name} vs raw-MP", check[name]["vs_raw_mp"])
    line("raw-MP vs relu-MP", check["relu_vs_raw_reference"])
    if "sae_lens_vs_overcomplete" in check:
        line("overcomplete vs sae_lens", check["sae_lens_vs_overcomplete"])


# --------------------------------------------------------------------------
# CLI


def _load_tensor(path: str, name: str) -> torch.Tensor:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, torch.Tensor):
        raise SystemExit(
            f"{name}: {path} does not hold a tensor (got {type(obj).__name__})"
        )
    if obj.dtype != torch.float32:
        warnings.warn(
            f"{name} has dtype {obj.dtype}; converting to float32", stacklevel=2
        )
        obj = obj.float()
    return obj.contiguous()


def print_versions() -> int:
    print(f"python {sys.version.split()[0]}  torch {torch.__version__}")
    ok = True
    for name, imp in (
        ("sae_lens", _import_sae_lens),
        ("overcomplete", _import_overcomplete),
    ):
        try:
            ns = imp()
            cls = "MatchingPursuitSAE" if name == "sae_lens" else "MpSAE"
            print(
                f"{name} {ns.version}  ({ns.module}.{cls}, import {ns.import_s:.1f}s)"
            )
        except Exception as exc:  # noqa: BLE001
            ok = False
            print(f"{name}: FAILED {_fmt_exc('import', exc)}")
    if "sae_theory" in sys.modules:
        print("ERROR: sae_theory got imported")
        ok = False
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--versions",
        action="store_true",
        help="only import both peers and print their versions",
    )
    ap.add_argument("--dictionary", help="D.pt: float32 (p, d), unit-norm rows")
    ap.add_argument("--x", help="X.pt: float32 (B, d)")
    ap.add_argument("--k", type=int, help="number of MP steps")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    ap.add_argument("--out", help="result JSON path")
    ap.add_argument("--codes-out", help="save {peer: codes (B, p)} here (torch.save)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads(N)")
    ap.add_argument(
        "--check",
        action="store_true",
        help="compare peer codes with a plain-torch MP and print the result",
    )
    ap.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="comma-separated subset of: " + ",".join(PEERS),
    )
    args = ap.parse_args(argv)

    if args.versions:
        return print_versions()
    missing = [o for o in ("dictionary", "x", "k", "out") if getattr(args, o) is None]
    if missing:
        ap.error("missing: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    if args.threads:
        torch.set_num_threads(args.threads)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(peers) - set(PEERS)
    if unknown:
        ap.error(f"unknown peers: {sorted(unknown)}")

    D = _load_tensor(args.dictionary, "dictionary")
    X = _load_tensor(args.x, "x")
    if D.ndim != 2 or X.ndim != 2 or D.shape[1] != X.shape[1]:
        raise SystemExit(
            f"shape mismatch: D {tuple(D.shape)} (p, d), X {tuple(X.shape)} (B, d)"
        )
    norms = D.norm(dim=1)
    max_norm_dev = float((norms - 1).abs().max())
    if max_norm_dev > 1e-4:
        warnings.warn(
            f"dictionary rows are not unit norm (max |norm-1| = {max_norm_dev:.2e})",
            stacklevel=1,
        )

    results = {}
    codes_out: dict[str, torch.Tensor] = {}
    runners = {"sae_lens": run_sae_lens, "overcomplete": run_overcomplete}
    for name in peers:
        res = {"version": None, "encode_s": None, "train_step_s": None, "error": None}
        runners[name](D, X, args.k, args.repeats, res, codes_out)
        results[name] = res
        status = "ok" if res["error"] is None else f"ERROR {res['error']}"
        enc = f"{res['encode_s']:.4g}s" if res["encode_s"] is not None else "-"
        trn = f"{res['train_step_s']:.4g}s" if res["train_step_s"] is not None else "-"
        print(f"{name} {res['version']}: encode {enc}  train_step {trn}  [{status}]")

    results["meta"] = {
        "B": X.shape[0],
        "d": X.shape[1],
        "p": D.shape[0],
        "k": args.k,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "max_row_norm_dev": max_norm_dev,
        "sae_theory_imported": "sae_theory" in sys.modules,
    }
    if args.check:
        check = run_check(D, X, args.k, codes_out)
        results["check"] = check
        _print_check(check)

    Path(args.out).write_text(json.dumps(results, indent=2))
    if args.codes_out:
        torch.save(codes_out, args.codes_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
