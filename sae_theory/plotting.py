"""Figure style and figure files with provenance.

Every paper figure is written by :func:`save_figure` as ``<name>.png`` + ``<name>.pdf`` with a
``<name>.json`` sidecar (profile, seeds, config, package version, time, git commit), into the
folder :func:`figure_dir` picks:

1. ``$SAE_THEORY_FIGURE_DIR`` when set;
2. else ``<repo>/paper_figures`` when the package runs from a checkout;
3. else ``./paper_figures``;

and, under the ``quick`` profile inside CI (``CI`` set to a true value), the ``_ci`` subfolder of
that, which git ignores, so CI never rewrites the committed figures.

>>> from sae_theory.plotting import use_style, save_figure      # doctest: +SKIP
>>> use_style()                                                   # doctest: +SKIP
>>> save_figure(fig, "gba_fig_resonance", P, config=cfg)          # doctest: +SKIP
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

from ._json import to_jsonable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sae_theory.profiles import Profile

__all__ = [
    "FIGURE_DIR_ENV",
    "use_style",
    "repo_root",
    "base_figure_dir",
    "figure_dir",
    "save_figure",
    "written_figures",
    "feature_frequency_figure",
    "conditions_figure",
    "h3_sample_size_figure",
    "band_figure",
    "resonance_figure",
    "toy_figure",
    "adaptive_sparsity_figure",
]

#: Environment variable that overrides where figures go.
FIGURE_DIR_ENV = "SAE_THEORY_FIGURE_DIR"

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
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in _FALSE_STRINGS


def _profile_name(profile: Profile | str) -> str:
    return profile if isinstance(profile, str) else profile.name


def base_figure_dir() -> Path:
    """Where figures go before the CI rule: ``$SAE_THEORY_FIGURE_DIR``, else
    ``<repo>/paper_figures``, else ``./paper_figures``. Absolute; not created."""
    override = os.environ.get(FIGURE_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    root = repo_root()
    return (root if root is not None else Path.cwd()).resolve() / "paper_figures"


def figure_dir(profile: Profile | str) -> Path:
    """The folder figures of ``profile`` are written to; created if missing.

    Parameters
    ----------
    profile
        A :class:`~sae_theory.profiles.Profile` or a profile name.

    Returns
    -------
    Path
        :func:`base_figure_dir`, or its ``_ci`` subfolder under the ``quick`` profile when the
        environment variable ``CI`` is set to a true value (anything but ``""``, ``0``,
        ``false``, ``no``, ``off``).
    """
    out = base_figure_dir()
    if _profile_name(profile) == "quick" and _in_ci():
        out = out / "_ci"
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
    fig.savefig(png, dpi=PNG_DPI, bbox_inches="tight")
    # No creation date, so re-running a notebook leaves an unchanged figure byte-identical.
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    if data is not None:
        import pandas as pd

        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        frame.to_csv(out / f"{name}.csv", index=False)
        sidecar["files"].append(f"{name}.csv")
    (out / f"{name}.json").write_text(json.dumps(sidecar, indent=2, sort_keys=False) + "\n")
    _written.append(png)
    return png


def written_figures() -> list[Path]:
    """PNG paths written by :func:`save_figure` in this process, oldest first (a copy)."""
    return list(_written)


# --------------------------------------------------------------------------------------------
# figures of notebook 01 (feature model and identifiability); each takes the experiment's frame
# --------------------------------------------------------------------------------------------


def feature_frequency_figure(df):
    """Empirical frequency of every feature with its 99% interval, against the model's f, one
    panel per law (``experiments.frequency_check``)."""
    import matplotlib.pyplot as plt

    use_style()
    laws = list(dict.fromkeys(df["law"]))
    fig, axes = plt.subplots(1, len(laws), figsize=(4.2 * len(laws), 3.4), squeeze=False)
    for ax, law in zip(axes[0], laws):
        d = df[df["law"] == law].sort_values("rank")
        ax.errorbar(d["rank"], d["f_hat"], yerr=[d["f_hat"] - d["ci_low"], d["ci_high"] - d["f_hat"]],
                    fmt="o", ms=2, lw=0.6, alpha=0.6, label="empirical, 99% CI")
        ax.plot(d["rank"], d["f"], color="k", lw=1.2, label="model f")
        if d["f"].max() / d["f"].min() > 10:
            ax.set(xscale="log", yscale="log")
        inside = d["inside"].mean()
        ax.set(title=f"{law}\n{inside:.1%} of f inside their 99% CI", xlabel="feature rank by f", ylabel="frequency")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def conditions_figure(df):
    """Where each identifiability condition holds over the grid (``experiments.identifiability_grid``):
    one heatmap per condition, rows (n, d), columns (s, q); the cell text is the measured value."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    conds = list(dict.fromkeys(df["condition"]))
    fig, axes = plt.subplots(1, len(conds), figsize=(4.6 * len(conds), 0.42 * df.groupby(["n", "d"]).ngroups + 1.8), squeeze=False)
    for ax, c in zip(axes[0], conds):
        d = df[df["condition"] == c]
        holds = d.pivot_table(index=["n", "d"], columns=["s", "q"], values="holds", aggfunc="mean")
        value = d.pivot_table(index=["n", "d"], columns=["s", "q"], values="value", aggfunc="mean")
        sns.heatmap(holds.astype(float), ax=ax, cmap="RdYlGn", vmin=0, vmax=1, cbar=False,
                    annot=value, fmt=".2g", annot_kws={"fontsize": 6}, linewidths=0.3)
        ax.set(title=f"{c} (green = holds)", xlabel="(s, planted q)", ylabel="(n, d)")
    fig.tight_layout()
    return fig


