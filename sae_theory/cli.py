"""Command line: ``sae-theory list``, ``sae-theory reproduce`` and ``sae-theory claims``.

``sae-theory reproduce`` executes the notebooks (``notebooks/NN_*.ipynb``) in order under a
profile, never writing into the source notebooks, and ends with a table of what ran, how long it
took and which figures each notebook wrote, then the verdict of every registered claim of those
notebooks (:mod:`sae_theory.claims`). ``sae-theory claims`` prints the verdicts of a profile, or
the README's generated results table. This module is the only place in the package that prints.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sae_theory import plotting

__all__ = ["main", "find_notebooks", "select_notebooks", "NotebookResult"]

PROFILE_ENV = "SAE_THEORY_PROFILE"
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class NotebookResult:
    """What happened to one notebook."""

    notebook: str
    """File stem, e.g. ``"01_feature_model"``."""
    status: str = "skipped"
    """``"ok"``, ``"failed"`` or ``"skipped"`` (after a failure with ``--fail-fast``)."""
    seconds: float = 0.0
    """Wall-clock seconds of the execution, kernel start included."""
    figures: list[str] = field(default_factory=list)
    """PNG files (relative to the figure folder) that the notebook created or rewrote."""
    error: str = ""
    """Last line of the error when ``status == "failed"``."""


def default_notebooks_dir() -> Path:
    """``<repo>/notebooks`` when running from a checkout, else ``./notebooks``."""
    root = plotting.repo_root()
    return (root if root is not None else Path.cwd()) / "notebooks"


def find_notebooks(notebooks_dir: Path) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in ``notebooks_dir``, sorted by name."""
    return sorted(p for p in Path(notebooks_dir).glob(NOTEBOOK_GLOB) if p.is_file())


