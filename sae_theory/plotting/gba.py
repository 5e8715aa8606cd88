"""Figures of notebooks 02 and 03 (GBA: bias adaptation's resonance band and the imbalanced toy)
(:mod:`sae_theory.experiments.gba`).
"""

from __future__ import annotations

from ..models.registry import method_order
from .core import hue_kwargs, mark_zero_bars, method_colors, name_zero_curves, use_style

__all__ = ["deployed_readings_figure", "resonance_figure", "topk_convergence_figure", "toy_controls_figure", "toy_figure", "toy_sensitivity_figure"]


def resonance_figure(df):
    """BA phase diagram (``experiments.resonance``): FRR@0.9 over (p/f, d) with the theorem's band
    (constants 1) marked, FRR against p/f per d beside the untrained dictionary's (chance), the
    marks the edge verdicts use and the paper's heatmap read off, and FRR against the width M."""
    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # the authors' heatmap (docs/papers.md#gba-resonance; values read off the plot): n = 65,536, s = 3,
    # recovery near 1 for p = 80-200 u once d >~ 100, near 0 for p <= 40 u and p >= 300 u
    paper_f = 3 / 65_536
    paper_one = (80e-6 / paper_f, 200e-6 / paper_f)
    paper_zero = (40e-6 / paper_f, 300e-6 / paper_f)

    use_style()
    phase = df[df["kind"] == "phase"]
    n, f = int(phase["n"].iloc[0]), float(phase["f"].iloc[0])
    two_root_n = 2 * np.sqrt(n)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6), gridspec_kw={"width_ratios": [1.15, 1.25, 0.9]})
    heat = phase.pivot_table(index="d", columns="p_over_f", values="frr").sort_index(ascending=False)
    inband = phase.pivot_table(index="d", columns="p_over_f", values="in_band").sort_index(ascending=False)
    sns.heatmap(heat, ax=axes[0], cmap="magma", vmin=0, vmax=1, annot=True, fmt=".2f", annot_kws={"fontsize": 8},
                cbar_kws={"label": "features recovered at cos ≥ 0.9 (FRR)"})
    for (i, j), v in np.ndenumerate(inband.to_numpy()):
        if v:
            axes[0].add_patch(plt.Rectangle((j, i), 1, 1, fill=False, ec="cyan", lw=1.5))
    above = int((heat.index >= two_root_n).sum())  # rows d >= 2 sqrt(n), drawn first (descending d)
    if 0 < above < len(heat.index):
        axes[0].axhline(above, color="white", ls="--", lw=1.5)
    axes[0].tick_params(axis="y", rotation=0)
    axes[0].set(title=f"FRR over (p, d): BA, n = {n}, f = {f:.3g}, M = 4n", xlabel="target frequency p / f", ylabel="input dimension d")
    axes[0].legend(handles=[Patch(fill=False, ec="cyan", lw=1.5, label="inside the theorem's band (constants 1)"),
                            Line2D([], [], color="0.3", ls="--", lw=1.5, label=f"d = 2$\\sqrt{{n}}$ = {two_root_n:.0f}: the edge verdicts read the rows above")],
                   loc="upper center", bbox_to_anchor=(0.5, -0.17), fontsize=7.5, frameon=False)

    ax = axes[1]
    ds = sorted(phase["d"].unique())
    colors = dict(zip(ds, matplotlib.colormaps["viridis"](np.linspace(0.0, 0.8, max(len(ds), 2)))))
    for d, g in phase.groupby("d"):
        g = g.sort_values("p_over_f")
        ax.plot(g["p_over_f"], g["frr"], "o-", color=colors[d], label=f"d = {d}" + (" (≥ 2$\\sqrt{n}$)" if d >= two_root_n else ""))
        ax.plot(g["p_over_f"], g["frr_init"], ":", color=colors[d], lw=1)
    zero_init = [str(d) for d, g in phase.groupby("d") if (g["frr_init"] == 0).all()]
    ax.plot([], [], ":", color="0.3", lw=1, label="dotted: untrained dictionary (chance)" + (f";\n  at 0 for d = {', '.join(zero_init)}" if zero_init else ""))
    ax.axvline(1.0, color="k", ls="--", lw=0.8, label="p = f")
    lo, hi = phase["p_over_f"].min() / 1.3, phase["p_over_f"].max() * 1.3
    ax.plot([lo, 2.0], [0.5, 0.5], color="0.45", ls="-.", lw=1.2, label="verdict marks (d ≥ 2$\\sqrt{n}$): FRR ≥ 0.5 at p ≤ 2f,\n  FRR ≤ 0.1 at p ≥ 10f")
    ax.plot([10.0, max(hi, 13.0)], [0.1, 0.1], color="0.45", ls="-.", lw=1.2)
    ax.plot(paper_one, [1.0, 1.0], color="k", lw=3, solid_capstyle="butt", label="paper (n = 65,536, d above about 100), read off its heatmap:\n  bar: FRR near 1, diamonds: near 0")
    ax.plot(paper_zero, [0.0, 0.0], "D", color="k", ms=5)
    ax.set(xscale="log", xlim=(lo, max(hi, 13.0)), ylim=(-0.04, 1.06), xlabel="target frequency p / f",
           ylabel="features recovered at cos ≥ 0.9 (FRR)", title=f"resonance: FRR against p ($\\sqrt{{n}}$ = {np.sqrt(n):.1f})")
    ax.set_xticks(sorted(phase["p_over_f"].unique()), [f"{v:g}" for v in sorted(phase["p_over_f"].unique())])
    ax.minorticks_off()
    ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False)

    width = df[df["kind"] == "width"].sort_values("M")
    if len(width):
        from matplotlib import patheffects

        ba = method_colors(["BA"])["BA"]  # BA's palette colour is a light shade of GBA's: outlined so that it reads
        edge = [patheffects.withStroke(linewidth=3.4, foreground="0.3")]
        ratio = width["M"] / width["n"]
        axes[2].plot(ratio, width["frr"], "o-", color=ba, mec="0.3", mew=0.8, ms=7, lw=2, path_effects=edge, label="BA, FRR at cos ≥ 0.9")
        axes[2].plot(ratio, width["frr_08"], "s--", color=ba, mec="0.3", mew=0.8, ms=5, lw=2, path_effects=edge, label="BA, FRR at cos ≥ 0.8")
        axes[2].axvline(4.0, color="k", ls=":", lw=1, label="M = 4n (the paper's run)")
        axes[2].set_xscale("log")
        axes[2].set_xticks(sorted(ratio.unique()), [f"{v:g}" for v in sorted(ratio.unique())])
        axes[2].minorticks_off()
        axes[2].set(xlabel="width M / n (neurons per feature)", ylabel="features recovered (FRR)", ylim=(-0.02, 1.02),
                    title=f"FRR against width (d = {int(width['d'].iloc[0])}, p = {width['p_over_f'].iloc[0]:g} f)")
        axes[2].legend(fontsize=7.5, loc="lower right")
    fig.tight_layout()
    return fig


