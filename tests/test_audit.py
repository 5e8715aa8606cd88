"""Tests of sae_theory.audit and ``sae-theory audit``: hand-built SAEs with known answers, a trained
tiny SAE end to end (function and CLI, the three kinds of output), SAELens folders, every source
kind, and bad inputs naming the argument."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _helpers import assert_close

from sae_theory import MPSAE, ReLUSAE, TopKSAE, TrainConfig, cli, export_saelens, load_sae, metrics, save_sae, train
from sae_theory.audit import OUTPUT_FILES, AuditError, _mp_codes_at, audit, babel_curve, open_activations

F64 = torch.float64
OUT_KINDS = ("audit.json", "summary.md", "firing_frequency.png", "inference_sparsity.png", "babel.png")


def _exit_code(argv) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def _quick(**kw):
    return dict(progress=False, **kw)


def _flat(rec: dict) -> dict:
    """A reconstruction section with its L0 quantiles flattened (pytest.approx takes no nesting)."""
    out = {k: v for k, v in rec.items() if k != "l0_quantiles"}
    out.update({f"l0_q{k}": v for k, v in rec["l0_quantiles"].items()})
    return out


# ---------------------------------------------------------------------------------------------
# hand-built SAEs with known answers
# ---------------------------------------------------------------------------------------------
def test_audit__orthonormal_mp_dictionary_has_babel_zero_and_exact_2_sparse_recovery():
    # D = a rotation of the identity (orthonormal rows); data: 2-sparse non-negative combinations of
    # its atoms, so every Babel is 0, V1's coherence is 0, and 2 MP steps reconstruct exactly.
    g = torch.Generator().manual_seed(3)
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=F64))
    sae = MPSAE.from_dictionary(Q, k=2)
    H = torch.zeros(40, 6, dtype=F64)
    for i in range(40):
        a, b = (i % 6), (i * 5 + 1) % 6 if (i * 5 + 1) % 6 != i % 6 else (i + 2) % 6
        H[i, a], H[i, b] = 1.0 + 0.1 * (i % 7), 0.5 + 0.05 * (i % 3)
    X = H @ Q
    rep = audit(sae, X, **_quick())
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in rep.hierarchy["babel"].values())
    assert rep.hierarchy["babel_coactive"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert rep.hierarchy["tropp"] == {"s": 2, "value": pytest.approx(0.0, abs=1e-12), "holds": True}
    assert rep.identifiability["V1"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert rep.identifiability["H1"]["value"] == 2.0  # every row uses exactly its two atoms
    assert rep.reconstruction["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert rep.reconstruction["mean_l0"] == 2.0
    curve = dict(zip(rep.inference_sparsity["k"], rep.inference_sparsity["fvu"]))
    assert curve[2] == pytest.approx(0.0, abs=1e-12) and curve[1] > 0.05  # one step leaves the second atom out
    assert rep.hierarchy["effective_rank"]["latents"] == 6


def _relu_identity(d: int = 4) -> ReLUSAE:
    sae = ReLUSAE(d=d, n_latents=d, dtype=F64)
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d, dtype=F64))
        sae.W_dec.copy_(torch.eye(d, dtype=F64))
        sae.b_enc.zero_(), sae.b_dec.zero_()
    return sae


# codes = relu(x): latent 0 fires on 5 of 10 rows, latent 1 on 2, latent 2 never (dead: its input is
# 0 or -1), latent 3 on 1 (0.1 exactly: not dense, dense means > 0.1)
HAND_ROWS = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [2, 0, 0, 0], [1, 0, 0, 1], [3, 1, 0, 0],
                          [0, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=F64)


def test_audit__relu_identity_sae_known_frequencies_dead_dense_l0_fvu():
    rep = audit(_relu_identity(), HAND_ROWS, batch_size=3, **_quick())
    assert rep.firing_frequency["per_latent"] == [0.5, 0.2, 0.0, 0.1]
    r = rep.reconstruction
    assert (r["dead_latents"], r["dense_latents"], r["dense_threshold"]) == (1, 2, 0.1)
    assert r["mean_l0"] == pytest.approx(8 / 10)  # 1 + 2 + 1 + 2 + 2 non-zero codes
    # x_hat = relu(x): the only error is the -1 of row 6; FVU = 1 / sum ||x - mean||^2
    X = HAND_ROWS.numpy()
    assert r["mse"] == pytest.approx(1 / 10)
    assert r["fvu"] == pytest.approx(1.0 / ((X - X.mean(0)) ** 2).sum(), rel=1e-12)
    assert r["l0_quantiles"]["0"] == 0 and r["l0_quantiles"]["1"] == 2
    # the identifiability conditions leave out the latent that never fires
    assert (rep.identifiability["latents"], rep.identifiability["excluded_never_fire"]) == (3, 1)
    # H3 on the sample (all 10 rows): latents 0 and 1 fire together on 2 rows, either on 5 -> 0.4
    assert rep.identifiability["H3"]["value"] == pytest.approx(0.4)
    assert rep.conditions["sample"]["note"] == "every row read"


def test_audit__dense_threshold_is_strict_and_configurable():
    rep = audit(_relu_identity(), HAND_ROWS, dense_threshold=0.05, **_quick())
    assert rep.reconstruction["dense_latents"] == 3  # 0.5, 0.2 and 0.1 > 0.05
    assert "more than 5% of the rows" in rep.summary()


def test_audit__topk_curve_keeps_the_largest_codes_and_is_flat_beyond_l0():
    rep = audit(_relu_identity(), HAND_ROWS, k_max=3, **_quick())
    s = rep.inference_sparsity
    assert s["k"] == [1, 2, 3]
    # k = 1 drops the smaller code of rows 1, 3, 4 (1, 1, 1): SSE 3 more than the full encode
    X = HAND_ROWS.numpy()
    var = ((X - X.mean(0)) ** 2).sum()
    assert s["fvu"] == [pytest.approx(4 / var), pytest.approx(1 / var), pytest.approx(1 / var)]
    assert s["l0"] == [pytest.approx(0.5), pytest.approx(0.8), pytest.approx(0.8)]


def test_babel_curve__equals_metrics_babel_with_a_zero_atom(monkeypatch):
    from sae_theory import audit as audit_module

    g = torch.Generator().manual_seed(0)
    D = torch.randn(12, 5, generator=g, dtype=F64)
    D[4] = 0.0
    rs = [1, 2, 3, 7, 11]
    expected = {r: metrics.babel(D, r) for r in rs}
    assert babel_curve(D, rs) == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(audit_module, "_MAX_ENTRIES", 13)  # one row per block
    assert babel_curve(D, rs) == pytest.approx(expected, abs=1e-12)


def test_audit__signed_codes_enter_h_by_magnitude_and_are_said():
    sae = MPSAE.from_dictionary(torch.eye(4, dtype=F64), k=2, selection="abs")  # classic MP: signed codes
    X = torch.tensor([[1.0, -2.0, 0, 0], [0, 0, -1.0, 0.5], [3.0, 0, 0, 0]], dtype=F64)
    rep = audit(sae, X, **_quick())
    assert rep.identifiability["negative_codes"] == 2
    assert rep.firing_frequency["per_latent"] == pytest.approx([2 / 3, 0.0, 0.0, 1 / 3])  # firing: code > 0
    assert rep.reconstruction["mean_l0"] == pytest.approx(5 / 3)  # L0: every non-zero code
    assert rep.identifiability["H2"]["details"]["max_mean"] == pytest.approx(2.0)  # |-2| and |-1| as magnitudes
    assert "2 codes of the sample are negative" in rep.summary()


@pytest.mark.parametrize("kw", [{}, {"threshold": 0.4}, {"stop_on_repeat": True}, {"selection": "abs"}])
def test_mp_codes_at__equals_encode_at_every_k(kw):
    sae = MPSAE(d=6, n_latents=15, k=3, dtype=F64, **kw)
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    for k, codes in _mp_codes_at(sae, x, [1, 2, 3, 5, 8]):
        assert_close(codes, sae.encode(x, k=k))


# ---------------------------------------------------------------------------------------------
# a trained tiny SAE end to end
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A TopK SAE (d 8, 16 latents, k 2) trained briefly on planted data, its save folder, and
    held-out activations as .npy."""
    from sae_theory import SparseFeatureModel

    root = tmp_path_factory.mktemp("audit")
    fm = SparseFeatureModel(16, 8, 2, seed=0)
    sae = TopKSAE(d=8, n_latents=16, k=2)
    train(sae, fm, TrainConfig(steps=40, batch_size=64, lr=1e-2, progress=False))
    save_sae(sae, root / "sae")
    other = TopKSAE(d=8, n_latents=12, k=2, seed=5)
    save_sae(other, root / "other")
    X, _ = SparseFeatureModel(16, 8, 2, seed=0).sample(600)
    np.save(root / "acts.npy", X.numpy())
    return sae, root, X