def h3_sample_size_figure(df):
    """H3 on growing samples of one model (``experiments.h3_sample_size``) against n^-1/2 and the
    population value."""
    import matplotlib.pyplot as plt

    use_style()
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    ax.plot(df["N"], df["h3"], "o-", label="measured max #both/#either")
    ax.axhline(df["threshold"].iloc[0], color="C3", ls="--", label="threshold $n^{-1/2}$")
    ax.axhline(df["population_h3"].iloc[0], color="k", ls=":", label="population value")
    ax.set(xscale="log", yscale="log", xlabel="samples N",
           ylabel="H3 value", title=f"H3 on a finite sample (n={df['n'].iloc[0]}, s={df['s'].iloc[0]})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def band_figure(df, *, n_slice: int | None = None):
    """The theorem's resonance band and width bound (``experiments.theorem_band``).

    Left: log10(high/low) over (n, d) for s = 3 (0 = empty band). Middle: the band against d at
    one n, per s, with the critical dimension d*. Right: the width bound at the band's centre
    against n, per s, beside the M = 4n the authors' synthetic run used.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.9))
    s3 = df[(df["s"] == 3) & (df["d"] <= df["n"])]  # superposition regime only
    heat = s3.pivot_table(index="n", columns="d", values="log10_band_ratio").clip(lower=0)
    sns.heatmap(heat, ax=axes[0], cmap="viridis", cbar_kws={"label": "log10(high / low)"})
    axes[0].set(title="band width, s = 3 (d <= n)", xlabel="d", ylabel="n")
    n_slice = n_slice or int(sorted(df["n"].unique())[len(df["n"].unique()) // 2])
    d = df[(df["n"] == n_slice) & (df["d"] <= n_slice)]
    for k, (s, g) in enumerate(d.groupby("s")):
        g = g.sort_values("d")
        color = f"C{k}"
        if not g["nonempty"].any():
            axes[1].plot([], [], color=color, label=f"s={s}: empty band")
            continue
        axes[1].fill_between(g["d"], g["low"], np.maximum(g["high"], g["low"]), color=color, alpha=0.12)
        axes[1].plot(g["d"], g["high"], color=color, label=f"s={s}: top of band")
        axes[1].axvline(g["critical_d"].iloc[0], color=color, ls=":", lw=1)
    axes[1].axhline(1 / n_slice, color="k", lw=1, label="bottom = 1/n")
    axes[1].axvline(np.sqrt(n_slice), color="k", ls="--", lw=0.8, label=r"$\sqrt{n}$")
    axes[1].set(xscale="log", yscale="log", xlabel="d", ylabel="target frequency p",
                title=f"band at n = {n_slice} (dotted: d* per s)")
    axes[1].legend(fontsize=7)
    big = df[(df["d"] == df["d"].max()) & df["nonempty"]]
    for k, (s, g) in enumerate(big.groupby("s")):
        g = g.sort_values("n")
        axes[2].plot(g["n"], g["width_at_mid"], "o-", color=f"C{k + 1}", label=f"s={s}")
    ns = np.array(sorted(df["n"].unique()), dtype=float)
    axes[2].plot(ns, 4 * ns, "k--", label="M = 4n (authors' run)")
    axes[2].set(xscale="log", yscale="log", xlabel="n", ylabel="width bound M at band centre",
                title="width bound (non-empty bands)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# figures of notebooks 02-03 (bias adaptation)
# --------------------------------------------------------------------------------------------


def resonance_figure(df):
    """BA phase diagram (``experiments.resonance``): FRR@0.9 over (p/f, d) with the theorem's band
    (constants 1) marked, and FRR against the width M."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    use_style()
    phase = df[df["kind"] == "phase"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.9), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    heat = phase.pivot_table(index="d", columns="p_over_f", values="frr").sort_index(ascending=False)
    inband = phase.pivot_table(index="d", columns="p_over_f", values="in_band").sort_index(ascending=False)
    sns.heatmap(heat, ax=axes[0], cmap="magma", vmin=0, vmax=1, annot=True, fmt=".2f", annot_kws={"fontsize": 7},
                cbar_kws={"label": "FRR @ cos 0.9"})
    for (i, j), v in np.ndenumerate(inband.to_numpy()):
        if v:
            axes[0].add_patch(plt.Rectangle((j, i), 1, 1, fill=False, ec="cyan", lw=1.5))
    n, f = int(phase["n"].iloc[0]), float(phase["f"].iloc[0])
    axes[0].set(title=f"BA, n={n}, f={f:.3g}, M=4n (cyan: inside the theorem's band)", xlabel="target frequency p / f", ylabel="d")
    for k, (d, g) in enumerate(phase.groupby("d")):
        g = g.sort_values("p_over_f")
        axes[1].plot(g["p_over_f"], g["frr"], "o-", color=f"C{k}", label=f"d={d}")
        axes[1].plot(g["p_over_f"], g["frr_init"], ":", color=f"C{k}", lw=0.8)
    axes[1].axvline(1.0, color="k", ls="--", lw=0.8, label="p = f")
    axes[1].set(xscale="log", xlabel="p / f", ylabel="FRR @ 0.9", title=f"resonance (dotted: untrained; sqrt(n)={np.sqrt(n):.0f})")
    axes[1].legend(fontsize=7)
    width = df[df["kind"] == "width"].sort_values("M")
    if len(width):
        axes[2].plot(width["M"] / width["n"], width["frr"], "o-", label="FRR @ 0.9")
        axes[2].plot(width["M"] / width["n"], width["frr_08"], "s--", label="FRR @ 0.8")
        axes[2].set(xscale="log", xlabel="width M / n", ylabel="FRR", ylim=(-0.02, 1.02),
                    title=f"width (d={int(width['d'].iloc[0])}, p={width['p_over_f'].iloc[0]:g} f)")
        axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def mp_theory_figure(props, earlier, conv):
    """MP-SAE propositions (``experiments.proposition_checks``, ``earlier_atom_cosines``,
    ``convergence``): C.1 and C.2 errors per dictionary, residual-vs-earlier-atom cosines against
    unselected atoms, and convergence of x_hat(t) to the projection onto span(D)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    tiny = 1e-18  # floor so exact zeros show on a log axis
    for ax, col, title in ((axes[0], "last_inner", "C.1: |<D_j(t), r(t)>|"), (axes[1], "norm_drop_error", "C.2: |drop of ||r||^2 - alpha^2|")):
        d = props.assign(value=np.log10(props[col].clip(lower=tiny)))
        sns.histplot(d, x="value", hue="dictionary", element="step", stat="probability", common_norm=False, bins=60, ax=ax)
        ax.axvline(-12, color="k", ls="--", lw=1)
        ax.set(xlabel=f"log10 {col} (exact 0 shown at -18)", title=title)
    e = earlier.copy()
    e["group"] = np.where(e["kind"] == "unselected atom", "unselected", "lag " + e["lag"].clip(upper=4).astype(str).str.replace("4", "4+"))
    order = ["lag 0", "lag 1", "lag 2", "lag 3", "lag 4+", "unselected"]
    sns.boxplot(e, x="group", y="cosine", hue="dictionary", order=order, ax=axes[2], showfliers=False)
    axes[2].set(xlabel="atom selected t - s steps before (lag) / never selected", ylabel="|cos(r(t), atom)|",
                title="residual vs earlier atoms")
    sns.lineplot(conv, x="step", y="distance_to_projection", hue="dictionary", style="selection", marker="o", ax=axes[3])
    axes[3].set(xscale="log", yscale="log", ylabel="max ||x_hat(t) - P_span(D) x||", title="C.3: convergence to the projection")
    fig.tight_layout()
    return fig


def toy_figure(frr, cons, front):
    """The imbalanced toy (``experiments.gba_vs_topk``, ``consistency``, ``frontier``): FRR beside
    the paper's values, cross-seed MCS, and the L2-vs-fraction-active frontier."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    order = list(dict.fromkeys(frr["method"]))
    sns.barplot(frr, x="method", y="frr", hue="tau", order=order, ax=axes[0], errorbar=("pi", 100), alpha=0.85)
    paper = frr.drop_duplicates(["method", "tau"])
    for k, tau in enumerate(sorted(paper["tau"].unique())):
        p = paper[paper["tau"] == tau].set_index("method").reindex(order)
        axes[0].scatter([i + (k - 0.5) * 0.4 for i in range(len(order))], p["paper_frr"], marker="_", s=400,
                        color="k", zorder=5, label="paper" if k == 0 else None)
    axes[0].set(ylim=(0, 1.05), ylabel="FRR", xlabel="", title="FRR on the toy (bars: ours, range over seeds; black: paper)")
    axes[0].tick_params(axis="x", rotation=20)
    axes[0].legend(fontsize=7)
    sns.lineplot(cons, x="threshold", y="fraction", hue="method", marker="o", ax=axes[1], errorbar=("pi", 100))
    axes[1].set(ylim=(0, 1.02), xlabel="MCS threshold", ylabel="fraction of neurons", title="cross-seed consistency")
    for family, g in front.groupby("family"):
        g = g.sort_values("fraction_active")
        axes[2].plot(g["fraction_active"], g["l2_loss"], "o-" if family != "GBA" else "*", ms=6 if family != "GBA" else 14, label=family)
        if family == "GBA":
            for _, r in g.iterrows():
                axes[2].annotate(r["method"], (r["fraction_active"], r["l2_loss"]), fontsize=7)
    axes[2].set(xscale="log", yscale="log", xlabel="fraction of neurons active", ylabel="L2 loss (held out)", title="frontier")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# figure of notebook 05 (MP-SAE adaptive sparsity)
# --------------------------------------------------------------------------------------------


def adaptive_sparsity_figure(err_df, l0_df, tradeoff_df=None):
    """MP-SAE's adaptive sparsity (``experiments.adaptive_sparsity``, ``experiments.threshold_l0``,
    optionally ``experiments.threshold_tradeoff``).

    Left: normalised MSE against inference k per method (mean over seeds, band: range), the
    training k dashed. Middle: threshold mode's per-input L0 for each target nmse tau^2, per true
    row sparsity. Right: MP-SAE's mean error against mean L0, fixed k (lines) against threshold
    mode (stars; on the pooled rows labelled with tau^2), on the training sparsity and on the pooled
    rows of every sparsity (``tradeoff_df``); without ``tradeoff_df``, the fixed-k curve of ``err_df`` against
    threshold mode at the training sparsity.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    train_k = int(err_df["train_k"].iloc[0])
    named = [m for m in ("MP-SAE", "TopK", "ReLU") if m in set(err_df["method"])]
    order = named + sorted(set(err_df["method"]) - set(named))
    sns.lineplot(err_df, x="inference_k", y="nmse", hue="method", hue_order=order, marker="o", markersize=3,
                 errorbar=("pi", 100), ax=axes[0])
    axes[0].axvline(train_k, color="k", ls="--", lw=0.8, label=f"training k = {train_k}")
    axes[0].set(yscale="log", xlabel="inference k", ylabel=r"normalised MSE  $\|x-\hat x\|^2/\|x\|^2$",
                title="error against inference k (same training L0)")
    axes[0].legend(fontsize=7)

    d = l0_df.assign(target_label=l0_df["target_nmse"].map(lambda v: f"{v:.3g}"))
    order_t = [f"{v:.3g}" for v in sorted(d["target_nmse"].unique(), reverse=True)]
    sns.boxplot(d, x="target_label", y="l0", hue="true_s", order=order_t, ax=axes[1], fliersize=1.5, linewidth=0.8,
                palette="viridis")
    axes[1].axhline(train_k, color="k", ls="--", lw=0.8)
    cap = int(d["cap"].iloc[0])
    axes[1].set(xlabel=rf"target nmse $\tau^2$ (threshold mode, cap {cap} steps)", ylabel="per-input L0",
                title="threshold mode: L0 adapts to the input")
    axes[1].legend(title="active features", fontsize=7, title_fontsize=7)

    s_train = int(d["train_s"].iloc[0])
    ax = axes[2]
    if tradeoff_df is not None:
        for color, pop in (("C0", f"s={s_train}"), ("C1", "mixed")):
            g = tradeoff_df[tradeoff_df["population"] == pop]
            fixed = g[g["mode"] == "fixed k"].groupby("k")[["l0", "nmse"]].mean()
            thr = g[g["mode"] == "threshold"].groupby("target")[["l0", "nmse"]].mean()
            label = "training rows" if pop != "mixed" else "pooled rows, s = " + ", ".join(
                sorted({p.removeprefix("s=") for p in tradeoff_df["population"] if p != "mixed"}, key=int))
            ax.plot(fixed["l0"], fixed["nmse"], "o-", ms=2.5, lw=1, color=color, label=f"fixed k, {label}")
            ax.plot(thr["l0"], thr["nmse"], "*", ms=11, color=color, mec="k", mew=0.5, label=f"threshold, {label}")
            for t, r in thr.iterrows() if pop == "mixed" else ():
                ax.annotate(f"{t * t:.3g}", (r["l0"], r["nmse"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    else:
        mp = err_df[err_df["method"] == "MP-SAE"].groupby("inference_k")[["l0", "nmse"]].mean()
        ax.plot(mp["l0"], mp["nmse"], "o-", ms=3, color="C0", label="MP-SAE, fixed k")
        th = d[d["true_s"] == s_train].groupby("target_nmse")[["l0", "nmse"]].mean()
        ax.plot(th["l0"], th["nmse"], "*", ms=11, color="C3", label=f"threshold mode (s = {s_train})")
        for t, r in th.iterrows():
            ax.annotate(f"{t:.3g}", (r["l0"], r["nmse"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(yscale="log", xlabel="mean L0", ylabel="mean normalised MSE", title="MP-SAE: fixed k against threshold mode")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# figures of notebooks 06 and 07 (hierarchy)
# --------------------------------------------------------------------------------------------

_HIER_ORDER = ("MP-SAE", "ReLU", "TopK", "BatchTopK", "JumpReLU", "Matryoshka", "GBA")


def hierarchy_figure(df):
    """Fig 4 (``experiments.hierarchy``): flat MSE, hierarchical MSE and absorption against the
    within-level correlation rho, per method (median over seeds, band: range), and the Babel
    contrast (whole dictionary against co-active subsets)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    order = [m for m in _HIER_ORDER if m in set(df["method"])]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for ax, col, title in ((axes[0], "flat_mse", "flat MSE (within-level geometry)"),
                           (axes[1], "hierarchical_mse", "hierarchical MSE (cross-level leakage)"),
                           (axes[2], "absorption", "absorption: cos(learned child, true parent)")):
        sns.lineplot(df, x="rho", y=col, hue="method", hue_order=order, style="method", style_order=order,
                     estimator="median", errorbar=("pi", 100), markers=True, dashes=False, ax=ax, legend=ax is axes[0])
        ax.set(xlabel=r"within-level correlation $\rho$", ylabel=col, title=title, xticks=sorted(df["rho"].unique()))
        if col != "absorption":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    b = df.melt(id_vars=["method", "rho"], value_vars=["babel_1", "babel_coactive"], var_name="score", value_name="babel")
    b["score"] = b["score"].map({"babel_1": "whole dictionary, $\\mu_1(1)$", "babel_coactive": "co-active subsets"})
    sns.barplot(b, x="method", y="babel", hue="score", order=order, estimator="median", errorbar=("pi", 100), ax=axes[3])
    axes[3].set(xlabel="", ylabel="Babel (median over rho and seeds)", title="Babel: whole dictionary vs co-active")
    axes[3].tick_params(axis="x", rotation=30)
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    return fig


def hierarchy_heatmaps(fits, *, title: str = ""):
    """Matched D^ D^T (self-similarity) and D^ D_GT^T (alignment) heatmaps, one column per fit
    (:class:`~sae_theory.experiments.hierarchical.HierarchyFit`), the ground truth's D D^T first.
    Atoms are cosine-normalised; the order is the true concepts' (parents, then children)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    import torch

    use_style()

    def unit(D):
        return D / D.norm(dim=1, keepdim=True).clamp_min(1e-300)

    fits = list(fits)
    T = unit(fits[0].true_dictionary)
    levels = fits[0].levels
    order = [i for i in range(len(levels)) if levels[i] == 0] + [i for i in range(len(levels)) if levels[i] == 1]
    idx = torch.tensor(order)
    fig, axes = plt.subplots(2, len(fits) + 1, figsize=(2.6 * (len(fits) + 1), 5.4))
    kw = dict(vmin=-1, vmax=1, cmap="RdBu_r", cbar=False, square=True, xticklabels=False, yticklabels=False)
    sns.heatmap((T @ T.T)[idx][:, idx].numpy(), ax=axes[0, 0], **kw)
    axes[0, 0].set_title("ground truth $DD^T$", fontsize=9)
    axes[1, 0].axis("off")
    for j, f in enumerate(fits, start=1):
        L = unit(f.matched_dictionary)
        sns.heatmap((L @ L.T)[idx][:, idx].numpy(), ax=axes[0, j], **kw)
        sns.heatmap((L @ T.T)[idx][:, idx].numpy(), ax=axes[1, j], **kw)
        axes[0, j].set_title(f"{f.method}: $\\hat D\\hat D^T$", fontsize=9)
        axes[1, j].set_title(f"{f.method}: $\\hat D D_{{GT}}^T$", fontsize=9)
    for ax in axes.flat:
        n_par = sum(1 for v in levels if v == 0)
        if ax.has_data():
            ax.axhline(n_par, color="k", lw=0.6)
            ax.axvline(n_par, color="k", lw=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def cross_paper_figure(absorb_df, fm_df):
    """Notebook 07: absorption of GBA beside MP-SAE and ReLU (``experiments.absorption`` rows) and
    FRR / L0 on GBA's statistical model (``experiments.mp_on_feature_model``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    d = absorb_df.assign(cell=absorb_df["child_mean"].map(lambda v: f"child mean {v:g}"))
    sns.barplot(d, x="cell", y="absorption", hue="method", errorbar=("pi", 100), ax=axes[0])
    axes[0].set(xlabel="", ylabel="cos(learned child, true parent)", title="absorption (missing bar: no child recovered)")
    f = fm_df.melt(id_vars=["method", "seed"], value_vars=["frr", "frr_08"], var_name="tau", value_name="FRR")
    f["tau"] = f["tau"].map({"frr": "0.9", "frr_08": "0.8"})
    sns.barplot(f, x="method", y="FRR", hue="tau", errorbar=("pi", 100), ax=axes[1])
    axes[1].set(ylim=(0, 1.05), xlabel="", title="feature recovery on GBA's model")
    axes[1].tick_params(axis="x", rotation=20)
    sns.barplot(fm_df, x="method", y="l0", errorbar=("pi", 100), ax=axes[2], color="C2")
    axes[2].axhline(float(fm_df["s"].iloc[0]), color="k", ls="--", lw=0.8, label="true L0 = s")
    axes[2].set(xlabel="", ylabel="held-out L0", title="L0 of each run")
    axes[2].tick_params(axis="x", rotation=20)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig
