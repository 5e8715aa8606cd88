"""Figures of notebook 01 (feature model and identifiability); each takes its experiment's frame
(:mod:`sae_theory.experiments.feature_model`).

None of these figures has a method as its hue, so none uses a colour of the method palette
(:func:`~sae_theory.plotting.method_colors`): measured values are dark grey, model values black,
and the sparsity s a sequential palette.
"""

from __future__ import annotations

from .._checks import check_int
from .core import use_style

__all__ = ["band_figure", "conditions_figure", "feature_frequency_figure", "h3_sample_size_figure"]

#: What each identifiability condition's heatmap cell shows, and the rule the colour applies
#: (:func:`sae_theory.theory.conditions.check_identifiability`, default readings).
_CONDITION_TEXT = {
    "H1": ("max row support\n(active features in the fullest row)", r"$\leq \lceil \ln n \rceil$"),
    "H2": ("smallest mean non-zero coefficient of a feature\n(0: some feature never fired)", r"$\geq$ 0.1 $\times$ median over features"),
    "H3": ("#rows with both / #rows with either,\nlargest over feature pairs", r"$< n^{-1/2}$"),
    "V1": ("coherence: largest $|\\cos(v_i, v_j)|$\nover feature pairs", r"$< 1/(2 s_{max} - 1)$, $s_{max}$ = the cell's H1 number"),
}

_MEASURED = "0.25"  # measured values: dark grey (no method colour: these figures have no method)


def _s_colors(values) -> dict:
    """One colour per sparsity s, from a sequential palette (s is ordered, not a method)."""
    import matplotlib
    import numpy as np

    values = sorted({int(v) for v in values})
    cmap = matplotlib.colormaps["plasma"]
    return {s: cmap(x) for s, x in zip(values, np.linspace(0.0, 0.8, max(len(values), 2)))}


def feature_frequency_figure(df):
    """Empirical frequency of every feature with its 99% interval, against the model's f, one
    panel per law (``experiments.frequency_check``); the title gives the share of features whose
    f lies inside its interval (about 99% expected by chance; notebook 01 asserts at least 95%)."""
    import matplotlib.pyplot as plt

    use_style()
    laws = list(dict.fromkeys(df["law"]))
    fig, axes = plt.subplots(1, len(laws), figsize=(4.1 * len(laws), 3.6), squeeze=False)
    for ax, law in zip(axes[0], laws):
        d = df[df["law"] == law].sort_values("rank")
        ax.errorbar(d["rank"], d["f_hat"], yerr=[d["f_hat"] - d["ci_low"], d["ci_high"] - d["f_hat"]],
                    fmt="o", ms=2, color=_MEASURED, ecolor="0.6", lw=0.6, label="measured, with 99% interval")
        constant = d["f"].nunique() == 1
        ax.plot(d["rank"], d["f"], color="k", lw=1.4, label=f"model f = {d['f'].iloc[0]:.3g}" if constant else "model f")
        if d["f"].max() / d["f"].min() > 10:
            ax.set(xscale="log", yscale="log")
        inside = d["inside"].mean()
        ax.set(title=f"{law}\n{inside:.1%} of features: f inside their 99% interval", xlabel="feature rank (by model f)",
               ylabel="firing frequency (fraction of rows)")
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle("Sampled feature frequencies against the model (chance alone puts about 1% outside; at least 95% inside asserted)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def _threshold_text(d) -> str:
    """The threshold values of one condition's cells, when they depend on n only (or not at all)."""
    if "threshold" not in d.columns:
        return ""
    per_n = d.groupby("n")["threshold"].agg(["min", "max"])
    if not (per_n["min"] == per_n["max"]).all():
        return ""
    values = per_n["min"]
    if values.nunique() == 1:
        return f" = {values.iloc[0]:.3g}"
    return (" = " + " / ".join(f"{v:.3g}" for v in values) + " at n = " + " / ".join(str(int(n)) for n in values.index))


def conditions_figure(df):
    """Where each identifiability condition holds over the grid (``experiments.identifiability_grid``):
    one heatmap per condition (two per row), rows (n, d), columns (s, planted q). The colour says
    whether the condition holds; the number in a cell is the measured value the condition compares
    with its threshold, named in the panel's title with the rule."""
    import math

    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.patches import Patch

    use_style()
    conds = list(dict.fromkeys(df["condition"]))
    ncols = min(2, len(conds))
    nrows = math.ceil(len(conds) / ncols)
    n_rows_cells = df.groupby(["n", "d"]).ngroups
    n_cols_cells = df.groupby(["s", "q"]).ngroups
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 0.5 * n_cols_cells + 2.2, nrows * (0.36 * n_rows_cells + 1.9)),
                             squeeze=False)
    cmap = matplotlib.colormaps["RdYlGn"]
    fractional = False
    for ax, c in zip(axes.flat, conds):
        d = df[df["condition"] == c]
        holds = d.pivot_table(index=["n", "d"], columns=["s", "q"], values="holds", aggfunc="mean").astype(float)
        value = d.pivot_table(index=["n", "d"], columns=["s", "q"], values="value", aggfunc="mean")
        fractional |= bool(((holds > 0) & (holds < 1)).to_numpy().any())
        sns.heatmap(holds, ax=ax, cmap=cmap, vmin=0, vmax=1, cbar=False,
                    annot=value, fmt=".2g", annot_kws={"fontsize": 7.5}, linewidths=0.3)
        # the rows are the same in every panel: labelled on the left only
        ax.set_yticks(np.arange(len(holds.index)) + 0.5, [f"n = {n}, d = {dd}" for n, dd in holds.index] if ax in axes[:, 0] else [],
                      rotation=0, fontsize=8)
        ax.set_xticks(np.arange(len(holds.columns)) + 0.5, [f"s = {s}\nq = {q:g}" for s, q in holds.columns], rotation=0, fontsize=8)
        what, rule = _CONDITION_TEXT.get(c, ("measured value", "its threshold"))
        ax.set_title(f"{c}: number = {what}\ngreen (holds) when {rule}{_threshold_text(d)}", fontsize=9)
        ax.set(xlabel="active features per row s, planted co-occurrence q", ylabel="features n, dimension d" if ax in axes[:, 0] else "")
    for ax in axes.flat[len(conds):]:
        ax.set_visible(False)
    if fractional:
        fig.colorbar(matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), cmap), ax=axes, shrink=0.5,
                     label="fraction of runs where the condition holds")
    else:
        fig.legend(handles=[Patch(color=cmap(1.0), label="condition holds"), Patch(color=cmap(0.0), label="condition fails")],
                   loc="upper center", ncol=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.97), w_pad=2.0)
    return fig