def test_audit__trained_sae_function_writes_json_summary_figures_matching_the_metrics(trained, tmp_path):
    sae, root, X = trained
    out = tmp_path / "out"
    rep = audit(root / "sae", root / "acts.npy", second=root / "other", out=out, batch_size=128, sample_rows=250, **_quick())
    assert rep.out == out
    assert {p.name for p in out.iterdir()} == set(OUTPUT_FILES)  # with --second: every figure, .png and .pdf
    data = json.loads((out / "audit.json").read_text())
    # a second oracle: the metrics on all the rows at once (float32 codes of other batches: rel 1e-6)
    with torch.no_grad():
        codes = sae.encode(X)
        fvu, l0 = metrics.fvu(X, sae.decode(codes)), metrics.l0(codes)
    assert data["reconstruction"]["fvu"] == pytest.approx(fvu, rel=1e-6)
    assert data["reconstruction"]["mean_l0"] == pytest.approx(l0)
    assert data["reconstruction"]["dead_fraction"] == pytest.approx(metrics.dead_fraction(codes))
    assert data["firing_frequency"]["per_latent"] == pytest.approx(metrics.activation_frequency(codes).tolist())
    c = data["conditions"]
    assert (c["rows_read"], c["sample"]["rows"], c["source"]["kind"], c["sae"]["class"]) == (600, 250, "file", "TopKSAE")
    assert c["sae"]["config"]["k"] == 2 and c["sae"]["format"] == "sae_theory save" and c["second"]["n_latents"] == 12
    assert "uniform random sample" in c["sample"]["note"]
    for cond in ("H1", "H2", "H3", "V1"):
        assert set(data["identifiability"][cond]) >= {"value", "threshold", "holds", "message"}
    mcs = metrics.max_cosine_similarity(sae.W_dec.detach(), load_sae(root / "other").W_dec.detach())
    assert data["comparison"]["mcs"]["per_atom"] == pytest.approx(mcs.tolist())
    assert 0 <= data["comparison"]["decoder_mcc"] <= 1
    summary = (out / "summary.md").read_text()
    for phrase in ("**FVU**", "**Mean L0**", "**Dead latents**", "more than 10% of the rows", "**H3**", "**V1**",
                   "**Babel mu_1(r)**", "**Effective rank", "**Error against inference sparsity**", "**MCS**",
                   "**Decoder MCC**", "250 rows (a uniform random sample"):
        assert phrase in summary, phrase
    # every numbered line explains its number: '**name** number: explanation' or '... (what): ...'
    assert all(":" in line for line in summary.splitlines() if line.startswith("- **"))


