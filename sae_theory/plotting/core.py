"""Figure style, figure files with provenance, and the method palette.

Every paper figure is written by :func:`save_figure` as ``<name>.png`` + ``<name>.pdf`` with a
``<name>.json`` sidecar (profile, seeds, config, package version, time, git commit), into the
folder :func:`figure_dir` picks:

1. ``$SAE_THEORY_FIGURE_DIR`` when set;
2. else ``<repo>/paper_figures/_latest`` (``./paper_figures/_latest`` outside a checkout), which
   git ignores, so running a notebook, the tests or ``sae-theory reproduce`` never dirties the
   tree;
3. ``<repo>/paper_figures`` itself only when the committed figures are being updated on purpose:
   ``$SAE_THEORY_UPDATE_FIGURES`` set to a true value (``sae-theory reproduce --update-figures``).

A file whose bytes would not change is not rewritten, and the sidecar keeps its old time and
commit when nothing else in it changed, so updating the committed figures touches only the
figures whose drawing or numbers changed.

>>> from sae_theory.plotting import use_style, save_figure      # doctest: +SKIP
>>> use_style()                                                   # doctest: +SKIP
>>> save_figure(fig, "gba_fig_resonance", P, config=cfg)          # doctest: +SKIP

Every figure whose hue is a method takes its order and colours from the SAE registry
(:func:`~sae_theory.models.registry.method_order`, :func:`method_colors`), so a method keeps its
place and colour from figure to figure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._json import to_jsonable
from ..models.registry import family_of, method_order, registered_saes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sae_theory.profiles import Profile

__all__ = [
    "GRID_WIDTH",
    "panel_grid",
    "shared_legend",
    "mark_zero_bars",
    "plain_log_axis",
    "name_zero_curves",
    "FIGURE_DIR_ENV",
    "UPDATE_FIGURES_ENV",
    "WALL_CLOCK_COLUMNS",
    "PNG_DPI",
    "UNKNOWN_METHOD_COLOR",
    "base_figure_dir",
    "figure_dir",
    "hue_kwargs",
    "method_colors",
    "repo_root",
    "save_figure",
    "use_style",
    "written_figures",
]

#: Environment variable that overrides where figures go.
FIGURE_DIR_ENV = "SAE_THEORY_FIGURE_DIR"
#: Set to a true value to write into the committed ``paper_figures/`` instead of ``_latest``.
UPDATE_FIGURES_ENV = "SAE_THEORY_UPDATE_FIGURES"
#: Columns of a figure's data that are wall-clock measurements, not numbers of the figure: left
#: out of the CSV so that re-running does not change a committed file.
WALL_CLOCK_COLUMNS = ("seconds",)

#: Resolution of the PNG files.
PNG_DPI = 150

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_FALSE_STRINGS = frozenset({"", "0", "false", "no", "off", "n", "f"})

_style_set = False
_written: list[Path] = []


def use_style() -> None:
    """Set the seaborn theme used by every figure. Idempotent: only the first call acts."""
    global _style_set
    if _style_set:
        return
    import seaborn as sns

    sns.set_theme(
        context="paper",
        style="whitegrid",
        rc={"figure.dpi": 110, "savefig.dpi": PNG_DPI, "savefig.bbox": "tight"},
    )
    _style_set = True


def repo_root() -> Path | None:
    """The checkout this package runs from, or ``None`` for an installed (non-editable) copy.

    A checkout is recognised by ``pyproject.toml`` and ``notebooks/`` beside the package folder.
    """
    root = Path(__file__).resolve().parents[2]  # <root>/sae_theory/plotting/core.py
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def _updating() -> bool:
    return os.environ.get(UPDATE_FIGURES_ENV, "").strip().lower() not in _FALSE_STRINGS


def _profile_name(profile: Profile | str) -> str:
    return profile if isinstance(profile, str) else profile.name


def base_figure_dir() -> Path:
    """The committed figure folder: ``$SAE_THEORY_FIGURE_DIR``, else ``<repo>/paper_figures``,
    else ``./paper_figures``. Absolute; not created."""
    override = os.environ.get(FIGURE_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    root = repo_root()
    return (root if root is not None else Path.cwd()).resolve() / "paper_figures"


def figure_dir(profile: Profile | str | None = None) -> Path:
    """The folder figures are written to; created if missing.

    Parameters
    ----------
    profile
        Unused (kept so callers can pass the profile a figure is made under; every profile
        follows the same rule).

    Returns
    -------
    Path
        ``$SAE_THEORY_FIGURE_DIR`` when set; else :func:`base_figure_dir` when
        ``$SAE_THEORY_UPDATE_FIGURES`` is set to a true value (anything but ``""``, ``0``,
        ``false``, ``no``, ``off``); else its git-ignored ``_latest`` subfolder.
    """
    out = base_figure_dir()
    if not os.environ.get(FIGURE_DIR_ENV) and not _updating():
        out = out / "_latest"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sae_theory")
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    root = repo_root()
    if root is None:
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def save_figure(
    fig: Figure,
    name: str,
    profile: Profile,
    *,
    config: Any = None,
    seeds: Any = None,
    data: Any = None,
) -> Path:
    """Write ``fig`` as ``<name>.png`` (150 dpi) and ``<name>.pdf`` plus a ``<name>.json`` sidecar.

    Parameters
    ----------
    fig
        A matplotlib figure. It is not closed: the caller decides.
    name
        Plain file stem, e.g. ``"gba_fig_resonance"``: letters, digits, ``_`` and ``-`` only.
    profile
        The profile the figure was made under; picks the folder (:func:`figure_dir`) and is
        recorded in the sidecar.
    config
        Any JSON-able value describing the run (dicts, dataclasses, numpy/torch scalars, dtypes
        and devices are converted).
    seeds
        Seeds used; defaults to ``profile.seeds``.
    data
        Optional tidy table behind the figure (a ``pandas.DataFrame`` or anything
        ``pandas.DataFrame`` accepts), written as ``<name>.csv`` so the figure can be redrawn
        without recomputing.

    Returns
    -------
    Path
        The PNG path.

    Raises
    ------
    ValueError
        If ``name`` is not a plain file stem.
    TypeError
        If ``config`` holds a value that cannot be written to JSON.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"name={name!r} must be a plain file stem of letters, digits, '_' and '-' "
            "(no folder, no extension), e.g. 'gba_fig_resonance'."
        )
    # Convert first, so a bad config fails before any file is written.
    sidecar: dict[str, Any] = {
        "name": name,
        "profile": profile.to_dict(),
        "seeds": to_jsonable(profile.seeds if seeds is None else seeds, "seeds"),
        "config": to_jsonable(config, "config"),
        "version": _package_version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "files": [f"{name}.png", f"{name}.pdf"],
    }
    out = figure_dir(profile)
    png = out / f"{name}.png"
    files = {f"{name}.png": _render(fig, "png", dpi=PNG_DPI, bbox_inches="tight"),
             # no creation date: an unchanged figure renders to the same bytes
             f"{name}.pdf": _render(fig, "pdf", bbox_inches="tight", metadata={"CreationDate": None})}
    if data is not None:
        import pandas as pd

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        frame = frame.drop(columns=[c for c in WALL_CLOCK_COLUMNS if c in frame.columns])
        # 12 significant digits: the numbers, without the last-bit noise of one machine's BLAS
        files[f"{name}.csv"] = frame.to_csv(index=False, float_format="%.12g").encode()
        sidecar["files"].append(f"{name}.csv")
    changed = False
    for fname, payload in files.items():
        changed |= _write_if_changed(out / fname, payload)
    side = out / f"{name}.json"
    provenance = ("created_utc", "git_commit", "version")
    try:
        old = json.loads(side.read_text())
    except (OSError, ValueError):
        old = None
    same = old is not None and {k: v for k, v in old.items() if k not in provenance} == {
        k: v for k, v in json.loads(json.dumps(sidecar)).items() if k not in provenance}
    if changed or not same:
        side.write_text(json.dumps(sidecar, indent=2, sort_keys=False) + "\n")
    _written.append(png)
    return png


