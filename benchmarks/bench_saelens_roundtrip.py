"""SAELens export round trip: every SAE that ``sae_theory.saelens.export_saelens`` writes, loaded by
the real SAELens and compared with ours on the same inputs.

Not a test (``tests/test_saelens.py`` runs the same check with asserts, reusing the helpers here):
run it by hand and read the table.

    python benchmarks/bench_saelens_roundtrip.py [--dtype float32 float64] [--batch 256] [--json out.json]

Two sides, two virtual environments:

* **ours** (this file run with the main venv): builds each case (:func:`cases`: every exported
  class, the tied SAE under each activation, MP-SAE under each stopping rule, weights perturbed so
  that biases, thresholds and output scales are not at their initial values), exports it, and
  writes the inputs ``x``, our ``codes = encode(x)`` and ``x_hat = decode(codes)`` beside it
  (:func:`write_cases`). It then runs this same file with ``benchmarks/.venv-peers/bin/python``
  (``bash benchmarks/setup_peers.sh`` makes it) in ``--peer ROOT`` mode (:func:`run_peer`).
* **peer** (``--peer ROOT``, the peers venv; never imports ``sae_theory``): loads every export with
  ``sae_lens.SAE.load_from_disk``, computes SAELens's ``encode(x)`` and ``decode(our codes)``, and
  writes ``ROOT/peer_result.json``: per case the SAELens class, max |encode difference|, max
  |decode difference|, the largest |our code| and |x_hat| (for scale), and the fraction of inputs
  whose support (set of non-zero codes) is the same in both.

The other direction: in ``--peer-native ROOT`` mode SAELens builds one SAE of each architecture
we import (random weights; ``apply_b_dec_to_input=False`` and ``rescale_acts_by_decoder_norm``
variants, MP with its default stopping rules, and a BatchTopK training SAE written by
``save_inference_model``), saves it with its own ``save_model``, and stores its encode and decode
of Gaussian inputs; :func:`check_native` imports each folder with ``import_saelens`` and compares.

Each table: case, SAELens architecture and class (or the class we built), max |encode diff|, max
|decode diff|, support agreement (the figure that matters for MP-SAE, whose codes follow a
discrete pursuit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PEERS_PY = HERE / ".venv-peers" / "bin" / "python"
MANIFEST, RESULT, NATIVE = "manifest.json", "peer_result.json", "native.json"


# --------------------------------------------------------------------------------------------
# our side (main venv)


def cases(dtype: torch.dtype = torch.float32, d: int = 16, M: int = 64, seed: int = 0) -> dict:
    """name -> an SAE of every kind ``export_saelens`` writes, weights perturbed from their
    initialisation (explicit generator), in ``dtype``."""
    from sae_theory.models import (MPSAE, BatchTopKSAE, JumpReLUSAE, MatryoshkaSAE, ReLUSAE, TiedReLUSAE, TiedSAE,
                                   TiedTopKSAE, TopKSAE)

    g = torch.Generator().manual_seed(seed)
    kw = dict(d=d, n_latents=M, dtype=dtype)

    def noise(t, scale):
        return scale * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)

    def perturb(m):
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name in ("W_enc", "W_dec"):
                    p.add_(noise(p, 0.1))
                elif name in ("b_enc", "b_dec"):
                    p.copy_(noise(p, 0.2))
                elif name == "log_threshold":
                    p.copy_(torch.log(0.05 + 0.3 * torch.rand(p.shape, generator=g, dtype=torch.float64)).to(p.dtype))
                elif name == "output_scale":
                    p.copy_((0.5 + torch.rand(p.shape, generator=g, dtype=torch.float64)).to(p.dtype))
        return m

    out = {
        "ReLU": perturb(ReLUSAE(**kw)),
        "TopK k=4": perturb(TopKSAE(**kw, k=4)),
        "BatchTopK": perturb(BatchTopKSAE(**kw, k=4.0)),
        "JumpReLU": perturb(JumpReLUSAE(**kw)),
        "Matryoshka": perturb(MatryoshkaSAE(**kw)),
        "GBA jumprelu_threshold": perturb(TiedSAE(**kw)),
        "GBA jumprelu_biased": perturb(TiedSAE(**kw, activation="jumprelu_biased", theta=0.1)),
        "GBA relu": perturb(TiedSAE(**kw, activation="relu")),
        "GBA topk k=4": perturb(TiedSAE(**kw, activation="topk", k=4)),
        "Tied TopK k=4": perturb(TiedTopKSAE(**kw, k=4)),
        "Tied ReLU": perturb(TiedReLUSAE(**kw)),
        "MP k=6": MPSAE(**kw, k=6, seed=seed),
        "MP threshold=1": MPSAE(**kw, k=12, threshold=1.0, seed=seed),
        "MP stop_on_repeat": MPSAE(**kw, k=12, stop_on_repeat=True, seed=seed),
        "MP b_dec, free atoms": perturb(MPSAE(**kw, k=6, train_b_dec=True, unit_norm_decoder=False, seed=seed)),
        # trained with an input normalisation: it is part of the model and the export folds it
        "TopK k=4, unit norm": perturb(TopKSAE(**kw, k=4)),
        "JumpReLU, scale 0.25": perturb(JumpReLUSAE(**kw)),
        "GBA relu, unit norm": perturb(TiedSAE(**kw, activation="relu")),
        "MP threshold=0.3, unit norm": perturb(MPSAE(**kw, k=12, threshold=0.3, train_b_dec=True, unit_norm_decoder=False, seed=seed)),
        "MP threshold=0.3, scale 0.25": perturb(MPSAE(**kw, k=12, threshold=0.3, train_b_dec=True, unit_norm_decoder=False, seed=seed)),
        "ReLU, standardized": perturb(ReLUSAE(**kw)),
    }
    for name, m in out.items():
        if name.endswith("unit norm"):
            m.set_input_norm("unit")
        elif name.endswith("scale 0.25"):
            m.set_input_norm("scale", 0.25)
        elif name.endswith("standardized"):  # per-coordinate mean and std, as an activation cache gives them
            m.set_input_norm("standardize", mean=0.5 * torch.randn(d, generator=g, dtype=torch.float64),
                             std=0.5 + torch.rand(d, generator=g, dtype=torch.float64))
    with torch.no_grad():
        out["BatchTopK"].threshold.fill_(0.15)
        for name in ("GBA jumprelu_threshold", "GBA jumprelu_biased", "GBA relu", "GBA topk k=4", "GBA relu, unit norm"):
            b = out[name].b_enc  # a buffer (bias adaptation moves it): in [-0.5, 0] as adaptation keeps it
            b.copy_(-0.5 * torch.rand(b.shape, generator=g, dtype=torch.float64).to(b.dtype))
    return out


def inputs(d: int, batch: int, dtype: torch.dtype, seed: int = 1) -> torch.Tensor:
    """(batch, d) Gaussian inputs; their norms (about sqrt d = 4 at d = 16) stay above the MP cases'
    residual threshold (1), where SAELens and we check it at different times (sae_theory.saelens)."""
    return torch.randn(batch, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def write_cases(root: Path, models: dict, x: torch.Tensor, tag: str = "") -> None:
    """Export every model to ``root/<case>/sae`` and write ``x``, our codes and x_hat to
    ``root/<case>/io.safetensors``; ``root/manifest.json`` lists the cases (what ``--peer``
    reads). A second call adds its cases (``tag`` tells them apart, e.g. the dtype)."""
    from safetensors.torch import save_file

    from sae_theory.saelens import export_saelens, saelens_codes_factor

    path = root / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else []
    for name, model in models.items():
        case = root / f"case{len(manifest):03d}"
        export_saelens(model, case / "sae")
        with torch.no_grad():  # what SAELens must give: its codes (saelens_codes_factor) and decode(encode(x)) = our forward
            codes = model.encode(x) * saelens_codes_factor(model)
            x_hat = model(x)
        save_file({"x": x.contiguous(), "codes": codes.contiguous(), "x_hat": x_hat.contiguous()}, str(case / "io.safetensors"))
        manifest.append({"name": f"{tag} {name}".strip(), "tag": tag, "folder": str(case / "sae"), "io": str(case / "io.safetensors")})
    path.write_text(json.dumps(manifest, indent=1))


def run_peer(root: Path, timeout: float = 600, *, native: bool = False) -> dict:
    """Run the ``--peer`` side on ``root`` with the peers venv's python (``native``: the
    ``--peer-native`` side, which writes SAELens's own saves); its JSON result. Raises
    FileNotFoundError when the peers venv is missing, RuntimeError when the run fails."""
    if not PEERS_PY.exists():
        raise FileNotFoundError(f"{PEERS_PY} is missing: run `bash benchmarks/setup_peers.sh` (about 2.5 min) to compare with SAELens.")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    flag = "--peer-native" if native else "--peer"
    run = subprocess.run([str(PEERS_PY), str(Path(__file__).resolve()), flag, str(root)], capture_output=True, text=True,
                         timeout=timeout, check=False, env=env, cwd=str(root))
    written = root / (NATIVE if native else RESULT)
    if run.returncode != 0 or not written.exists():
        raise RuntimeError(f"the SAELens side failed (exit {run.returncode}, {written.name} written: {written.exists()}):\n"
                           f"{run.stderr[-4000:]}")
    return json.loads(written.read_text())


def table(result: dict) -> str:
    """The result of :func:`run_peer` as a text table."""
    rows = [("dtype", "case", "SAELens architecture (class)", "max |encode diff|", "max |decode diff|", "same support")]
    for name, r in result["cases"].items():
        case = name.removeprefix(r["tag"]).strip()
        if r.get("error"):
            rows.append((r["tag"], case, "ERROR", r["error"][:60], "", ""))
            continue
        rows.append((r["tag"], case, f"{r['architecture']} ({r['class']})", f"{r['encode_max_abs']:.2e}",
                     f"{r['decode_max_abs']:.2e}", f"{r['support_agreement']:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_native(root: Path) -> dict:
    """Import every SAELens save that ``--peer-native`` wrote under ``root`` with
    :func:`~sae_theory.saelens.import_saelens` and compare our encode / decode with SAELens's
    (the same keys as :func:`run_peer`'s cases, plus ``ours``: the class we built)."""
    from safetensors.torch import load_file

    from sae_theory.saelens import import_saelens

    out = {}
    for case in json.loads((root / NATIVE).read_text()):
        r: dict = {"tag": case["tag"], "error": None}
        try:
            io = load_file(case["io"])
            x, codes, x_hat = io["x"], io["codes"], io["x_hat"]
            model = import_saelens(case["folder"])
            with torch.no_grad():
                ours = model.encode(x)
                ours_hat = model.decode(codes)
            r.update(architecture=case["architecture"], ours=type(model).__name__, encode_max_abs=float((ours - codes).abs().max()),
                     decode_max_abs=float((ours_hat - x_hat).abs().max()), codes_max_abs=float(codes.abs().max()),
                     x_hat_max_abs=float(x_hat.abs().max()),
                     support_agreement=float(((ours != 0) == (codes != 0)).all(dim=-1).double().mean()))
        except Exception as exc:  # recorded per case
            r["error"] = f"{type(exc).__name__}: {exc}"
        out[case["name"]] = r
    return out


def native_table(result: dict) -> str:
    """The result of :func:`check_native` as a text table."""
    rows = [("SAELens save", "imported as", "max |encode diff|", "max |decode diff|", "same support")]
    for name, r in result.items():
        if r.get("error"):
            rows.append((name, "ERROR", r["error"][:60], "", ""))
            continue
        rows.append((name, r["ours"], f"{r['encode_max_abs']:.2e}", f"{r['decode_max_abs']:.2e}", f"{r['support_agreement']:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", metavar="ROOT", help=argparse.SUPPRESS)
    ap.add_argument("--peer-native", metavar="ROOT", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", nargs="*", default=["float32", "float64"], choices=["float32", "float64"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.peer:
        peer_main(Path(args.peer))
        return
    if args.peer_native:
        peer_native_main(Path(args.peer_native))
        return
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.dtype:
            dtype = getattr(torch, name)
            write_cases(Path(tmp), cases(dtype), inputs(16, args.batch, dtype), tag=name)
        try:
            result = run_peer(Path(tmp))
            native = Path(tmp) / "native"
            native.mkdir()
            run_peer(native, native=True)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"SAELens comparison skipped: {exc}")
            return
        native_result = check_native(native)
    print(f"Exported by sae_theory, loaded by SAELens {result['sae_lens_version']} (torch {result['torch_version']}); "
          f"{args.batch} inputs, d = 16, M = 64:")
    print(table(result))
    print("\nSaved by SAELens (save_model; BatchTopK: save_inference_model), imported by sae_theory; float32, "
          f"{NATIVE_BATCH} inputs, d = 16, M = 64:")
    print(native_table(native_result))
    if args.json:
        Path(args.json).write_text(json.dumps({"export": result, "import": native_result}, indent=1))


# --------------------------------------------------------------------------------------------
# the SAELens side (peers venv; must not import sae_theory)


def peer_main(root: Path) -> None:
    import warnings

    from safetensors.torch import load_file

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sae_lens
        from sae_lens import SAE

    out = {"sae_lens_version": sae_lens.__version__, "torch_version": torch.__version__, "cases": {}}
    for case in json.loads((root / MANIFEST).read_text()):
        r: dict = {"tag": case.get("tag", ""), "error": None}
        try:
            io = load_file(case["io"])
            x, codes, x_hat = io["x"], io["codes"], io["x_hat"]
            sae = SAE.load_from_disk(case["folder"], device="cpu")
            sae.eval()
            with torch.no_grad():
                sl_codes = sae.encode(x)
                sl_x_hat = sae.decode(codes)
            if sl_codes.dtype != codes.dtype or sl_x_hat.dtype != x_hat.dtype:
                raise TypeError(f"SAELens returned {sl_codes.dtype}/{sl_x_hat.dtype}, ours {codes.dtype}/{x_hat.dtype}")
            r.update(
                architecture=sae.cfg.architecture(),
                **{"class": type(sae).__name__},
                encode_max_abs=float((sl_codes - codes).abs().max()),
                decode_max_abs=float((sl_x_hat - x_hat).abs().max()),
                codes_max_abs=float(codes.abs().max()),
                x_hat_max_abs=float(x_hat.abs().max()),
                support_agreement=float(((sl_codes != 0) == (codes != 0)).all(dim=-1).double().mean()),
                l0_ours=float((codes != 0).double().sum(-1).mean()),
                l0_sae_lens=float((sl_codes != 0).double().sum(-1).mean()),
            )
        except Exception as exc:  # recorded per case; the other cases still run
            r["error"] = f"{type(exc).__name__}: {exc}"
        out["cases"][case["name"]] = r
    (root / RESULT).write_text(json.dumps(out, indent=1))


NATIVE_BATCH = 256


def peer_native_main(root: Path) -> None:
    """SAELens writes its own saves of each architecture we import (random weights, biases and
    thresholds set away from zero), with its encode of Gaussian inputs and decode of those codes."""
    import warnings

    from safetensors.torch import save_file

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sae_lens import (BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, JumpReLUSAE, JumpReLUSAEConfig, MatchingPursuitSAE,
                              MatchingPursuitSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig)

    g = torch.Generator().manual_seed(0)
    d, M = 16, 64
    kw = dict(d_in=d, d_sae=M)

    def fill(sae, unit_atoms=False):
        with torch.no_grad():
            sae.W_dec.copy_(torch.randn(M, d, generator=g) / d ** 0.5)
            if unit_atoms:
                sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
            if not isinstance(getattr(type(sae), "W_enc", None), property):  # MP's W_enc is W_dec.T
                sae.W_enc.copy_(sae.W_dec.T + 0.1 * torch.randn(d, M, generator=g))
            sae.b_dec.copy_(0.2 * torch.randn(d, generator=g))
            if hasattr(sae, "b_enc"):
                sae.b_enc.copy_(0.2 * torch.randn(M, generator=g))
            if hasattr(sae, "threshold"):
                sae.threshold.copy_(0.05 + 0.3 * torch.rand(M, generator=g))
        return sae

    saes = {
        "standard": fill(StandardSAE(StandardSAEConfig(**kw))),
        "standard, apply_b_dec_to_input=False": fill(StandardSAE(StandardSAEConfig(**kw, apply_b_dec_to_input=False))),
        "topk k=4": fill(TopKSAE(TopKSAEConfig(**kw, k=4))),
        "topk k=4, rescale_acts_by_decoder_norm": fill(TopKSAE(TopKSAEConfig(**kw, k=4, rescale_acts_by_decoder_norm=True))),
        "jumprelu": fill(JumpReLUSAE(JumpReLUSAEConfig(**kw))),
        "jumprelu, apply_b_dec_to_input=False": fill(JumpReLUSAE(JumpReLUSAEConfig(**kw, apply_b_dec_to_input=False))),
        "matching_pursuit (defaults)": fill(MatchingPursuitSAE(MatchingPursuitSAEConfig(**kw)), unit_atoms=True),
        "matching_pursuit max_iterations=6, no stops": fill(MatchingPursuitSAE(MatchingPursuitSAEConfig(
            **kw, max_iterations=6, residual_threshold=0.0, stop_on_duplicate_support=False)), unit_atoms=True),
    }
    btk = fill(BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**kw, k=4.0)))
    btk.topk_threshold = torch.tensor(0.15, dtype=torch.double)
    x = torch.randn(NATIVE_BATCH, d, generator=g)
    manifest = []
    for i, (name, sae) in enumerate([*saes.items(), ("batchtopk (save_inference_model)", btk)]):
        folder = root / f"native{i:02d}"
        if sae is btk:
            sae.save_inference_model(folder / "sae")
            from sae_lens import SAE

            sae = SAE.load_from_disk(folder / "sae")  # what a user of the saved BatchTopK runs: a JumpReLU SAE
        else:
            sae.save_model(folder / "sae")
        sae.eval()
        with torch.no_grad():
            codes = sae.encode(x)
            x_hat = sae.decode(codes)
        save_file({"x": x, "codes": codes.contiguous(), "x_hat": x_hat.contiguous()}, str(folder / "io.safetensors"))
        manifest.append({"name": name, "tag": "float32", "architecture": sae.cfg.architecture(), "folder": str(folder / "sae"),
                         "io": str(folder / "io.safetensors")})
    (root / NATIVE).write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