def test_audit__cli_writes_the_three_kinds_of_output(trained, tmp_path, capsys):
    _, root, X = trained
    torch.save(X, tmp_path / "acts.pt")
    out = tmp_path / "cli_out"
    code = _exit_code(["audit", str(root / "sae"), "--activations", str(tmp_path / "acts.pt"), "--out", str(out),
                       "--max-rows", "300", "--batch-size", "64", "--sample-rows", "100", "--no-progress"])
    assert code == 0
    assert set(OUT_KINDS) <= {p.name for p in out.iterdir()}
    data = json.loads((out / "audit.json").read_text())
    assert (data["conditions"]["rows_read"], data["conditions"]["max_rows"], data["conditions"]["batch_size"]) == (300, 300, 64)
    assert "wrote" in capsys.readouterr().out
    # a second run replaces the folder (it holds only audit files), atomically
    assert _exit_code(["audit", str(root / "sae"), "--activations", str(tmp_path / "acts.pt"), "--out", str(out),
                       "--max-rows", "200", "--no-progress"]) == 0
    assert json.loads((out / "audit.json").read_text())["conditions"]["rows_read"] == 200
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cli_out")]


def test_audit__saelens_folder_gives_the_same_numbers(trained, tmp_path):
    sae, root, X = trained
    export_saelens(sae, tmp_path / "lens")
    a = audit(tmp_path / "lens", X, **_quick())
    b = audit(sae, X, **_quick())
    assert a.conditions["sae"]["format"] == "SAELens (topk)" and a.conditions["sae"]["class"] == "TopKSAE"
    assert a.reconstruction == b.reconstruction
    # a folder SAELens itself wrote (no sae_theory metadata) is read as well
    cfg = json.loads((tmp_path / "lens" / "cfg.json").read_text())
    del cfg["metadata"]["sae_theory"]
    (tmp_path / "lens" / "cfg.json").write_text(json.dumps(cfg))
    assert audit(tmp_path / "lens", X, **_quick()).reconstruction["fvu"] == pytest.approx(b.reconstruction["fvu"], rel=1e-6)


