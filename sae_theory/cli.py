"""Command line: ``sae-theory list``, ``sae-theory reproduce``, ``sae-theory claims`` and
``sae-theory audit``.

``sae-theory reproduce`` executes the notebooks (``notebooks/NN_*.ipynb``) in order under a
profile, never writing into the source notebooks, and ends with a table of what ran, how long it
took and which figures each notebook wrote, then the verdict of every registered claim of those
notebooks (:mod:`sae_theory.claims`) and, unless the run wrote the committed folder itself, how
many of them reached the committed status. ``sae-theory claims`` prints the verdicts of a profile,
the README's generated results table, or (``--compare``) a run's verdicts against the committed ones. ``sae-theory audit`` audits a trained SAE on activations
(:mod:`sae_theory.audit`) and writes ``audit.json``, ``summary.md`` and figures into a folder.
This module is the only place in the package that prints.

Every invalid argument is a usage error (exit status 2, argparse's ``usage:`` line and a message
naming the option and what to give instead) found before anything runs: no kernel starts and
nothing is written (the output folders are created, and test-written, only once every other
argument has passed). ``audit`` loads the SAEs and opens the activations (their format and
width) before reading a row; NaN or infinity in the activations is found while they are read,
and is a usage error as well: the output folder is written atomically, only at the end, so
nothing is written then either.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

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
    """One line on the error when ``status == "failed"``: ``ename: evalue`` (its last line) for a
    cell that raised, else the exception's name and the first line of its message (nbclient's own
    for a timed-out cell or a dead kernel)."""


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


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in _ANSI_RE.sub("", text).splitlines() if ln.strip()]


def _error_line(exc: BaseException) -> str:
    ename = getattr(exc, "ename", None)
    if ename:  # nbclient.exceptions.CellExecutionError: the cell's own exception
        evalue = _lines(str(getattr(exc, "evalue", "")))
        return f"{ename}: {evalue[-1]}" if evalue else str(ename)
    # nbclient's own errors (CellTimeoutError, DeadKernelError, ...) say what happened on their
    # first line; the rest is a preview of the cell.
    lines = _lines(str(exc))
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _execute(
    path: Path, *, timeout: int | None, save_dir: Path | None
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


# --------------------------------------------------------------------------------------------
# Checks of the arguments, before anything runs
# --------------------------------------------------------------------------------------------


def _usage(args: argparse.Namespace, message: str) -> NoReturn:
    """Exit with status 2: the subcommand's usage line and ``message`` on stderr (argparse's form)."""
    args.parser.error(message)


def _timeout(raw: str) -> int | None:
    """``--timeout``: whole seconds per cell (nbclient's limit is an integer); 0 for none."""
    fix = "give the limit per cell in whole seconds, or 0 for none"
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number; {fix}") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        what = ("negative" if value < 0 else "not a whole number of seconds") if math.isfinite(value) else "not finite"
        raise argparse.ArgumentTypeError(f"{raw!r} is {what}; {fix}")
    return int(value) or None


def _folder(args: argparse.Namespace, option: str, raw: str) -> Path:
    """An existing folder given to ``option``."""
    folder = Path(raw)
    if not folder.exists():
        _usage(args, f"argument {option}: {raw} does not exist; give an existing folder")
    if not folder.is_dir():
        _usage(args, f"argument {option}: {raw} is not a folder; give a folder")
    return folder


def _notebooks_folder(args: argparse.Namespace) -> Path:
    if args.notebooks_dir is None:
        return default_notebooks_dir()
    return _folder(args, "--notebooks-dir", args.notebooks_dir)


def _check_writable(args: argparse.Namespace, option: str, folder: Path) -> None:
    """Create ``folder`` (with its parents) and write and remove a probe file in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sae-theory-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc)
        _usage(args, f"{option}: cannot create or write the folder {folder} ({reason}); "
                     "choose a folder you can write to")


def _profile(args: argparse.Namespace) -> str:
    """``--profile``, else ``$SAE_THEORY_PROFILE``, else quick; a name that is no profile is an error."""
    from sae_theory.profiles import PROFILE_NAMES

    choices = ", ".join(PROFILE_NAMES)
    if args.profile is not None:
        if args.profile not in PROFILE_NAMES:
            _usage(args, f"argument --profile: unknown profile {args.profile!r}; choose one of {choices}")
        return args.profile
    env = os.environ.get(PROFILE_ENV)
    if env and env not in PROFILE_NAMES:
        _usage(args, f"${PROFILE_ENV} is {env!r}, which is no profile; set it to one of {choices}, "
                     "unset it, or pass --profile")
    return env or "quick"


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    folder = _notebooks_folder(args)
    notebooks = find_notebooks(folder)
    if not notebooks:
        print(f"no notebooks ({NOTEBOOK_GLOB}) in {folder}", file=sys.stderr)
        return 0
    for nb in notebooks:
        print(nb.name)
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    import nbformat
    from tqdm.auto import tqdm

    from sae_theory.profiles import OVERRIDES_ENV, THREADS_ENV, apply_overrides, get_profile, parse_overrides, parse_threads

    # Every check first; the two folder checks that create folders come last.
    profile = _profile(args)
    overrides = None
    if args.set:
        try:
            parsed: dict[str, str] = {}
            for item in args.set:
                for path, value in parse_overrides(item).items():
                    if path in parsed:
                        raise ValueError(f"override path {path!r} is given twice.")
                    parsed[path] = value
            saved = os.environ.pop(OVERRIDES_ENV, None)  # --set replaces the environment's overrides
            try:
                apply_overrides(get_profile(profile, device="cpu"), parsed)
            finally:
                if saved is not None:
                    os.environ[OVERRIDES_ENV] = saved
        except ValueError as exc:
            _usage(args, f"argument --set: {exc}")
        overrides = ";".join(f"{k}={v}" for k, v in parsed.items())
    elif os.environ.get(OVERRIDES_ENV, "").strip():
        try:
            get_profile(profile, device="cpu")
        except ValueError as exc:
            _usage(args, f"{exc}")
    if args.threads is not None:  # the kernels apply it through profiles.set_threads
        try:
            parse_threads(args.threads)
        except ValueError as exc:
            _usage(args, f"argument --threads: {exc}")
        threads = args.threads
    else:
        threads = os.environ.get(THREADS_ENV) or None
        if threads is not None:
            try:
                parse_threads(threads)
            except ValueError as exc:
                _usage(args, f"${THREADS_ENV}: {exc} Unset it, or pass --threads")
    folder = _notebooks_folder(args)
    available = find_notebooks(folder)
    if not available:
        option = "argument --notebooks-dir: " if args.notebooks_dir is not None else ""
        _usage(args, f"{option}no notebooks ({NOTEBOOK_GLOB}) in {folder}; "
                     "give the folder of the numbered notebooks with --notebooks-dir")
    try:
        notebooks = select_notebooks(available, args.names) if args.names else available
    except LookupError as exc:
        if "ambiguous" in str(exc):
            _usage(args, f"argument NAME: {exc}; give a longer prefix or the whole stem")
        names = "\n  ".join(nb.stem for nb in available)
        _usage(args, f"argument NAME: {exc}; give a stem, stem prefix or file name of one of:\n  {names}")
    for nb in notebooks:  # a notebook nbformat cannot read would stop the run half way
        try:
            nbformat.read(nb, as_version=4)
        except Exception as exc:  # noqa: BLE001 - whatever stops nbformat, say which file
            line = (_lines(str(exc)) or [type(exc).__name__])[0]
            _usage(args, f"argument NAME: {nb} is not a readable notebook ({line}); fix or remove it")
    timeout = args.timeout
    save_dir = None
    if args.save_executed is not None:
        save_dir = Path(args.save_executed).resolve()
        if save_dir == folder.resolve():
            _usage(args, f"argument --save-executed: {args.save_executed} is the notebooks' own folder, "
                         "and the executed copies would overwrite the sources; choose another folder")
        _check_writable(args, "argument --save-executed", save_dir)

    # Kernels inherit the environment: the profile, and the figure folder resolved here, so the
    # runner watches exactly the folder the notebooks write to. Restored afterwards.
    saved_env = {k: os.environ.get(k) for k in (PROFILE_ENV, plotting.FIGURE_DIR_ENV, THREADS_ENV, plotting.UPDATE_FIGURES_ENV,
                                                OVERRIDES_ENV)}
    os.environ[PROFILE_ENV] = profile
    if overrides is not None:
        os.environ[OVERRIDES_ENV] = overrides
    if threads is not None:
        os.environ[THREADS_ENV] = str(threads)
    if args.update_figures:
        os.environ[plotting.UPDATE_FIGURES_ENV] = "1"
    try:
        # The figure folder is not an option, but a run that cannot write it is no run: check it.
        where = "the figure folder " + (
            f"(${plotting.FIGURE_DIR_ENV})" if os.environ.get(plotting.FIGURE_DIR_ENV) else
            f"(paper_figures/ under --update-figures or ${plotting.UPDATE_FIGURES_ENV}, else paper_figures/_latest/)")
        try:
            fig_dir = plotting.figure_dir(profile)
        except OSError as exc:
            _usage(args, f"{where}: cannot create {exc.filename or plotting.base_figure_dir()} "
                         f"({exc.strerror or exc}); set ${plotting.FIGURE_DIR_ENV} to a folder you can write to")
        _check_writable(args, where, fig_dir)
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
    compared = _comparison_lines(profile, fig_dir, results)
    if compared:
        print()
        print(compared)
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


def _comparison_lines(profile: str, folder: Path, results: Sequence[NotebookResult]) -> str:
    """The verdicts of the notebooks that ran beside the committed ones (``claims.compare_verdicts``);
    empty when the run wrote into the committed folder itself or nothing is comparable."""
    from sae_theory import claims

    committed = plotting.base_figure_dir()
    if Path(folder).resolve() == committed.resolve():
        return ""
    ran = tuple(r.notebook for r in results if r.status == "ok")
    table = claims.compare_verdicts(profile, folder, committed, notebooks=ran)
    if table.empty:
        return ""
    return f"against the committed verdicts ({claims.verdicts_path(profile, committed)}):\n" + _comparison_text(table)


def _comparison_text(table) -> str:
    differ = table[~table.same]
    head = f"{len(table) - len(differ)} of {len(table)} claims reach the committed status"
    lines = [head + (":" if len(differ) else ".")]
    for r in differ.itertuples():
        lines.append(f"  {r.claim}: committed {r.reference}, here {r.here}" + (f" ({r.settings})" if r.settings != "same" else ""))
    other = table[table.same & (table.settings != "same")]
    if len(other):
        lines.append("  with other settings than the committed run: " + ", ".join(other.claim))
    return "\n".join(lines)


def _claims_text(table) -> str:
    w0, w1 = (max(len(x) for x in [h, *table[c]]) for h, c in (("claim", "claim"), ("status", "status")))
    lines = [f"{'claim':<{w0}}  {'status':<{w1}}  measured", "-" * (w0 + w1 + 12)]
    lines += [f"{r.claim:<{w0}}  {r.status:<{w1}}  {r.reason}" for r in table.itertuples()]
    return "\n".join(lines)


def _check_readme(args: argparse.Namespace) -> None:
    """``--readme``: an existing file we can read and write, with the claims-table markers, each
    once and in order."""
    from sae_theory import claims

    path = Path(args.readme)
    if not path.is_file():
        _usage(args, f"argument --readme: {args.readme} {'is not a file' if path.exists() else 'does not exist'}; "
                     "give the README whose claims table to rewrite")
    try:
        with open(path, "r+", encoding="utf-8") as fh:  # r+: checks it is writable, changes nothing
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        _usage(args, f"argument --readme: cannot read and write {args.readme} ({getattr(exc, 'strerror', None) or exc})")
    begin, end = text.count(claims.README_BEGIN), text.count(claims.README_END)
    if begin != 1 or end != 1 or text.index(claims.README_BEGIN) > text.index(claims.README_END):
        found = "has no claims-table markers" if begin == end == 0 else (
            f"has the claims-table begin marker {begin} time(s) and the end marker {end} time(s)"
            if begin != 1 or end != 1 else "has the claims-table end marker before the begin marker")
        _usage(args, f"argument --readme: {args.readme} {found}; put the two lines\n"
                     f"  {claims.README_BEGIN}\n  {claims.README_END}\n"
                     "once each, in this order, where the table goes")


def _cmd_claims(args: argparse.Namespace) -> int:
    from sae_theory import claims

    table_mode = "--readme" if args.readme is not None else "--markdown" if args.markdown else None
    if table_mode and args.profile is not None:
        _usage(args, f"argument --profile: not allowed with {table_mode}, whose table shows both "
                     "profiles (quick and full); drop --profile")
    profiles = ("quick", "full") if table_mode else (_profile(args),)
    folder = None
    if args.folder is not None:
        folder = _folder(args, "--folder", args.folder)
        if not list(folder.glob("verdicts_*.json")):
            _usage(args, f"argument --folder: {args.folder} holds no verdicts_<profile>.json; give the folder "
                         "the notebooks wrote their figures and verdicts to")
    # The folder each mode reads (claims.readme_table's default for the tables, else figure_dir's).
    read_from = folder if folder is not None else plotting.base_figure_dir() if table_mode else None
    for p in profiles:  # a damaged verdict file is found before anything is printed or written
        try:
            claims.load_verdicts(p, read_from)
        except (OSError, ValueError) as exc:
            option = "argument --folder: " if folder is not None else ""
            _usage(args, f"{option}{exc}")
    if args.readme is not None:
        _check_readme(args)
        try:
            changed = claims.update_readme(args.readme, folder)
        except (OSError, ValueError) as exc:
            _usage(args, f"argument --readme: {exc}")
        print(f"{args.readme}: {'claims table updated' if changed else 'claims table already up to date'}")
        return 0
    if args.markdown:
        print(claims.readme_table(folder))
        return 0
    profile = profiles[0]
    if args.compare:
        committed = plotting.base_figure_dir()
        run = folder if folder is not None else plotting.figure_dir()
        if run.resolve() == committed.resolve():
            _usage(args, f"argument --compare: the run's folder is the committed one ({committed}); give the folder "
                         "of the run to compare with --folder")
        if not claims.verdicts_path(profile, run).exists():
            _usage(args, f"argument --compare: no run has written {claims.verdicts_path(profile, run)}; run the notebooks "
                         f"at this profile first (sae-theory reproduce --profile {profile}), or give their folder with --folder")
        table = claims.compare_verdicts(profile, run, committed)
        print(f"verdicts ({profile}) of {claims.verdicts_path(profile, run)} against the committed "
              f"{claims.verdicts_path(profile, committed)}:")
        if table.empty:
            print("no claim is recorded in both")
            return 0
        print(_comparison_text(table))
        moved = table[table.moved != ""]
        for r in moved.itertuples():
            print(f"  {r.claim}: measured values that differ: {r.moved}")
        return 0
    note = ""
    if folder is None and not claims.verdicts_path(profile).exists():
        # no run of this user's has recorded this profile yet: show the committed verdicts, and say so
        committed = plotting.base_figure_dir()
        if claims.verdicts_path(profile, committed).exists():
            note = (f"; the committed verdicts: no run here has written {claims.verdicts_path(profile)} yet "
                    f"(a notebook run at this profile does)")
            folder = committed
    table = claims.verdict_table(profile, folder)
    print(f"verdicts ({profile}; {claims.verdicts_path(profile, folder)}{note}):")
    print(_claims_text(table))
    return 0


def _positive_int(raw: str) -> int:
    """``--max-rows`` / ``--batch-size`` / ``--sample-rows``: a whole number >= 1."""
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number; give a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is below 1; give a whole number >= 1")
    return value


#: The audit's Python arguments, as the command line names them.
_AUDIT_OPTIONS = {"sae": "SAE_FOLDER", "activations": "--activations", "second": "--second", "out": "--out",
                  "max_rows": "--max-rows", "batch_size": "--batch-size", "sample_rows": "--sample-rows", "device": "--device"}


def _cmd_audit(args: argparse.Namespace) -> int:
    from sae_theory.audit import AuditError, audit

    out = Path(args.out) if args.out is not None else Path(f"audit_{Path(args.sae_folder).resolve().name}")
    try:
        report = audit(args.sae_folder, args.activations, second=args.second, out=out, max_rows=args.max_rows,
                       batch_size=args.batch_size, sample_rows=args.sample_rows, device=args.device,
                       progress=not args.no_progress)
    except AuditError as exc:
        _usage(args, f"argument {_AUDIT_OPTIONS.get(exc.argument, exc.argument)}: {exc.detail}")
    r = report.reconstruction
    print(f"audited {report.conditions['sae']['class']} on {report.conditions['rows_read']:,} rows of "
          f"{report.conditions['source']['description']}: FVU {r['fvu']:.4g}, mean L0 {r['mean_l0']:.4g}, "
          f"{r['dead_latents']:,} dead and {r['dense_latents']:,} dense latents")
    print(f"wrote {out}/summary.md, {out}/audit.json and the figures")
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
    p_list.set_defaults(func=_cmd_list, parser=p_list)

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
        "--timeout", type=_timeout, default=3600, metavar="SECONDS",
        help="time limit per cell in whole seconds (default: 3600; 0 for none)",
    )
    p_rep.add_argument(
        "--save-executed", metavar="DIR",
        help="also write the executed notebooks (with outputs) to DIR (created if missing; "
             "not the notebooks' own folder)",
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
    p_rep.add_argument(
        "--set", action="append", metavar="STUDY.FIELD=VALUE",
        help="change one scale field of the profile, e.g. --set hierarchy.seeds=0,1 (repeatable; "
             "default: $SAE_THEORY_OVERRIDES); figure sidecars, verdicts and the README table say so",
    )
    p_rep.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    p_rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_rep.set_defaults(func=_cmd_reproduce, parser=p_rep)

    p_cl = sub.add_parser(
        "claims",
        help="the registered claims and their recorded verdicts",
        description="Print the verdict of every registered claim (sae_theory.claims) at a profile, "
                    "the README's generated results table, or rewrite that table; or compare a run's "
                    "verdicts with the committed ones.",
    )
    p_cl.add_argument("--profile", metavar="{quick,full}", help=f"profile (default: ${PROFILE_ENV}, else quick)")
    p_cl.add_argument("--folder", metavar="DIR",
                      help="folder of verdicts_<profile>.json (default: where figures go, or the committed "
                           "paper_figures/ while no run has recorded that profile there; for --markdown/--readme "
                           "the committed paper_figures/)")
    table = p_cl.add_mutually_exclusive_group()
    table.add_argument("--markdown", action="store_true", help="print the README's results table (Markdown)")
    table.add_argument("--readme", metavar="PATH",
                       help="rewrite the generated results table in the README at PATH (between its "
                            "claims-table markers)")
    table.add_argument("--compare", action="store_true",
                       help="compare a run's verdicts (--folder, default where figures go) with the committed "
                            "ones, claim by claim: status, measured values that differ, settings")
    p_cl.set_defaults(func=_cmd_claims, parser=p_cl)

    p_au = sub.add_parser(
        "audit",
        help="audit a trained SAE on activations (reconstruction, GBA's and MP-SAE's views, figures)",
        description="Audit a trained SAE on activations: FVU, L0, dead and dense latents; the firing-frequency "
                    "distribution and the identifiability conditions H1-H3, V1 on its codes and dictionary (GBA); "
                    "Babel, effective rank and the error against inference sparsity (MP-SAE); MCS against a second "
                    "SAE. Writes audit.json, summary.md and figures into --out (sae_theory.audit).",
    )
    p_au.add_argument("sae_folder", metavar="SAE_FOLDER",
                      help="a save_sae folder, a checkpoint (step folder or checkpoint_dir), or a SAELens save folder")
    p_au.add_argument("--activations", required=True, metavar="SOURCE",
                      help="a .pt / .safetensors (file.safetensors:key for one of several tensors) / .npy file of shape "
                           "(..., d), a folder of such shards (read in name order), or synthetic:<spec> for a "
                           "SparseFeatureModel sample of the SAE's width, e.g. synthetic:n=256,s=4,rows=20000,seed=0")
    p_au.add_argument("--second", metavar="SAE_FOLDER", help="another SAE of the same d: compare the dictionaries (MCS)")
    p_au.add_argument("--out", metavar="DIR",
                      help="folder for audit.json, summary.md and the figures (default: audit_<SAE folder name>); "
                           "replaced atomically, and only if it holds nothing but an earlier audit")
    p_au.add_argument("--max-rows", type=_positive_int, metavar="N", help="read at most N rows (default: all)")
    p_au.add_argument("--batch-size", type=_positive_int, default=4096, metavar="B", help="rows per batch (default: 4096)")
    p_au.add_argument("--sample-rows", type=_positive_int, default=4096, metavar="N",
                      help="rows of the random sample the GBA and MP-SAE views are measured on (default: 4096)")
    p_au.add_argument("--device", metavar="DEVICE",
                      help="where to load the SAE folders, e.g. cpu or cuda:0 (default: where they were saved)")
    p_au.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_au.set_defaults(func=_cmd_audit, parser=p_au)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sae-theory`` and ``python -m sae_theory``; returns the exit code.

    An invalid argument raises ``SystemExit(2)`` (argparse's usage error) before anything runs.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `sae-theory`: say what there is to do
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`sae-theory claims | head`): not an error of ours
        # Python flushes stdout again at exit; point it at devnull so that flush cannot raise
        # (the recipe of the Python docs, "Note on SIGPIPE")
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
