"""Figures of notebook 01 (feature model and identifiability); each takes its experiment's frame
(:mod:`sae_theory.experiments.feature_model`).
"""

from __future__ import annotations

from .._checks import check_int
from .core import use_style

__all__ = ["band_figure", "conditions_figure", "feature_frequency_figure", "h3_sample_size_figure"]


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
    if n_slice is None:
        n_slice = int(sorted(df["n"].unique())[len(df["n"].unique()) // 2])
    else:
        n_slice = check_int("n_slice", n_slice, minimum=1)
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