def test_audit__synthetic_source_reports_recovery_and_fills_the_spec(trained):
    sae, _, _ = trained
    rep = audit(sae, "synthetic:n=16,s=2,rows=300", **_quick())
    spec = rep.conditions["source"]["spec"]
    assert (spec["n"], spec["s"], spec["rows"], spec["seed"], spec["d"]) == (16, 2, 300, 0, 8)
    assert rep.conditions["rows_read"] == 300
    assert set(rep.recovery) >= {"frr_0.9", "frr_0.8", "decoder_mcc"} and rep.recovery["n_features"] == 16
    assert audit(sae, "synthetic:", **_quick()).conditions["source"]["spec"]["n"] == 16  # default n: the SAE's latents


# ---------------------------------------------------------------------------------------------
# source kinds
# ---------------------------------------------------------------------------------------------
def test_sources__npy_pt_safetensors_folder_and_3d_agree(tmp_path):
    from safetensors.torch import save_file

    sae = _relu_identity()
    X = torch.randn(50, 4, generator=torch.Generator().manual_seed(2), dtype=F64)
    ref = audit(sae, X, **_quick()).reconstruction
    np.save(tmp_path / "a.npy", X.numpy())
    torch.save(X.reshape(5, 10, 4), tmp_path / "a3d.pt")  # (batch, seq, d): flattened to 50 rows
    torch.save({"acts": X}, tmp_path / "dict.pt")
    save_file({"resid": X, "other": X[:3].clone()}, str(tmp_path / "two.safetensors"))
    save_file({"resid": X.reshape(5, 10, 4).contiguous()}, str(tmp_path / "one3d.safetensors"))
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "shard_2.npy", X[20:35].numpy())  # natural order: 1, 2, 10 (not 1, 10, 2)
    np.save(shards / "shard_1.npy", X[:20].numpy())
    np.save(shards / "shard_10.npy", X[35:].numpy())
    (shards / "notes.txt").write_text("ignored")
    for src in ("a.npy", "a3d.pt", "dict.pt", "dict.pt:acts", "two.safetensors:resid", "one3d.safetensors", "shards"):
        rep = audit(sae, tmp_path / src if ":" not in src else f"{tmp_path}/{src}", batch_size=7, **_quick())
        assert _flat(rep.reconstruction) == pytest.approx(_flat(ref)), src
        assert rep.conditions["rows_read"] == 50
    rep = audit(sae, shards, **_quick())
    assert [p.rsplit("/", 1)[1] for p in rep.conditions["source"]["shards"]] == ["shard_1.npy", "shard_2.npy", "shard_10.npy"]