def _render(fig: Figure, fmt: str, **kwargs: Any) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _write_if_changed(path: Path, payload: bytes) -> bool:
    """Write ``payload`` to ``path`` unless it already holds exactly these bytes; True if written."""
    try:
        if path.read_bytes() == payload:
            return False
    except OSError:
        pass
    path.write_bytes(payload)
    return True


def written_figures() -> list[Path]:
    """PNG paths written by :func:`save_figure` in this process, oldest first (a copy)."""
    return list(_written)



# --------------------------------------------------------------------------------------------
# one colour per method, from the SAE registry
# --------------------------------------------------------------------------------------------

#: Colour of a method that no registered family claims.
UNKNOWN_METHOD_COLOR = "#8c8c8c"

#: How far a variant's shade moves from its family colour: positive towards white (light),
#: negative towards black (dark), light to dark. The family's own label keeps the colour itself.
_SHADES = (0.55, 0.36, 0.18, -0.18, -0.36, -0.55)

#: ``name=number`` in a variant's label, e.g. ``K=20`` or ``lambda=0.03``.
_PARAMETER_RE = re.compile(r"=\s*((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])")


@lru_cache(maxsize=1)
def _family_palette() -> tuple[str, ...]:
    """The qualitative colours families take in registration order: tab10, then the light half of
    tab20, without their greys (grey is for unknown methods)."""
    import matplotlib
    from matplotlib.colors import to_hex

    tab10 = [to_hex(c) for c in matplotlib.colormaps["tab10"].colors]
    tab20_light = [to_hex(c) for c in matplotlib.colormaps["tab20"].colors[1::2]]
    return tuple(c for c in tab10 + tab20_light if c not in ("#7f7f7f", "#c7c7c7"))