def toy_figure(frr, cons, front, *, width: int | None = None):
    """The imbalanced toy (``experiments.gba_vs_topk``, ``consistency``, ``frontier``): FRR beside
    the paper's values, cross-seed MCS, and the L2-vs-fraction-active frontier. ``width`` (the
    runs' M) goes into the FRR panel's title, which also says that its TopK is untied (the paper's
    is tied): the paper's width is not stated, and the verdicts depend on it."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    order = method_order(frr["method"])
    sns.barplot(frr, x="method", y="frr", hue="tau", order=order, ax=axes[0], errorbar=("pi", 100), alpha=0.85)
    paper = frr.drop_duplicates(["method", "tau"])
    for k, tau in enumerate(sorted(paper["tau"].unique())):
        p = paper[paper["tau"] == tau].set_index("method").reindex(order)
        axes[0].scatter([i + (k - 0.5) * 0.4 for i in range(len(order))], p["paper_frr"], marker="_", s=400,
                        color="k", zorder=5, label="paper" if k == 0 else None)
    at = f"M = {width}, " if width is not None else ""
    axes[0].set(ylim=(0, 1.05), ylabel="FRR (share of the true features)", xlabel="",
                title=f"FRR on the toy ({at}TopK untied)\nbars: ours, range over seeds; black: paper")
    mark_zero_bars(axes[0])
    axes[0].tick_params(axis="x", rotation=20)
    axes[0].legend(title="cosine tau", fontsize=7, title_fontsize=7)
    sns.lineplot(cons, x="threshold", y="fraction", hue="method", **hue_kwargs(cons["method"]), marker="o", ax=axes[1], errorbar=("pi", 100))
    axes[1].set(ylim=(0, 1.02), xlabel="MCS threshold", ylabel="fraction of neurons", title="cross-seed consistency (GBA: analysed regime)")
    name_zero_curves(axes[1], cons, y="fraction", by="method", where="center left")
    family_colors = method_colors(front["family"])
    for family, color in family_colors.items():
        g = front[front["family"] == family].sort_values("fraction_active")
        axes[2].plot(g["fraction_active"], g["l2_loss"], "o-" if family != "GBA" else "*", ms=6 if family != "GBA" else 14,
                     color=color, label=family)
        if family == "GBA":
            for _, r in g.iterrows():
                axes[2].annotate(r["method"], (r["fraction_active"], r["l2_loss"]), fontsize=7)
    axes[2].set(xscale="log", yscale="log", xlabel="fraction of neurons active", ylabel="L2 loss (held out)",
                title="frontier (GBA: deployed regime, a trained)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def toy_sensitivity_figure(widths, ks, groups, *, feature_frequency: float = 11.5 / 128):
    """What the paper leaves unstated, on the imbalanced toy: FRR against the width M per method
    (``experiments.gba.width_sweep``; solid tau = 0.9, dashed tau = 0.8), TopK's FRR against K
    (``topk_sweep``), and the target frequencies of the GBA groups whose neurons recover features
    (``recovering_groups``), with the features' frequency f marked."""
    import matplotlib.pyplot as plt

    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    colors = method_colors(widths["method"])
    for i, method in enumerate(method_order(widths["method"])):
        marker = "os^Dv<>"[i % 7]  # shades of one family are close: the marker tells the methods apart
        for tau, style in ((0.9, "-"), (0.8, "--")):
            g = widths[(widths["method"] == method) & (widths["tau"] == tau)].groupby("width").frr.mean()
            axes[0].plot(g.index, 100 * g.values, style, marker=marker, color=colors[method], markersize=5,
                         label=f"{method}, tau = {tau}")
    axes[0].set(xscale="log", xlabel="width M (latents)", ylabel="features recovered (%)", ylim=(-3, 103),
                title="recovery against width")
    axes[0].set_xticks(sorted(widths["width"].unique()), [str(w) for w in sorted(widths["width"].unique())])
    axes[0].minorticks_off()
    axes[0].legend(fontsize=7)
    topk_color = method_colors(["TopK"])["TopK"]
    for tau, style in ((0.9, "-"), (0.8, "--")):
        g = ks[ks["tau"] == tau].groupby("k").frr.mean()
        axes[1].plot(g.index, 100 * g.values, style, marker="o", color=topk_color, markersize=4, label=f"tau = {tau}")
    axes[1].set(xlabel="TopK's K (active latents per input)", ylabel="features recovered (%)", ylim=(-3, 103),
                title="TopK against K")
    axes[1].legend(fontsize=7)
    rec = groups[groups["recovered"]].groupby("target").size()
    allg = groups.groupby("target").size() * 0
    counts = (allg + rec).fillna(0).sort_index()
    gba_color = method_colors(["GBA"])["GBA"]
    axes[2].bar(range(len(counts)), counts.values, color=gba_color)
    axes[2].set_xticks(range(len(counts)), [f"{t:.2g}" for t in counts.index], rotation=45)
    if len(counts):
        pos = sum(t < feature_frequency for t in counts.index) - 0.5
        axes[2].axvline(pos, color="k", linestyle="--", linewidth=0.8)
        axes[2].annotate(f"f = {feature_frequency:.3f}", (pos, 1.0), xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=7)
    axes[2].set(xlabel="target frequency of the best neuron's group", ylabel="features recovered at cos >= 0.9",
                title="which GBA groups recover")
    fig.tight_layout()
    return fig