def test_sources__max_rows_stops_the_stream_across_shards(tmp_path):
    sae = _relu_identity()
    X = torch.randn(30, 4, generator=torch.Generator().manual_seed(4), dtype=F64)
    for i in range(3):
        np.save(tmp_path / f"s{i}.npy", X[10 * i : 10 * i + 10].numpy())
    rep = audit(sae, tmp_path, max_rows=13, batch_size=4, **_quick())
    assert rep.conditions["rows_read"] == 13
    assert _flat(rep.reconstruction) == pytest.approx(_flat(audit(sae, X[:13], **_quick()).reconstruction))


def test_sources__float32_file_is_cast_to_the_sae_dtype(tmp_path):
    np.save(tmp_path / "f32.npy", HAND_ROWS.numpy().astype(np.float32))
    rep = audit(_relu_identity(), tmp_path / "f32.npy", **_quick())
    assert rep.firing_frequency["per_latent"] == [0.5, 0.2, 0.0, 0.1]
    assert rep.conditions["source"]["spec"] == {"dtype": "float32"}


# ---------------------------------------------------------------------------------------------
# bad inputs: each names the argument; the CLI exits 2 with argparse's usage line
# ---------------------------------------------------------------------------------------------
def _raises(argument: str, match: str, *args, **kwargs):
    with pytest.raises(AuditError, match=match) as info:
        audit(*args, **_quick(**kwargs))
    assert info.value.argument == argument
    assert str(info.value).startswith(f"{argument}: ")
    return info.value


def test_bad__folder_that_is_not_an_sae_names_what_is_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    _raises("sae", r"not an SAE folder: it holds neither sae.safetensors \+ config.json", tmp_path / "empty", HAND_ROWS)
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text("{}")
    _raises("sae", "has config.json of a sae_theory save but no sae.safetensors", half, HAND_ROWS)
    lens = tmp_path / "lens"
    lens.mkdir()
    (lens / "cfg.json").write_text("{}")
    _raises("sae", "has cfg.json of a SAELens save but no sae_weights.safetensors", lens, HAND_ROWS)
    _raises("sae", "does not exist", tmp_path / "nowhere", HAND_ROWS)
    _raises("second", "not an SAE folder", _relu_identity(), HAND_ROWS, second=tmp_path / "empty")


def test_bad__activations_of_the_wrong_width(tmp_path):
    np.save(tmp_path / "w5.npy", np.zeros((3, 5)))
    _raises("activations", r"w5.npy has rows of width 5 but the SAE's input width d is 4", _relu_identity(), tmp_path / "w5.npy")
    shards = tmp_path / "mixed"
    shards.mkdir()
    np.save(shards / "a.npy", np.zeros((3, 4)))
    np.save(shards / "b.npy", np.zeros((3, 5)))
    _raises("activations", "differ in width", _relu_identity(), shards)


def test_bad__nan_is_found_while_reading_and_nothing_is_written(tmp_path):
    X = HAND_ROWS.clone()
    X[7, 1] = float("nan")
    np.save(tmp_path / "nan.npy", X.numpy())
    out = tmp_path / "out"
    err = _raises("activations", r"nan.npy row 7 holds NaN or infinite values; .*max_rows=7", _relu_identity(), tmp_path / "nan.npy",
                  out=out, batch_size=3)
    assert "clean the activations" in err.detail
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["nan.npy"]


