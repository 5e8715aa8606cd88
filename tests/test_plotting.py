"""Tests of sae_theory.plotting: figure folder rules, save_figure's files and sidecar, the package's
public names, the method palette from the SAE registry, and every figure function drawing on
small synthetic frames with the experiments' columns."""

from __future__ import annotations

import warnings

import subprocess
import time

import ast
import colorsys
import inspect
import json
import types
from dataclasses import dataclass
from datetime import datetime

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure

from sae_theory import plotting
from sae_theory.models.registry import registered_saes
from sae_theory.profiles import get_profile

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class _Cfg:
    lr: float
    dtype: torch.dtype


@pytest.fixture
def fig_dir(monkeypatch, tmp_path):
    """Figures go to tmp_path/figs, outside CI."""
    out = tmp_path / "figs"
    monkeypatch.setenv(plotting.FIGURE_DIR_ENV, str(out))
    monkeypatch.delenv("CI", raising=False)
    return out


def _figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_save_figure__writes_png_pdf_and_json_sidecar(fig_dir):
    P = get_profile("quick", device="cpu")
    config = {
        "model": _Cfg(lr=1e-3, dtype=torch.float64),
        "device": torch.device("cpu"),
        "scale": np.float32(0.5),
        "n": np.int64(7),
        "grid": np.arange(3),
    }
    png = plotting.save_figure(_figure(), "fig_test-1", P, config=config)

    assert png == fig_dir / "fig_test-1.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (fig_dir / "fig_test-1.pdf").read_bytes()[:5] == b"%PDF-"
    meta = json.loads((fig_dir / "fig_test-1.json").read_text())
    assert meta["name"] == "fig_test-1"
    assert meta["profile"] == P.to_dict()
    assert meta["profile"]["name"] == "quick"
    assert meta["seeds"] == list(P.seeds)
    assert meta["config"] == {
        "model": {"lr": 1e-3, "dtype": "torch.float64"},
        "device": "cpu",
        "scale": 0.5,
        "n": 7,
        "grid": [0, 1, 2],
    }
    assert isinstance(meta["version"], str) and meta["version"]
    assert datetime.fromisoformat(meta["created_utc"]).utcoffset().total_seconds() == 0
    assert "git_commit" in meta
    assert png in plotting.written_figures()


def test_save_figure__seeds_override_and_data_csv(fig_dir):
    P = get_profile("full", device="cpu")
    png = plotting.save_figure(
        _figure(), "fig_data", P, seeds=(3, 4), data={"x": [1, 2], "y": [0.5, 0.25]}
    )
    meta = json.loads(png.with_suffix(".json").read_text())
    assert meta["seeds"] == [3, 4]
    assert meta["config"] is None
    assert (fig_dir / "fig_data.csv").read_text().splitlines() == ["x,y", "1,0.5", "2,0.25"]
    assert "fig_data.csv" in meta["files"]


@pytest.mark.parametrize("name", ["", "a/b", "../up", "fig.png", "has space", "ü", "x\n"])
def test_save_figure__bad_name_raises_value_error(fig_dir, name):
    with pytest.raises(ValueError, match="name"):
        plotting.save_figure(_figure(), name, get_profile("quick", device="cpu"))
    assert not fig_dir.exists() or not any(fig_dir.iterdir())


def test_save_figure__unserialisable_config_raises_before_writing(fig_dir):
    with pytest.raises(TypeError, match=r"config\['bad'\]"):
        plotting.save_figure(
            _figure(), "fig_bad", get_profile("quick", device="cpu"), config={"bad": object()}
        )
    assert not (fig_dir / "fig_bad.png").exists()


def test_figure_dir__env_override_honoured_and_created(fig_dir):
    assert not fig_dir.exists()
    assert plotting.figure_dir(get_profile("quick", device="cpu")) == fig_dir.resolve()
    assert fig_dir.is_dir()


@pytest.mark.parametrize("ci", ["true", ""])
def test_figure_dir__explicit_folder_is_used_as_is_in_and_out_of_ci(fig_dir, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    assert plotting.figure_dir(get_profile("quick", device="cpu")) == fig_dir.resolve()
    assert plotting.figure_dir("full") == fig_dir.resolve()


@pytest.fixture
def repo_figures(monkeypatch):
    monkeypatch.delenv(plotting.FIGURE_DIR_ENV, raising=False)
    monkeypatch.delenv(plotting.UPDATE_FIGURES_ENV, raising=False)
    root = plotting.repo_root()
    if root is None:
        pytest.skip("sae_theory is not running from a checkout")
    assert (root / "pyproject.toml").is_file()
    return root / "paper_figures"


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_figure_dir__default_is_the_ignored_latest_folder(repo_figures, profile):
    assert plotting.figure_dir(profile) == repo_figures / "_latest"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(repo_figures / "_latest" / "x.png")], cwd=repo_figures.parent)
    assert ignored.returncode == 0, "paper_figures/_latest must be git-ignored"


@pytest.mark.parametrize("flag, expected", [("1", ""), ("true", ""), ("0", "_latest"), ("no", "_latest")])
def test_figure_dir__committed_folder_only_when_updating(repo_figures, monkeypatch, flag, expected):
    monkeypatch.setenv(plotting.UPDATE_FIGURES_ENV, flag)
    assert plotting.figure_dir("quick") == (repo_figures / expected if expected else repo_figures)


def test_save_figure__unchanged_figure_leaves_every_file_untouched(fig_dir):
    P = get_profile("quick", device="cpu")
    data = {"x": [1, 2], "seconds": [0.5, 0.7]}
    plotting.save_figure(_figure(), "fig_same", P, config={"k": 1}, data=data)
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in fig_dir.iterdir()}
    time.sleep(0.01)
    plotting.save_figure(_figure(), "fig_same", P, config={"k": 1}, data={"x": [1, 2], "seconds": [9.0, 9.0]})
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in fig_dir.iterdir()} == stamps
    assert "seconds" not in (fig_dir / "fig_same.csv").read_text()  # wall-clock columns are not figure numbers