def h3_sample_size_figure(df):
    """H3 on growing samples of one model (``experiments.h3_sample_size``) against its threshold
    n^-1/2 (the condition holds below it, shaded) and the population value."""
    import matplotlib.pyplot as plt

    use_style()
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    threshold, population = float(df["threshold"].iloc[0]), float(df["population_h3"].iloc[0])
    ax.plot(df["N"], df["h3"], "o-", color=_MEASURED, label="measured on N rows")
    ax.axhline(threshold, color="k", ls="--", lw=1.2, label=f"threshold $n^{{-1/2}}$ = {threshold:.3g}")
    ax.axhspan(population / 10, threshold, color="tab:green", alpha=0.08, lw=0, label="H3 holds (below the threshold)")
    ax.axhline(population, color="0.45", ls=":", lw=1.4, label=f"population value P(both) / P(either) = {population:.2g}")
    ax.set(xscale="log", yscale="log", xlabel="sample size N (rows of H)", ylim=(population / 3, 2.0),
           ylabel="H3 value: #rows with both / #rows with either\n(largest over feature pairs)",
           title=f"H3 on a finite sample (n = {df['n'].iloc[0]}, s = {df['s'].iloc[0]})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def band_figure(df, *, n_slice: int | None = None):
    """The theorem's resonance band and width bound (``experiments.theorem_band``).

    Left: log10(high/low) over (n, d) for s = 3 (0 = empty band; d > n left blank). Middle: the
    band against d at one n, per s, with the critical dimension d* (the verdict compares d* at
    s = 3 with sqrt(n)). Right: the width bound at the band's centre against n, per s, beside the
    M = 4n the authors' synthetic run used.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.lines import Line2D

    use_style()
    colors = _s_colors(df["s"])
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.4), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    s3 = df[(df["s"] == 3) & (df["d"] <= df["n"])]  # superposition regime only
    heat = s3.pivot_table(index="n", columns="d", values="log10_band_ratio").clip(lower=0)
    sns.heatmap(heat, ax=axes[0], cmap="viridis", cbar_kws={"label": r"band width $\log_{10}(p_{high} / p_{low})$  (0: empty)"})
    axes[0].set_facecolor("0.88")  # the cells left out (d > n) read as grey, not as a colour of the scale
    axes[0].grid(False)
    axes[0].set(title="band width at s = 3 (grey: d > n, not computed)", xlabel="input dimension d", ylabel="number of features n")
    axes[0].tick_params(axis="y", rotation=0)
    if n_slice is None:
        n_slice = int(sorted(df["n"].unique())[len(df["n"].unique()) // 2])
    else:
        n_slice = check_int("n_slice", n_slice, minimum=1)
    d = df[(df["n"] == n_slice) & (df["d"] <= n_slice)]
    ax = axes[1]
    for s, g in d.groupby("s"):
        g = g.sort_values("d")
        color = colors[int(s)]
        if not g["nonempty"].any():
            ax.plot([], [], color=color, label=f"s = {s}: band empty")
            continue
        ax.fill_between(g["d"], g["low"], np.maximum(g["high"], g["low"]), color=color, alpha=0.10)
        ax.plot(g["d"], g["high"], color=color, lw=1.6, label=f"s = {s}: top of the band")
        ax.axvline(g["critical_d"].iloc[0], color=color, ls=":", lw=1.3)
    ax.axhline(1 / n_slice, color="k", lw=1.2, label="bottom of every band: 1/n")
    ax.axvline(np.sqrt(n_slice), color="k", ls="--", lw=1, label=rf"$\sqrt{{n}}$ = {np.sqrt(n_slice):.0f} (paper: band narrows below)")
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", ls=":", lw=1.3))
    labels.append("d* per s (dotted, colour of s): d-term binds below")
    ax.set(xscale="log", yscale="log", xlabel="input dimension d", ylabel="target frequency p", ylim=(0.4 / n_slice, None),
           title=f"band against d at n = {n_slice}")
    ax.legend(handles, labels, fontsize=7, loc="center right", framealpha=0.9)
    big = df[(df["d"] == df["d"].max()) & df["nonempty"]]
    for s, g in big.groupby("s"):
        g = g.sort_values("n")
        axes[2].plot(g["n"], g["width_at_mid"], "o-", color=colors[int(s)], label=f"bound, s = {s}")
    ns = np.array(sorted(df["n"].unique()), dtype=float)
    axes[2].plot(ns, 4 * ns, "k--", label="M = 4n (the authors' run)")
    axes[2].set(xscale="log", yscale="log", xlabel="number of features n", ylabel="width bound M at the band's centre (neurons)",
                title=f"width bound (non-empty bands, d = {int(df['d'].max())})")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return fig
