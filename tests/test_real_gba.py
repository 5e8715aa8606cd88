"""GBA's real-network study (experiments.real_gba, notebook 08): the frontier comparisons (by
hand on small frames), the claim values, the specs, and every reading on a tiny cache extracted
from a tiny BERT built here (nothing downloaded)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from sae_theory import claims
from sae_theory.experiments import real_gba
from sae_theory.profiles import RealGBAScale, get_profile



def _front(rows):
    cols = ["family", "value", "method", "fraction_active", "fraction_pre", "l2_loss", "settled"]
    return pd.DataFrame(rows, columns=cols)


def _toy_front(gba=(0.04, 0.30), settled=True):
    # TopK post-act at fractions 0.01, 0.1 with losses 0.4, 0.2: in log fraction, 0.04 lies at
    # log(4)/log(10) = 0.602 of the way, so the curve's loss there is 0.4 - 0.2 * 0.602 = 0.2796
    return _front([
        ("TopK", "8", "Tied TopK K=8", 0.01, 0.20, 0.40, settled), ("TopK", "64", "Tied TopK K=64", 0.10, 0.50, 0.20, settled),
        ("L1", "0.1", "Tied L1 lambda=0.1", 0.02, 0.02, 0.45, settled), ("L1", "0.01", "Tied L1 lambda=0.01", 0.20, 0.20, 0.25, settled),
        ("BA", "0.05", "BA p=0.05", 0.05, 0.05, 0.35, settled),
        ("GBA", "printed", "GBA (printed)", *gba[:1], gba[0], gba[1], settled),
        ("GBA", "small a", "GBA (small a)", 0.05, 0.05, 0.27, settled),
    ])


def test_frontier_summary__interpolates_in_log_fraction_and_never_extrapolates():
    s = real_gba.frontier_summary(_toy_front()).set_index("method")
    g = s.loc["GBA (printed)"]
    expected = 0.4 - 0.2 * math.log(4) / math.log(10)
    assert g.ratio_topk_post == pytest.approx(0.30 / expected, rel=1e-12)
    # pre-act TopK spans 0.2..0.5: GBA's 0.04 is outside, so no ratio; no pre-act point is sparser, so it is beaten
    assert math.isnan(g.ratio_topk_pre) and not g.dominated_by_topk_pre and g.beats_topk_pre
    # L1 spans 0.02..0.2: its loss at 0.04 is 0.45 - 0.2 * log(2)/log(10) = 0.3898 > 0.30
    assert g.ratio_l1 == pytest.approx(0.30 / (0.45 - 0.2 * math.log(2) / math.log(10))) and g.beats_l1
    # BA (one point, 0.05, 0.35): not sparser, so not dominating; no curve to interpolate
    assert math.isnan(g.ratio_ba) and g.beats_ba
    # a GBA point that a TopK point dominates (sparser and better) beats nothing it is dominated by
    worse = real_gba.frontier_summary(_toy_front(gba=(0.15, 0.45))).set_index("method").loc["GBA (printed)"]
    assert worse.dominated_by_topk_post and worse.dominated_by_l1 and not worse.beats_l1


def test_frontier_claim_values__feed_the_rule():
    values = real_gba.frontier_claim_values(_toy_front(), "printed")
    assert values["in_range"] and values["ratio_topk_post"] == pytest.approx(0.30 / (0.4 - 0.2 * math.log(4) / math.log(10)))
    assert values["beats_topk_pre"] and values["beats_l1"] and values["beats_ba"] and values["converged"]
    # small a: 0.05 -> TopK at 0.4 - 0.2 * log(5)/log(10) = 0.2602; 0.27 / 0.2602 = 1.038 < printed's 1.073
    assert values["best_reading"] == "small a"
    status, reason = claims.evaluate(claims.CLAIMS["gba.real.frontier"], values)
    assert status == "reproduces", reason  # within 1.1x of TopK post-act and beating the other three
    far = real_gba.frontier_claim_values(_toy_front(gba=(0.0001, 0.9)), "printed")
    assert not far["in_range"] and claims.evaluate(claims.CLAIMS["gba.real.frontier"], far)[0] == "not testable here"
    # dominated by TopK K=64 and by nothing it beats: a refutation, but on unsettled runs "not converged"
    unsettled = real_gba.frontier_claim_values(_toy_front(gba=(0.08, 0.45), settled=False), "printed")
    assert not unsettled["converged"] and unsettled["ratio_topk_post"] > 1.1
    assert claims.evaluate(claims.CLAIMS["gba.real.frontier"], unsettled)[0] == "partly"  # the 'small a' reading is within 1.1x
    only_printed = _toy_front(gba=(0.08, 0.45), settled=False).query("value != 'small a'")
    only_printed = only_printed.assign(fraction_pre=only_printed.fraction_active)  # a pre-act curve it does not beat either
    assert claims.evaluate(claims.CLAIMS["gba.real.frontier"], real_gba.frontier_claim_values(only_printed, "printed"))[0] == "not converged"
    with pytest.raises(ValueError, match="reading"):
        real_gba.frontier_claim_values(_toy_front(), "two-sided")


def test_consistency_and_neuron_claim_values():
    # at the end GBA 0.5, TopK 0.2, L1 0.6; half-way the shares were lower (TopK 0.0) and the medians moved
    # by 0.02 (settled) except TopK's, which moved by 0.1
    rows = [dict(method=m, step=step, seed=s, selection=sel, alpha=a, n_selected=5, threshold=t,
                 fraction=f if step == 20 else (0.0 if m == "TopK" else f), median_mcs=med + (0 if step == 20 else (-0.1 if m == "TopK" else -0.02)),
                 settled=True)
            for m, f, med in (("GBA", 0.5, 0.8), ("TopK", 0.2, 0.5), ("L1", 0.6, 0.85)) for step in (10, 20) for s in (0, 1)
            for sel in ("max activation", "Z-score") for a in (0.05, 0.01) for t in (0.6, 0.9)]
    cons = pd.DataFrame(rows)
    v = real_gba.consistency_claim_values(cons)
    assert v == dict(n_selections=4, gba_wins=4, l1_beats_gba=4, gba_min=0.5, gba_max=0.5, topk_min=0.2, topk_max=0.2, converged=False)
    st = real_gba.consistency_settled(cons).set_index("method")
    assert st.settled["GBA"].all() and st.settled["L1"].all() and not st.settled["TopK"].any()
    assert st.median_mcs_half["TopK"].iloc[0] == pytest.approx(0.4) and st.median_mcs_end["TopK"].iloc[0] == pytest.approx(0.5)
    assert claims.evaluate(claims.CLAIMS["gba.real.consistency"], v)[0] == "reproduces"  # positive: kept, shown "(not converged)"
    settled = cons.assign(median_mcs=cons.groupby(["method", "seed", "selection", "alpha", "threshold"]).median_mcs.transform("max"))
    assert real_gba.consistency_claim_values(settled)["converged"]
    with pytest.raises(ValueError, match="threshold"):
        real_gba.consistency_claim_values(pd.DataFrame(rows), threshold=0.75)
    # Z-score rises with max activation; the top decile (neurons 90..99) have MCS 0.9, the rest 0.3
    n = 100
    diag = pd.DataFrame(dict(method="GBA", neuron=range(n), max_activation=np.linspace(0.1, 1, n), z_score=np.linspace(1, 10, n),
                             frequency=0.01, mcs=[0.9 if i >= 90 else 0.3 for i in range(n)]))
    nv = real_gba.neuron_claim_values(diag)
    assert nv["spearman_z_logmax"] == pytest.approx(1.0) and nv["mcs_top_z"] == 0.9 and nv["mcs_rest"] == 0.3 and "converged" not in nv
    assert real_gba.neuron_claim_values(diag, half=diag)["converged"]
    assert not real_gba.neuron_claim_values(diag, half=diag.assign(mcs=0.5))["converged"]
    assert claims.evaluate(claims.CLAIMS["gba.real.neuron_diagnostics"], dict(nv, converged=True))[0] == "reproduces"
    with pytest.raises(ValueError, match="at least 10"):
        real_gba.neuron_claim_values(diag.assign(frequency=0.0))


def test_method_spec__tied_models_and_the_papers_groups():
    S = get_profile("quick", device="cpu").real_gba
    gba = real_gba.method_spec("GBA", "printed", S)
    assert gba.sae == "TiedSAE" and gba.label == "GBA (printed)" and len(gba.hooks) == 1
    assert dict(gba.sae_config)["output_scale_init"] == 1.0 and dict(real_gba.method_spec("GBA", "small a", S).sae_config)["output_scale_init"] == 0.01
    assert real_gba.method_spec("BA", 0.02, S).label == "BA p=0.02"
    assert real_gba.method_spec("TopK", 16, S).label == "Tied TopK K=16"
    assert real_gba.method_spec("L1", 0.1, S).label == "Tied L1 lambda=0.1"
    with pytest.raises(ValueError, match="family"):
        real_gba.method_spec("JumpReLU", 1, S)
    with pytest.raises(ValueError, match="reading"):
        real_gba.method_spec("GBA", "no such reading", S)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A tiny BERT (d = 16) and 640 tokens of its MLP output of block 1 (nothing downloaded)."""
    pytest.importorskip("transformers", reason="the real-network study needs transformers (the extra sae-theory[real])")
    from _helpers import tiny_activation_cache

    return tiny_activation_cache(tmp_path_factory.mktemp("real_gba"), "mlp_out")


