"""Figures of notebooks 06 and 07 (hierarchical concepts, and the cross-paper comparison)
(:mod:`sae_theory.experiments.hierarchical`, :mod:`sae_theory.experiments.cross_paper`).
"""

from __future__ import annotations

from ..models.registry import method_order
from .core import GRID_WIDTH, hue_kwargs, method_colors, panel_grid, shared_legend, use_style

__all__ = ["cross_paper_figure", "hierarchy_figure", "hierarchy_heatmaps", "steps_sweep_figure", "training_curves_figure"]


def hierarchy_figure(df, *, target_l0: float | None = None, dashed=(), dashed_label: str = "ours"):
    """Fig 4 (``experiments.hierarchy``): flat MSE, hierarchical MSE and absorption against the
    within-level correlation rho, per method (median over seeds, band: range); each method's L0
    (the methods are not at matched L0: the panel shows by how much, with the true E[L0]
    ``target_l0`` when given); and the Babel contrast (whole dictionary against co-active subsets).

    The methods in ``dashed`` are drawn with dashed lines, the legend's title naming them
    ``dashed_label`` (the notebook dashes the methods the paper's figure does not have, so the
    lines a verdict compares are the solid ones).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    order = method_order(df["method"])
    dashed = [m for m in dashed if m in order]
    fig, grid = plt.subplots(2, 3, figsize=(15, 8.6))
    axes = list(grid.flat)
    for ax, col, title, ylabel in ((axes[0], "flat_mse", "flat MSE (within-level geometry)", "flat MSE (log scale)"),
                                   (axes[1], "hierarchical_mse", "hierarchical MSE (cross-level leakage)", "hierarchical MSE (log scale)"),
                                   (axes[2], "absorption", "absorption", "cos(learned child, true parent)"),
                                   (axes[3], "l0", "L0 on held-out rows (not matched across methods)", "active latents per input (L0)")):
        sns.lineplot(df, x="rho", y=col, hue="method", **hue_kwargs(order), style="method", style_order=order,
                     estimator="median", errorbar=("pi", 100), markers=True, dashes={m: (4, 2) if m in dashed else "" for m in order},
                     ax=ax, legend=ax is axes[0])
        ax.set(xlabel=r"within-level correlation $\rho$", ylabel=ylabel, title=title, xticks=sorted(df["rho"].unique()))
        if col in ("flat_mse", "hierarchical_mse"):
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].get_legend().remove()
    if target_l0 is not None:
        axes[3].axhline(target_l0, color="black", ls="--", lw=1, label=f"true E[L0] = {target_l0:g}")
        axes[3].legend(fontsize=8, loc="upper left")
    b = df.melt(id_vars=["method", "rho"], value_vars=["babel_1", "babel_coactive"], var_name="score", value_name="babel")
    b["score"] = b["score"].map({"babel_1": "whole dictionary, $\\mu_1(1)$", "babel_coactive": "co-active subsets"})
    sns.barplot(b, x="method", y="babel", hue="score", order=order, estimator="median", errorbar=("pi", 100), ax=axes[4])
    axes[4].set(xlabel="", ylabel="Babel (median over rho and seeds)", title="Babel: whole dictionary vs co-active")
    axes[4].tick_params(axis="x", rotation=30)
    axes[4].legend(fontsize=8)
    axes[5].axis("off")  # the methods' legend, shared by the four line panels
    title = "method (line: median over seeds; band: range)"
    if dashed:
        title += f"\ndashed: {dashed_label}"
    axes[5].legend(handles, labels, title=title, loc="center", fontsize=10, title_fontsize=10)
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
    # two methods a row, each as its pair (self-similarity | alignment with the truth), the truth's
    # own D D^T first: four columns, so the figure reads on a laptop screen (it was one row per kind)
    ncols = 4
    nrows = -(-(2 * len(fits) + 2) // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.75 * nrows), squeeze=False)
    axes = list(grid.flat)
    kw = dict(vmin=-1, vmax=1, cmap="RdBu_r", cbar=False, square=True, xticklabels=False, yticklabels=False)
    sns.heatmap((T @ T.T)[idx][:, idx].numpy(), ax=axes[0], **kw)
    axes[0].set_title("ground truth $DD^T$", fontsize=9)
    for j, f in enumerate(fits, start=1):
        L = unit(f.matched_dictionary)
        own, align = axes[2 * j], axes[2 * j + 1]
        sns.heatmap((L @ L.T)[idx][:, idx].numpy(), ax=own, **kw)
        sns.heatmap((L @ T.T)[idx][:, idx].numpy(), ax=align, **kw)
        own.set_title(f"{f.method}: $\\hat D\\hat D^T$", fontsize=9)
        align.set_title(f"{f.method}: $\\hat D D_{{GT}}^T$", fontsize=9)
    n_par = sum(1 for v in levels if v == 0)
    for ax in axes:
        if ax.has_data():
            ax.axhline(n_par, color="k", lw=0.6)
            ax.axvline(n_par, color="k", lw=0.6)
        else:
            ax.axis("off")
    axes[0].set_ylabel(f"{n_par} parents, then children", fontsize=8)
    axes[0].set_xlabel(f"{n_par} parents, then children", fontsize=8)
    axes = grid
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    import matplotlib as mpl

    # one colour scale for every panel: cosine similarity of (cosine-normalised) atoms
    fig.colorbar(mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(-1, 1), cmap="RdBu_r"), ax=list(axes.flat), shrink=0.5,
                 label="cosine similarity")
    return fig


def cross_paper_figure(absorb_df, fm_df):
    """Notebook 07: absorption of GBA beside MP-SAE and ReLU (``experiments.absorption`` rows), the
    full width of the first row, and FRR / L0 on GBA's statistical model
    (``experiments.mp_on_feature_model``) side by side in the second."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    fig = plt.figure(figsize=(GRID_WIDTH, 8.4), layout="constrained")
    grid = fig.add_gridspec(2, 2)
    axes = [fig.add_subplot(grid[0, :]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])]
    d = absorb_df.assign(cell=absorb_df["child_mean"].map(lambda v: f"child mean {v:g}"))
    # saturation=1: the bars take the method's palette colour exactly, as lines do in other figures
    sns.barplot(d, x="cell", y="absorption", hue="method", **hue_kwargs(d["method"]), saturation=1, errorbar=("pi", 100), ax=axes[0])
    axes[0].set(xlabel="", ylabel="cos(learned child, true parent)", title="absorption (missing bar: no child recovered)")
    f = fm_df.melt(id_vars=["method", "seed"], value_vars=["frr", "frr_08"], var_name="tau", value_name="FRR")
    f["tau"] = f["tau"].map({"frr": "0.9", "frr_08": "0.8"})
    order = method_order(fm_df["method"])
    sns.barplot(f, x="method", y="FRR", hue="tau", order=order, errorbar=("pi", 100), ax=axes[1])
    axes[1].set(ylim=(0, 1.05), xlabel="", title="feature recovery on GBA's model")
    axes[1].tick_params(axis="x", rotation=20)
    sns.barplot(fm_df, x="method", y="l0", order=order, errorbar=("pi", 100), ax=axes[2], color="C2")
    axes[2].axhline(float(fm_df["s"].iloc[0]), color="k", ls="--", lw=0.8, label="true L0 = s")
    axes[2].set(xlabel="", ylabel="held-out L0", title="L0 of each run")
    axes[2].tick_params(axis="x", rotation=20)
    axes[2].legend(fontsize=8)
    return fig