def _shade(color: str, amount: float) -> str:
    """``color`` moved ``amount`` of the way to white (amount > 0) or black (amount < 0); the hue
    is unchanged."""
    from matplotlib.colors import to_hex, to_rgb

    target = 1.0 if amount > 0 else 0.0
    return to_hex(tuple(c + abs(amount) * (target - c) for c in to_rgb(color)))


def _shade_step(label: str, suffix: str) -> int:
    """Which of :data:`_SHADES` a variant takes, from its label alone (so it never depends on the
    other methods of a figure): a ``name=number`` parameter in half-octave steps (light to dark as
    it grows, repeating every three octaves, so parameters up to 8x apart differ), else a fixed
    checksum of the label."""
    import math
    import zlib

    match = _PARAMETER_RE.search(suffix)
    if match is not None and float(match.group(1)) > 0:
        return round(2 * math.log2(float(match.group(1)))) % len(_SHADES)
    return zlib.crc32(label.encode()) % len(_SHADES)


def _method_color(method: str) -> str:
    entry = family_of(method)
    if entry is None:
        return UNKNOWN_METHOD_COLOR
    families = [e.name for e in registered_saes()]
    palette = _family_palette()
    base = palette[families.index(entry.name) % len(palette)]
    if method == entry.label:
        return base
    # the alias or label that starts the method; the rest is the variant's parameters
    head = max((t for t in entry.labels if method == t or method.startswith(t + " ")), key=len)
    return _shade(base, _SHADES[_shade_step(method, method[len(head):])])


def method_colors(methods) -> dict[str, str]:
    """One fixed colour per method label, for seaborn's ``palette=``.

    Each registered family (:func:`~sae_theory.models.registry.registered_saes`) has one
    colour of a qualitative palette (tab10 without its grey), picked by its registration index.
    The family's own label (``"TopK"``) gets that colour; a variant or alias (``"TopK K=20"``,
    ``"GBA wrong range"``, ``"L1"``) gets a lighter or darker shade of it (same hue); a method of
    no registered family gets the neutral grey :data:`UNKNOWN_METHOD_COLOR`. A colour depends on
    its label only, never on the other methods, so a method looks the same in every figure.

    Parameters
    ----------
    methods
        Method labels, e.g. a DataFrame's ``method`` column (repeats are fine).

    Returns
    -------
    dict
        Label -> hex colour, in :func:`~sae_theory.models.registry.method_order`.

    Raises
    ------
    TypeError
        If ``methods`` is a single string instead of a collection of labels.
    """
    if isinstance(methods, str):
        raise TypeError(f"methods must be a collection of method labels, got the string {methods!r}; wrap it in a list.")
    return {m: _method_color(str(m)) for m in method_order(methods)}


