"""Tests of the hierarchy and cross-paper experiment functions at a tiny scale (the science is in
notebooks 06 and 07): the DataFrame contracts, the method labels, the paper's Table 1, the
matching-based metrics of a fit on a hand-made case, argument checks."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from sae_theory import experiments
from sae_theory.data.hierarchical import Magnitudes
from sae_theory.experiments import hierarchical as hx
from sae_theory.profiles import get_profile


LABELS = ("MP-SAE", "ReLU", "TopK", "BatchTopK", "JumpReLU", "Matryoshka", "GBA")


@pytest.fixture(scope="module")
def tiny():
    P = get_profile("quick", device="cpu")
    H = dataclasses.replace(P.hierarchy, steps=40, rhos=(0.0, 0.6), seeds=(0,), absorption_cells=((0.5, 1 / 40), (1.0, 1 / 4)),
                            absorption_seeds=(0,), eval_samples=300, fig4_seeds=())
    R = dataclasses.replace(P.resonance, steps=20, n_samples=4000)
    return dataclasses.replace(P, hierarchy=H, resonance=R, seeds=(0,))


def test_methods_use_exactly_the_issue_labels():
    assert hx.METHODS == LABELS


def test_hierarchy__one_row_per_method_rho_seed_with_the_metrics(tiny):
    df = experiments.hierarchy(tiny, progress=False)
    assert len(df) == len(LABELS) * 2
    assert set(df.method) == set(LABELS) and set(df.rho) == {0.0, 0.6} and set(df.seed) == {0}
    for col in ("method", "rho", "seed", "flat_mse", "hierarchical_mse", "absorption", "children_recovered", "support_accuracy",
                "l0", "fvu", "babel_1", "babel_coactive", "coactive_mean_pair", "coactive_max_pair", "effective_rank"):
        assert col in df.columns
    assert df[["flat_mse", "hierarchical_mse", "l0", "fvu", "babel_1"]].notna().all().all()
    assert (df.hierarchical_mse >= 0).all() and (df.children_recovered.between(0, 9)).all()
    # the run is cached on disk: a second fit loads the same dictionary and history, bit for bit
    first = hx.fit("BatchTopK", 0.0, tiny, 0)
    again = hx.fit("BatchTopK", 0.0, tiny, 0)
    assert torch.equal(first.dictionary, again.dictionary) and torch.equal(first.codes, again.codes)
    assert first.history == again.history and len(first.history) > 0 and first.history[-1]["step"] == tiny.hierarchy.steps


def test_hierarchy__fig4_seeds_when_set_else_seeds(tiny):
    # quick reads Fig 4 over more seeds than its other hierarchy studies (profiles.HierarchyScale.fig4_seeds)
    assert get_profile("quick").hierarchy.fig4_seeds == (0, 1, 2) and get_profile("full").hierarchy.fig4_seeds == ()
    P = dataclasses.replace(tiny, hierarchy=dataclasses.replace(tiny.hierarchy, seeds=(0,), fig4_seeds=(0, 1)))
    assert set(experiments.hierarchy(P, methods=("ReLU",), rhos=(0.0,), progress=False).seed) == {0, 1}
    P = dataclasses.replace(tiny, hierarchy=dataclasses.replace(tiny.hierarchy, seeds=(1,), fig4_seeds=()))
    assert set(experiments.hierarchy(P, methods=("ReLU",), rhos=(0.0,), progress=False).seed) == {1}
    # an explicit seeds= wins over both
    assert set(experiments.hierarchy(P, methods=("ReLU",), rhos=(0.0,), seeds=(2,), progress=False).seed) == {2}


def test_training_curves__history_of_every_run(tiny):
    curves = hx.training_curves(tiny, methods=("MP-SAE", hx.MP_UNIT_NORM), rhos=(0.0,), progress=False)
    assert set(curves.method) == {"MP-SAE", hx.MP_UNIT_NORM} and set(curves.columns) >= {"step", "loss", "l0", "lr"}
    assert (curves.groupby("method").step.max() == tiny.hierarchy.steps).all()


def test_mp_sae_specs__official_toy_does_not_renormalise(tiny):
    specs = hx.method_specs(tiny.hierarchy)
    assert dict(specs["MP-SAE"].sae_config)["unit_norm_decoder"] is False
    assert dict(specs[hx.MP_UNIT_NORM].sae_config)["unit_norm_decoder"] is True


@pytest.mark.slow
def test_mp_sae__recovers_the_rho0_tree_exactly_with_the_toy_settings():
    # the official toy's settings (no renormalisation, threshold 0.05, stop on repeat), 3,000 steps, seed 0
    P = get_profile("quick", device="cpu")
    P = dataclasses.replace(P, hierarchy=dataclasses.replace(P.hierarchy, steps=3000, eval_samples=1000))
    f = hx.fit("MP-SAE", 0.0, P, 0)
    assert f.support_accuracy() > 0.99 and abs(f.l0 - hx.TARGET_L0) < 0.05 and float(f.matched_cosines().min()) > 0.99


def test_absorption__rows_merge_the_papers_values(tiny):
    df = experiments.absorption(tiny, methods=("MP-SAE", "ReLU"), progress=False)
    assert set(df.columns) >= {"method", "child_mean", "child_std", "absorption", "paper_absorption"}
    assert len(df) == 2 * 2
    paper = df.set_index(["method", "child_mean"]).paper_absorption
    assert paper["MP-SAE", 0.5] == pytest.approx(6.2e-2) and paper["ReLU", 1.0] == pytest.approx(0.47)
    table = hx.absorption_table(df)
    assert set(table.columns) >= {"absorption", "runs_recovered", "paper_absorption"} and len(table) == 4


def test_paper_table1_has_the_printed_cells():
    t = hx.PAPER_TABLE1
    assert len(t) == 4 * 9  # 12 cells per method, 3 marked "-"
    cell = t.set_index(["method", "child_std", "child_mean"]).paper_absorption
    assert cell["MP-SAE", 1 / 400, 0.1] == pytest.approx(3.6e-3)
    assert cell["BatchTopK", 1 / 4, 1.0] == pytest.approx(0.42)
    assert math.isnan(cell["Matryoshka", 1 / 40, 0.1]) and math.isnan(cell["ReLU", 1 / 400, 0.1])
    assert ("MP-SAE", 1 / 8, 0.1) not in cell.index  # "-": not run


def _fit(codes, true_codes, matched, dictionary, true_dictionary):
    return hx.HierarchyFit(method="x", rho=0.0, magnitudes=Magnitudes(), seed=0, true_dictionary=true_dictionary,
                           levels=(0, 0, 1), parent_of={2: 0}, dictionary=dictionary, matched=torch.tensor(matched),
                           codes=codes, true_codes=true_codes, fvu=0.0, seconds=0.0)


def test_fit_metrics_by_hand():
    T = torch.eye(3, dtype=torch.float64)
    # learned latents: 0 <- concept 1, 1 <- concept 2 (a child absorbing its parent 0), 2 <- concept 0, 3 unmatched
    D = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 1.0], [3.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    Z = torch.tensor([[1.0, 0, 0], [1.0, 0, 1.0], [0, 1.0, 0]], dtype=torch.float64)  # true codes (N=3, n=3)
    A = torch.tensor([[0, 0, 2.0, 0], [0, 1.0, 2.0, 0.5], [1.0, 0, 0, 0]], dtype=torch.float64)
    f = _fit(A, Z, [2, 0, 1], D, T)
    assert torch.allclose(f.matched_cosines(), torch.tensor([1.0, 1.0, 1 / math.sqrt(2)], dtype=torch.float64))
    # row 0 exact; row 1 uses the unmatched latent 3; row 2 exact -> 2/3
    assert f.support_accuracy() == pytest.approx(2 / 3)
    assert f.l0 == pytest.approx((1 + 3 + 1) / 3)
    assert f.absorption_scores()[2] == pytest.approx(1 / math.sqrt(2))  # cos([1, 0, 1], parent e0)


def test_hierarchy_ranking__against_the_toy_codes_baselines_and_against_all_by_the_median():
    rows = [dict(method=m, rho=r, seed=s, hierarchical_mse=v + 0.001 * s)
            for r, vals in {0.0: dict(MP=0.0, ReLU=0.03, Matryoshka=0.04, BatchTopK=0.02, GBA=0.01),
                            0.6: dict(MP=0.04, ReLU=0.02, Matryoshka=0.05, BatchTopK=0.06, GBA=0.01),
                            0.9: dict(MP=0.02, ReLU=0.03, Matryoshka=0.05, BatchTopK=0.06, GBA=0.01)}.items()
            for m, v in vals.items() for s in (0, 1, 2)]
    df = pd.DataFrame(rows).replace({"method": {"MP": "MP-SAE"}})
    rk = hx.hierarchy_ranking(df)
    assert rk.lowest.to_dict() == {0.0: True, 0.6: False, 0.9: True}
    assert rk.lowest_all.to_dict() == {0.0: True, 0.6: False, 0.9: False}  # GBA (ours, not the toy code's) is lower at 0.9
    assert rk.baseline.to_dict() == {0.0: "BatchTopK", 0.6: "ReLU", 0.9: "ReLU"} and rk.other[0.9] == "GBA"
    assert rk.value[0.6] == pytest.approx(0.041) and rk.baseline_value[0.6] == pytest.approx(0.021)  # medians over seeds 0, 1, 2
    assert (rk.seeds == 3).all()
    # a tie is not "lowest"
    tie = df.assign(hierarchical_mse=df.hierarchical_mse.where(~((df.method == "ReLU") & (df.rho == 0.9)), 0.021))
    assert not hx.hierarchy_ranking(tie).lowest[0.9]
    with pytest.raises(ValueError, match="flat_mse"):
        hx.hierarchy_ranking(df, "flat_mse")
    with pytest.raises(ValueError, match="Matryoshka"):
        hx.hierarchy_ranking(df[df.method != "Matryoshka"])


def test_bad_arguments_raise(tiny):
    with pytest.raises(ValueError, match="methods"):
        experiments.hierarchy(tiny, methods=("MP-SAE", "SAE"), progress=False)
    with pytest.raises(ValueError, match="methods"):
        experiments.absorption(tiny, methods=(), progress=False)
    with pytest.raises(ValueError, match="rho"):
        hx.fit("ReLU", 1.0, tiny, 0)


def test_mp_on_feature_model__rows_and_matched_k(tiny):
    df = experiments.mp_on_feature_model(tiny, progress=False)
    assert list(df.method) == list(experiments.cross_paper.FEATURE_MODEL_METHODS)
    assert set(df.columns) >= {"method", "seed", "k", "frr", "frr_08", "l0", "fvu"}
    assert df.frr.between(0, 1).all() and (df.frr_08 >= df.frr).all()
    ba_l0 = df.set_index("method").l0["BA"]
    assert df.set_index("method").k["MP-SAE k=L0(BA)"] == max(1, round(ba_l0))
    assert df.set_index("method").k["MP-SAE k=s"] == tiny.resonance.s
    assert isinstance(df, pd.DataFrame)
    assert df.babel_1.between(0, 1).all() and (df.babel_coactive >= 0).all()


def test_mp_on_feature_model__truth_row_and_cached_runs_give_the_same_table(tiny):
    first = experiments.mp_on_feature_model(tiny, include_truth=True, progress=False)
    assert list(first.method) == ["truth", *experiments.cross_paper.FEATURE_MODEL_METHODS]
    truth = first.set_index("method").loc["truth"]
    assert truth.frr == 1.0 and truth.l0 == tiny.resonance.s and 0 < truth.babel_1 < 1
    again = experiments.mp_on_feature_model(tiny, progress=False)  # every run from the cache
    pd.testing.assert_frame_equal(again.reset_index(drop=True), first[first.method != "truth"].reset_index(drop=True))


def test_method_specs__offer_gbas_tied_model_with_the_baselines_sparsity_rules():
    from sae_theory.models import TiedReLUSAE, TiedTopKSAE
    from sae_theory.training import SparsityController

    specs = hx.method_specs(get_profile("quick").hierarchy)
    assert hx.TIED_RELU not in hx.METHODS and hx.TIED_TOPK not in hx.METHODS  # extras, not Fig 4's methods
    relu, relu_hooks = specs[hx.TIED_RELU].build(d=20, n_latents=20, seed=0)
    topk, topk_hooks = specs[hx.TIED_TOPK].build(d=20, n_latents=20, seed=0)
    assert isinstance(relu, TiedReLUSAE) and [type(h) for h in relu_hooks] == [SparsityController]
    assert isinstance(topk, TiedTopKSAE) and topk.config.k == 2 and topk_hooks == []
    assert relu.W_enc.data_ptr() == relu.W_dec.data_ptr()  # one weight encodes and decodes
