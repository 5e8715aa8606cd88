"""Tests of the sae-theory CLI. Seven notebook executions in all (about 2 s each)."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sae_theory import claims, cli, plotting

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


def _exit_code(argv) -> int:
    """cli.main's exit status, whether it returns it or exits (argparse's usage errors)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


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
    rc = _exit_code(["reproduce", "99_missing", "--notebooks-dir", str(nb_dir), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "99_missing" in err and "01_alpha" in err


# --------------------------------------------------------------------------------------------
# Invalid arguments: a usage error (exit 2, argparse's form, the option named) before anything runs
# --------------------------------------------------------------------------------------------

README_OK = f"# title\n\n{claims.README_BEGIN}\nold table\n{claims.README_END}\n\nrest\n"

# (argv with {placeholders} filled from the layout below, environment, text stderr must contain)
INVALID = {
    "timeout negative": (["reproduce", "01", "--timeout", "-5"], {}, "--timeout"),
    "timeout not whole": (["reproduce", "01", "--timeout", "1.5"], {}, "--timeout"),
    "timeout nan": (["reproduce", "01", "--timeout", "nan"], {}, "--timeout"),
    "timeout inf": (["reproduce", "01", "--timeout", "inf"], {}, "--timeout"),
    "timeout word": (["reproduce", "01", "--timeout", "soon"], {}, "--timeout"),
    "save-executed under /proc": (["reproduce", "01", "--save-executed", "/proc/x"], {}, "--save-executed"),
    "save-executed under a file": (["reproduce", "01", "--save-executed", "{file}/executed"], {}, "--save-executed"),
    "save-executed is a file": (["reproduce", "01", "--save-executed", "{file}"], {}, "--save-executed"),
    "save-executed is the sources": (["reproduce", "01", "--save-executed", "{nbs}"], {}, "--save-executed"),
    "notebooks-dir missing": (["reproduce", "--notebooks-dir", "{missing}"], {}, "--notebooks-dir"),
    "notebooks-dir is a file": (["reproduce", "--notebooks-dir", "{file}"], {}, "--notebooks-dir"),
    "notebooks-dir without notebooks": (["reproduce", "--notebooks-dir", "{empty}"], {}, "--notebooks-dir"),
    "name unknown": (["reproduce", "99_missing"], {}, "01_alpha"),
    "name ambiguous": (["reproduce", "0"], {}, "ambiguous"),
    "notebook unreadable": (["reproduce", "03"], {}, "03_broken.ipynb"),
    "profile unknown": (["reproduce", "--profile", "huge"], {}, "--profile"),
    "profile empty": (["reproduce", "--profile", ""], {}, "--profile"),
    "profile variable unknown": (["reproduce", "01"], {cli.PROFILE_ENV: "huge"}, cli.PROFILE_ENV),
    "threads zero": (["reproduce", "01", "--threads", "0"], {}, "--threads"),
    "threads word": (["reproduce", "01", "--threads", "two"], {}, "--threads"),
    "threads variable": (["reproduce", "01"], {"SAE_THEORY_THREADS": "-1"}, "SAE_THEORY_THREADS"),
    "figure folder unwritable": (["reproduce", "01"], {plotting.FIGURE_DIR_ENV: "{file}/figs"}, plotting.FIGURE_DIR_ENV),
    "unknown option": (["reproduce", "01", "--dry-run"], {}, "--dry-run"),
    "set without value": (["reproduce", "01", "--set", "hierarchy.seeds"], {}, "--set"),
    "set unknown field": (["reproduce", "01", "--set", "hierarchy.stps=3"], {}, "--set"),
    "set twice": (["reproduce", "01", "--set", "seeds=1", "--set", "seeds=2"], {}, "--set"),
    "overrides variable unknown": (["reproduce", "01"], {"SAE_THEORY_OVERRIDES": "toy.nope=1"}, "SAE_THEORY_OVERRIDES"),
    "list notebooks-dir missing": (["list", "--notebooks-dir", "{missing}"], {}, "--notebooks-dir"),
    "claims profile unknown": (["claims", "--profile", "huge"], {}, "--profile"),
    "claims profile variable unknown": (["claims"], {cli.PROFILE_ENV: "huge"}, cli.PROFILE_ENV),
    "claims folder missing": (["claims", "--folder", "{missing}"], {}, "--folder"),
    "claims folder without verdicts": (["claims", "--folder", "{empty}"], {}, "--folder"),
    "claims folder damaged verdicts": (["claims", "--markdown", "--folder", "{damaged}"], {}, "--folder"),
    "claims readme missing": (["claims", "--readme", "{missing}", "--folder", "{verdicts}"], {}, "--readme"),
    "claims readme is a folder": (["claims", "--readme", "{empty}", "--folder", "{verdicts}"], {}, "--readme"),
    "claims readme without markers": (["claims", "--readme", "{file}", "--folder", "{verdicts}"], {}, "claims-table:begin"),
    "claims readme markers reversed": (["claims", "--readme", "{reversed}", "--folder", "{verdicts}"], {}, "--readme"),
    "claims readme and markdown": (["claims", "--readme", "{readme}", "--markdown"], {}, "--markdown"),
    "claims profile with readme": (["claims", "--readme", "{readme}", "--profile", "full"], {}, "--profile"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_arguments_are_usage_errors_before_anything_runs(case, monkeypatch, tmp_path, capsys):
    argv, environ, named = INVALID[case]
    if "/proc/" in " ".join(argv) and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    layout = {k: tmp_path / k for k in ("nbs", "empty", "verdicts", "damaged")}
    for folder in layout.values():
        folder.mkdir()
    layout.update(missing=tmp_path / "missing", file=tmp_path / "plain.md",
                  readme=tmp_path / "README.md", reversed=tmp_path / "REVERSED.md")
    _write_notebook(layout["nbs"] / "01_alpha.ipynb", FAIL_CELL)
    _write_notebook(layout["nbs"] / "02_beta.ipynb", FAIL_CELL)
    (layout["nbs"] / "03_broken.ipynb").write_text("{not json")
    (layout["verdicts"] / "verdicts_quick.json").write_text('{"profile": "quick", "verdicts": {}}')
    (layout["damaged"] / "verdicts_quick.json").write_text("{not json")
    layout["file"].write_text("# a README without the markers\n")
    layout["readme"].write_text(README_OK)
    layout["reversed"].write_text(f"{claims.README_END}\n{claims.README_BEGIN}\n")
    fill = {k: str(v) for k, v in layout.items()}

    monkeypatch.setenv(plotting.FIGURE_DIR_ENV, str(tmp_path / "figs"))
    for key in (cli.PROFILE_ENV, "SAE_THEORY_THREADS", plotting.UPDATE_FIGURES_ENV, "SAE_THEORY_OVERRIDES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value.format(**fill))
    saved_env = dict(os.environ)

    def must_not_run(*args, **kwargs):
        raise AssertionError(f"{case}: ran although the arguments are invalid")

    monkeypatch.setattr(cli, "_execute", must_not_run)
    for name in ("update_readme", "readme_table", "verdict_table"):
        monkeypatch.setattr(claims, name, must_not_run)
    before = sorted((p, p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*"))

    argv = [a.format(**fill) for a in argv]
    if argv[0] == "reproduce":
        argv[1:1] = ["--notebooks-dir", fill["nbs"], "--no-progress"]
    rc = _exit_code(argv)
    out, err = capsys.readouterr()

    assert rc == 2, (case, out, err)
    assert err.startswith("usage: sae-theory "), err
    assert named in err, err
    assert out == ""
    assert sorted((p, p.read_bytes() if p.is_file() else None) for p in tmp_path.rglob("*")) == before
    assert dict(os.environ) == saved_env


def test_timeout_argument__whole_seconds_and_zero_for_none():
    assert cli._timeout("600") == 600
    assert cli._timeout("600.0") == 600
    assert cli._timeout("0") is None
    with pytest.raises(argparse.ArgumentTypeError, match="negative"):
        cli._timeout("-5")


def test_reproduce__timed_out_cell_reports_nbclients_first_line(env, capsys):
    nb = _write_notebook(env / "01_sleep.ipynb", "import time\ntime.sleep(3)")
    rc = cli.main(["reproduce", "--notebooks-dir", str(nb.parent), "--timeout", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1
    assert ("FAILED 01_sleep: CellTimeoutError: A cell timed out while it was being executed, "
            "after 1 seconds.\n") in out, out


def test_claims__readme_rewritten_between_markers_and_verdicts_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(cli.PROFILE_ENV, raising=False)
    (tmp_path / "verdicts_quick.json").write_text('{"profile": "quick", "verdicts": {}}')
    readme = tmp_path / "README.md"
    readme.write_text(README_OK)
    assert cli.main(["claims", "--readme", str(readme), "--folder", str(tmp_path)]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# title") and text.endswith("rest\n")
    assert claims.readme_table(tmp_path) in text
    assert cli.main(["claims", "--folder", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "claims table updated" in out and "not recorded" in out


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


def test_reproduce__threads_reach_the_kernel_and_the_environment_is_restored(env, monkeypatch):
    from sae_theory.profiles import THREADS_ENV

    monkeypatch.delenv(THREADS_ENV, raising=False)
    cell = ("import torch\nfrom sae_theory import get_profile, set_threads\n"
            "assert set_threads(get_profile(device='cpu')) == 2 == torch.get_num_threads()")
    nb = _write_notebook(env / "01_threads.ipynb", cell)
    assert cli.main(["reproduce", "--notebooks-dir", str(nb.parent), "--threads", "2", "--no-progress"]) == 0
    assert THREADS_ENV not in os.environ


def test_reproduce__set_reaches_the_kernel_and_the_environment_is_restored(env, monkeypatch):
    from sae_theory.profiles import OVERRIDES_ENV

    monkeypatch.delenv(OVERRIDES_ENV, raising=False)
    cell = ("from sae_theory import get_profile\nP = get_profile(device='cpu')\n"
            "assert P.hierarchy.seeds == (0,) and P.hierarchy.steps == 15000, P.hierarchy\n"
            "assert dict(P.overrides) == {'hierarchy.seeds': (0,), 'hierarchy.steps': 15000}")
    nb = _write_notebook(env / "01_set.ipynb", cell)
    assert cli.main(["reproduce", "--notebooks-dir", str(nb.parent), "--set", "hierarchy.seeds=0", "--set", "hierarchy.steps=15000",
                     "--no-progress"]) == 0
    assert OVERRIDES_ENV not in os.environ


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


def test_claims__a_reader_that_closes_the_pipe_early_is_not_an_error():
    """`sae-theory claims --markdown | head -1`: the reader leaves after one line; the command
    exits 0 without a BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "sae_theory", "claims", "--markdown"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    proc.stdout.read(10)  # one bite, then hang up
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "BrokenPipeError" not in err and "Traceback" not in err, err


def test_claims__without_a_run_of_that_profile_shows_the_committed_verdicts_and_says_so(tmp_path, monkeypatch, capsys):
    # a newcomer's `sae-theory claims --profile full` before running anything: the committed verdicts, labelled
    committed = tmp_path / "paper_figures"
    monkeypatch.delenv(plotting.FIGURE_DIR_ENV, raising=False)
    monkeypatch.delenv(plotting.UPDATE_FIGURES_ENV, raising=False)
    monkeypatch.setattr(plotting.core, "base_figure_dir", lambda: committed)
    monkeypatch.setattr(cli.plotting, "base_figure_dir", lambda: committed)
    claims.record("mp.prop.c3", dict(distance_to_projection=1e-15, distance_to_x_full_rank=5e-12, steps=512), "full", folder=committed)
    assert cli.main(["claims", "--profile", "full"]) == 0
    out = capsys.readouterr().out
    assert "the committed verdicts" in out and re.search(r"mp\.prop\.c3\s+reproduces", out)
    # once a run has recorded the profile, its own verdicts are shown
    claims.record("mp.prop.c3", dict(distance_to_projection=0.5, distance_to_x_full_rank=5e-12, steps=512), "full")
    assert cli.main(["claims", "--profile", "full"]) == 0
    out = capsys.readouterr().out
    assert "the committed verdicts" not in out and str(committed / "_latest") in out
    assert not re.search(r"mp\.prop\.c3\s+reproduces", out)