def hue_kwargs(methods) -> dict[str, Any]:
    """``hue_order`` and ``palette`` for a seaborn call whose hue is the method."""
    colors = method_colors(methods)
    return {"hue_order": list(colors), "palette": colors}


def mark_zero_bars(ax, *, label: str = "0") -> int:
    """Make the bars of ``ax`` whose height is 0 visible: a short black tick on the axis at each
    one's centre and ``label`` just above it (a zero bar otherwise draws nothing, and a reader
    cannot tell "0" from "not run"). Returns how many bars were marked."""
    from matplotlib.patches import Rectangle

    n = 0
    for patch in ax.patches:
        if isinstance(patch, Rectangle) and patch.get_width() > 0 and patch.get_height() == 0:
            x = patch.get_x() + patch.get_width() / 2
            ax.plot([patch.get_x(), patch.get_x() + patch.get_width()], [0, 0], color="k", lw=2.0, solid_capstyle="butt", zorder=6)
            ax.annotate(label, (x, 0), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=6, zorder=6)
            n += 1
    return n


def name_zero_curves(ax, data, *, y: str, by, fmt=str, where: str = "upper left") -> list[str]:
    """Name, in a box on ``ax``, the curves of ``data`` (grouped by ``by``) whose ``y`` is 0 at
    every point: drawn on the axis they hide each other. ``fmt`` turns a group key into its label;
    ``where``: "upper left", "center left" or "lower left". Returns the labels (none: no box)."""
    zero = [fmt(key) for key, g in data.groupby(by, sort=True) if (g[y] == 0).all()]
    if zero:
        y0, va = {"upper left": (0.97, "top"), "center left": (0.5, "center"), "lower left": (0.03, "bottom")}[where]
        ax.text(0.02, y0, "at 0 everywhere:\n" + "\n".join(zero), transform=ax.transAxes, va=va, ha="left", fontsize=7,
                bbox=dict(boxstyle="round", facecolor="white", alpha=0.85, edgecolor="0.8"), zorder=7)
    return zero


def plain_log_axis(ax, axis: str = "x", ticks=None) -> None:
    """Label a log axis with plain numbers (``16``, not ``1.6 x 10^1``) and no minor labels;
    ``ticks``: the major ticks to show (default: 1, 2, 3 and 5 times the powers of ten, so that a
    range within one decade is labelled too)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None:
        (ax.set_xticks if axis == "x" else ax.set_yticks)(list(ticks))
    else:
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------------------------
# panel grids that read at screen width
# --------------------------------------------------------------------------------------------

#: Width (inches) of a multi-panel figure: about 1,900 px at :data:`PNG_DPI`, so a laptop screen
#: shows it near full size and its text stays legible.
GRID_WIDTH = 12.6


def panel_grid(n: int, *, ncols: int = 2, panel_height: float = 4.2):
    """A constrained-layout figure of ``n`` panels in rows of ``ncols`` (about
    ``GRID_WIDTH`` wide); returns ``(fig, panels, spare)``: the first ``n`` axes in reading
    order and the cells left over in the last row (for a shared legend), possibly none."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    width = GRID_WIDTH if ncols > 1 else GRID_WIDTH / 2
    fig, grid = plt.subplots(nrows, ncols, figsize=(width, panel_height * nrows), squeeze=False, layout="constrained")
    cells = list(grid.flat)
    return fig, cells[:n], cells[n:]


def shared_legend(fig, handles, labels, *, title: str | None = None, spare=(), fontsize: float = 9):
    """One legend for every panel of ``fig``: in the first ``spare`` cell (turned into a blank
    panel; the other spare cells are hidden) when there is one, else above the panels, in one
    row (constrained layout makes room for it)."""
    spare = list(spare)
    for ax in spare:
        ax.axis("off")
    if spare:
        legend = spare[0].legend(handles, labels, title=title, loc="center", fontsize=fontsize + 2, title_fontsize=fontsize + 2,
                                 markerscale=1.5)
        legend.get_title().set_multialignment("center")
        return legend
    return fig.legend(handles, labels, title=title, loc="outside upper center", ncol=len(handles), fontsize=fontsize,
                      title_fontsize=fontsize, frameon=False)
