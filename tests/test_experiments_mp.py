"""Tests of sae_theory/experiments/mp.py (notebook 05, MP-SAE adaptive sparsity) at a tiny scale:
the frames' columns and grids, MP's error non-increasing in the inference k, the ReLU's L0 steered
to the training k, the ReLU/TopK inference codes, threshold mode's stopping rule and its tradeoff
against fixed k, the L1 controller, and plotting.adaptive_sparsity_figure."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sae_theory.experiments import mp
from sae_theory.models import ReLUSAE, TopKSAE
from sae_theory.models.base import TrainOutput
from sae_theory.profiles import MPScale, get_profile


TINY = MPScale(n=64, d=16, s=3, n_latents=64, k=4, steps=600, batch_size=64, n_samples=4000,
               theory_inputs=10, theory_steps=8, inference_k_max_multiple=3)


@pytest.fixture(scope="module")
def profile():
    return dataclasses.replace(get_profile("quick", device="cpu"), mp=TINY, seeds=(0,))


@pytest.fixture(scope="module")
def err(profile):
    return mp.adaptive_sparsity(profile, n_eval=1024, progress=False)


@pytest.fixture(scope="module")
def l0(profile):
    return mp.threshold_l0(profile, n_eval=256, progress=False)


@pytest.fixture(scope="module")
def tradeoff(profile, l0):
    return mp.threshold_tradeoff(profile, l0, n_eval=256, progress=False)


def test_adaptive_sparsity__columns_and_grid(err):
    for col in ("method", "seed", "train_k", "inference_k", "nmse", "fvu", "l0", "train_l0", "dead_fraction", "l1_coefficient", "lr"):
        assert col in err.columns, col
    assert set(err["method"]) == set(mp.METHODS)
    assert (err["train_k"] == TINY.k).all()
    for _, g in err.groupby("method"):
        assert sorted(g["inference_k"]) == list(range(1, TINY.inference_k_max_multiple * TINY.k + 1))
    assert np.isfinite(err[["nmse", "fvu", "l0"]].to_numpy()).all()
    assert (err["nmse"] >= 0).all()
    assert err.loc[err["method"] == "ReLU", "l1_coefficient"].gt(0).all()
    assert err.loc[err["method"] != "ReLU", "l1_coefficient"].isna().all()


def test_adaptive_sparsity__mp_error_non_increasing_in_k(err):
    g = err[err["method"] == "MP-SAE"].sort_values("inference_k")
    assert (np.diff(g["nmse"]) <= 1e-6).all(), g["nmse"].tolist()
    assert g["nmse"].iloc[-1] < 0.5 * g.loc[g["inference_k"] == TINY.k, "nmse"].iloc[0]


def test_adaptive_sparsity__l0_matched_and_bounded_by_k(err):
    first = err.groupby("method").first()
    assert first.loc["TopK", "train_l0"] == TINY.k
    assert first.loc["MP-SAE", "train_l0"] <= TINY.k
    assert abs(first.loc["ReLU", "train_l0"] - TINY.k) <= 0.15 * TINY.k, first["train_l0"]
    assert (err["l0"] <= err["inference_k"] + 1e-9).all()


def test_adaptive_sparsity__relu_flat_once_k_covers_its_support(err):
    g = err[err["method"] == "ReLU"].sort_values("inference_k")
    top = g.iloc[-1]
    assert top["l0"] == pytest.approx(top["train_l0"])  # the largest k keeps every ReLU code
    assert (np.diff(g["nmse"]) <= 1e-6).all()


def test_mp_prefix_codes__equal_encode_at_every_k(profile):
    sae, _ = mp.trained_sae("MP-SAE", profile, 0)
    x = mp._eval_set(TINY, 0, "cpu", torch.float32, n=300)
    for k, codes in enumerate(mp._mp_prefix_codes(sae, x, 10), 1):
        torch.testing.assert_close(codes, sae.encode(x, k=k), rtol=0, atol=0)


def test_inference_codes__relu_keeps_k_largest_and_topk_uses_encode_k(profile):
    x = mp._eval_set(TINY, 0, "cpu", torch.float32, n=200)
    relu, _ = mp.trained_sae("ReLU", profile, 0)
    full = relu.encode(x)
    for k in (1, 2, 5):
        codes = mp.inference_codes("ReLU", relu, x, k)
        assert ((codes != 0).sum(1) <= k).all()
        assert (codes[codes != 0] == full[codes != 0]).all()  # kept codes are unchanged
        kept_min = torch.where(codes > 0, codes, torch.inf).amin(1)
        dropped_max = torch.where((codes == 0) & (full > 0), full, 0).amax(1)
        assert (dropped_max <= kept_min).all()
    topk, _ = mp.trained_sae("TopK", profile, 0)
    torch.testing.assert_close(mp.inference_codes("TopK", topk, x, 7), topk.encode(x, k=7))
    with pytest.raises(ValueError, match="method"):
        mp.inference_codes("GBA", topk, x, 3)


def test_threshold_l0__stopping_rule_and_adaptivity(l0):
    for col in ("seed", "target", "target_nmse", "true_s", "train_s", "input", "l0", "steps", "residual_norm", "nmse", "capped", "cap"):
        assert col in l0.columns, col
    cap = TINY.inference_k_max_multiple * TINY.k
    assert (l0["cap"] == cap).all()
    assert (l0["l0"] <= l0["steps"]).all() and (l0["steps"] <= cap).all()
    reached = l0[~l0["capped"]]
    assert (reached["residual_norm"] < reached["target"] * (1 + 1e-4)).all()
    assert (l0.loc[l0["capped"], "steps"] == cap).all()
    np.testing.assert_allclose(l0["target_nmse"], l0["target"] ** 2)
    # for each input, a lower target never takes fewer steps
    steps = l0.pivot_table(index=["seed", "true_s", "input"], columns="target", values="steps")
    assert (np.diff(steps.to_numpy(), axis=1) <= 0).all()  # columns by increasing target
    # rows with more active features need more atoms on average
    mean = l0.groupby(["target", "true_s"])["l0"].mean().unstack()
    assert (np.diff(mean.to_numpy(), axis=1) > 0).all(), mean
    with pytest.raises(ValueError, match="targets"):
        mp.threshold_l0(dataclasses.replace(get_profile("quick", device="cpu"), mp=TINY, seeds=(0,)), targets=(0.0,), progress=False)


def test_threshold_tradeoff__fixed_k_curve_and_threshold_means(tradeoff, l0):
    tr = tradeoff
    assert list(tr.columns) == ["seed", "population", "mode", "k", "target", "l0", "nmse", "capped"]
    assert set(tr["population"]) == {"s=1", "s=3", "s=6", "mixed"}
    cap = TINY.inference_k_max_multiple * TINY.k
    for _, g in tr[tr["mode"] == "fixed k"].groupby("population"):
        g = g.sort_values("k")
        assert g["k"].tolist() == list(range(1, cap + 1))
        assert (np.diff(g["nmse"]) <= 1e-6).all()
        assert g["target"].isna().all() and (g["capped"] == 0).all()
    thr = tr[(tr["mode"] == "threshold") & (tr["population"] == "mixed")].set_index("target")
    want = l0.groupby("target")[["l0", "nmse", "capped"]].mean()
    np.testing.assert_allclose(thr.loc[want.index, ["l0", "nmse", "capped"]].to_numpy(), want.to_numpy())
    per_s = tr[(tr["mode"] == "threshold") & (tr["population"] == "s=3")].set_index("target")["l0"]
    np.testing.assert_allclose(per_s.sort_index(), l0[l0["true_s"] == 3].groupby("target")["l0"].mean().sort_index())


def test_adaptive_sparsity_figure__draws_with_and_without_tradeoff(err, l0, tradeoff):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sae_theory.plotting import adaptive_sparsity_figure

    for fig in (adaptive_sparsity_figure(err, l0, tradeoff), adaptive_sparsity_figure(err, l0)):
        assert len(fig.axes) == 3
        assert len(fig.axes[2].lines) >= 2
        plt.close(fig)


def _out(codes: torch.Tensor) -> TrainOutput:
    return TrainOutput(torch.zeros(()), codes, codes, codes)


def test_l1_controller__steers_coefficient_and_round_trips():
    sae = ReLUSAE(d=4, n_latents=8, l1_coefficient=0.1)
    c = mp.L1Controller(target_l0=2.0, coefficient=0.1, gain=0.1, log_every=1)
    dense, sparse = torch.ones(3, 8), torch.zeros(3, 8)
    c(sae, 1, _out(dense))  # L0 8 > 2: raise
    assert c.coefficient > 0.1 and float(sae.l1_coefficient) == pytest.approx(c.coefficient, rel=1e-6)
    up = c.coefficient
    c(sae, 2, _out(sparse))  # L0 0 < 2: lower
    assert c.coefficient < up
    assert c.history[0][:2] == (1, 8.0)
    other = mp.L1Controller(target_l0=2.0)
    other.load_state_dict(c.state_dict())
    assert other.coefficient == c.coefficient and other.history == c.history
    with pytest.raises(TypeError, match="l1_coefficient"):
        c(TopKSAE(d=4, n_latents=8, k=2), 3, _out(dense))
    with pytest.raises(ValueError):
        mp.L1Controller(target_l0=0.0)


def test_bad_method_raises(profile):
    with pytest.raises(ValueError, match="method"):
        mp.adaptive_sparsity(profile, methods=("MP-SAE", "JumpReLU"), progress=False)
    with pytest.raises(ValueError, match="method"):
        mp.trained_sae("JumpReLU", profile, 0)


def test_babel_study__every_method_and_the_truth_with_reference_values(profile, err):
    from sae_theory.metrics import babel

    df = mp.babel_study(profile, n_eval=128, progress=False)
    assert list(df.method) == ["truth", "MP-SAE", "TopK", "ReLU"] and set(df.seed) == {0}
    assert df[["babel_1", "babel_2", "babel_coactive", "coactive_mean_pair", "coactive_max_pair"]].notna().all().all()
    assert (df.coactive_mean_pair <= df.coactive_max_pair + 1e-12).all() and (df.coactive_max_pair <= df.babel_coactive + 1e-12).all()
    assert ((0 <= df.babel_1) & (df.babel_1 <= 1 + 1e-12) & (df.babel_1 <= df.babel_2)).all()
    truth = df[df.method == "truth"].iloc[0]
    V = mp._feature_model(TINY, 0, "cpu", torch.float32).features
    assert truth.babel_1 == pytest.approx(babel(V, 1)) and truth.l0 == TINY.s  # exactly s active per row
    assert df[df.method == "MP-SAE"].l0.iloc[0] <= TINY.k


def test_recovery_claim_values__means_at_the_end_and_convergence_from_half_way():
    import pandas as pd

    from sae_theory import claims
    from sae_theory.experiments import mp

    rows = [dict(method=m, seed=s, step=st, fvu=f, nmse=f, l0=8.0, frr_08=1.0, frr_09=r, mcc=c)
            for m, f, r, c in (("MP-SAE", 0.02, 1.0, 0.998), ("TopK", 0.13, 0.99, 0.99)) for s in (0, 1) for st in (10, 20)]
    rec = pd.DataFrame(rows)
    v = mp.recovery_claim_values(rec)
    assert v == dict(mp_fvu=0.02, topk_fvu=0.13, mp_mcc=0.998, topk_mcc=0.99, mp_frr_09=1.0, topk_frr_09=0.99, converged=True)
    # MP-SAE recovers as well: the claim is refuted on these (converged) values
    assert claims.evaluate(claims.CLAIMS["mp.synth.reconstruction_not_recovery"], v)[0] == "does not reproduce"
    # TopK's MCC still climbing from half-way: not converged, so no refutation
    moving = rec.assign(mcc=[0.7 if (m == "TopK" and st == 10) else c for m, st, c in zip(rec.method, rec.step, rec.mcc)])
    mv = mp.recovery_claim_values(moving)
    assert not mv["converged"] and claims.evaluate(claims.CLAIMS["mp.synth.reconstruction_not_recovery"], mv)[0] == "not converged"
    # MP-SAE reconstructs better and recovers clearly fewer features: reproduces
    worse = rec.assign(mcc=[0.9 if m == "MP-SAE" else c for m, c in zip(rec.method, rec.mcc)])
    assert claims.evaluate(claims.CLAIMS["mp.synth.reconstruction_not_recovery"], mp.recovery_claim_values(worse))[0] == "reproduces"
    with pytest.raises(ValueError, match="TopK"):
        mp.recovery_claim_values(rec[rec.method == "MP-SAE"])


def test_superposition_recovery__zipf_data_at_each_ratio_both_readings(profile):
    from sae_theory.metrics import decoder_mcc

    P = dataclasses.replace(profile, mp=dataclasses.replace(TINY, superposition_ratios=(2, 4), steps=200, zipf_max_frequency=0.5))
    df = mp.superposition_recovery(P, progress=False)
    assert list(df.columns) == ["method", "ratio", "n", "width", "n_latents", "k", "seed", "step", "fvu", "nmse", "l0", "frr_08", "frr_09",
                                "mcc", "mcc_matched"]
    assert len(df) == 2 * 2 * 2 * 2 and set(df.n) == {32, 64} and set(df.step) == {100, 200} and set(df.width) == {1.0, 0.25}
    assert df[["fvu", "nmse", "mcc", "mcc_matched", "frr_09"]].notna().all().all() and (df.mcc.between(0, 1 + 1e-12)).all()
    assert (df.n_latents == (df.n * df.width).round()).all()
    # as wide as the truth: k = round(mean support) = 4 and the two MCC readings agree; narrower: k is the true mean L0 of
    # the features the width covers (below 4), MCC over all n true features <= M / n, over the matched pairs above it
    wide, narrow = df[df.width == 1.0], df[df.width == 0.25]
    assert (wide.k == 4).all() and (wide.mcc == wide.mcc_matched).all()
    assert (narrow.k < 4).all() and (narrow.mcc <= 0.25 + 1e-12).all() and (narrow.mcc_matched > narrow.mcc).all()
    # MP-SAE takes k pursuit steps: never more than k atoms
    assert (df[df.method == "MP-SAE"].l0 <= df[df.method == "MP-SAE"].k).all()
    # the data: Zipf frequencies whose largest is the scale's, mean support as asked, magnitudes in [0.5, 1.5]
    model = mp._zipf_feature_model(P.mp, 64, 0, "cpu", torch.float32)
    f = model.support.frequencies(64)
    assert narrow[narrow.n == 64].k.iloc[0] == round(float(f.sort(descending=True).values[:16].sum()))
    assert float(f.max()) == pytest.approx(0.5, rel=1e-6) and float(f.sum()) == pytest.approx(TINY.zipf_mean_support, rel=1e-6)
    _, H = model.sample(2000, torch.Generator().manual_seed(0), h_layout="sparse")
    vals = H.to_dense()[H.to_dense() != 0]
    assert vals.min() >= 0.5 and vals.max() <= 1.5
    # a rerun reads the same cached runs: identical frame; the MCC of the truth itself is 1
    assert df.equals(mp.superposition_recovery(P, progress=False))
    assert decoder_mcc(model.features.double(), model.features.double()) == pytest.approx(1.0)


def test_noisy_superposition_recovery__noise_levels_at_the_narrow_width_and_the_clean_runs_shared(profile, tmp_path, monkeypatch):
    monkeypatch.setenv("SAE_THEORY_CACHE", str(tmp_path))  # a fresh run cache: the clean runs are trained once, here
    P = dataclasses.replace(profile, mp=dataclasses.replace(TINY, superposition_ratios=(2, 4), steps=200, zipf_max_frequency=0.5,
                                                              superposition_noise=(0.1, 0.3)))
    sup = mp.superposition_recovery(P, progress=False)
    trained = sorted(p.name for p in tmp_path.iterdir())
    df = mp.noisy_superposition_recovery(P, progress=False)
    assert list(df.columns) == list(sup.columns) + ["noise", "fvu_signal"]
    assert set(df.width) == {0.25} and set(df.noise) == {0.0, 0.1, 0.3} and len(df) == 3 * 2 * 2 * 2
    # noise 0: the narrow runs of superposition_recovery, read on the same held-out rows (same numbers), and the
    # clean rows are the input, so the two FVU readings agree
    clean = df[df.noise == 0].drop(columns=["noise", "fvu_signal"]).reset_index(drop=True)
    assert clean.equals(sup[sup.width == 0.25].reset_index(drop=True))
    assert (df[df.noise == 0].fvu == df[df.noise == 0].fvu_signal).all()
    # the noisy runs are new cache entries (their data key names the noise); the clean ones were found in the cache
    new = set(p.name for p in tmp_path.iterdir()) - set(trained)
    assert len(new) == 2 * 2 * 2  # 2 levels x 2 ratios x 2 methods, one seed
    noisy = df[df.noise > 0]
    assert (noisy.fvu != noisy.fvu_signal).all() and noisy[["fvu", "fvu_signal", "mcc_matched"]].notna().all().all()
    # the training rows carry the noise too: same seeds and initialisation, so only the data can move the dictionary
    key = ["method", "ratio", "seed", "step"]
    for nu in (0.1, 0.3):
        at = df[df.noise == nu].set_index(key).mcc_matched
        assert (at != df[df.noise == 0].set_index(key).mcc_matched.loc[at.index]).all(), nu
    # at the end of training the noisier input is harder to reconstruct, for both methods at both ratios
    end = df[df.step == 200].groupby(["method", "ratio", "noise"]).fvu.mean().unstack("noise")
    assert (end[0.3] > end[0.0]).all(), end
    # a rerun: the same frame from the cache
    assert df.equals(mp.noisy_superposition_recovery(P, progress=False))


def test_with_noise__covariance_nu2_over_d_and_zero_noise_is_the_input():
    X = torch.zeros(20_000, 16, dtype=torch.float64)
    Y = mp._with_noise(X, 0.3, torch.Generator().manual_seed(0))
    # E ||eps||^2 = nu^2 and the coordinates' variance nu^2 / d; 20,000 rows: relative errors ~ 1 / sqrt(20,000 x 16) and 1 / sqrt(20,000)
    assert float((Y ** 2).sum(1).mean()) == pytest.approx(0.09, rel=0.01)
    assert float(Y.var(0).max()) == pytest.approx(0.09 / 16, rel=0.05) and float(Y.mean(0).abs().max()) < 5 * (0.09 / 16 / 20_000) ** 0.5
    assert mp._with_noise(X, 0.0, torch.Generator().manual_seed(0)) is X


@pytest.mark.parametrize("levels", [(), (0.0,), (-0.1,), (float("nan"),), (0.1, float("inf")), (True,)])
def test_noisy_superposition_recovery__refuses_levels_that_are_not_positive_numbers(profile, levels):
    P = dataclasses.replace(profile, mp=dataclasses.replace(TINY, superposition_noise=levels))
    with pytest.raises(ValueError, match="superposition_noise"):
        mp.noisy_superposition_recovery(P, progress=False)


def test_noisy_superposition_claim_values__per_level_and_ratio_and_the_verdict():
    import pandas as pd

    from sae_theory import claims

    def frame(mp_mcc):  # MP-SAE reconstructs better everywhere; its matched MCC per (noise, ratio) as given; TopK's 0.8
        return pd.DataFrame([dict(method=m, ratio=r, n=16 * r, width=0.25, seed=s, step=st, noise=nu,
                                  fvu=0.2 if m == "MP-SAE" else 0.3, fvu_signal=0.25 if m == "MP-SAE" else 0.3, nmse=0.1, l0=4.0,
                                  frr_08=1.0, frr_09=0.9, mcc=0.2, mcc_matched=mp_mcc.get((nu, r), 0.7) if m == "MP-SAE" else 0.8)
                             for nu in (0.0, 0.1, 0.3) for r in (4, 16) for m in ("MP-SAE", "TopK") for s in (0, 1) for st in (10, 20)])

    claim = claims.CLAIMS["mp.synth.noisy_superposition"]
    v = mp.noisy_superposition_claim_values(frame({}))
    assert v["cells"] == 4 and v["cells_holding"] == 4 and v["noise_levels"] == 2 and v["width"] == 0.25
    assert v["ratios"] == 2 and v["clean_holding"] == 2 and v["converged"] is True
    assert v["mp_fvu_nu0.1_r4"] == 0.2 and v["topk_mcc_nu0.3_r16"] == 0.8 and v["mp_fvu_signal_nu0.3_r4"] == 0.25
    status, reason = claims.evaluate(claim, v)
    assert status == "reproduces" and "noise 0.1, n/d = 4: FVU MP-SAE 0.200, TopK 0.300 (against the clean rows 0.250, 0.300)" in reason
    assert "4 of 4" in reason and "without noise: at 2 of 2" in reason
    assert v["mp_fvu_max_nu0.1_r4"] == 0.2 and v["topk_fvu_min_nu0.1_r4"] == 0.3 and v["seeds_fvu_below_nu0.1_r4"] == 2 == v["seeds_nu0.1_r4"]
    assert "overlap" not in reason
    spread = frame({})
    spread.loc[(spread.method == "MP-SAE") & (spread.seed == 1) & (spread.noise == 0.3) & (spread.ratio == 16), "fvu"] = 0.35
    sv = mp.noisy_superposition_claim_values(spread)  # MP-SAE's mean 0.275 < 0.3, its seed 1 above TopK's 0.3
    assert sv["cells_holding"] == 4 and sv["seeds_fvu_below_nu0.3_r16"] == 1
    assert ("the seeds' FVU overlap at noise 0.3, n/d = 16" in claims.evaluate(claim, sv)[1]
            and "below TopK's on 1 of 2 seeds" in claims.evaluate(claim, sv)[1])
    assert claims.evaluate(claim, mp.noisy_superposition_claim_values(frame({(0.3, 4): 0.79, (0.3, 16): 0.79})))[0] == "partly"
    nowhere = {(nu, r): 0.79 for nu in (0.1, 0.3) for r in (4, 16)}  # within 0.02 of TopK at every noisy cell
    assert claims.evaluate(claim, mp.noisy_superposition_claim_values(frame(nowhere)))[0] == "does not reproduce"
    moving = frame(nowhere)
    moving.loc[(moving.method == "TopK") & (moving.step == 10) & (moving.noise == 0.1), "mcc_matched"] = 0.5
    mv = mp.noisy_superposition_claim_values(moving)
    assert mv["converged"] is False and claims.evaluate(claim, mv)[0] == "not converged"
    # noise 0 does not enter the rule or the convergence: a clean cell still moving changes neither
    still = frame({})
    still.loc[(still.noise == 0) & (still.step == 10), "mcc_matched"] = 0.1
    assert mp.noisy_superposition_claim_values(still)["converged"] is True
    with pytest.raises(ValueError, match="noise"):
        mp.noisy_superposition_claim_values(frame({}).drop(columns="noise"))
    with pytest.raises(ValueError, match="no noise level"):
        mp.noisy_superposition_claim_values(frame({}).query("noise == 0"))
    with pytest.raises(ValueError, match="widths"):
        mp.noisy_superposition_claim_values(pd.concat([frame({}), frame({}).assign(width=1.0)]))


def test_superposition_claim_values__per_ratio_and_the_verdict_as_a_function_of_it():
    import pandas as pd

    from sae_theory import claims

    def frame(mp_mcc):  # MP-SAE reconstructs better everywhere; its MCC per ratio as given
        return pd.DataFrame([dict(method=m, ratio=r, n=16 * r, seed=s, step=st, fvu=0.02 if m == "MP-SAE" else 0.1, nmse=0.1, l0=4.0,
                                  frr_08=1.0, frr_09=0.9, mcc=mp_mcc[r] if m == "MP-SAE" else 0.95)
                             for r in (4, 16) for m in ("MP-SAE", "TopK") for s in (0, 1) for st in (10, 20)])

    claim = claims.CLAIMS["mp.synth.zipf_superposition"]
    v = mp.superposition_claim_values(frame({4: 0.97, 16: 0.90}))
    assert v == dict(ratios=2, ratios_holding=1, mp_fvu=0.02, topk_fvu=0.1, mp_mcc=0.90, topk_mcc=0.95,
                     mp_fvu_r4=0.02, topk_fvu_r4=0.1, mp_mcc_r4=0.97, topk_mcc_r4=0.95,
                     mp_fvu_r16=0.02, topk_fvu_r16=0.1, mp_mcc_r16=0.90, topk_mcc_r16=0.95, converged=True)
    status, reason = claims.evaluate(claim, v)
    assert status == "partly" and "n/d = 4: FVU MP-SAE 0.020" in reason and "1 of 2" in reason  # holds at n/d = 16 only
    assert claims.evaluate(claim, mp.superposition_claim_values(frame({4: 0.90, 16: 0.90})))[0] == "reproduces"
    assert claims.evaluate(claim, mp.superposition_claim_values(frame({4: 0.97, 16: 0.96})))[0] == "does not reproduce"
    moving = frame({4: 0.97, 16: 0.96})
    moving.loc[(moving.method == "TopK") & (moving.step == 10), "mcc"] = 0.5  # TopK still climbing: no refutation
    mv = mp.superposition_claim_values(moving)
    assert mv["converged"] is False and claims.evaluate(claim, mv)[0] == "not converged"
    with pytest.raises(ValueError, match="empty"):
        mp.superposition_claim_values(moving.iloc[:0])

    # with SynthSAEBench's narrow width: judged there (MCC over the matched pairs), the wide SAEs beside it
    def widths(mp_matched, wide_mp=0.97):
        wide = frame({4: wide_mp, 16: wide_mp}).assign(width=1.0)
        wide["mcc_matched"] = wide.mcc
        narrow = frame({4: 0.5, 16: 0.5}).assign(width=0.25, mcc_matched=[mp_matched if m == "MP-SAE" else 0.8 for m in wide.method])
        return pd.concat([wide, narrow], ignore_index=True)

    both = mp.superposition_claim_values(widths(0.7))
    assert both["narrow_width"] == 0.25 and both["narrow_ratios_holding"] == 2 and both["ratios_holding"] == 0
    assert both["mp_mcc_n4"] == 0.7 and both["topk_mcc_n4"] == 0.8 and both["mp_mcc_r4"] == 0.97  # matched MCC when narrow
    status, reason = claims.evaluate(claim, both)
    assert status == "reproduces" and "SynthSAEBench's setting" in reason and "as wide as the truth" in reason
    assert both["mp_fvu_max_n4"] == 0.02 and both["topk_fvu_min_n4"] == 0.1 and "overlap" not in reason
    overlapping = widths(0.7)
    overlapping.loc[(overlapping.width == 0.25) & (overlapping.method == "MP-SAE") & (overlapping.seed == 1) & (overlapping.ratio == 4), "fvu"] = 0.2
    ov = mp.superposition_claim_values(overlapping)  # MP-SAE's mean FVU at n/d = 4 is 0.11 > 0.1 now: holds at 16 only
    assert ov["mp_fvu_max_n4"] == 0.2 and ov["narrow_ratios_holding"] == 1
    assert "the seeds' FVU overlap at n/d = 4" in claims.evaluate(claim, ov)[1]
    assert claims.evaluate(claim, mp.superposition_claim_values(widths(0.79)))[0] == "does not reproduce"  # within 0.02 at both
    assert claims.evaluate(claim, mp.superposition_claim_values(widths(0.79, wide_mp=0.90)))[0] == "partly"  # holds wide only
    with pytest.raises(ValueError, match="width 1"):
        mp.superposition_claim_values(widths(0.7).query("width < 1"))


def test_threshold_l0__reads_the_runs_half_way_when_asked(profile, l0):
    end = mp.threshold_l0(profile, n_eval=256, step=TINY.steps, progress=False)
    assert end.equals(l0)  # the last step is the trained model itself
    half = mp.threshold_l0(profile, n_eval=256, step=TINY.steps // 2, progress=False)
    assert list(half.columns) == list(l0.columns) and len(half) == len(l0)
    reached = half[~half["capped"]]
    assert (reached["residual_norm"] < reached["target"] * (1 + 1e-4)).all()
    with pytest.raises(KeyError, match="snapshot"):
        mp.threshold_l0(profile, n_eval=16, step=TINY.steps // 3, progress=False)