def test_bad__unknown_source_kind_missing_file_integers_and_empty(tmp_path):
    sae = _relu_identity()
    _raises("activations", "unknown source kind 'random'", sae, "random:n=3")
    _raises("activations", "does not exist", sae, tmp_path / "missing.npy")
    (tmp_path / "acts.csv").write_text("1,2,3,4\n")
    _raises("activations", r"is a .csv file; give a tensor file", sae, tmp_path / "acts.csv")
    np.save(tmp_path / "ints.npy", np.zeros((3, 4), dtype=np.int64))
    _raises("activations", "holds int64 values; activations must be floating point", sae, tmp_path / "ints.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    _raises("activations", "holds no rows", sae, tmp_path / "empty.npy")
    (tmp_path / "nothing").mkdir()
    _raises("activations", "holds no tensor files", sae, tmp_path / "nothing")
    _raises("activations", r"synthetic:n=4,k=2 has 'k=2'; .* keys n, s, rows, seed", sae, "synthetic:n=4,k=2")
    _raises("activations", "s must be <= n", sae, "synthetic:n=4,s=5")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2, 4), "b": torch.zeros(2, 4)}, str(tmp_path / "two.safetensors"))
    _raises("activations", r"holds 2 tensors \['a', 'b'\]; name one: .*two.safetensors:a", sae, tmp_path / "two.safetensors")
    _raises("activations", "has no tensor 'c'", sae, f"{tmp_path}/two.safetensors:c")


def test_bad__numbers_second_width_and_out_folder(tmp_path):
    sae = _relu_identity()
    _raises("max_rows", "must be >= 1, got 0", sae, HAND_ROWS, max_rows=0)
    _raises("batch_size", "must be >= 1", sae, HAND_ROWS, batch_size=-3)
    _raises("dense_threshold", r"in \(0, 1\)", sae, HAND_ROWS, dense_threshold=1.0)
    _raises("second", "input width d = 5 but the SAE's is 4", sae, HAND_ROWS, second=ReLUSAE(d=5, n_latents=3, dtype=F64))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    _raises("out", r"holds \['mine.txt'\], which the audit would delete", sae, HAND_ROWS, out=tmp_path / "busy")
    with pytest.raises(TypeError, match="max_rows must be an integer"):
        audit(sae, HAND_ROWS, max_rows="10", progress=False)


@pytest.mark.parametrize("argv_tail, option, match", [
    (["--max-rows", "0"], "--max-rows", "below 1"),
    (["--batch-size", "x"], "--batch-size", "not a whole number"),
])
def test_cli_bad__numbers_exit_2_naming_the_option(argv_tail, option, match, capsys, tmp_path):
    assert _exit_code(["audit", str(tmp_path), "--activations", "synthetic:", *argv_tail]) == 2
    err = capsys.readouterr().err
    assert "usage: sae-theory audit" in err and f"argument {option}: " in err and match in err


