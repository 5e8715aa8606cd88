"""SAELens export and import (sae_theory.saelens): round trips on our side, the written format,
SAELens's inference formulas restated here as a second oracle, bad inputs, and, when
benchmarks/.venv-peers exists, the real SAELens loading every export."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from _helpers import tolerance
from safetensors.torch import load_file, save_file

from sae_theory import MPSAE, BatchTopKSAE, JumpReLUSAE, ReLUSAE, TiedSAE, TopKSAE, save_sae
from sae_theory.saelens import CFG, METADATA_KEY, SAELENS_VERSION, SUPPORTED_ARCHITECTURES, WEIGHTS, export_saelens, import_saelens, saelens_codes_factor

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_saelens_roundtrip", ROOT / "benchmarks" / "bench_saelens_roundtrip.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # the cases and the peer runner, shared with the benchmark

DTYPES = [torch.float32, torch.float64]
CASE_NAMES = list(bench.cases(torch.float64))
SAELENS_KEYS = {"standard": {"W_enc", "b_enc", "W_dec", "b_dec"}, "topk": {"W_enc", "b_enc", "W_dec", "b_dec"},
                "jumprelu": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}, "matching_pursuit": {"W_dec", "b_dec"}}


@pytest.fixture(scope="module")
def models():
    return {dtype: bench.cases(dtype) for dtype in DTYPES}


def _x(dtype, n=64):
    return bench.inputs(16, n, dtype)


# ---------------------------------------------------------------------------------------------
# SAELens 6.54.12's inference formulas, restated (sae_lens/saes/*.py), on the exported files


def _saelens_encode(folder: Path, x: torch.Tensor) -> torch.Tensor:
    cfg = json.loads((folder / CFG).read_text())
    t = load_file(str(folder / WEIGHTS))
    if cfg["normalize_activations"] == "constant_norm_rescale":  # run_time_activation_norm_fn_in
        x = x * (cfg["d_in"] ** 0.5 / x.norm(dim=-1, keepdim=True))
    sae_in = x - t["b_dec"] * cfg["apply_b_dec_to_input"]
    arch = cfg["architecture"]
    if arch == "matching_pursuit":  # _encode_matching_pursuit
        W, r = t["W_dec"], sae_in.clone()
        acts = torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype)
        prev = torch.zeros_like(acts, dtype=torch.bool)
        done = torch.zeros(x.shape[0], dtype=torch.bool)
        for _ in range(cfg["max_iterations"] or W.shape[1]):
            idx = (r @ W.T).relu().max(dim=1, keepdim=True).indices
            sel = W[idx.squeeze(1)]
            v = (r * sel).sum(-1, keepdim=True).relu() * (~done)[:, None].to(x.dtype)
            acts.scatter_add_(1, idx, v)
            r = r - v * sel
            if cfg["stop_on_duplicate_support"]:
                done |= ((acts != 0) == prev).all(1)
                prev = acts != 0
            if cfg["residual_threshold"] > 0:
                done |= r.norm(dim=-1) < cfg["residual_threshold"]
        return acts
    h = sae_in @ t["W_enc"] + t["b_enc"]
    if arch == "standard":
        return h.relu()
    if arch == "jumprelu":
        return h.relu() * (h > t["threshold"]).to(h.dtype)
    top = h.topk(cfg["k"], dim=-1, sorted=False)  # topk
    return torch.zeros_like(h).scatter(-1, top.indices, top.values.relu())


def _saelens_decode(folder: Path, codes: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """SAELens's decode of ``codes``; ``x``: the input they were encoded from, whose norm
    ``constant_norm_rescale`` scales the output back with (run_time_activation_norm_fn_out)."""
    cfg = json.loads((folder / CFG).read_text())
    t = load_file(str(folder / WEIGHTS))
    out = codes @ t["W_dec"] + t["b_dec"] * cfg["apply_b_dec_to_input"]
    if cfg["normalize_activations"] == "constant_norm_rescale":
        out = out / (cfg["d_in"] ** 0.5 / x.norm(dim=-1, keepdim=True))
    return out


# ---------------------------------------------------------------------------------------------
# round trips and format


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_saelens__round_trip_is_bit_identical(tmp_path, models, name, dtype):
    model = models[dtype][name]
    export_saelens(model, tmp_path / "e")
    back = import_saelens(tmp_path / "e")
    assert type(back) is type(model) and back.config == model.config
    x = _x(dtype)
    codes = model.encode(x)
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    if model.input_norm["kind"] == "standardize":  # unfolded per coordinate: back to rounding, not bit for bit
        tol = 8 * torch.finfo(dtype).eps
        torch.testing.assert_close(back.encode(x), codes, rtol=tol, atol=tol)
        torch.testing.assert_close(back(x), model(x), rtol=tol, atol=tol)
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=tol, atol=tol)
        return
    # the other cases fold nothing, or a power of two (scale 0.25; unit: 1/sqrt(16)): bit for bit
    assert torch.equal(back.encode(x), codes), f"{name}: encode differs after the round trip"
    assert torch.equal(back.decode(codes), model.decode(codes)), f"{name}: decode differs after the round trip"
    for key in a:
        if key == "log_threshold":  # log of a threshold: any preimage exp maps back to it, bit for bit
            assert torch.equal(a[key].exp(), b[key].exp())
        else:
            assert torch.equal(a[key], b[key]), f"{name}: state {key!r} differs"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cls,kw", [(ReLUSAE, {}), (JumpReLUSAE, {}), (TiedSAE, {}), (MPSAE, {"k": 3, "stop_at_rounding": False})],
                         ids=["ReLU", "JumpReLU", "GBA", "MP"])
def test_saelens__half_precision_round_trip(tmp_path, dtype, cls, kw):
    model = cls(d=8, n_latents=16, dtype=dtype, **kw)
    with torch.no_grad():
        if cls is JumpReLUSAE:
            model.log_threshold.copy_(torch.linspace(-5.0, -1.0, 16))
        if cls is TiedSAE:
            model.output_scale.copy_(torch.linspace(0.5, 1.5, 16))
    export_saelens(model, tmp_path / "e")
    assert json.loads((tmp_path / "e" / CFG).read_text())["dtype"] == str(dtype).removeprefix("torch.")
    back = import_saelens(tmp_path / "e")
    x = _x(torch.float64, 16)[:, :8].to(dtype)
    codes = model.encode(x)
    assert torch.equal(back.encode(x), codes) and torch.equal(back.decode(codes), model.decode(codes))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_saelens__restated_saelens_formulas_match_ours(tmp_path, models, name):
    # float64: SAELens's inference formulas on the exported files give our encode and decode
    model = models[torch.float64][name]
    export_saelens(model, tmp_path / "e")
    x = _x(torch.float64)
    codes = model.encode(x) * saelens_codes_factor(model)  # ours, in SAELens's units (1 but for a normalised MP-SAE)
    ours_again = _saelens_encode(tmp_path / "e", x)
    assert torch.equal((ours_again != 0), (codes != 0)), f"{name}: supports differ"
    torch.testing.assert_close(ours_again, codes, rtol=tolerance(torch.float64), atol=tolerance(torch.float64))
    # SAELens's decode(encode(x)) is our forward(x): the reconstruction in the raw units
    torch.testing.assert_close(_saelens_decode(tmp_path / "e", codes, x), model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_saelens__writes_the_fields_saelens_loader_reads(tmp_path, models, name):
    model = models[torch.float32][name]
    export_saelens(model, tmp_path / "e")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == sorted([CFG, WEIGHTS])
    cfg = json.loads((tmp_path / "e" / CFG).read_text())
    arch = cfg["architecture"]
    assert arch in SUPPORTED_ARCHITECTURES
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["device"]) == (16, 64, "float32", "cpu")
    norm = model.input_norm["kind"]  # "unit" has SAELens's run-time rescale; "scale" is folded into the weights
    assert cfg["apply_b_dec_to_input"] is True and cfg["reshape_activations"] == "none"
    assert cfg["normalize_activations"] == {"unit": "constant_norm_rescale", "scale": "none", "none": "none", "standardize": "none"}[norm]
    assert cfg["metadata"][METADATA_KEY]["input_norm"] == model.input_norm
    assert cfg["metadata"]["sae_lens_version"] == SAELENS_VERSION  # >= 6: no pre-6.0 defaulting in SAELens
    assert cfg["metadata"][METADATA_KEY]["sae_class"] == type(model).__name__
    if arch == "topk":
        assert cfg["k"] == model.config.k and cfg["rescale_acts_by_decoder_norm"] is False
    if arch == "matching_pursuit":
        c = model.config
        assert cfg["max_iterations"] == c.k and cfg["stop_on_duplicate_support"] == c.stop_on_repeat
        s = {"unit": 16 ** -0.5, "scale": model.input_norm["scale"], "none": 1.0}[norm]  # the input is s times SAELens's
        assert cfg["residual_threshold"] == (c.threshold or 0.0) / s
    t = load_file(str(tmp_path / "e" / WEIGHTS))
    assert set(t) == SAELENS_KEYS[arch]
    shapes = {"W_enc": (16, 64), "b_enc": (64,), "W_dec": (64, 16), "b_dec": (16,), "threshold": (64,)}
    assert {k: tuple(v.shape) for k, v in t.items()} == {k: shapes[k] for k in t}
    assert all(v.dtype == torch.float32 for v in t.values())


def test_saelens__architectures_of_each_class(tmp_path, models):
    expected = {"ReLU": "standard", "TopK k=4": "topk", "BatchTopK": "jumprelu", "JumpReLU": "jumprelu",
                "Matryoshka": "standard", "GBA jumprelu_threshold": "jumprelu", "GBA jumprelu_biased": "jumprelu",
                "GBA relu": "standard", "GBA topk k=4": "topk", "Tied TopK k=4": "topk", "Tied ReLU": "standard",
                "TopK k=4, unit norm": "topk", "JumpReLU, scale 0.25": "jumprelu", "GBA relu, unit norm": "standard",
                "ReLU, standardized": "standard"}
    expected.update({n: "matching_pursuit" for n in CASE_NAMES if n.startswith("MP")})
    assert set(expected) == set(CASE_NAMES)
    for i, name in enumerate(CASE_NAMES):
        export_saelens(models[torch.float32][name], tmp_path / str(i))
        assert json.loads((tmp_path / str(i) / CFG).read_text())["architecture"] == expected[name], name


def test_saelens__tied_sae_folds_output_scale_and_bias(tmp_path, models):
    m = models[torch.float64]["GBA jumprelu_threshold"]
    export_saelens(m, tmp_path / "e")
    t = load_file(str(tmp_path / "e" / WEIGHTS))
    assert torch.equal(t["W_enc"], m.W_dec.T)                            # W^T, a copy
    assert torch.equal(t["W_dec"], m.output_scale[:, None] * m.W_dec)    # diag(a) W
    assert torch.equal(t["threshold"], -m.b_enc) and not t["b_enc"].any()  # threshold -b, b_enc 0
    meta = json.loads((tmp_path / "e" / CFG).read_text())["metadata"][METADATA_KEY]
    assert set(meta["tensors"]) == {"output_scale"}                     # what SAELens has no place for
    m2 = models[torch.float64]["GBA jumprelu_biased"]
    export_saelens(m2, tmp_path / "b")
    t2 = load_file(str(tmp_path / "b" / WEIGHTS))
    assert torch.equal(t2["b_enc"], m2.b_enc) and torch.equal(t2["threshold"], torch.full((64,), 0.1, dtype=torch.float64))


def test_saelens__batchtopk_is_jumprelu_with_repeated_threshold(tmp_path):
    # hand-sized: pre-activations (x - 0) W_enc + 0 with W_enc = I: codes keep relu(pre) > theta
    m = BatchTopKSAE(d=3, n_latents=3, k=1.0, dtype=torch.float64)
    with torch.no_grad():
        m.W_enc.copy_(torch.eye(3, dtype=torch.float64))
    x = torch.tensor([[0.5, -0.2, 0.05]], dtype=torch.float64)
    for theta, kept in ((0.1, [0.5, 0.0, 0.0]), (0.0, [0.5, 0.0, 0.05]), (-0.3, [0.5, 0.0, 0.05])):
        with torch.no_grad():
            m.threshold.fill_(theta)
        export_saelens(m, tmp_path / "e")
        t = load_file(str(tmp_path / "e" / WEIGHTS))
        assert torch.equal(t["threshold"], torch.full((3,), theta, dtype=torch.float64))
        # SAELens: relu(h) * (h > theta); ours: relu(h) where relu(h) > theta (-0.3: every positive entry)
        assert m.encode(x).tolist() == [kept] == _saelens_encode(tmp_path / "e", x).tolist()


def test_saelens__jumprelu_threshold_comes_back_exactly(tmp_path):
    m = JumpReLUSAE(d=4, n_latents=257, dtype=torch.float32)
    with torch.no_grad():
        m.log_threshold.copy_(torch.linspace(-12.0, 3.0, 257))
    export_saelens(m, tmp_path / "e")
    back = import_saelens(tmp_path / "e")
    assert torch.equal(back.threshold, m.threshold)


# ---------------------------------------------------------------------------------------------
# folders SAELens wrote (no sae_theory metadata)


def _as_plain_saelens(folder: Path, **cfg_changes) -> dict:
    """Drop our metadata block (a folder as SAELens itself writes it) and apply ``cfg_changes``."""
    cfg = json.loads((folder / CFG).read_text())
    cfg["metadata"] = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": SAELENS_VERSION}
    cfg.update(cfg_changes)
    (folder / CFG).write_text(json.dumps(cfg))
    return cfg


@pytest.mark.parametrize("name,cls", [("ReLU", ReLUSAE), ("TopK k=4", TopKSAE), ("JumpReLU", JumpReLUSAE),
                                      ("BatchTopK", JumpReLUSAE), ("GBA relu", ReLUSAE), ("GBA topk k=4", TopKSAE),
                                      ("Matryoshka", ReLUSAE), ("MP threshold=1", MPSAE), ("MP stop_on_repeat", MPSAE)])
def test_saelens__plain_saelens_folder_imports_by_architecture(tmp_path, models, name, cls):
    export_saelens(models[torch.float64][name], tmp_path / "e")
    _as_plain_saelens(tmp_path / "e")
    back = import_saelens(tmp_path / "e")
    assert type(back) is cls
    x = _x(torch.float64)
    codes = _saelens_encode(tmp_path / "e", x)
    torch.testing.assert_close(back.encode(x), codes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back.decode(codes), _saelens_decode(tmp_path / "e", codes), rtol=1e-12, atol=1e-12)
    if cls is MPSAE:
        assert back.config.stop_at_rounding is False


def test_saelens__plain_import_folds_what_we_lack(tmp_path, models):
    x = _x(torch.float64)
    # apply_b_dec_to_input = False: SAELens encodes x W_enc + b_enc
    export_saelens(models[torch.float64]["JumpReLU"], tmp_path / "a")
    _as_plain_saelens(tmp_path / "a", apply_b_dec_to_input=False)
    back = import_saelens(tmp_path / "a")
    t = load_file(str(tmp_path / "a" / WEIGHTS))
    h = x @ t["W_enc"] + t["b_enc"]
    torch.testing.assert_close(back.encode(x), h.relu() * (h > t["threshold"]), rtol=1e-12, atol=1e-12)
    # matching pursuit without b_dec on either side; max_iterations None = d_in; threshold 0 = off
    export_saelens(models[torch.float64]["MP b_dec, free atoms"], tmp_path / "m")
    _as_plain_saelens(tmp_path / "m", apply_b_dec_to_input=False, max_iterations=None, residual_threshold=0.0)
    back = import_saelens(tmp_path / "m")
    assert (back.config.k, back.config.threshold) == (16, None) and not back.b_dec.any()
    torch.testing.assert_close(back.encode(x), _saelens_encode(tmp_path / "m", x), rtol=1e-12, atol=1e-12)
    # topk with rescale_acts_by_decoder_norm: SAELens's fold_W_dec_norm
    export_saelens(models[torch.float64]["TopK k=4"], tmp_path / "k")
    _as_plain_saelens(tmp_path / "k", rescale_acts_by_decoder_norm=True)
    t = load_file(str(tmp_path / "k" / WEIGHTS))
    with torch.no_grad():
        t["W_dec"].mul_(torch.linspace(0.5, 2.0, 64, dtype=torch.float64)[:, None])
    save_file(t, str(tmp_path / "k" / WEIGHTS))
    back = import_saelens(tmp_path / "k")
    n = t["W_dec"].norm(dim=-1)
    h = ((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]) * n
    top = h.topk(4, dim=-1)
    codes = torch.zeros_like(h).scatter(-1, top.indices, top.values.relu())
    torch.testing.assert_close(back.encode(x), codes, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back.decode(codes), (codes / n) @ t["W_dec"] + t["b_dec"], rtol=1e-12, atol=1e-12)
    # a negative JumpReLU threshold acts as 0 in SAELens (ReLU first)
    export_saelens(models[torch.float64]["JumpReLU"], tmp_path / "j")
    _as_plain_saelens(tmp_path / "j")
    t = load_file(str(tmp_path / "j" / WEIGHTS))
    t["threshold"][:8] = -0.5
    save_file(t, str(tmp_path / "j" / WEIGHTS))
    torch.testing.assert_close(import_saelens(tmp_path / "j").encode(x), _saelens_encode(tmp_path / "j", x), rtol=1e-12, atol=1e-12)


def test_saelens__pre6_config_gets_saelens_defaults(tmp_path, models):
    export_saelens(models[torch.float32]["TopK k=4"], tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / CFG).read_text())
    for key in ("architecture", "k", "metadata", "apply_b_dec_to_input", "rescale_acts_by_decoder_norm"):
        cfg.pop(key)
    cfg.update(activation_fn="topk", activation_fn_kwargs={"k": 4}, normalize_activations=False, sae_lens_version="5.9.0")
    (tmp_path / "e" / CFG).write_text(json.dumps(cfg))
    back = import_saelens(tmp_path / "e")
    assert type(back) is TopKSAE and back.config.k == 4


# ---------------------------------------------------------------------------------------------
# bad inputs


def test_saelens__export_refuses_what_it_cannot_write_faithfully(tmp_path):
    with pytest.raises(TypeError, match="model must be an SAE"):
        export_saelens(torch.nn.Linear(2, 2), tmp_path / "e")
    with pytest.raises(TypeError, match="folder must be a path"):
        export_saelens(ReLUSAE(d=4, n_latents=8), 3)

    class MyReLU(ReLUSAE):
        pass

    with pytest.raises(ValueError, match="no SAELens export for MyReLU.*ReLUSAE, TopKSAE"):
        export_saelens(MyReLU(d=4, n_latents=8), tmp_path / "e")
    with pytest.raises(ValueError, match="selection='abs'"):
        export_saelens(MPSAE(d=4, n_latents=8, k=2, selection="abs"), tmp_path / "e")
    tied = TiedSAE(d=4, n_latents=8)
    with torch.no_grad():
        tied.b_enc[3] = 0.2
    with pytest.raises(ValueError, match="1 neuron.*b_enc > 0"):
        export_saelens(tied, tmp_path / "e")
    assert not (tmp_path / "e").exists()  # nothing written by a refused export
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        export_saelens(ReLUSAE(d=4, n_latents=8), tmp_path / "busy")


def test_saelens__export_replaces_a_previous_export(tmp_path):
    export_saelens(ReLUSAE(d=4, n_latents=8, seed=1), tmp_path / "e")
    m = TopKSAE(d=4, n_latents=8, k=2, seed=2)
    export_saelens(m, tmp_path / "e")
    assert type(import_saelens(tmp_path / "e")) is TopKSAE


def test_saelens__import_names_the_missing_file(tmp_path, models):
    with pytest.raises(TypeError, match="folder must be a path"):
        import_saelens(None)
    with pytest.raises(FileNotFoundError, match=f"{CFG} is missing"):
        import_saelens(tmp_path / "nowhere")
    export_saelens(models[torch.float32]["ReLU"], tmp_path / "e")
    (tmp_path / "e" / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=f"{WEIGHTS} is missing"):
        import_saelens(tmp_path / "e")
    save_sae(ReLUSAE(d=4, n_latents=8), tmp_path / "ours")
    with pytest.raises(FileNotFoundError, match="cfg.json is missing.*load_sae"):
        import_saelens(tmp_path / "ours")


def test_saelens__import_refuses_what_it_cannot_read(tmp_path, models):
    export_saelens(models[torch.float32]["ReLU"], tmp_path / "e")
    cfg = _as_plain_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(ValueError, match="'gated'.*supported: standard, topk, jumprelu, matching_pursuit"):
        import_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(ValueError, match="normalize_activations='layer_norm'"):
        import_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text(json.dumps({**cfg, "dtype": "int8"}))
    with pytest.raises(ValueError, match="dtype 'int8'"):
        import_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text(json.dumps({**cfg, "architecture": "jumprelu"}))
    with pytest.raises(ValueError, match=f"{WEIGHTS} holds .* exactly .*threshold"):
        import_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text(json.dumps({**cfg, "d_sae": 32}))
    with pytest.raises(ValueError, match=r"W_\w+ has shape .*d_sae=32"):
        import_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text("{not json")
    with pytest.raises(ValueError, match=f"{CFG} is not valid JSON"):
        import_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text(json.dumps(cfg))
    (tmp_path / "e" / WEIGHTS).write_bytes(b"truncated")
    with pytest.raises(ValueError, match=f"{WEIGHTS} cannot be read"):
        import_saelens(tmp_path / "e")


@pytest.mark.parametrize("name", ["GBA relu", "Tied TopK k=4", "BatchTopK"])
def test_saelens__import_refuses_weights_that_contradict_the_metadata(tmp_path, models, name):
    # a tied SAE's decoder must stay diag(a) W (a in the metadata); a BatchTopK threshold one value
    export_saelens(models[torch.float32][name], tmp_path / "e")
    t = load_file(str(tmp_path / "e" / WEIGHTS))
    key = "threshold" if name == "BatchTopK" else "W_dec"
    t[key][1] += 0.25
    save_file(t, str(tmp_path / "e" / WEIGHTS))
    with pytest.raises(ValueError, match=f"{key} is not what .* exports.*changed after export_saelens"):
        import_saelens(tmp_path / "e")
    _as_plain_saelens(tmp_path / "e")  # without our block it imports as the SAELens architecture says
    import_saelens(tmp_path / "e")


@pytest.mark.parametrize("name,key", [("JumpReLU", "threshold"), ("MP k=6", "W_dec"), ("TopK k=4", "b_enc")])
def test_saelens__import_takes_edited_weights_the_metadata_does_not_hold(tmp_path, models, name, key):
    # the SAELens weights decide wherever the metadata holds nothing (e.g. fine-tuned in SAELens)
    export_saelens(models[torch.float64][name], tmp_path / "e")
    t = load_file(str(tmp_path / "e" / WEIGHTS))
    t[key][1] += 0.25
    save_file(t, str(tmp_path / "e" / WEIGHTS))
    back = import_saelens(tmp_path / "e")
    assert type(back) is type(models[torch.float64][name])
    x = _x(torch.float64)
    torch.testing.assert_close(back.encode(x), _saelens_encode(tmp_path / "e", x), rtol=1e-12, atol=1e-12)


def test_saelens__import_refuses_config_changed_after_export(tmp_path, models):
    export_saelens(models[torch.float32]["TopK k=4"], tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / CFG).read_text())
    (tmp_path / "e" / CFG).write_text(json.dumps({**cfg, "k": 5}))
    with pytest.raises(ValueError, match="k=5, its metadata.sae_theory config gives 4"):
        import_saelens(tmp_path / "e")
    (tmp_path / "e" / CFG).write_text(json.dumps({**cfg, "architecture": "standard"}))
    with pytest.raises(ValueError, match="architecture 'standard'.*exported as 'topk'"):
        import_saelens(tmp_path / "e")
    broken = {**cfg["metadata"][METADATA_KEY], "tensors": {}}
    export_saelens(models[torch.float32]["GBA relu"], tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / CFG).read_text())
    cfg["metadata"][METADATA_KEY] = {**cfg["metadata"][METADATA_KEY], "tensors": broken["tensors"]}
    (tmp_path / "g" / CFG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="tensors has no 'output_scale'"):
        import_saelens(tmp_path / "g")


def test_saelens__import_device(tmp_path, models):
    export_saelens(models[torch.float32]["ReLU"], tmp_path / "e")
    back = import_saelens(tmp_path / "e", device=torch.device("cpu"))
    assert back.config.device == "cpu" and back.W_enc.device.type == "cpu"


# ---------------------------------------------------------------------------------------------
# the real SAELens


@pytest.mark.slow
def test_saelens__real_saelens_loads_our_exports_and_we_load_its_saves(tmp_path, models):
    if not bench.PEERS_PY.exists():
        reason = (f"{bench.PEERS_PY} is missing: create it with `bash benchmarks/setup_peers.sh` "
                  "(about 2.5 min; installs sae-lens 6.54.12) to check the exports against the real SAELens")
        print(reason)
        pytest.skip(reason)
    for dtype in DTYPES:
        bench.write_cases(tmp_path, models[dtype], _x(dtype, 128), tag=str(dtype).removeprefix("torch."))
    result = bench.run_peer(tmp_path)
    assert result["sae_lens_version"] == SAELENS_VERSION
    assert len(result["cases"]) == len(DTYPES) * len(CASE_NAMES)
    for name, r in result["cases"].items():
        assert r["error"] is None, f"{name}: {r['error']}"
        tol = {"float32": 1e-5, "float64": 1e-12}[r["tag"]]  # float32: SAELens's own rounding (a gathered dot product in MP)
        assert r["support_agreement"] == 1.0, f"{name}: supports differ on {1 - r['support_agreement']:.2%} of inputs"
        assert r["encode_max_abs"] <= tol * max(1.0, r["codes_max_abs"]), f"{name}: encode differs by {r['encode_max_abs']:.2e}"
        assert r["decode_max_abs"] <= tol * max(1.0, r["x_hat_max_abs"]), f"{name}: decode differs by {r['decode_max_abs']:.2e}"
    # the other direction: SAELens's own saves of every architecture we read, imported here
    native = tmp_path / "native"
    native.mkdir()
    bench.run_peer(native, native=True)
    result = bench.check_native(native)
    assert len(result) == 9
    for name, r in result.items():
        assert r["error"] is None, f"SAELens save {name}: {r['error']}"
        assert r["support_agreement"] == 1.0, f"SAELens save {name}: supports differ on {1 - r['support_agreement']:.2%} of inputs"
        assert r["encode_max_abs"] <= 1e-5 * max(1.0, r["codes_max_abs"]), f"SAELens save {name}: encode differs"
        assert r["decode_max_abs"] <= 1e-5 * max(1.0, r["x_hat_max_abs"]), f"SAELens save {name}: decode differs"


@pytest.mark.parametrize("name", ["TopK k=4, unit norm", "GBA relu, unit norm", "MP threshold=0.3, unit norm"])
def test_saelens__plain_constant_norm_rescale_save_imports_as_a_unit_norm_model(tmp_path, models, name):
    # a SAELens save with constant_norm_rescale and no metadata of ours: SAELens's formulas on the
    # file are what the imported model computes, in raw units
    model = models[torch.float64][name]
    export_saelens(model, tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / CFG).read_text())
    del cfg["metadata"][METADATA_KEY]
    (tmp_path / "e" / CFG).write_text(json.dumps(cfg))
    back = import_saelens(tmp_path / "e")
    assert back.input_norm == {"kind": "unit", "scale": None}
    x = _x(torch.float64)
    sl_codes = _saelens_encode(tmp_path / "e", x)
    torch.testing.assert_close(back.encode(x), sl_codes / saelens_codes_factor(back), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back(x), _saelens_decode(tmp_path / "e", sl_codes, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(back(x), model(x), rtol=1e-12, atol=1e-12)


def test_saelens__normalised_round_trip_is_exact_to_rounding_and_layer_norm_is_refused(tmp_path, models):
    for i, name in enumerate(["TopK k=4, unit norm", "JumpReLU, scale 0.25", "MP threshold=0.3, scale 0.25"]):
        model = models[torch.float64][name]
        export_saelens(model, tmp_path / str(i))
        back = import_saelens(tmp_path / str(i))
        assert type(back) is type(model) and back.input_norm == model.input_norm and back.config == model.config
        x = _x(torch.float64)
        torch.testing.assert_close(back.encode(x), model.encode(x), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(back(x), model(x), rtol=1e-13, atol=1e-13)
    cfg = json.loads((tmp_path / "0" / CFG).read_text())
    cfg["normalize_activations"] = "layer_norm"
    del cfg["metadata"][METADATA_KEY]
    (tmp_path / "0" / CFG).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="normalize_activations='layer_norm'.*does not read"):
        import_saelens(tmp_path / "0")