def test_save_figure__changed_numbers_rewrite_the_data_and_the_sidecar(fig_dir):
    P = get_profile("quick", device="cpu")
    plotting.save_figure(_figure(), "fig_new", P, config={"k": 1}, data={"x": [1, 2]})
    side = json.loads((fig_dir / "fig_new.json").read_text())
    png = (fig_dir / "fig_new.png").read_bytes()
    plotting.save_figure(_figure(), "fig_new", P, config={"k": 2}, data={"x": [1, 3]})
    side2 = json.loads((fig_dir / "fig_new.json").read_text())
    assert side2["config"] == {"k": 2} and (fig_dir / "fig_new.csv").read_text().splitlines() == ["x", "1", "3"]
    assert (fig_dir / "fig_new.png").read_bytes() == png  # same drawing, same bytes
    assert side["config"] == {"k": 1}


def test_use_style__sets_theme_once(monkeypatch):
    monkeypatch.setattr(plotting.core, "_style_set", False)  # the flag lives in plotting.core
    with matplotlib.rc_context():
        plotting.use_style()
        assert matplotlib.rcParams["savefig.dpi"] == plotting.PNG_DPI
        assert matplotlib.rcParams["axes.grid"]  # whitegrid
        matplotlib.rcParams["savefig.dpi"] = 42
        plotting.use_style()  # second call must not reset what the caller changed
        assert matplotlib.rcParams["savefig.dpi"] == 42


# --------------------------------------------------------------------------------------------
# public names
# --------------------------------------------------------------------------------------------

SUBMODULES = (plotting.core, plotting.feature_model, plotting.gba, plotting.mp, plotting.hierarchy, plotting.real)