def test_cli_bad__inputs_exit_2_naming_the_argument_and_write_nothing(trained, tmp_path, capsys):
    _, root, _ = trained
    np.save(tmp_path / "w3.npy", np.zeros((4, 3)))
    X = np.ones((6, 8))
    X[2, 0] = np.inf
    np.save(tmp_path / "inf.npy", X)
    cases = [
        ([str(tmp_path), "--activations", "synthetic:"], "argument SAE_FOLDER: ", "not an SAE folder"),
        ([str(root / "sae"), "--activations", str(tmp_path / "w3.npy")], "argument --activations: ", "width 3"),
        ([str(root / "sae"), "--activations", str(tmp_path / "inf.npy")], "argument --activations: ", "row 2 holds NaN or infinite"),
        ([str(root / "sae"), "--activations", "bogus:x"], "argument --activations: ", "unknown source kind 'bogus'"),
        ([str(root / "sae"), "--activations", "synthetic:", "--second", str(tmp_path)], "argument --second: ", "not an SAE folder"),
    ]
    for argv, prefix, match in cases:
        out = tmp_path / "out"
        assert _exit_code(["audit", *argv, "--out", str(out), "--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert "usage: sae-theory audit" in err and prefix in err and match in err, (argv, err)
        assert not out.exists()


def test_open_activations__checks_need_no_rows_read(tmp_path):
    # a large .npy is opened memory-mapped: the width is known from its header, no row is read yet
    arr = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(100_000, 4))
    del arr
    src = open_activations(tmp_path / "big.npy", _relu_identity())
    assert (src.rows, src.d, src.kind) == (100_000, 4, "file")
    first = next(src.batches(10, dtype=F64, device="cpu"))
    assert first.shape == (10, 4) and first.dtype == F64


def test_audit__write_failure_leaves_no_half_folder(tmp_path, monkeypatch):
    from sae_theory.audit import AuditReport

    def boom(self):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(AuditReport, "summary", boom)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        audit(_relu_identity(), HAND_ROWS, out=tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_audit__a_normalised_sae_is_read_on_raw_activations(tmp_path):
    # a TopK trained on unit rows, audited on the raw (norm ~ 30) rows: the audit's FVU is the one
    # of the normalised rows (FVU is scale-free per row only up to the mean; here the mean is ~0)
    from sae_theory.audit import audit
    from sae_theory.models import TopKSAE
    from sae_theory.training import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    X = 30 * torch.randn(2048, 8, generator=g)
    sae = TopKSAE(d=8, n_latents=16, k=3, seed=1)
    train(sae, X, TrainConfig(steps=200, batch_size=64, lr=1e-2, input_norm="unit", progress=False))
    save_sae(sae, tmp_path / "sae")
    torch.save(X, tmp_path / "x.pt")
    got = audit(tmp_path / "sae", tmp_path / "x.pt", out=tmp_path / "out", progress=False)
    with torch.no_grad():
        ref = float(((sae(X) - X) ** 2).sum() / ((X - X.mean(0)) ** 2).sum())
    assert got.conditions["sae"]["input_norm"] == {"kind": "unit", "scale": None}
    assert abs(got.reconstruction["fvu"] - ref) < 1e-5, (got.reconstruction["fvu"], ref)
    assert got.reconstruction["fvu"] < 0.9  # without undoing the norm it would be about 1 (x_hat of norm 1 against rows of norm 30)


def test_audit__a_real_source_extracts_and_reads_the_activation_cache(tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="real sources need transformers (the extra sae-theory[real])")
    from _helpers import tiny_bert

    from sae_theory.data.activations import ACTIVATIONS_ENV, ActivationRequest, extract_activations

    # a tiny BERT saved as a local model folder, and a one-file corpus: nothing is downloaded
    words = "the cat sat on a mat and dog ran far".split()
    tok, net = tiny_bert(words, hidden_size=8, intermediate_size=16, max_position_embeddings=128)
    model_dir = tmp_path / "tiny"
    net.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    monkeypatch.setenv(ACTIVATIONS_ENV, str(tmp_path / "acts"))
    sae = TopKSAE(d=8, n_latents=16, k=2, seed=0)
    save_sae(sae, tmp_path / "sae")
    # the default corpus is the gensim sample; with gensim absent the source says which package it needs
    try:
        import gensim  # noqa: F401
    except ImportError:
        with pytest.raises(AuditError, match="gensim"):
            audit(tmp_path / "sae", f"real:{model_dir}:resid_post:1:200", progress=False)
        return
    got = audit(tmp_path / "sae", f"real:{model_dir}:resid_post:1:200", out=tmp_path / "out", progress=False)
    assert got.conditions["rows_read"] == 200
    cache = extract_activations(ActivationRequest(model=str(model_dir), place="resid_post", layer=1, max_tokens=200), progress=False)
    again = audit(tmp_path / "sae", str(cache.folder), progress=False)  # the cache folder reads as a folder of shards
    assert again.reconstruction["fvu"] == pytest.approx(got.reconstruction["fvu"], rel=1e-12)
    for bad, match in (("real:minilm:resid_post", "real:MODEL:PLACE:LAYER"), ("real:minilm:resid:3", "place must be one of"),
                       ("real:minilm:resid_post:x", "LAYER must be a whole number")):
        with pytest.raises(AuditError, match=match):
            audit(tmp_path / "sae", bad, progress=False)