@pytest.fixture
def profile(tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_THEORY_CACHE", str(tmp_path / "runs"))
    scale = RealGBAScale(model="tiny-bert", layer=1, place="mlp_out", fallback_model="", fallback_layer=1, tokens=640, eval_tokens=128,
                         expansion=4, steps=40, batch_size=32, log_every=2, buffer_steps=5, readings=("printed", "small a"),
                         ba_targets=(0.1,), topk_ks=(2, 8), l1_coefficients=(0.1, 0.01), consistency_seeds=2, consistency_topk=2,
                         consistency_l1=0.01, alphas=(0.5, 0.2))
    return dataclasses.replace(get_profile("quick", device="cpu"), real_gba=scale, seeds=(0, 1))


def test_study__every_reading_on_the_tiny_cache(tiny_cache, profile):
    S = profile.real_gba
    front = real_gba.frontier(profile, cache=tiny_cache, progress=False)
    assert len(front) == len(real_gba.runs(profile)) == 2 + 1 + 2 + 2 and set(front.family) == set(real_gba.FAMILIES)
    assert np.isfinite(front[["l2_loss", "fvu", "l0", "fraction_active", "fraction_pre"]].to_numpy(float)).all()
    tk = front[front.family == "TopK"]
    assert np.allclose(tk.l0, tk.value.astype(int)) and (tk.fraction_pre >= tk.fraction_active).all()
    # every model reads raw activations through its own unit-row normalisation
    run = real_gba.trained("GBA", "printed", profile, tiny_cache)
    assert run.model.input_norm["kind"] == "unit"
    assert real_gba.trained("GBA", "printed", profile, tiny_cache).cached  # a second reading trains nothing
    cons = real_gba.consistency(profile, cache=tiny_cache, progress=False)
    assert set(cons.method) == {"GBA", "TopK", "L1"} and set(cons.seed) == {0, 1} and cons.fraction.between(0, 1).all()
    assert set(cons.alpha) == set(S.alphas) and set(cons.selection) == {"max activation", "Z-score"}
    assert set(cons.step) == set(real_gba.readings_steps(S)) == {20, 40} and cons.median_mcs.between(-1, 1).all()
    assert {"point_settled", "l2_loss_half", "fraction_half"} <= set(front.columns)
    half = real_gba.neuron_diagnostics(profile, cache=tiny_cache, step=20)
    assert len(half) == 2 * S.expansion * tiny_cache.d and not half.max_activation.equals(
        real_gba.neuron_diagnostics(profile, cache=tiny_cache).max_activation)
    diag = real_gba.neuron_diagnostics(profile, cache=tiny_cache)
    assert len(diag) == 2 * S.expansion * tiny_cache.d and diag.mcs.between(-1, 1).all() and diag.frequency.between(0, 1).all()
    curves = real_gba.training_curves(profile, cache=tiny_cache)
    assert set(curves.method) == set(front.method) and (curves.groupby("method").step.max() == S.steps).all()
    with pytest.raises(ValueError, match="two seeds"):
        real_gba.consistency(dataclasses.replace(profile, seeds=(0,)), cache=tiny_cache)
