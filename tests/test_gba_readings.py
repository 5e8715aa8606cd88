"""Tests of the deployed-GBA readings study, sae_theory/experiments/gba_readings.py: the Zipf
exponent by hand, the readings' specs, and the tidy table of a tiny run."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from _helpers import assert_close
from sae_theory.experiments import deployed_readings
from sae_theory.experiments.gba import REGIMES
from sae_theory.experiments.gba_readings import (READINGS, frontier_ratios, reading_spec, readings_summary, training_rows, zipf_exponent,
                                                 zipf_model)
from sae_theory.profiles import GBAReadingsScale, get_profile


def test_zipf_exponent__hand_case():
    # n = 2, mean support 1, f_1 = 0.75: 1 / (1 + 2^-a) = 0.75 -> 2^-a = 1/3 -> a = log2(3)
    assert_close(zipf_exponent(2, 1.0, 0.75), math.log2(3))


def test_zipf_model__frequencies_have_the_asked_maximum_and_mean_support():
    scale = get_profile("quick", device="cpu").gba_readings
    model, key = zipf_model(scale)
    f = model.frequencies
    assert_close(f.max(), scale.zipf_max_frequency)
    assert_close(f.sum(), scale.zipf_mean_support)
    assert (model.n, model.d) == (scale.zipf_n, scale.zipf_d) and key["exponent"] > 0


@pytest.mark.parametrize("args, message", [((1, 1.0, 0.5), r"n must be >= 2"),
                                           ((4, 2.0, 0.4), r"max_frequency must lie in \(mean_support / n = 0\.5, 1\]"),
                                           ((4, 1.0, 1.5), r"max_frequency must lie in"),
                                           ((4, -1.0, 0.5), r"mean_support must be a finite number > 0")])
def test_zipf_exponent__bad_inputs_raise(args, message):
    with pytest.raises(ValueError, match=message):
        zipf_exponent(*args)


def test_training_rows__do_not_depend_on_what_was_drawn_before():
    model, _ = zipf_model(get_profile("quick", device="cpu").gba_readings)
    first = training_rows(model, 300)
    model.sample(50)  # another run's draw from the same stream
    assert torch.equal(training_rows(model, 300), first)


def test_reading_spec__printed_is_the_deployed_regime_with_algorithm_2_as_printed():
    spec = reading_spec("printed", 256)
    D = REGIMES["deployed"]
    cfg = dict(spec.sae_config)
    assert (cfg["output_scale_init"], cfg["train_output_scale"], cfg["train_b_dec"]) == (D.output_scale, True, True)
    assert dict(spec.train) == dict(lr=D.lr, optimizer=D.optimizer, input_norm="unit")
    gba = dict(spec.hooks[0].config)
    assert (gba["bias_init"], gba["raise_below_target"], gba["buffer_size"]) == ("zero", False, 2560)


def test_reading_spec__each_reading_sets_its_options():
    for name, R in READINGS.items():
        spec = reading_spec(name, 128)
        gba = dict(spec.hooks[0].config)
        assert dict(spec.sae_config)["output_scale_init"] == R.output_scale_init
        assert (gba["bias_init"], gba["raise_below_target"]) == (R.bias_init, R.raise_below_target)


def test_reading_spec__unknown_reading_raises():
    with pytest.raises(ValueError, match="unknown reading 'tiny a'"):
        reading_spec("tiny a", 256)


def _tiny_profile(**changes):
    P = get_profile("quick", device="cpu")
    scale = GBAReadingsScale(readings=("printed", "small a + target init"), matched=("small a + target init",), n_latents=32,
                             steps=20, batch_size=64, n_samples=2_000, log_every=2, n_seeds=1, zipf_n=32, zipf_d=16,
                             zipf_mean_support=2.0, zipf_max_frequency=0.3, eval_samples=500)
    return dataclasses.replace(P, gba_readings=dataclasses.replace(scale, **changes))


def test_deployed_readings__tidy_table_with_topk_at_the_matched_l0():
    torch.set_num_threads(1)
    df = deployed_readings(_tiny_profile(), progress=False)
    final = df[df.final]
    # 2 data sets x (2 readings + TopK untied and tied at the matched reading's L0)
    assert len(final) == 8
    assert set(final.data) == {"toy", "zipf"} and set(final.method) == {"GBA", "TopK", "Tied TopK"}
    assert not final[["l0", "fvu", "frr_08", "frr_09", "loss"]].isna().any().any()
    for data in ("toy", "zipf"):
        gba = final[(final.data == data) & (final.method == "GBA") & (final.reading == "small a + target init")]
        for method in ("TopK", "Tied TopK"):
            topk = final[(final.data == data) & (final.method == method)]
            assert len(topk) == 1 and topk.reading.iloc[0] == "small a + target init"
            assert topk.k.iloc[0] == max(1, round(gba.l0.iloc[0]))
            assert topk.l0.iloc[0] <= topk.k.iloc[0]  # TopK never exceeds its K
    curve = df[~df.final]
    assert len(curve) == 8 * 10  # 20 steps logged every 2
    assert curve.fvu.isna().all() and not curve.loss.isna().any()
    assert ((final.frr_09 <= final.frr_08) & (final.frr_08 <= 1)).all()


def test_deployed_readings__a_run_does_not_depend_on_the_runs_before_it(monkeypatch):
    monkeypatch.setenv("SAE_THEORY_CACHE", "off")  # train both times: a cached run would hide the dependence
    one = deployed_readings(_tiny_profile(readings=("small a + target init",)), progress=False)
    two = deployed_readings(_tiny_profile(readings=("printed", "small a + target init")), progress=False)
    cols = ["data", "method", "l0", "fvu", "frr_08", "frr_09", "loss"]
    pick = lambda df: df[df.final & (df.reading == "small a + target init")][cols].reset_index(drop=True)  # noqa: E731
    assert pick(one).equals(pick(two))


def test_deployed_readings__unknown_or_unmatched_readings_raise():
    with pytest.raises(ValueError, match="unknown readings"):
        deployed_readings(_tiny_profile(readings=("printed", "bogus"), matched=()), progress=False)
    with pytest.raises(ValueError, match="must be among its readings"):
        deployed_readings(_tiny_profile(readings=("printed",), matched=("small a",)), progress=False)


def _finals(rows):
    """Final rows of deployed_readings from (data, reading, method, k, seed, fvu, l0, settled) tuples."""
    return pd.DataFrame([dict(data=d, reading=r, method=m, k=k, seed=s, fvu=f, l0=l, settled=st, frr_08=0.5, frr_09=0.25, final=True)
                         for d, r, m, k, s, f, l, st in rows])


def test_readings_summary_and_frontier_ratios__means_over_seeds_and_the_ratio_seed_by_seed():
    dr = _finals([
        ("zipf", "small a", "GBA", 0, 0, 0.12, 6.2, True), ("zipf", "small a", "TopK", 6, 0, 0.08, 6.0, True),
        ("zipf", "small a", "Tied TopK", 6, 0, 0.10, 6.0, True),
        ("zipf", "small a", "GBA", 0, 1, 0.10, 6.6, False), ("zipf", "small a", "TopK", 7, 1, 0.08, 7.0, True),
        ("zipf", "small a", "Tied TopK", 7, 1, 0.10, 7.0, True),
        ("zipf", "printed", "GBA", 0, 0, 0.30, 15.0, True), ("zipf", "printed", "GBA", 0, 1, 0.20, 17.0, True),  # not matched
        ("toy", "small a", "GBA", 0, 0, 0.50, 9.0, True),
    ])
    summary = readings_summary(dr)
    row = summary.loc[("zipf", "small a", "GBA")]
    assert row.fvu == pytest.approx(0.11) and row.l0 == pytest.approx(6.4) and not row.settled and row.n_seeds == 2
    topk = summary.loc[("zipf", "small a", "TopK")]
    assert (topk.k_min, topk.k_max) == (6, 7)
    assert summary.loc[("toy", "small a", "GBA")].n_seeds == 1
    ratios = frontier_ratios(dr, "zipf")
    assert list(ratios.index) == ["small a"]  # only the readings with a matched TopK
    r = ratios.loc["small a"]
    assert r.ratio_tied == pytest.approx(1.1) and r.ratio_untied == pytest.approx(0.11 / 0.08)
    assert (r.ratio_tied_min, r.ratio_tied_max) == (pytest.approx(1.0), pytest.approx(1.2))  # 0.10 / 0.10 and 0.12 / 0.10
    assert r.gba_l0 == pytest.approx(6.4) and r.n_seeds == 2 and not r.settled


def test_frontier_ratios__a_perfect_topk_and_missing_methods():
    dr = _finals([("zipf", "a", "GBA", 0, 0, 0.0, 3.0, True), ("zipf", "a", "TopK", 3, 0, 0.0, 3.0, True), ("zipf", "a", "Tied TopK", 3, 0, 0.0, 3.0, True),
                  ("zipf", "b", "GBA", 0, 0, 0.1, 3.0, True), ("zipf", "b", "TopK", 3, 0, 0.0, 3.0, True), ("zipf", "b", "Tied TopK", 3, 0, 0.0, 3.0, True)])
    r = frontier_ratios(dr)
    assert r.ratio_tied["a"] == 1.0 and r.ratio_tied["b"] == float("inf") and r.ratio_tied_max["b"] == float("inf")
    with pytest.raises(ValueError, match="no final rows for data 'toy'"):
        frontier_ratios(dr, "toy")
    with pytest.raises(ValueError, match=r"lack the methods \['Tied TopK'\]"):
        frontier_ratios(dr[dr.method != "Tied TopK"])
    with pytest.raises(ValueError, match="no final rows"):
        readings_summary(dr.assign(final=False))