def _public_definitions(module: types.ModuleType) -> set[str]:
    """Names a module defines at top level (functions, classes, assignments), imports excluded."""
    names = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    names.add(target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("module", SUBMODULES, ids=lambda m: m.__name__)
def test_all__lists_exactly_the_public_names_each_module_defines(module):
    assert sorted(module.__all__) == sorted(_public_definitions(module))


def test_package_all__is_every_submodules_all_and_each_name_is_reexported():
    expected = [name for m in SUBMODULES for name in m.__all__]
    assert len(expected) == len(set(expected))
    assert sorted(plotting.__all__) == sorted(expected)
    exported = {n for n, v in vars(plotting).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert exported == set(plotting.__all__)
    for m in SUBMODULES:
        for name in m.__all__:
            assert getattr(plotting, name) is getattr(m, name)


def test_repo_root__is_the_checkout_above_the_package():
    root = plotting.repo_root()
    if root is not None:
        assert (root / "sae_theory" / "plotting" / "core.py").is_file()


# --------------------------------------------------------------------------------------------
# the method palette
# --------------------------------------------------------------------------------------------

ALL_FAMILY_LABELS = [e.label for e in registered_saes()]


def hue_kwargs(color: str) -> float:
    return colorsys.rgb_to_hls(*to_rgb(color))[0]


def _lightness(color: str) -> float:
    return colorsys.rgb_to_hls(*to_rgb(color))[1]


def test_method_colors__same_label_same_colour_whatever_the_other_methods():
    labels = ALL_FAMILY_LABELS + ["TopK K=20", "TopK K=30", "GBA wrong range", "L1 lambda=0.03", "MP-SAE k=s", "BA", "my method"]
    full = plotting.method_colors(labels)
    assert full == plotting.method_colors(labels)  # stable across calls
    for label in labels:
        assert plotting.method_colors([label]) == {label: full[label]}
        assert plotting.method_colors([label, "TopK K=50", "ReLU"])[label] == full[label]
    assert plotting.method_colors(reversed(labels)) == full
    assert all(c == to_hex(c) for c in full.values())  # hex strings


def test_method_colors__keys_in_registry_order_and_repeats_collapse():
    colors = plotting.method_colors(["GBA", "TopK K=20", "MP-SAE", "GBA", "unknown", "ReLU"])
    assert list(colors) == ["MP-SAE", "ReLU", "TopK K=20", "GBA", "unknown"]


def test_method_colors__registered_families_get_distinct_non_grey_colours():
    colors = plotting.method_colors(ALL_FAMILY_LABELS)
    assert len(set(colors.values())) == len(ALL_FAMILY_LABELS)
    assert plotting.UNKNOWN_METHOD_COLOR not in colors.values()
    # the families' colours are the qualitative palette in registration order
    tab10 = [to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    assert colors[ALL_FAMILY_LABELS[0]] == tab10[0]
    assert list(colors.values()) == [c for c in tab10 if c != "#7f7f7f"][: len(ALL_FAMILY_LABELS)]


def test_method_colors__variants_and_aliases_are_shades_of_their_family_colour():
    colors = plotting.method_colors(["TopK", "TopK K=20", "TopK K=30", "TopK K=50", "ReLU", "L1", "L1 lambda=0.03",
                                     "GBA", "GBA wrong range", "BA"])
    for family, variants in (("TopK", ["TopK K=20", "TopK K=30", "TopK K=50"]), ("ReLU", ["L1", "L1 lambda=0.03"]),
                             ("GBA", ["GBA wrong range", "BA"])):
        shades = [colors[v] for v in variants]
        assert len(set(shades + [colors[family]])) == len(variants) + 1  # each variant its own shade
        for shade in shades:
            assert hue_kwargs(shade) == pytest.approx(hue_kwargs(colors[family]), abs=1e-2)
    # a numeric parameter runs light to dark as it grows
    assert _lightness(colors["TopK K=20"]) > _lightness(colors["TopK K=30"]) > _lightness(colors["TopK K=50"])


def test_method_colors__unknown_methods_are_grey_and_a_bare_string_is_refused():
    assert plotting.method_colors(["SAE", "PCA k=3"]) == {"SAE": plotting.UNKNOWN_METHOD_COLOR, "PCA k=3": plotting.UNKNOWN_METHOD_COLOR}
    assert plotting.method_colors([]) == {}
    with pytest.raises(TypeError, match="list"):
        plotting.method_colors("TopK")


# --------------------------------------------------------------------------------------------
# every figure draws, and method hues take the palette
# --------------------------------------------------------------------------------------------

HIER = ("MP-SAE", "ReLU", "TopK", "BatchTopK", "JumpReLU", "Matryoshka", "GBA")


def _hierarchy_frame(methods=HIER) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [dict(method=m, rho=rho, seed=seed, flat_mse=rng.uniform(0.01, 1), hierarchical_mse=rng.uniform(0.01, 1),
                 absorption=rng.uniform(0, 1), babel_1=rng.uniform(0, 3), babel_coactive=rng.uniform(0, 1), l0=rng.uniform(1, 3))
            for m in methods for rho in (0.0, 0.6) for seed in (0, 1)]
    return pd.DataFrame(rows)


def _toy_frames(cons_methods=("GBA", "TopK", "L1")):
    frr = pd.DataFrame([dict(method=m, tau=tau, seed=seed, frr=0.1 * i + 0.05 * seed, paper_frr=0.5)
                        for i, m in enumerate(("TopK K=20", "TopK K=30", "TopK K=50", "GBA", "GBA wrong range"))
                        for tau in (0.8, 0.9) for seed in (0, 1)])
    cons = pd.DataFrame([dict(method=m, seed=seed, threshold=t, fraction=1 - t + 0.01 * seed)
                         for m in cons_methods for seed in (0, 1) for t in (0.6, 0.8)])
    front = pd.DataFrame([dict(family=fam, method=m, fraction_active=fa, l2_loss=l2, fvu=l2)
                          for fam, m, fa, l2 in (("TopK", "TopK K=5", 0.04, 0.5), ("TopK", "TopK K=20", 0.15, 0.2),
                                                 ("L1", "L1 lambda=0.3", 0.02, 0.6), ("L1", "L1 lambda=0.03", 0.2, 0.3),
                                                 ("GBA", "GBA", 0.03, 0.4), ("GBA", "GBA wrong range", 0.01, 0.8))])
    return frr, cons, front


def _mp_frames():
    err = pd.DataFrame([dict(method=m, seed=seed, train_k=4, inference_k=k, nmse=1 / (k + i), l0=k)
                        for i, m in enumerate(("MP-SAE", "TopK", "ReLU")) for seed in (0, 1) for k in range(1, 9)])
    l0 = pd.DataFrame([dict(seed=0, target=tau, target_nmse=tau ** 2, true_s=s, train_s=3, input=i, l0=s + i % 3,
                            nmse=tau ** 2 * 0.9, cap=12)
                       for tau in (0.5, 0.3) for s in (3, 6) for i in range(6)])
    trade = pd.DataFrame([dict(seed=0, population=pop, mode="fixed k", k=k, target=float("nan"), l0=k, nmse=1 / k, capped=0.0)
                          for pop in ("s=3", "s=6", "mixed") for k in range(1, 9)]
                         + [dict(seed=0, population=pop, mode="threshold", k=12, target=tau, l0=3 / tau, nmse=tau ** 2, capped=0.0)
                            for pop in ("s=3", "s=6", "mixed") for tau in (0.5, 0.3)])
    return err, l0, trade


def _mp_theory_frames():
    props = pd.DataFrame([dict(dictionary=dn, input=b, step=t, last_inner=10.0 ** -(12 + t), norm_drop_error=0.0)
                          for dn in ("trained", "random") for b in range(3) for t in range(1, 5)])
    earlier = pd.DataFrame([dict(dictionary=dn, input=0, step=5, lag=lag, kind="selected atom" if lag >= 0 else "unselected atom",
                                 cosine=0.1 * abs(lag))
                            for dn in ("trained", "random") for lag in (-1, 0, 1, 2, 3, 4, 5)])
    conv = pd.DataFrame([dict(selection=sel, dictionary=dn, step=t, distance_to_projection=1 / t, distance_to_x=1.0)
                         for sel in ("greedy", "random") for dn in ("trained", "random") for t in (1, 2, 4, 8)])
    return props, earlier, conv


def _feature_model_frames():
    freq = pd.DataFrame([dict(law=law, feature=i, rank=i + 1, f=f, f_hat=f * 1.01, ci_low=f * 0.9, ci_high=f * 1.1, inside=True)
                         for law, scale in (("balanced", 1.0), ("Zipf", 50.0)) for i in range(10)
                         for f in [0.1 / (1 + (scale - 1) * i / 9)]])
    cond = pd.DataFrame([dict(n=n, d=d, s=s, q=q, condition=c, value=0.1 * n / d, holds=n < 3 * d)
                         for n in (20, 40) for d in (10, 20) for s in (2, 3) for q in (0, 2) for c in ("H1", "H3")])
    h3 = pd.DataFrame([dict(n=40, s=3, N=N, h3=N ** -0.4, threshold=40 ** -0.5, holds=True, population_h3=0.01)
                       for N in (100, 1_000, 10_000)])
    band = pd.DataFrame([dict(n=n, d=d, s=s, f=s / n, low=1 / n, high=max(1 / n, s / d ** 1.5), nonempty=s / d ** 1.5 > 1 / n,
                              log10_band_ratio=np.log10(max(1 / n, s / d ** 1.5) * n), critical_d=(s * n) ** (2 / 3),
                              width_at_mid=10 * n)
                         for n in (64, 256, 1024) for d in (4, 16, 64, 256, 1024) for s in (2, 3, 8)])
    return freq, cond, h3, band


def _topk_convergence_frames():
    tc = pd.DataFrame([dict(k=k, tied=t, steps=n, seed=0, tau=tau, frr=0.5, fvu=0.1, settled=n > 100)
                       for k in (20, 30) for t in (True, False) for n in (100, 1000) for tau in (0.8, 0.9)])
    sweep = pd.DataFrame([dict(k=k, seed=0, tau=tau, frr=1 / k, l2_loss=0.1, fraction_active=k / 64, tied=True)
                          for k in (3, 5, 20) for tau in (0.8, 0.9)])
    return tc, sweep


def _readings_frame():
    rows = []
    for data in ("toy", "zipf"):
        for reading, k in (("printed", 16), ("small a", 6)):
            for method, kk in (("GBA", 0), ("TopK", k)):
                base = dict(reading=reading, data=data, method=method, k=kk, seed=0, settled=True)
                rows += [dict(base, step=s, loss=1 / s, l0=5.0, fvu=np.nan, frr_08=np.nan, frr_09=np.nan, final=False) for s in (10, 20, 30)]
                rows.append(dict(base, step=30, loss=1 / 30, l0=float(k or 6), fvu=0.1, frr_08=0.9, frr_09=0.5, final=True))
    return pd.DataFrame(rows)


def _toy_controls_frames():
    base = pd.DataFrame([dict(family=f, value=v, tied=t, method=("Tied " if t else "") + (f"TopK K={v}" if f == "TopK" else f"L1 lambda={v}"),
                              seed=0, tau=tau, frr=0.5, fvu=0.1, fraction_active=0.05, settled=False)
                         for f, v in (("TopK", 20), ("L1", 0.03)) for t in (False, True) for tau in (0.8, 0.9)])
    methods = ("GBA", "TopK K=20", "Tied TopK K=20")
    truth = pd.DataFrame([dict(method=m, step=s, seed=0, tau=tau, frr=1.0 - s / 40, fvu=0.1 + 1 / (1 + s), fraction_active=0.1)
                          for m in methods for s in (0, 10, 20) for tau in (0.8, 0.9)])
    laws = pd.DataFrame([dict(law=law, method=m, seed=0, tau=tau, frr=0.4, fvu=0.1, settled=True)
                         for law in ("constant 1", "uniform [0.5, 1.5]") for m in methods for tau in (0.8, 0.9)])
    curves = pd.DataFrame([dict(method=m, steps=n, seed=0, tau=tau, frr=n / 40, fvu=0.1, settled=False)
                           for m in methods for n in (10, 20, 40) for tau in (0.8, 0.9)])
    return base, truth, laws, curves


def _resonance_frame():
    rows = [dict(kind="phase", n=256, s=3, f=3 / 256, d=d, M=1024, p_over_f=pf, seed=0, frr=0.5, frr_08=0.6, frr_init=0.1,
                 in_band=pf < 1) for d in (8, 16) for pf in (0.25, 1.0, 4.0)]
    rows += [dict(kind="width", n=256, s=3, f=3 / 256, d=16, M=M, p_over_f=0.25, seed=0, frr=0.5, frr_08=0.6, frr_init=0.1,
                  in_band=True) for M in (256, 1024)]
    return pd.DataFrame(rows)


def _heatmap_fits():
    from sae_theory.data.hierarchical import Magnitudes
    from sae_theory.experiments.hierarchical import HierarchyFit

    T = torch.eye(3, dtype=torch.float64)
    D = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 1.0], [3.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    codes = torch.zeros(3, 4, dtype=torch.float64)
    return [HierarchyFit(method=m, rho=0.0, magnitudes=Magnitudes(), seed=0, true_dictionary=T, levels=(0, 0, 1),
                         parent_of={2: 0}, dictionary=D, matched=torch.tensor([2, 0, 1]), codes=codes, true_codes=codes[:, :3],
                         fvu=0.0, seconds=0.0) for m in ("MP-SAE", "ReLU")]


def _cross_paper_frames():
    absorb = pd.DataFrame([dict(method=m, child_mean=cm, child_std=0.1, seed=0, absorption=0.2, paper_absorption=0.1)
                           for m in ("ReLU", "GBA", "MP-SAE") for cm in (0.5, 1.0)])
    fm = pd.DataFrame([dict(method=m, seed=seed, n=64, d=16, s=3, M=256, k=3.0, frr=0.5, frr_08=0.7, l0=3.0 + seed, fvu=0.1)
                       for m in ("BA", "GBA", "MP-SAE k=s", "MP-SAE k=L0(BA)") for seed in (0, 1)])
    return absorb, fm


def _figure_calls():
    freq, cond, h3, band = _feature_model_frames()
    return {
        "feature_frequency_figure": lambda: plotting.feature_frequency_figure(freq),
        "conditions_figure": lambda: plotting.conditions_figure(cond),
        "h3_sample_size_figure": lambda: plotting.h3_sample_size_figure(h3),
        "band_figure": lambda: plotting.band_figure(band),
        "resonance_figure": lambda: plotting.resonance_figure(_resonance_frame()),
        "toy_figure": lambda: plotting.toy_figure(*_toy_frames()),
        "mp_theory_figure": lambda: plotting.mp_theory_figure(*_mp_theory_frames()),
        "adaptive_sparsity_figure": lambda: plotting.adaptive_sparsity_figure(*_mp_frames()),
        "adaptive_sparsity_figure without tradeoff": lambda: plotting.adaptive_sparsity_figure(*_mp_frames()[:2]),
        "hierarchy_figure": lambda: plotting.hierarchy_figure(_hierarchy_frame()),
        "hierarchy_heatmaps": lambda: plotting.hierarchy_heatmaps(_heatmap_fits(), title="t"),
        "cross_paper_figure": lambda: plotting.cross_paper_figure(*_cross_paper_frames()),
        "toy_sensitivity_figure": lambda: plotting.toy_sensitivity_figure(*_sensitivity_frames()),
        "topk_convergence_figure": lambda: plotting.topk_convergence_figure(*_topk_convergence_frames()),
        "topk_convergence_figure without K sweep": lambda: plotting.topk_convergence_figure(_topk_convergence_frames()[0]),
        "toy_controls_figure": lambda: plotting.toy_controls_figure(*_toy_controls_frames()),
        "deployed_readings_figure": lambda: plotting.deployed_readings_figure(_readings_frame()),
        "training_curves_figure": lambda: plotting.training_curves_figure(_curves_frame(), target_l0=1.36),
        "steps_sweep_figure": lambda: plotting.steps_sweep_figure(_sweep_frame(), target_l0=1.36, profile_steps=20),
        "real_frontier_figure": lambda: plotting.real_frontier_figure(_real_frames()[0], _real_eleuther(), model_label="tiny"),
        "real_frontier_figure without EleutherAI": lambda: plotting.real_frontier_figure(_real_frames()[0]),
        "real_inference_figure": lambda: plotting.real_inference_figure(_real_frames()[1]),
        "real_inference_training_figure": lambda: plotting.real_inference_training_figure(pd.DataFrame(
            [dict(method=m, train_k=4, step=st, inference_k=j, l0=float(j), nmse=1 / (j + st)) for m in REAL for st in (5, 10, 20)
             for j in (1, 2, 4, 8)])),
        "real_inference_training_figure with readings": lambda: plotting.real_inference_training_figure(_fig20_frame()),
        "real_babel_figure": lambda: plotting.real_babel_figure(*_real_frames()[2:4]),
        "real_training_figure": lambda: plotting.real_training_figure(_real_frames()[4]),
        "recovery_figure": lambda: plotting.recovery_figure(pd.DataFrame(
            [dict(method=m, seed=sd, step=st, fvu=0.1 / st, nmse=0.1, l0=8.0, frr_08=1.0, frr_09=0.0 if m == "TopK" else 0.9, mcc=0.9)
             for m in ("MP-SAE", "TopK") for sd in (0, 1) for st in (10, 20)])),
        "superposition_figure": lambda: plotting.superposition_figure(pd.DataFrame(
            [dict(method=m, ratio=r, n=16 * r, seed=sd, step=st, fvu=0.1 / st, nmse=0.1, l0=4.0, frr_08=1.0, frr_09=0.9, mcc=0.9 - 0.01 * r)
             for r in (4, 16) for m in ("MP-SAE", "TopK") for sd in (0, 1) for st in (10, 20)])),
        "superposition_figure with widths": lambda: plotting.superposition_figure(pd.DataFrame(
            [dict(method=m, ratio=r, n=16 * r, width=w, n_latents=int(16 * r * w), k=4 if w == 1 else 3, seed=sd, step=st, fvu=0.1 / st,
                  nmse=0.1, l0=4.0, frr_08=1.0, frr_09=0.9, mcc=0.9 * w, mcc_matched=0.9)
             for r in (4, 16) for w in (1.0, 0.25) for m in ("MP-SAE", "TopK") for sd in (0, 1) for st in (10, 20)])),
        "noisy_superposition_figure": lambda: plotting.noisy_superposition_figure(_noisy_frame()),
        "gba_real_frontier_figure": lambda: plotting.gba_real_frontier_figure(*_gba_real_frames()[:2], model_label="tiny", paper_note="p"),
        "gba_real_frontier_figure without curves": lambda: plotting.gba_real_frontier_figure(_gba_real_frames()[0]),
        "gba_real_consistency_figure": lambda: plotting.gba_real_consistency_figure(_gba_real_frames()[2]),
        "gba_real_neurons_figure": lambda: plotting.gba_real_neurons_figure(_gba_real_frames()[3]),
    }


def _gba_real_frames():
    front = pd.DataFrame([dict(family=f, value=v, method=f"{f} {v}", fraction_active=fa, fraction_pre=fp, l2_loss=l, settled=True)
                          for f, v, fa, fp, l in (("TopK", "8", 0.01, 0.1, 0.4), ("TopK", "64", 0.1, 0.4, 0.2), ("L1", "0.1", 0.02, 0.02, 0.5),
                                                  ("L1", "0.01", 0.2, 0.2, 0.25), ("BA", "0.05", 0.05, 0.05, 0.35),
                                                  ("GBA", "printed", 0.04, 0.04, 0.3), ("GBA", "small a", 0.06, 0.06, 0.28))])
    curves = pd.DataFrame([dict(family=r.family, method=r.method, step=s, loss=r.l2_loss + 1.0 / s, l0=1.0)
                           for r in front.itertuples() for s in (10, 20, 30)])
    cons = pd.DataFrame([dict(method=m, seed=s, selection=sel, alpha=a, n_selected=4, threshold=t, fraction=0.0 if m == "TopK" else 0.5)
                         for m in ("GBA", "TopK", "L1") for s in (0, 1) for sel in ("max activation", "Z-score") for a in (0.05, 0.01)
                         for t in (0.6, 0.9)])
    g = np.random.default_rng(0)
    diag = pd.DataFrame([dict(method=m, neuron=i, max_activation=float(g.uniform(0.1, 1)), z_score=float(g.uniform(1, 20)),
                              frequency=0.0 if i == 0 else float(g.uniform(1e-3, 0.3)), mcs=float(g.uniform(0, 1)))
                         for m in ("GBA", "TopK") for i in range(30)])
    return front, curves, cons, diag


REAL = ("MP-SAE", "TopK", "BatchTopK", "ReLU", "JumpReLU")


def _real_frames():
    """Small frames shaped as experiments.real_mp returns them (frontier, inference_sweep,
    babel_scores, gram_histogram, training_curves)."""
    ks = (4, 8)
    fr = pd.DataFrame([dict(method=m, k=k, l0=k * (1 - 0.05 * i), r2=0.5 + 0.02 * k - 0.01 * i, fvu=0.5 - 0.02 * k, dead_fraction=0.1 * i)
                       for i, m in enumerate(REAL) for k in ks])
    sweep = pd.DataFrame([dict(method=m, train_k=k, inference_k=j, l0=float(j), r2=1 - 1 / (j + 1), nmse=1 / (j + 1),
                               effective_rank=float(10 * j) if k == 8 else float("nan"))
                          for m in REAL for k in ks for j in (1, 2, k, 2 * k)])
    bab = pd.DataFrame([dict(method=m, k=k, l0=float(k), babel_coactive=0.1 * k, babel_k=0.2 * k, r=r, babel=0.1 * r)
                        for m in REAL for k in ks for r in (1, 2, 4)])
    edges = np.linspace(-1, 1, 5)
    gram = pd.DataFrame([dict(method=m, k=4, bin_left=lo, bin_right=hi, density=0.5, std=0.1) for m in REAL
                         for lo, hi in zip(edges[:-1], edges[1:])])
    curves = pd.DataFrame([dict(method=m, k=k, step=t, loss=10.0 / t, mse=8.0 / t, l0=k + 1.0 / t) for m in REAL for k in ks
                           for t in (10, 20, 30)])
    return fr, sweep, bab, gram, curves


def _real_eleuther():
    return pd.DataFrame([dict(k=k, method=m, fvu=0.1, source="quoted") for k in (16, 32) for m in ("TopK", "MP-SAE")])


def _sensitivity_frames():
    ws = pd.DataFrame([dict(method=m, width=w, seed=0, tau=t, frr=0.5) for m in ("GBA", "GBA wrong range", "TopK K=20")
                       for w in (64, 128) for t in (0.8, 0.9)])
    ks = pd.DataFrame([dict(k=k, seed=0, tau=t, frr=1.0 / k, l2_loss=0.1, fraction_active=0.1) for k in (3, 5) for t in (0.8, 0.9)])
    groups = pd.DataFrame(dict(feature=range(4), neuron=range(4), cosine=[0.95, 0.5, 0.92, 0.3], recovered=[True, False, True, False],
                               group=[0, 1, 1, 2], target=[0.5, 0.05, 0.05, 0.001]))
    return ws, ks, groups


def _sweep_frame():
    return pd.DataFrame([dict(method=m, rho=rho, seed=0, steps=n, l0=1.36 + 1.0 / n, support_accuracy=1 - 1.0 / n, mean_cosine=0.9,
                              min_cosine=0.8, flat_mse=0.0, hierarchical_mse=0.0)
                         for m in ("MP-SAE", "MP-SAE unit-norm") for rho in (0.0, 0.3) for n in (10, 20, 40)])


def _curves_frame():
    return pd.DataFrame([dict(method=m, rho=rho, seed=0, step=step, loss=1.0 / step, l0=1.36 + 1.0 / step, lr=0.03)
                         for m in ("MP-SAE", "MP-SAE unit-norm", "ReLU") for rho in (0.0, 0.9) for step in (10, 20, 30)])


def test_every_figure_function_has_a_drawing_test():
    figures = {n for m in SUBMODULES if m is not plotting.core for n in m.__all__}
    assert figures <= set(_figure_calls())


@pytest.mark.parametrize("name", list(_figure_calls()))
def test_figure_function__draws_on_a_small_frame(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # none from our calls into matplotlib / seaborn
        fig = _figure_calls()[name]()
    try:
        assert isinstance(fig, Figure) and fig.axes
        assert any(ax.has_data() for ax in fig.axes)
    finally:
        plt.close(fig)


def _legend_colors(ax) -> dict[str, str]:
    handles, labels = ax.get_legend_handles_labels()
    return {label: to_hex(h.get_color() if hasattr(h, "get_color") else h.get_facecolor()) for h, label in zip(handles, labels)}


def test_hierarchy_figure__methods_in_registry_order_with_their_palette_colour_in_any_subset():
    for methods in (HIER, ("GBA", "TopK"), ("Matryoshka", "MP-SAE", "JumpReLU")):
        fig = plotting.hierarchy_figure(_hierarchy_frame(methods))
        try:
            legend = _legend_colors(fig.axes[0])
            assert legend == plotting.method_colors(methods)
            assert list(legend) == [m for m in HIER if m in methods]
            assert [t.get_text() for t in fig.axes[4].get_xticklabels()] == list(legend)
        finally:
            plt.close(fig)


def test_hierarchy_figure__dashes_the_named_methods_and_says_so_in_the_legend():
    fig = plotting.hierarchy_figure(_hierarchy_frame(), dashed=("TopK", "GBA", "not run"), dashed_label="ours, not in the paper")
    try:
        legend = fig.axes[5].get_legend()
        styles = {t.get_text(): h.get_linestyle() for t, h in zip(legend.get_texts(), legend.legend_handles)}
        assert styles["TopK"] == styles["GBA"] == "--" and styles["MP-SAE"] == styles["ReLU"] == "-", styles
        assert "dashed: ours, not in the paper" in legend.get_title().get_text()
        # the drawn lines too, found by their palette colour, in every line panel
        by_colour = {c: m for m, c in plotting.method_colors(HIER).items()}
        for ax in (fig.axes[0], fig.axes[1], fig.axes[2], fig.axes[3]):
            drawn = {by_colour[to_hex(line.get_color())]: line.get_linestyle() for line in ax.get_lines() if to_hex(line.get_color()) in by_colour}
            assert drawn == {m: "--" if m in ("TopK", "GBA") else "-" for m in HIER}, drawn
    finally:
        plt.close(fig)
    fig = plotting.hierarchy_figure(_hierarchy_frame())
    try:
        assert "dashed" not in fig.axes[5].get_legend().get_title().get_text()
    finally:
        plt.close(fig)


def test_toy_and_cross_paper_figures__method_hues_use_the_palette():
    frr, cons, front = _toy_frames(cons_methods=("L1", "GBA", "TopK"))
    fig = plotting.toy_figure(frr, cons, front)
    try:
        assert _legend_colors(fig.axes[1]) == plotting.method_colors(["L1", "GBA", "TopK"])
        assert list(_legend_colors(fig.axes[1])) == ["L1", "TopK", "GBA"]
        assert _legend_colors(fig.axes[2]) == plotting.method_colors(["TopK", "L1", "GBA"])
    finally:
        plt.close(fig)
    absorb, fm = _cross_paper_frames()
    fig = plotting.cross_paper_figure(absorb, fm)
    try:
        assert _legend_colors(fig.axes[0]) == plotting.method_colors(absorb["method"])
        assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["MP-SAE k=s", "MP-SAE k=L0(BA)", "BA", "GBA"]
    finally:
        plt.close(fig)


def test_adaptive_sparsity_figure__method_hues_use_the_palette():
    fig = plotting.adaptive_sparsity_figure(*_mp_frames())
    try:
        legend = _legend_colors(fig.axes[0])
        assert {m: legend[m] for m in ("MP-SAE", "ReLU", "TopK")} == plotting.method_colors(["MP-SAE", "ReLU", "TopK"])
    finally:
        plt.close(fig)


def test_adaptive_sparsity_figure__every_curve_of_the_mp_panel_is_mp_sae_coloured():
    from matplotlib.colors import to_rgb

    fig = plotting.adaptive_sparsity_figure(*_mp_frames())
    try:
        mp = np.array(to_rgb(plotting.method_colors(["MP-SAE"])["MP-SAE"]))
        for line in fig.axes[2].get_lines():  # MP-SAE's colour or a darker shade of it (same hue)
            rgb = np.array(to_rgb(line.get_color()))
            assert np.allclose(rgb / rgb.max(), mp / mp.max(), atol=1e-6), line.get_label()
    finally:
        plt.close(fig)


def test_conditions_figure__each_panel_says_what_its_numbers_are_and_when_it_holds():
    cond = _feature_model_frames()[1].assign(threshold=lambda t: t["n"] ** -0.5)
    fig = plotting.conditions_figure(cond)
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
        assert len(titles) == 2 and all("number =" in t and "green (holds) when" in t for t in titles)
        assert "at n = 20 / 40" in titles[1]  # H3's threshold n^-1/2 per n
        assert {t.get_text() for t in fig.legends[0].get_texts()} == {"condition holds", "condition fails"}
    finally:
        plt.close(fig)


@pytest.mark.parametrize("n_slice", [0, -4, 2.5, True])
def test_band_figure__bad_n_slice_raises(n_slice):
    band = _feature_model_frames()[3]
    with pytest.raises((TypeError, ValueError), match="n_slice"):
        plotting.band_figure(band, n_slice=n_slice)


def test_mark_zero_bars__marks_only_the_zero_bars():
    import matplotlib.pyplot as plt

    from sae_theory.plotting import mark_zero_bars

    fig, ax = plt.subplots()
    ax.bar([0, 1, 2], [0.0, 0.5, 0.0])
    assert mark_zero_bars(ax) == 2
    assert len(ax.lines) == 2 and [t.get_text() for t in ax.texts] == ["0", "0"]
    assert sorted(line.get_xdata()[0] for line in ax.lines) == pytest.approx([-0.4, 1.6])
    plt.close(fig)


def test_name_zero_curves__names_the_curves_at_zero_everywhere():
    import matplotlib.pyplot as plt
    import pandas as pd

    from sae_theory.plotting import name_zero_curves

    df = pd.DataFrame(dict(m=["a", "a", "b", "b", "c", "c"], y=[0.0, 0.0, 0.0, 0.3, 0.0, 0.0]))
    fig, ax = plt.subplots()
    assert name_zero_curves(ax, df, y="y", by="m", fmt=str.upper, where="center left") == ["A", "C"]
    assert "A\nC" in ax.texts[0].get_text()
    assert name_zero_curves(ax, df[df.m == "b"], y="y", by="m") == [] and len(ax.texts) == 1
    plt.close(fig)


def test_superposition_figure__narrow_panels_plot_the_mcc_over_the_matched_pairs():
    df = pd.DataFrame([dict(method=m, ratio=r, n=16 * r, width=w, n_latents=int(16 * r * w), k=4 if w == 1 else 3, seed=0, step=st,
                            fvu=0.1 / st, nmse=0.1, l0=4.0, frr_08=1.0, frr_09=0.9, mcc=0.9 * w, mcc_matched=0.9)
                       for r in (4, 16) for w in (1.0, 0.25) for m in ("MP-SAE", "TopK") for st in (10, 20)])
    fig = plotting.superposition_figure(df)
    try:
        wide, narrow = fig.axes[0], fig.axes[2]  # a row per width, the widest first
        ys = lambda ax: {round(float(y), 6) for c in ax.collections for y in c.get_offsets()[:, 1]}
        assert ys(wide) == {0.9} and ys(narrow) == {0.9}  # wide: mcc = 0.9 * 1; narrow: mcc_matched, not mcc = 0.225
        assert "matched pairs" in narrow.get_ylabel() and "matched" not in wide.get_ylabel()
        assert "16 latents, k = 3" in narrow.get_title() and "64 latents, k = 4" in wide.get_title()
    finally:
        plt.close(fig)


def _fig20_frame():
    from sae_theory.experiments import real_mp

    reading = {"MP-SAE": real_mp.READING_STEPS, "TopK": real_mp.READING_TOPK}
    rows = [dict(method=m, reading=reading.get(m, real_mp.READING_LARGEST), train_k=4, step=st, inference_k=j, l0=float(j), nmse=1 / (j + st))
            for m in REAL for st in (5, 10, 20) for j in (1, 2, 4, 8)]
    rows += [dict(r, reading=real_mp.READING_LARGEST, nmse=r["nmse"] * 1.1) for r in rows if r["method"] == "MP-SAE"]
    return pd.DataFrame(rows)


def test_real_inference_training_figure__a_panel_per_method_and_reading_and_the_legend_in_a_cell_of_its_own():
    fig = plotting.real_inference_training_figure(_fig20_frame())
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles[:2] == ["MP-SAE\n(k largest latents)", "MP-SAE\n(k pursuit steps)"] and len(titles) == 6
        assert "TopK\n(top k pre-activations)" in titles
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) == 1 and not fig.legends  # in a spare cell, not above the panels where the title is
        mp_largest = fig.axes[0].get_lines()[0]  # first point of training, the k largest latents: 1.1 x the pursuit reading
        assert list(mp_largest.get_ydata()) == pytest.approx([1.1 / (j + 5) for j in (1, 2, 4, 8)])
    finally:
        plt.close(fig)


def _noisy_frame():
    return pd.DataFrame([dict(method=m, ratio=r, n=16 * r, width=0.25, n_latents=4 * r, k=3, seed=sd, step=st, noise=nu,
                              fvu=0.3 + nu + 0.01 * sd, fvu_signal=0.3 + nu / 2, nmse=0.1, l0=3.0, frr_08=1.0, frr_09=0.9, mcc=0.2,
                              mcc_matched=(0.8 if m == "MP-SAE" else 0.9) - 0.01 * sd)
                         for r in (4, 16) for nu in (0.0, 0.1, 0.3) for m in ("MP-SAE", "TopK") for sd in (0, 1) for st in (10, 20)])


def test_noisy_superposition_figure__means_and_seed_ranges_against_noise_with_the_rules_margin():
    fig = plotting.noisy_superposition_figure(_noisy_frame())
    try:
        fvu, mcc = fig.axes[0], fig.axes[2]  # rows: FVU, MCC; a column per ratio
        # FVU on the noisy rows (solid) and against the clean rows (dashed), per method: 4 curves
        curves = {c.get_label(): c.lines[0] for c in fvu.containers}  # errorbar containers: the data line, then the whiskers
        assert len(curves) == 4 and {l.get_linestyle() for l in curves.values()} == {"-", "--"}
        mp_noisy = curves["MP-SAE: on the noisy rows"]
        assert list(mp_noisy.get_xdata()) == [0.0, 0.1, 0.3] and list(mp_noisy.get_ydata()) == pytest.approx([0.305, 0.405, 0.605])
        assert list(curves["TopK: against the clean rows"].get_ydata()) == pytest.approx([0.3, 0.35, 0.45])
        # the rule's margin, TopK's mean MCC - 0.02, dotted: (0.9 + 0.89) / 2 - 0.02
        margin = next(l for l in mcc.get_lines() if "margin" in l.get_label())
        assert margin.get_linestyle() == ":" and list(margin.get_ydata()) == pytest.approx([0.875] * 3)
        assert "matched pairs" in mcc.get_ylabel() and "noise" in mcc.get_xlabel() and "FVU" in fvu.get_ylabel()
        assert "16 latents, k = 3" in fvu.get_title()
    finally:
        plt.close(fig)


def test_deployed_readings_figure__several_seeds_one_loss_line_per_run_one_bar_pair_per_reading_and_method():
    one = _readings_frame()
    two = pd.concat([one, one.assign(seed=1, frr_08=one.frr_08 - 0.2, k=one.k.where(one.k == 0, one.k + 1))], ignore_index=True)
    fig = plotting.deployed_readings_figure(two)
    loss, bars = fig.axes[0], fig.axes[2]
    runs = two[~two.final].groupby(["reading", "method", "seed"]).ngroups
    assert len(loss.get_lines()) == runs  # each run its own line: no line zig-zags between seeds
    assert len(loss.get_legend_handles_labels()[1]) == runs // 2  # one legend entry per (reading, method)
    # the legends name TopK by every seed's K (K = round(L0) of each seed's GBA run), not by the first seed's
    assert any("TopK K=16/17 (matched to printed)" == lab for lab in loss.get_legend_handles_labels()[1])
    assert "TopK K=16/17" in fig.axes[1].get_legend_handles_labels()[1]
    pairs = two[two.data == "toy"].groupby(["reading", "method"]).ngroups
    labels = [t.get_text() for t in bars.get_xticklabels()]
    assert len(labels) == pairs and "TopK K=16/17\n(printed)" in labels
    heights = sorted(round(p.get_height(), 6) for p in bars.patches if p.get_width() == 0.4)
    assert 80.0 in heights and 70.0 not in heights  # frr_08 0.9 and 0.7 over the two seeds: the mean, 80%
    assert "mean and range of 2 seeds" in bars.get_title()
    plt.close(fig)