def topk_convergence_figure(tc, tied_sweep=None):
    """The paper's TopK on the toy against training length (``experiments.gba.topk_convergence``):
    FRR at tau = 0.8 and 0.9 per K, tied (solid) and untied (dashed), with the curves that stay at 0
    (which would hide each other) named on the panel; and, when given, the tied TopK's FRR against K
    at the profile's steps (``topk_sweep(..., tied=True)``)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    n = 3 if tied_sweep is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.8))
    d = tc.assign(model=tc["tied"].map({True: "tied", False: "untied"}), K=tc["k"].astype(str))
    for ax, tau in zip(axes, (0.8, 0.9)):
        dt = d[d.tau == tau]
        sns.lineplot(dt, x="steps", y="frr", hue="K", style="model", style_order=["tied", "untied"],
                     markers=True, ax=ax, legend=ax is axes[0])
        ax.set(xlabel="training steps", ylabel=f"features recovered at tau = {tau} (FRR)", ylim=(-0.03, 1.03), xscale="log",
               title=f"TopK on the toy: recovery at tau = {tau}")
        # curves that stay at 0 lie on top of each other: name them, so none is hidden
        name_zero_curves(ax, dt, y="frr", by=["k", "model"], fmt=lambda key: f"K = {key[0]} {key[1]}")
    if tied_sweep is not None:
        ts = tied_sweep.assign(threshold=tied_sweep["tau"].map(lambda t: f"tau = {t}"))
        sns.lineplot(ts, x="k", y="frr", hue="threshold", style="threshold", markers=["o", "X"], palette=["C1", "C4"], ax=axes[2])
        axes[2].set(xlabel="K (codes kept per input)", ylabel="features recovered (FRR)", ylim=(-0.03, 1.03),
                    title="tied TopK against K (profile steps)")
        axes[2].legend(title="cosine threshold")
    fig.tight_layout()
    return fig


def toy_controls_figure(baselines, truth, laws, curves):
    """The paper's tied baselines and the controls of what the toy leaves unstated
    (:mod:`sae_theory.experiments.gba`): FRR (tau = 0.8 circles, 0.9 crosses) and held-out FVU of
    each baseline tied and untied (``tied_baselines``); FRR under each coefficient law
    (``coefficient_laws``); FRR and FVU over training from the true features (``truth_init``,
    solid tau = 0.9, dashed 0.8); FRR against the run length (``recovery_curves``)."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(2, 3, figsize=(16, 8))
    base = baselines.assign(baseline=baselines["method"].str.removeprefix("Tied "), model=baselines["tied"].map({True: "tied", False: "untied"}))
    order = list(dict.fromkeys(base.sort_values(["family", "value"], ascending=[False, True])["baseline"]))
    x = {b: i for i, b in enumerate(order)}
    for (model, tau), g in base.groupby(["model", "tau"]):
        g = g.groupby("baseline").frr.mean()
        shift = -0.12 if model == "untied" else 0.12
        axes[0, 0].scatter([x[b] + shift for b in g.index], 100 * g.values, marker="o" if tau == 0.8 else "x",
                           color="C0" if model == "untied" else "C3", label=f"{model}, tau = {tau}")
    axes[0, 0].set_xticks(range(len(order)), order, rotation=20)
    axes[0, 0].set(ylabel="features recovered (%)", ylim=(-3, 103), title="the paper's baselines: tied vs untied")
    axes[0, 0].legend(fontsize=7)
    fv = base.drop_duplicates(["method", "seed"])
    sns.barplot(fv, x="baseline", y="fvu", hue="model", order=order, hue_order=["untied", "tied"], palette=["C0", "C3"],
                ax=axes[0, 1], errorbar=None)
    axes[0, 1].tick_params(axis="x", rotation=20)
    axes[0, 1].set(xlabel="", ylabel="held-out FVU", title="reconstruction at the same K / lambda")
    for container in axes[0, 1].containers:  # the values, so that a bar too short to see still reads
        axes[0, 1].bar_label(container, fmt="%.3g", fontsize=6, padding=1)
    colors = method_colors(laws["method"])
    lw = laws.groupby(["law", "method", "tau"], sort=False).frr.mean().reset_index()
    law_order = list(dict.fromkeys(laws["law"]))
    methods = method_order(laws["method"])
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        for tau, alpha in ((0.8, 0.45), (0.9, 1.0)):
            g = lw[(lw["method"] == method) & (lw["tau"] == tau)].set_index("law").reindex(law_order)
            axes[0, 2].bar(np.arange(len(law_order)) + (i - (len(methods) - 1) / 2) * width, 100 * g["frr"].values, width * 0.95,
                           color=colors[method], alpha=alpha, label=f"{method}, tau = {tau}")
    axes[0, 2].set_xticks(range(len(law_order)), law_order)
    axes[0, 2].set(ylabel="features recovered (%)", ylim=(0, 103), title="coefficient law (pale: tau = 0.8)")
    mark_zero_bars(axes[0, 2])
    axes[0, 2].legend(fontsize=7)
    colors = method_colors(truth["method"])
    for method in method_order(truth["method"]):
        for tau, style in ((0.9, "-"), (0.8, "--")):
            g = truth[(truth["method"] == method) & (truth["tau"] == tau)].sort_values("step")
            axes[1, 0].plot(g["step"], 100 * g["frr"], style, marker="o", ms=3, color=colors[method], label=f"{method}, tau = {tau}")
        g = truth[(truth["method"] == method) & (truth["tau"] == 0.9)].sort_values("step")
        axes[1, 1].plot(g["step"], g["fvu"], "-o", ms=3, color=colors[method], label=method)
    axes[1, 0].set(xlabel="training step", ylabel="features recovered (%)", ylim=(-3, 103), title="started at the true features (M = n)")
    axes[1, 0].legend(fontsize=7)
    axes[1, 1].set(xlabel="training step", ylabel="held-out FVU", yscale="log", title="started at the true features: FVU")
    axes[1, 1].legend(fontsize=7)
    colors = method_colors(curves["method"])
    for method in method_order(curves["method"]):
        for tau, style in ((0.9, "-"), (0.8, "--")):
            g = curves[(curves["method"] == method) & (curves["tau"] == tau)].groupby("steps").frr.mean()
            axes[1, 2].plot(g.index, 100 * g.values, style, marker="o", ms=4, color=colors[method], label=f"{method}, tau = {tau}")
    axes[1, 2].set(xscale="log", xlabel="run length (steps)", ylabel="features recovered (%)", ylim=(-3, 103),
                   title="recovery against training length")
    name_zero_curves(axes[1, 2], curves, y="frr", by=["method", "tau"], fmt=lambda key: f"{key[0]}, tau = {key[1]}", where="center left")
    axes[1, 2].legend(fontsize=7)
    fig.tight_layout()
    return fig


