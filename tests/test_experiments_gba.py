"""Tests of the GBA toy's sensitivity studies at a tiny scale (the science is in notebook 03):
the DataFrame contracts, the group tracing, argument checks."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from sae_theory.experiments import gba
from sae_theory.profiles import get_profile
from sae_theory.training.bias_adaptation import group_assignment, target_frequencies


@pytest.fixture(scope="module")
def tiny():
    P = get_profile("quick", device="cpu")
    toy = dataclasses.replace(P.toy, n_latents=64, steps=20, n_samples=4000, widths=(32, 64), sweep_topk=(3, 5))
    return dataclasses.replace(P, toy=toy, seeds=(0,))


def test_width_sweep__one_row_per_method_width_tau(tiny):
    df = gba.width_sweep(tiny, progress=False)
    assert len(df) == 3 * 2 * 2 and set(df.width) == {32, 64} and set(df.tau) == {0.8, 0.9}
    assert df.frr.between(0, 1).all()


def test_topk_sweep__frr_and_frontier_columns(tiny):
    df = gba.topk_sweep(tiny, progress=False)
    assert set(df.k) == {3, 5} and set(df.columns) >= {"k", "seed", "tau", "frr", "l2_loss", "fraction_active"}
    frac = df.groupby("k").fraction_active.first()
    assert all(frac[k] <= k / 64 + 1e-9 for k in frac.index)  # TopK: at most k of the M = 64 latents per row


def test_tied_topk_sweep__is_the_tied_model_with_at_most_k_active(tiny):
    spec = gba.tied_topk_spec(5)
    sae, hooks = spec.build(d=42, n_latents=64, seed=0)
    assert isinstance(sae, gba.TiedSAE) and sae.config.activation == "topk" and sae.config.k == 5 and hooks == []
    assert sae.W_enc.data_ptr() == sae.W_dec.data_ptr()  # one weight encodes and decodes
    df = gba.topk_sweep(tiny, tied=True, progress=False)
    assert df.tied.all() and set(df.k) == {3, 5}
    frac = df.groupby("k").fraction_active.first()
    assert all(frac[k] <= k / 64 + 1e-9 for k in frac.index)
    with pytest.raises(TypeError, match="tied"):
        gba.topk_sweep(tiny, tied="yes", progress=False)


def test_topk_convergence__one_long_run_each_read_along_the_way(tiny):
    P = dataclasses.replace(tiny, toy=dataclasses.replace(tiny.toy, long_steps=90))
    df = gba.topk_convergence(P, ks=(3, 5), progress=False)
    # snapshots at steps/4, steps/2, steps and its doublings below long_steps, then the end
    assert sorted(set(df.steps)) == [5, 10, 20, 40, 80, 90]
    got = set(map(tuple, df[["k", "tied"]].drop_duplicates().to_numpy().tolist()))
    assert got == {(3, True), (5, True), (3, False)}
    assert df.frr.between(0, 1).all() and df.settled.isin([True, False]).all()
    # the reading at the profile's steps is the profile-length run itself (constant learning rate)
    short = gba.topk_sweep(tiny, ks=(3,), tied=True, progress=False).set_index("tau").frr
    at = df[(df.k == 3) & df.tied & (df.steps == 20)].set_index("tau").frr
    assert at.to_dict() == short.to_dict()
    # cached: asking again trains nothing new
    again = gba.topk_convergence(P, ks=(3, 5), progress=False)
    pd.testing.assert_frame_equal(df, again)
    with pytest.raises(ValueError, match="long_steps"):
        gba.topk_convergence(dataclasses.replace(tiny, toy=dataclasses.replace(tiny.toy, long_steps=20)), ks=(3,), progress=False)


def test_recovering_groups__traces_each_feature_to_its_best_neurons_group(tiny):
    df = gba.recovering_groups(tiny, width=64)
    cfg = gba.GBAConfig(**gba.TOY_GBA["GBA"], buffer_size=gba.algorithm2_buffer(tiny.toy.batch_size))
    groups, targets = group_assignment(64, cfg), target_frequencies(cfg).double()
    assert len(df) == 128 and df.neuron.between(0, 63).all()
    assert (torch.tensor(df.group.tolist()) == groups[torch.tensor(df.neuron.tolist())]).all()
    assert torch.allclose(torch.tensor(df.target.tolist(), dtype=torch.float64), targets[torch.tensor(df.group.tolist())])
    assert (df.recovered == (df.cosine >= 0.9)).all()
    with pytest.raises(ValueError, match="method must be one of"):
        gba.recovering_groups(tiny, method="TopK K=20")


# ---------------------------------------------------------------------------------------------
# the paper's tied baselines and the controls (truth init, coefficient law, recovery curves)
# ---------------------------------------------------------------------------------------------
def test_tied_baselines__each_baseline_tied_and_untied_on_the_tied_models_classes(tiny):
    df = gba.tied_baselines(tiny, ks=(3, 5), l1_coefficients=(0.03,), progress=False)
    assert len(df) == 3 * 2 * 2 and set(df.tau) == {0.8, 0.9}
    assert set(df[df.tied].method) == {"Tied TopK K=3", "Tied TopK K=5", "Tied L1 lambda=0.03"}
    assert set(df[~df.tied].method) == {"TopK K=3", "TopK K=5", "L1 lambda=0.03"}
    assert df.frr.between(0, 1).all() and (df.fvu >= 0).all() and df.settled.isin([True, False]).all()
    topk = df[df.family == "TopK"].groupby("value").fraction_active.max()
    assert all(topk[k] <= k / 64 + 1e-9 for k in topk.index)  # at most K of the M = 64 neurons, tied or not
    sae, hooks = gba.tied_baseline_spec("TopK", 3).build(d=42, n_latents=64, seed=0)
    assert type(sae).__name__ == "TiedTopKSAE" and sae.W_enc.data_ptr() == sae.W_dec.data_ptr() and hooks == []
    assert type(gba.tied_baseline_spec("L1", 0.1).build(d=42, n_latents=8, seed=0)[0]).__name__ == "TiedReLUSAE"
    with pytest.raises(ValueError, match="family"):
        gba.tied_baseline_spec("JumpReLU", 1)


def test_truth_init__starts_every_method_at_the_true_features(tiny):
    df = gba.truth_init(tiny, eval_every=10, progress=False)
    assert set(df.method) == {"GBA", "TopK K=20", "Tied TopK K=20"} and set(df.step) == {0, 10, 20}
    start = df[df.step == 0]
    assert (start.frr == 1.0).all()  # the dictionary is V itself at step 0, at both tau
    assert df.frr.between(0, 1).all() and (df.fvu >= 0).all()


def test_coefficient_laws__one_row_per_law_method_tau_and_unknown_laws_refused(tiny):
    laws = ("constant 1", "lognormal (0, 0.5)")
    df = gba.coefficient_laws(tiny, laws=laws, progress=False)
    assert len(df) == 2 * 2 * 2 and set(df.law) == set(laws) and set(df.method) == {"GBA", "TopK K=20"} and df.frr.between(0, 1).all()
    # the two laws are different data: the same method trains to different dictionaries
    fv = df.groupby(["method", "law"]).fvu.first().unstack()
    assert (fv[laws[0]] != fv[laws[1]]).all()
    with pytest.raises(ValueError, match="coefficients must be one of"):
        gba.coefficient_laws(tiny, laws=("gamma",), progress=False)
    with pytest.raises(ValueError, match="unknown methods"):
        gba.coefficient_laws(tiny, methods=("TopK K=30",), progress=False)


def test_recovery_curves__read_from_the_snapshots_of_the_tables_runs(tiny):
    df = gba.recovery_curves(tiny, progress=False)
    assert set(df.steps) == set(gba.curve_steps(20)) | {20} == {2, 5, 10, 15, 20}
    assert set(df.method) == {"GBA", "TopK K=20", "Tied TopK K=20"} and df.frr.between(0, 1).all()
    # the profile-length reading of TopK K=20 is the run gba_vs_topk trains (same spec, data and length)
    table = gba.gba_vs_topk(tiny, methods=("TopK K=20",), progress=False).set_index("tau").frr
    full = df[(df.steps == 20) & (df.method == "TopK K=20")].set_index("tau").frr
    assert full.to_dict() == table.to_dict()


def test_curve_steps__fractions_of_the_run_inside_it():
    assert gba.curve_steps(2000) == (250, 500, 1000, 1500)
    assert gba.curve_steps(3) == (1, 2) and gba.curve_steps(1) == ()
    with pytest.raises(ValueError, match="steps"):
        gba.curve_steps(0)


def test_width_sweep__reports_whether_frr_settled_over_the_last_quarter(tiny):
    df = gba.width_sweep(tiny, widths=(32,), methods=("TopK K=20",), progress=False)
    assert set(df.columns) >= {"frr", "frr_three_quarters", "settled"}
    assert (df.settled == ((df.frr - df.frr_three_quarters).abs() <= 0.03)).all()


def test_gba_recovers_most_toy_features_at_sufficient_width_in_a_short_run(tiny, tmp_path, monkeypatch):
    # guards the setup (data, normalisation, bias adaptation, the analysed regime): at M = 2048 and
    # 2,000 steps of 256 rows GBA covering f recovered 100% at tau = 0.8 and 91% at 0.9 when written
    monkeypatch.setenv("SAE_THEORY_CACHE", str(tmp_path))  # train now, never a run cached by older code
    P = dataclasses.replace(tiny, toy=dataclasses.replace(tiny.toy, steps=2000, batch_size=256, n_samples=50_000))
    frr = gba.width_sweep(P, widths=(2048,), methods=("GBA",), progress=False).set_index("tau").frr
    assert frr[0.8] >= 0.9 and frr[0.9] >= 0.5, frr.to_dict()


def test_resonance__reads_frr_at_three_quarters_and_says_whether_it_settled(tiny):
    R = dataclasses.replace(tiny.resonance, grid_d=(8,), grid_p_over_f=(1.0,), width_multiples=(1,), width_d=8, steps=8,
                            batch_size=32, n_samples=2000)
    df = gba.resonance(dataclasses.replace(tiny, resonance=R), progress=False)
    assert list(df.kind) == ["phase", "width"] and set(df.columns) >= {"frr", "frr_three_quarters", "settled"}
    assert df.frr.between(0, 1).all() and df.frr_three_quarters.between(0, 1).all()
    assert (df.settled == ((df.frr - df.frr_three_quarters).abs() <= 0.03)).all()


def test_consistency__reads_the_same_runs_at_the_end_and_half_way(tiny):
    two = dataclasses.replace(tiny, seeds=(0, 1))
    df = gba.consistency(two, thresholds=(0.5, 0.8), progress=False)
    assert len(df) == 5 * 2 * 2 and set(df.method) == {"GBA", "TopK", "L1", "Tied TopK", "Tied L1"} and (df.half_step == 10).all()
    for col in ("fraction", "fraction_half", "median_mcs", "median_mcs_half"):
        assert df[col].between(0, 1 + 1e-12).all(), col
    # what the consistent neurons span: no more distinct directions than consistent neurons, no more than the toy's 128 features
    M = two.toy.n_latents
    assert (df.n_features == 128).all()
    for when in ("", "_half"):
        assert (df[f"distinct{when}"] <= (df[f"fraction{when}"] * M).round()).all() and df[f"features{when}"].between(0, 128).all()
    # a higher threshold never keeps more neurons, at either reading
    wide = df.pivot_table(index=["method", "seed"], columns="threshold", values=["fraction", "fraction_half"])
    assert (wide["fraction"][0.8] <= wide["fraction"][0.5]).all() and (wide["fraction_half"][0.8] <= wide["fraction_half"][0.5]).all()
    # the half-way reading is the snapshot of the very runs read at the end (not a second, shorter run)
    spec = gba.consistency_specs(two.toy, "analysed")["TopK"]
    runs = [gba._cached_toy_run(spec, two.toy, s, "cpu")[0] for s in (0, 1)]
    W0, W1 = (r.at(10).dictionary.detach().double() for r in runs)
    from sae_theory.metrics import max_cosine_similarity
    expect = float(max_cosine_similarity(W0, W1).median())
    assert df[(df.method == "TopK") & (df.seed == 0)].median_mcs_half.iloc[0] == pytest.approx(expect, abs=1e-12)


def test_spanned__counts_distinct_directions_and_the_true_features_they_match():
    V = torch.eye(4, dtype=torch.float64)
    W = torch.tensor([[1.0, 0, 0, 0], [0.99, 0.1, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.6, 0.8], [0, 0, 0, 0]], dtype=torch.float64)
    keep = torch.tensor([True, True, True, True, False])
    # rows 0 and 1 are one direction (cos 0.995); row 3 is a third direction matching no feature at 0.9
    assert gba._spanned(W, keep, V, 0.9) == dict(distinct=3, features=2)
    assert gba._spanned(W, torch.zeros(5, dtype=torch.bool), V, 0.9) == dict(distinct=0, features=0)
    assert gba._spanned(W, keep, V, 0.5) == dict(distinct=3, features=4)  # 0.6 and 0.8 both reach 0.5


def test_consistency_settled__all_three_readings_within_atol_per_method():
    rows = [dict(method=m, seed=s, threshold=0.8, fraction=f, fraction_half=fh, median_mcs=mm, median_mcs_half=mh,
                 features=ft, features_half=fth, n_features=100, half_step=5)
            for m, f, fh, mm, mh, ft, fth in (("A", 0.90, 0.88, 0.95, 0.94, 50, 48), ("B", 0.50, 0.40, 0.70, 0.70, 50, 50),
                                              ("C", 0.10, 0.10, 0.60, 0.50, 50, 50), ("D", 0.90, 0.90, 0.95, 0.95, 50, 10))
            for s in (0, 1)]
    settled = gba.consistency_settled(pd.DataFrame(rows))
    # B: the share of neurons moved 0.10; C: the median MCS moved 0.10; D: both settled, but the consistent neurons
    # matched 10 of the 100 true features half-way and 50 at the end
    assert settled.to_dict() == {"A": True, "B": False, "C": False, "D": False}
    assert not gba.consistency_settled(pd.DataFrame(rows), atol=0.2).D
    assert gba.consistency_settled(pd.DataFrame(rows), atol=0.5).all()
    with pytest.raises(ValueError, match="threshold 0.9"):
        gba.consistency_settled(pd.DataFrame(rows), threshold=0.9)
    with pytest.raises(ValueError, match="features_half"):
        gba.consistency_settled(pd.DataFrame(rows).drop(columns="features_half"))
    with pytest.raises(ValueError, match="n_features"):
        gba.consistency_settled(pd.DataFrame(rows).assign(n_features=0))


def test_consistency__refuses_one_seed(tiny):
    with pytest.raises(ValueError, match="two seeds"):
        gba.consistency(tiny, progress=False)


@pytest.mark.parametrize("law", ["constant 1", "uniform [0.5, 1.5]"])
def test_toy_rows__the_kept_rows_stay_a_fresh_models_first_draw_after_training_on_them(law, tiny, monkeypatch):
    # the rows every cold toy run trains on are kept between runs: they must stay what a fresh
    # model draws (what the run cache's data key says), whatever trained on them before
    monkeypatch.setenv("SAE_THEORY_CACHE", "off")
    fresh = gba._toy_model(law, "cpu")[0].sample(tiny.toy.n_samples, h_layout="sparse")[0]
    assert torch.equal(gba._toy_rows(law, tiny.toy.n_samples, "cpu"), fresh)
    for spec in (gba.toy_spec("GBA", tiny.toy, "analysed"), gba.topk_spec(5)):  # unit-norm rows, bias adaptation
        gba._toy_run(spec, tiny.toy, 0, "cpu", coefficients=law)
    assert torch.equal(gba._toy_rows(law, tiny.toy.n_samples, "cpu"), fresh)
