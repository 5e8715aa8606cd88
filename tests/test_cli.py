"""Tests of the sae-theory CLI. Three notebook executions in all (about 2 s each)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sae_theory import cli, plotting

SAVE_FIGURE_CELL = """\
from matplotlib.figure import Figure
from sae_theory.plotting import save_figure
from sae_theory.profiles import get_profile

fig = Figure(figsize=(2, 2))
fig.add_subplot().plot([0, 1], [1, 0])
save_figure(fig, "fig_ok", get_profile(device="cpu"), config={"k": 1})
"""

FAIL_CELL = 'raise RuntimeError("planted failure")'


def _write_notebook(path: Path, *sources: str) -> Path:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Figures to tmp_path/figs; the profile variable unset (the CLI must restore it)."""
    monkeypatch.setenv(plotting.FIGURE_DIR_ENV, str(tmp_path / "figs"))
    monkeypatch.delenv(cli.PROFILE_ENV, raising=False)
    return tmp_path


def test_list__prints_numbered_notebooks_sorted(tmp_path, capsys):
    for name in ["02_beta.ipynb", "01_alpha.ipynb", "notes.ipynb", "1_short.ipynb", "03_x.txt"]:
        (tmp_path / name).write_text("{}")
    assert cli.main(["list", "--notebooks-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["01_alpha.ipynb", "02_beta.ipynb"]


def test_select_notebooks__by_stem_prefix_and_file_name():
    nbs = [Path("01_alpha.ipynb"), Path("02_beta.ipynb"), Path("10_gamma.ipynb")]
    assert cli.select_notebooks(nbs, ["02"]) == [nbs[1]]
    assert cli.select_notebooks(nbs, ["10_gamma", "01_alpha.ipynb"]) == [nbs[0], nbs[2]]
    assert cli.select_notebooks(nbs, ["notebooks/02_beta.ipynb", "02"]) == [nbs[1]]
    with pytest.raises(LookupError, match="ambiguous"):
        cli.select_notebooks(nbs, ["0"])
    with pytest.raises(LookupError, match="nope"):
        cli.select_notebooks(nbs, ["nope"])


def test_reproduce__unknown_name_exits_2_listing_available(env, capsys):
    nb_dir = env / "nbs"
    nb_dir.mkdir()
    _write_notebook(nb_dir / "01_alpha.ipynb", "1")
    rc = cli.main(["reproduce", "99_missing", "--notebooks-dir", str(nb_dir), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "99_missing" in err and "01_alpha" in err


def test_reproduce__unknown_profile_exits_2(env, capsys):
    nb_dir = env / "nbs"
    nb_dir.mkdir()
    _write_notebook(nb_dir / "01_alpha.ipynb", "1")
    assert cli.main(["reproduce", "--profile", "huge", "--notebooks-dir", str(nb_dir)]) == 2
    assert "huge" in capsys.readouterr().err


def test_reproduce__reports_ok_and_failed_and_lists_figures(env, monkeypatch, capsys):
    # --profile full with CI=true: the kernel must see the profile (sidecar says "full"), and an
    # explicit figure folder is used as it is, so the figure lands in figs/ itself.
    monkeypatch.setenv("CI", "true")
    nb_dir = env / "nbs"
    nb_dir.mkdir()
    ok = _write_notebook(nb_dir / "01_ok.ipynb", SAVE_FIGURE_CELL)
    bad = _write_notebook(nb_dir / "02_fail.ipynb", "x = 1", FAIL_CELL)
    sources = {p: p.read_text() for p in (ok, bad)}
    executed = env / "executed"

    rc = cli.main([
        "reproduce", "--profile", "full", "--notebooks-dir", str(nb_dir),
        "--no-progress", "--save-executed", str(executed), "--timeout", "120",
    ])
    out = capsys.readouterr().out

    assert rc == 1
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("0")}
    assert rows["01_ok"][1] == "ok"
    assert rows["01_ok"][3:] == ["fig_ok.png"]
    assert rows["02_fail"][1] == "failed"
    assert rows["02_fail"][3:] == ["-"]
    assert "FAILED 02_fail: RuntimeError: planted failure" in out
    assert "1 ok, 1 failed" in out
    assert str(env / "figs") in out

    meta = json.loads((env / "figs" / "fig_ok.json").read_text())
    assert meta["profile"]["name"] == "full"
    # Sources untouched; executed copies carry outputs / the error.
    assert {p: p.read_text() for p in (ok, bad)} == sources
    failed_copy = nbformat.read(executed / "02_fail.ipynb", as_version=4)
    assert failed_copy.cells[1].outputs[0]["ename"] == "RuntimeError"
    assert cli.PROFILE_ENV not in os.environ


def test_reproduce__fail_fast_skips_the_rest(env, capsys):
    nb_dir = env / "nbs"
    nb_dir.mkdir()
    _write_notebook(nb_dir / "01_fail.ipynb", FAIL_CELL)
    _write_notebook(nb_dir / "02_ok.ipynb", SAVE_FIGURE_CELL)

    rc = cli.main(["reproduce", "--notebooks-dir", str(nb_dir), "--fail-fast", "--no-progress"])
    out = capsys.readouterr().out

    assert rc == 1
    assert "1 failed, 1 skipped" in out
    assert not list((env / "figs").rglob("fig_ok.png"))


def test_version_and_bare_command(capsys):
    from sae_theory import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"sae-theory {__version__}"
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "usage: sae-theory" in out and "reproduce" in out


@pytest.mark.parametrize("threads", ["0", "two"])
def test_reproduce__bad_threads_is_a_usage_error_before_any_kernel(env, threads, capsys):
    nb = _write_notebook(env / "01_fail.ipynb", FAIL_CELL)
    assert cli.main(["reproduce", "--notebooks-dir", str(nb.parent), "--threads", threads, "--no-progress"]) == 2
    assert "--threads" in capsys.readouterr().err


def test_reproduce__threads_reach_the_kernel_and_the_environment_is_restored(env, monkeypatch):
    from sae_theory.profiles import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)
    cell = ("import torch\nfrom sae_theory import get_profile, set_threads\n"
            "assert set_threads(get_profile(device='cpu')) == 2 == torch.get_num_threads()")
    nb = _write_notebook(env / "01_threads.ipynb", cell)
    assert cli.main(["reproduce", "--notebooks-dir", str(nb.parent), "--threads", "2", "--no-progress"]) == 0
    assert THREADS_ENV not in os.environ


def test_reproduce__update_figures_writes_into_the_committed_folder_only_on_request(env, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(plotting.FIGURE_DIR_ENV, raising=False)
    monkeypatch.delenv(plotting.UPDATE_FIGURES_ENV, raising=False)
    monkeypatch.setattr(plotting.core, "repo_root", lambda: tmp_path / "repo")
    nb = _write_notebook(env / "01_ok.ipynb", SAVE_FIGURE_CELL.replace("get_profile(device=\"cpu\")", "get_profile(\"full\", device=\"cpu\")"))
    assert cli.main(["reproduce", "--notebooks-dir", str(nb.parent), "--no-progress"]) == 0
    assert (tmp_path / "repo" / "paper_figures" / "_latest" / "fig_ok.png").is_file()
    assert not (tmp_path / "repo" / "paper_figures" / "fig_ok.png").exists()
    assert cli.main(["reproduce", "--notebooks-dir", str(nb.parent), "--no-progress", "--update-figures"]) == 0
    assert (tmp_path / "repo" / "paper_figures" / "fig_ok.png").is_file()
    assert plotting.UPDATE_FIGURES_ENV not in os.environ and plotting.FIGURE_DIR_ENV not in os.environ