def deployed_readings_figure(df):
    """Readings of the deployed GBA (``experiments.gba_readings.deployed_readings``), one row per
    data set: training loss against steps (solid: GBA under each reading; dashed: the untied TopK
    at K = round(that reading's L0), dotted: the same K on the paper's tied model; same colour);
    held-out FVU against L0 (circles: GBA, crosses: untied TopK, triangles: tied TopK, each joined
    to its GBA); FRR at tau = 0.8 (pale) and 0.9 per reading and method, the mean over seeds with
    the range over seeds as an error bar when there are several. Colours are the readings."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    use_style()
    readings = list(dict.fromkeys(df["reading"]))
    colors = dict(zip(readings, sns.color_palette("colorblind", len(readings))))
    data_sets = list(dict.fromkeys(df["data"]))
    style = {"GBA": ("-", "o", ""), "TopK": ("--", "x", "//"), "Tied TopK": (":", "^", "..")}  # line, marker, bar hatch

    def ks(values):  # TopK's K of every seed, in seed order (K = round(L0) of each seed's GBA run: seeds may differ)
        return "/".join(str(int(v)) for v in dict.fromkeys(values))

    def name(method, k):
        return "GBA" if method == "GBA" else f"{method} K={k}"

    fig, axes = plt.subplots(len(data_sets), 3, figsize=(13.5, 3.9 * len(data_sets)), squeeze=False)
    for row, data in zip(axes, data_sets):
        d = df[df["data"] == data]
        curves, final = d[~d["final"]], d[d["final"]]
        first_seed = curves["seed"].iloc[0] if len(curves) else None  # the legend names the runs of one seed
        n_seeds = final["seed"].nunique()
        # each (reading, method) named once, TopK by every seed's K: the loss and scatter legends and the bar labels
        names = {(r, m): name(m, ks(g["k"])) for (r, m), g in final.groupby(["reading", "method"], sort=False)}
        for (reading, method, seed), g in curves.groupby(["reading", "method", "seed"], sort=False):  # one line per run
            g = g.sort_values("step")
            row[0].plot(g["step"], g["loss"], style[method][0], color=colors[reading], lw=1.2,
                        label=None if seed != first_seed else f"GBA ({reading})" if method == "GBA"
                        else f"{names[reading, method]} (matched to {reading})")
        row[0].set(xlabel="training step", ylabel="training loss", yscale="log",
                   title=f"{data}: training loss (solid: GBA; dashed: TopK untied, dotted: tied, at its L0)")
        row[0].title.set_fontsize(9)
        for reading in readings:
            g = final[(final["reading"] == reading) & (final["method"] == "GBA")]
            row[1].scatter(g["l0"], g["fvu"], marker="o", color=colors[reading], label=f"GBA ({reading})")  # the colour key of the row
            for method in ("TopK", "Tied TopK"):
                t = final[(final["reading"] == reading) & (final["method"] == method)]
                if len(t):
                    row[1].scatter(t["l0"], t["fvu"], marker=style[method][1], color=colors[reading], label=names[reading, method])
                    row[1].plot([g["l0"].mean(), t["l0"].mean()], [g["fvu"].mean(), t["fvu"].mean()], ":", color=colors[reading], lw=0.8)
        row[1].set(xlabel="held-out L0 (active latents per input)", ylabel="held-out FVU",
                   title=f"{data}: reconstruction at matched L0 (x: TopK untied, ^: tied)")
        row[1].title.set_fontsize(9)
        row[1].legend(fontsize=6, ncol=2)
        # one bar pair per (reading, method): the mean over seeds, the range over seeds as an error bar
        bars = final.groupby(["reading", "method"], sort=False).agg(
            frr_08=("frr_08", "mean"), lo_08=("frr_08", "min"), hi_08=("frr_08", "max"),
            frr_09=("frr_09", "mean"), lo_09=("frr_09", "min"), hi_09=("frr_09", "max")).reset_index()
        labels = [f"{names[r, m]}\n({r})" for r, m in zip(bars["reading"], bars["method"])]
        x = np.arange(len(bars))
        bar_colors = [colors[r] for r in bars["reading"]]
        hatches = [style[m][2] for m in bars["method"]]
        for tau, dx, alpha in (("08", -0.2, 0.45), ("09", 0.2, 1.0)):
            mean = 100 * bars[f"frr_{tau}"]
            err = None
            if n_seeds > 1:
                err = np.vstack([mean - 100 * bars[f"lo_{tau}"], 100 * bars[f"hi_{tau}"] - mean])
            row[2].bar(x + dx, mean, 0.4, color=bar_colors, alpha=alpha, label=f"tau = 0.{tau[1]}", hatch=hatches,
                       yerr=err, error_kw=dict(lw=0.8, capsize=1.5))
        row[2].set_xticks(x, labels, rotation=40, ha="right", fontsize=6)
        row[2].set(ylabel="features recovered (%)", ylim=(0, 103),
                   title=f"{data}: recovery (//: TopK untied, ..: tied)" + (f"; mean and range of {n_seeds} seeds" if n_seeds > 1 else ""))
        row[2].title.set_fontsize(9)
        mark_zero_bars(row[2])
        row[2].legend(fontsize=6)
    fig.tight_layout()
    return fig