def training_curves_figure(curves, *, target_l0: float | None = None):
    """Convergence (``experiments.hierarchical.training_curves``): the training batch's mean L0
    against the step, one panel per within-level correlation rho, one line per method (median
    over seeds), with the true E[L0] drawn as a dashed line when ``target_l0`` is given."""
    import seaborn as sns

    use_style()
    rhos = sorted(curves["rho"].unique())
    order = method_order(curves["method"])
    # a grid of two columns with one legend for all (it was one row of four, 2,266 px wide)
    fig, panels, spare = panel_grid(len(rhos), ncols=2, panel_height=3.3)
    for ax, rho in zip(panels, rhos):
        sns.lineplot(curves[curves["rho"] == rho], x="step", y="l0", hue="method", **hue_kwargs(order), estimator="median",
                     errorbar=None, ax=ax, legend=ax is panels[0], linewidth=1.2)
        if target_l0 is not None:
            ax.axhline(target_l0, color="k", linestyle="--", linewidth=0.8, label=f"true E[L0] = {target_l0}")
        ax.set(xlabel="training step", ylabel="training-batch L0\n(active latents per input)", title=rf"$\rho$ = {rho}", yscale="log")
    handles, labels = panels[0].get_legend_handles_labels()
    panels[0].get_legend().remove()
    low = min(ax.get_ylim()[0] for ax in panels)
    high = max(ax.get_ylim()[1] for ax in panels)
    for ax in panels:  # one L0 scale for every rho
        ax.set_ylim(low, high)
    shared_legend(fig, handles, labels, title="method (median over seeds)", spare=spare)
    return fig


def steps_sweep_figure(df, *, target_l0: float | None = None, profile_steps: int | None = None):
    """Convergence of recovery (``experiments.hierarchical.steps_sweep``): exact-support accuracy,
    held-out L0 and the matched atoms' mean cosine to the truth against the training length, one
    line per (method, rho), median over seeds. ``target_l0`` draws the true E[L0];
    ``profile_steps`` marks the length the other figures use."""
    import matplotlib.pyplot as plt

    use_style()
    d = df.copy()
    d["run"] = d["method"] + ", rho = " + d["rho"].astype(str)
    order = [f"{m}, rho = {r}" for m in method_order(d["method"]) for r in sorted(d["rho"].unique())]
    order = [o for o in order if o in set(d["run"])]
    colors = method_colors(d["method"])
    palette = {o: colors[o.split(", rho")[0]] for o in order}
    styles = {o: ("-" if o.endswith("= 0.0") else "--") for o in order}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, col, label in ((axes[0], "support_accuracy", "held-out rows with the exact support"),
                           (axes[1], "l0", "held-out L0 (active latents per input)"),
                           (axes[2], "mean_cosine", "mean cos(matched atom, true atom)")):
        for o in order:
            g = d[d["run"] == o].groupby("steps")[col].median()
            ax.plot(g.index, g.values, styles[o], marker="o", color=palette[o], label=o, linewidth=1.3, markersize=4)
        steps = sorted(d["steps"].unique())
        ax.set(xlabel="training steps", ylabel=label, xscale="log")
        ax.set_xticks(steps, [f"{n:,}" for n in steps])
        ax.minorticks_off()
        if profile_steps is not None:
            ax.axvline(profile_steps, color="0.6", linewidth=0.8, linestyle=":")
    axes[0].set_ylim(-0.02, 1.02)
    if target_l0 is not None:
        axes[1].axhline(target_l0, color="k", linestyle="--", linewidth=0.8)
        axes[1].annotate(f"truth {target_l0}", (1.0, target_l0), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7)
    axes[2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    return fig
