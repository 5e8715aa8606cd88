"""Tests of sae_theory.plotting: figure folder rules and save_figure's files and sidecar."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from sae_theory import plotting
from sae_theory.profiles import get_profile


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


@pytest.mark.parametrize("ci", ["true", "1", "TRUE", "yes"])
def test_figure_dir__quick_in_ci_goes_to_ci_subfolder(fig_dir, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    out = plotting.figure_dir(get_profile("quick", device="cpu"))
    assert out == fig_dir.resolve() / "_ci"
    assert out.name == "_ci" and out.is_dir()
    png = plotting.save_figure(_figure(), "fig_ci", get_profile("quick", device="cpu"))
    assert png.parent == out


@pytest.mark.parametrize(("profile", "ci"), [("full", "true"), ("quick", "false"), ("quick", "0"), ("quick", "")])
def test_figure_dir__no_ci_subfolder_outside_quick_ci(fig_dir, monkeypatch, profile, ci):
    monkeypatch.setenv("CI", ci)
    assert plotting.figure_dir(profile) == fig_dir.resolve()


def test_figure_dir__default_is_repo_paper_figures(monkeypatch):
    monkeypatch.delenv(plotting.FIGURE_DIR_ENV, raising=False)
    monkeypatch.delenv("CI", raising=False)
    root = plotting.repo_root()
    if root is None:
        pytest.skip("sae_theory is not running from a checkout")
    assert (root / "pyproject.toml").is_file()
    assert plotting.figure_dir("full") == root / "paper_figures"


def test_use_style__sets_theme_once(monkeypatch):
    monkeypatch.setattr(plotting, "_style_set", False)
    with matplotlib.rc_context():
        plotting.use_style()
        assert matplotlib.rcParams["savefig.dpi"] == plotting.PNG_DPI
        assert matplotlib.rcParams["axes.grid"]  # whitegrid
        matplotlib.rcParams["savefig.dpi"] = 42
        plotting.use_style()  # second call must not reset what the caller changed
        assert matplotlib.rcParams["savefig.dpi"] == 42