def select_notebooks(notebooks: Sequence[Path], names: Sequence[str]) -> list[Path]:
    """Pick notebooks by exact stem, file name, or stem prefix (``"01"``); keep notebook order.

    Raises
    ------
    LookupError
        If a name matches no notebook, or (as a prefix) more than one.
    """
    chosen: set[Path] = set()
    for raw in names:
        key = Path(raw).name
        exact = [nb for nb in notebooks if key in (nb.stem, nb.name)]
        matches = exact or [nb for nb in notebooks if nb.stem.startswith(key)]
        if not matches:
            raise LookupError(f"no notebook matches {raw!r}")
        if len(matches) > 1:
            names_ = ", ".join(nb.stem for nb in matches)
            raise LookupError(f"{raw!r} is ambiguous: it matches {names_}")
        chosen.update(matches)
    return [nb for nb in notebooks if nb in chosen]


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    snap = {}
    for p in folder.glob("*.png"):
        try:
            st = p.stat()
        except OSError:
            continue
        snap[p] = (st.st_mtime_ns, st.st_size)
    return snap


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in _ANSI_RE.sub("", text).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _error_line(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    if ename:  # nbclient.exceptions.CellExecutionError
        evalue = _last_line(str(getattr(exc, "evalue", "")))
        return f"{ename}: {evalue}" if evalue else str(ename)
    line = _last_line(str(exc))
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _execute(
    path: Path, *, timeout: float | None, save_dir: Path | None
) -> tuple[str, str]:
    """Run one notebook in a fresh ``python3`` kernel with cwd = its folder; (status, error)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        # The kernel's own log (e.g. ipykernel's warning about unencrypted local TCP) would
        # interleave with the progress bar; errors still show, cell output is unaffected.
        extra_arguments=["--IPKernelApp.log_level=ERROR"],
    )
    status, error = "ok", ""
    try:
        client.execute()
    except Exception as exc:  # a failed notebook is a result, not a crash of the runner
        status, error = "failed", _error_line(exc)
    finally:
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, save_dir / path.name)
    return status, error


def _format_table(results: Sequence[NotebookResult]) -> str:
    header = ("notebook", "status", "seconds", "figures")
    rows = [
        (r.notebook, r.status, f"{r.seconds:.1f}", ", ".join(r.figures) if r.figures else "-")
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    def fmt(row: Sequence[str]) -> str:
        return (
            f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}"
        )
    rule = "-" * (sum(widths) + 6 + max(len(header[3]), *(len(r[3]) for r in rows)))
    return "\n".join([fmt(header), rule, *(fmt(r) for r in rows)])


def _cmd_list(args: argparse.Namespace) -> int:
    folder = Path(args.notebooks_dir) if args.notebooks_dir else default_notebooks_dir()
    notebooks = find_notebooks(folder)
    if not notebooks:
        print(f"no notebooks ({NOTEBOOK_GLOB}) in {folder}", file=sys.stderr)
        return 0
    for nb in notebooks:
        print(nb.name)
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from sae_theory.profiles import PROFILE_NAMES, THREADS_ENV, parse_threads

    profile = args.profile or os.environ.get(PROFILE_ENV) or "quick"
    if profile not in PROFILE_NAMES:
        print(f"error: unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}",
              file=sys.stderr)
        return 2
    threads = args.threads if args.threads is not None else (os.environ.get(THREADS_ENV) or None)
    if threads is not None:  # the kernels apply it through profiles.set_threads; check it before any starts
        try:
            parse_threads(threads)
        except ValueError as exc:
            print(f"error: --threads: {exc}", file=sys.stderr)
            return 2
    folder = Path(args.notebooks_dir) if args.notebooks_dir else default_notebooks_dir()
    available = find_notebooks(folder)
    if not available:
        print(f"error: no notebooks ({NOTEBOOK_GLOB}) in {folder}", file=sys.stderr)
        return 2
    try:
        notebooks = select_notebooks(available, args.names) if args.names else available
    except LookupError as exc:
        names = "\n  ".join(nb.stem for nb in available)
        print(f"error: {exc}. Available notebooks:\n  {names}", file=sys.stderr)
        return 2
    timeout = args.timeout if args.timeout and args.timeout > 0 else None
    save_dir = Path(args.save_executed).resolve() if args.save_executed else None

    # Kernels inherit the environment: the profile, and the figure folder resolved here, so the
    # runner watches exactly the folder the notebooks write to. Restored afterwards.
    saved_env = {k: os.environ.get(k) for k in (PROFILE_ENV, plotting.FIGURE_DIR_ENV, THREADS_ENV, plotting.UPDATE_FIGURES_ENV)}
    os.environ[PROFILE_ENV] = profile
    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)
    if args.update_figures:
        os.environ[plotting.UPDATE_FIGURES_ENV] = "1"
    try:
        fig_dir = plotting.figure_dir(profile)
        os.environ[plotting.FIGURE_DIR_ENV] = str(fig_dir)
        results = [NotebookResult(nb.stem) for nb in notebooks]
        start = time.perf_counter()
        bar = tqdm(
            list(zip(notebooks, results)), desc="notebooks", unit="nb",
            disable=args.no_progress, file=sys.stderr,
        )
        for path, result in bar:
            bar.set_postfix_str(path.stem)
            before = _snapshot(fig_dir)
            t0 = time.perf_counter()
            result.status, result.error = _execute(
                path.resolve(), timeout=timeout, save_dir=save_dir
            )
            result.seconds = time.perf_counter() - t0
            after = _snapshot(fig_dir)
            result.figures = sorted(
                p.name for p, stamp in after.items() if before.get(p) != stamp
            )
            if result.status != "ok" and args.fail_fast:
                break
        bar.close()
        total = time.perf_counter() - start
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    print(_format_table(results))
    for r in results:
        if r.status == "failed":
            print(f"FAILED {r.notebook}: {r.error}")
    n_ok = sum(r.status == "ok" for r in results)
    n_failed = sum(r.status == "failed" for r in results)
    n_skipped = sum(r.status == "skipped" for r in results)
    summary = f"{n_ok} ok, {n_failed} failed"
    if n_skipped:
        summary += f", {n_skipped} skipped"
    print(f"profile {profile}: {summary} in {total:.1f} s")
    print(f"figures: {fig_dir}")
    print()
    print(_verdict_lines(profile, fig_dir, results))
    if save_dir is not None:
        print(f"executed notebooks: {save_dir}")
    return 0 if n_failed == 0 and n_skipped == 0 else 1


def _verdict_lines(profile: str, folder: Path, results: Sequence[NotebookResult]) -> str:
    """The verdict table of the claims of the notebooks that ran (``sae_theory.claims``)."""
    from sae_theory import claims

    ran = {r.notebook: r.status for r in results if r.status != "skipped"}
    table = claims.verdict_table(profile, folder, notebooks=tuple(ran))
    if table.empty:
        return f"verdicts ({profile}): no registered claims in these notebooks"
    table.loc[table.notebook.map(ran) == "failed", "status"] = "notebook failed"
    return f"verdicts ({profile}; {claims.verdicts_path(profile, folder)}):\n" + _claims_text(table)


def _claims_text(table) -> str:
    w0, w1 = (max(len(x) for x in [h, *table[c]]) for h, c in (("claim", "claim"), ("status", "status")))
    lines = [f"{'claim':<{w0}}  {'status':<{w1}}  measured", "-" * (w0 + w1 + 12)]
    lines += [f"{r.claim:<{w0}}  {r.status:<{w1}}  {r.reason}" for r in table.itertuples()]
    return "\n".join(lines)


def _cmd_claims(args: argparse.Namespace) -> int:
    from sae_theory import claims

    folder = Path(args.folder) if args.folder else None
    if args.readme:
        try:
            changed = claims.update_readme(args.readme, folder)
        except (OSError, ValueError) as exc:
            print(f"error: --readme: {exc}", file=sys.stderr)
            return 2
        print(f"{args.readme}: {'claims table updated' if changed else 'claims table already up to date'}")
        return 0
    if args.markdown:
        print(claims.readme_table(folder))
        return 0
    profile = args.profile or os.environ.get(PROFILE_ENV) or "quick"
    try:
        table = claims.verdict_table(profile, folder)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"verdicts ({profile}; {claims.verdicts_path(profile, folder)}):")
    print(_claims_text(table))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sae-theory`` argument parser."""
    from sae_theory import __version__

    parser = argparse.ArgumentParser(
        prog="sae-theory",
        description="Reproduce the sae_theory notebooks and paper figures.",
    )
    parser.add_argument("--version", action="version", version=f"sae-theory {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    nb_dir_help = "folder of NN_*.ipynb notebooks (default: notebooks/ of the checkout)"
    p_list = sub.add_parser("list", help="list the notebooks, in the order they run")
    p_list.add_argument("--notebooks-dir", metavar="DIR", help=nb_dir_help)
    p_list.set_defaults(func=_cmd_list)

    p_rep = sub.add_parser(
        "reproduce",
        help="execute the notebooks and write the figures",
        description="Execute all notebooks in order, or the named ones, and summarise.",
    )
    p_rep.add_argument(
        "names", nargs="*", metavar="NAME",
        help="notebooks to run: stem (01_feature_model), stem prefix (01) or file name",
    )
    p_rep.add_argument(
        "--profile", metavar="{quick,full}",
        help=f"run profile (default: ${PROFILE_ENV}, else quick)",
    )
    p_rep.add_argument("--notebooks-dir", metavar="DIR", help=nb_dir_help)
    p_rep.add_argument(
        "--timeout", type=float, default=3600.0, metavar="SECONDS",
        help="time limit per cell (default: 3600; 0 for none)",
    )
    p_rep.add_argument(
        "--save-executed", metavar="DIR",
        help="also write the executed notebooks (with outputs) to DIR",
    )
    p_rep.add_argument(
        "--threads", metavar="N|all",
        help="torch CPU threads in each notebook (default: $SAE_THEORY_THREADS, else the profile's "
             "cpu_threads: 1 under quick, all cores under full)",
    )
    p_rep.add_argument(
        "--update-figures", action="store_true",
        help="write into the committed paper_figures/ (default: the git-ignored paper_figures/_latest/); "
             "files whose bytes do not change are left untouched",
    )
    p_rep.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    p_rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_rep.set_defaults(func=_cmd_reproduce)

    p_cl = sub.add_parser(
        "claims",
        help="the registered claims and their recorded verdicts",
        description="Print the verdict of every registered claim (sae_theory.claims) at a profile, "
                    "the README's generated results table, or rewrite that table.",
    )
    p_cl.add_argument("--profile", metavar="{quick,full}", help=f"profile (default: ${PROFILE_ENV}, else quick)")
    p_cl.add_argument("--folder", metavar="DIR",
                      help="folder of verdicts_<profile>.json (default: where figures go; for --markdown/--readme "
                           "the committed paper_figures/)")
    p_cl.add_argument("--markdown", action="store_true", help="print the README's results table (Markdown)")
    p_cl.add_argument("--readme", metavar="PATH", help="rewrite the generated results table in the README at PATH")
    p_cl.set_defaults(func=_cmd_claims)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sae-theory`` and ``python -m sae_theory``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `sae-theory`: say what there is to do
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
