"""Figures of notebooks 04 and 05 (MP-SAE: the propositions of its theory and adaptive sparsity)
(:mod:`sae_theory.experiments.mp_theory`, :mod:`sae_theory.experiments.mp`).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from .core import hue_kwargs, mark_zero_bars, method_colors, panel_grid, plain_log_axis, use_style

__all__ = ["adaptive_sparsity_figure", "mp_theory_figure", "noisy_superposition_figure", "recovery_figure", "superposition_figure"]


@contextmanager
def _seaborn_boxplot():
    """seaborn's boxplot passes matplotlib's deprecated ``vert=`` itself (matplotlib >= 3.11):
    that warning is about seaborn's call, not ours, so it is silenced around the call only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"vert: bool was deprecated", category=DeprecationWarning)
        yield


#: Colours of the dictionaries of notebook 04 (not methods: none is a colour of another method's
#: palette entry; the trained dictionary is MP-SAE's and takes MP-SAE's colour).
_DICTIONARY_COLORS = {"random unit": "0.45", "non-unit": "#b2182b", "full rank": "0.1", "rank d/2": "0.6"}


def _dictionary_colors(names) -> dict:
    names = list(dict.fromkeys(names))
    spare = iter(["#7f3b08", "#542788", "#01665e", "#8c510a"])
    out = {}
    for name in names:
        if name == "trained":
            out[name] = method_colors(["MP-SAE"])["MP-SAE"]
        else:
            out[name] = _DICTIONARY_COLORS.get(name) or next(spare, "0.3")
    return out


def mp_theory_figure(props, earlier, conv):
    """MP-SAE propositions (``experiments.proposition_checks``, ``earlier_atom_cosines``,
    ``convergence``), two panels per row: C.1 and C.2 errors per dictionary against their pass
    mark 1e-12 (exact zeros drawn at 1e-18), residual-vs-earlier-atom cosines against unselected
    atoms with the verdict's mark (half the unselected atoms' median), and convergence of x_hat(t)
    to the projection onto span(D) against the pass mark 1e-9."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns
    from matplotlib.lines import Line2D

    use_style()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.6))
    dictionaries = list(dict.fromkeys(list(props["dictionary"]) + list(earlier["dictionary"])))
    colors = _dictionary_colors(dictionaries)
    tiny = 1e-18  # floor so exact zeros show on a log axis
    for ax, col, title, what in ((axes[0, 0], "last_inner", r"C.1: $|\langle D_{j(t)}, r(t) \rangle|$, 0 for unit atoms",
                                  "inner product of the residual with the atom just selected"),
                                 (axes[0, 1], "norm_drop_error", r"C.2: $|\,\|r(t-1)\|^2 - \|r(t)\|^2 - \alpha_t^2|$, 0 for unit atoms",
                                  "error of the squared-residual drop")):
        value = np.log10(props[col].clip(lower=tiny))
        edges = np.histogram_bin_edges(value, bins=60)
        for name in dict.fromkeys(props["dictionary"]):
            v = value[props["dictionary"] == name]
            heights = np.histogram(v, bins=edges)[0] / max(len(v), 1)
            ax.stairs(heights, edges, fill=True, color=colors[name], alpha=0.25, lw=0)
            ax.stairs(heights, edges, color=colors[name], lw=1.2, label=name)
        ax.axvline(-12, color="k", ls="--", lw=1.2, label="pass mark 1e-12 (verdict)")
        if (props[col] == 0).any():
            ax.axvline(np.log10(tiny), color="0.5", ls=":", lw=1, label="exact 0 (drawn at -18)")
        ax.set(xlabel=f"log10 |{what}|\n(exact 0 drawn at -18)", ylabel="fraction of MP steps", title=title)
        ax.legend(title="dictionary", fontsize=8, title_fontsize=8)

    e = earlier.copy()
    e["group"] = np.where(e["kind"] == "unselected atom", "unselected", "lag " + e["lag"].clip(upper=4).astype(str).str.replace("4", "4+"))
    order = ["lag 0", "lag 1", "lag 2", "lag 3", "lag 4+", "unselected"]
    hue_order = [d for d in dictionaries if d in set(e["dictionary"])]
    ax = axes[1, 0]
    with _seaborn_boxplot():
        sns.boxplot(e, x="group", y="cosine", hue="dictionary", order=order, hue_order=hue_order,
                    palette={d: colors[d] for d in hue_order}, ax=ax, showfliers=False)
    leg = ax.get_legend()
    handles = list(leg.legend_handles) if leg is not None else []
    labels = [t.get_text() for t in leg.get_texts()] if leg is not None else []
    width = 0.8 / max(len(hue_order), 1)
    for i, name in enumerate(hue_order):
        random_level = e[(e["dictionary"] == name) & (e["group"] == "unselected")]["cosine"].median()
        if np.isfinite(random_level):
            x0 = 1 + (i - (len(hue_order) - 1) / 2) * width
            ax.plot([x0 - width / 2, x0 + 3 + width / 2], [random_level / 2] * 2, color=colors[name], ls="--", lw=1.6, zorder=6)
    handles.append(Line2D([], [], color="0.3", ls="--", lw=1.4))
    labels.append("half the median for unselected atoms\n(verdict: lag 1 and lag 4+ medians below)")
    lag0 = e[e["group"] == "lag 0"]["cosine"]
    if len(lag0) and lag0.abs().max() <= 1e-12:  # a box of zero height: say what it is
        ax.annotate(f"all ≤ {max(lag0.abs().max(), 1e-18):.0e}\n(C.1)", (0, 0), xytext=(0, 6),
                    textcoords="offset points", ha="center", fontsize=7.5)
    ax.legend(handles, labels, title="dictionary", fontsize=8, title_fontsize=8, loc="upper left")
    ax.set(xlabel="atom selected t - s steps before (lag), or never selected", ylabel="|cos(residual r(t), atom)|",
           title="residual against earlier atoms")

    ax = axes[1, 1]
    conv_colors = _dictionary_colors(conv["dictionary"])
    styles = dict(zip(dict.fromkeys(conv["selection"]), ["-", "--", ":", "-."]))
    distance = conv["distance_to_projection"]
    zeros = bool((distance == 0).any())
    for (sel, name), g in conv.assign(distance=distance.clip(lower=tiny)).groupby(["selection", "dictionary"], sort=False):
        g = g.sort_values("step")
        ax.plot(g["step"], g["distance"], styles[sel], marker="o", ms=3.5, color=conv_colors[name], label=f"{name}, {sel} selection")
    ax.axhline(1e-9, color="k", ls="-.", lw=1, label="pass mark 1e-9 (verdict, abs selection = classic MP)")
    ax.set(xscale="log", yscale="log", xlabel="MP step t",
           ylabel=r"$\max_x \|\hat x(t) - P_{span(D)}\, x\|$" + (" (exact 0 drawn at 1e-18)" if zeros else ""),
           title="C.3: convergence to the projection onto span(D)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def adaptive_sparsity_figure(err_df, l0_df, tradeoff_df=None):
    """MP-SAE's adaptive sparsity (``experiments.adaptive_sparsity``, ``experiments.threshold_l0``,
    optionally ``experiments.threshold_tradeoff``).

    Left: normalised MSE against inference k per method (mean over seeds, band: range), the
    training k dashed, and the mark of the TopK verdict (1.05 x TopK's error at the training k,
    which its error at the largest k must exceed). Middle: threshold mode's per-input L0 for each
    target nmse tau^2, per true row sparsity. Right: MP-SAE's mean error against mean L0, fixed k
    (lines) against threshold mode (stars; on the pooled rows labelled with tau^2), on the training
    sparsity (MP-SAE's colour) and on the pooled rows of every sparsity (a darker shade of it,
    dashed) (``tradeoff_df``); without ``tradeoff_df``, the fixed-k curve of ``err_df`` against
    threshold mode at the training sparsity. Every curve of the right panel is MP-SAE's, so it
    keeps MP-SAE's colour.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.colors import to_rgb

    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.6), gridspec_kw={"width_ratios": [1.15, 1.15, 1]})
    train_k = int(err_df["train_k"].iloc[0])
    colors = method_colors(err_df["method"])
    sns.lineplot(err_df, x="inference_k", y="nmse", hue="method", **hue_kwargs(err_df["method"]), marker="o", markersize=3,
                 errorbar=("pi", 100), ax=axes[0])
    axes[0].axvline(train_k, color="k", ls="--", lw=0.8, label=f"training k = {train_k}")
    if "TopK" in colors:
        topk = err_df[err_df["method"] == "TopK"].groupby("inference_k")["nmse"].mean()
        if train_k in topk.index:
            axes[0].plot([topk.index.max()], [1.05 * topk[train_k]], marker="_", ms=16, mew=2.5, color=colors["TopK"], ls="none",
                         label=f"1.05 × TopK's error at k = {train_k}\n(verdict: TopK above it at k = {topk.index.max()})")
    axes[0].set(yscale="log", xlabel="inference k (MP steps; latents kept for TopK and ReLU)",
                ylabel=r"normalised MSE  $\|x-\hat x\|^2/\|x\|^2$",
                title="error against inference k (same training L0; band: range over seeds)")
    axes[0].legend(fontsize=8)

    d = l0_df.assign(target_label=l0_df["target_nmse"].map(lambda v: f"{v:.3g}"))
    order_t = [f"{v:.3g}" for v in sorted(d["target_nmse"].unique(), reverse=True)]
    s_train = int(d["train_s"].iloc[0])
    with _seaborn_boxplot():
        sns.boxplot(d, x="target_label", y="l0", hue="true_s", order=order_t, ax=axes[1], fliersize=1.5, linewidth=0.8,
                    palette="viridis")
    axes[1].axhline(train_k, color="k", ls="--", lw=0.8)
    cap = int(d["cap"].iloc[0])
    leg = axes[1].get_legend()
    handles = list(leg.legend_handles) if leg is not None else []
    labels = [t.get_text() + (" (training)" if t.get_text() == str(s_train) else "") for t in leg.get_texts()] if leg is not None else []
    handles.append(plt.Line2D([], [], color="k", ls="--", lw=0.8))
    labels.append(f"training k = {train_k}")
    axes[1].legend(handles, labels, title="active features per row", fontsize=8, title_fontsize=8, loc="upper left")
    axes[1].set(xlabel=rf"target normalised MSE $\tau^2$ (threshold mode, cap {cap} steps)", ylabel="per-input L0 (atoms used)",
                title="threshold mode: L0 adapts to the input")

    ax = axes[2]
    mp_color = method_colors(["MP-SAE"])["MP-SAE"]
    dark = tuple(0.55 * c for c in to_rgb(mp_color))  # pooled rows: a darker shade of MP-SAE's colour
    if tradeoff_df is not None:
        for color, pop, ls in ((mp_color, f"s={s_train}", "-"), (dark, "mixed", "--")):
            g = tradeoff_df[tradeoff_df["population"] == pop]
            fixed = g[g["mode"] == "fixed k"].groupby("k")[["l0", "nmse"]].mean()
            thr = g[g["mode"] == "threshold"].groupby("target")[["l0", "nmse"]].mean()
            rows = f"training rows (s = {s_train})" if pop != "mixed" else "pooled rows (s = " + ", ".join(
                sorted({p.removeprefix("s=") for p in tradeoff_df["population"] if p != "mixed"}, key=int)) + ")"
            ax.plot(fixed["l0"], fixed["nmse"], ls, marker="o", ms=2.5, lw=1.2, color=color, label=f"fixed k, {rows}")
            ax.plot(thr["l0"], thr["nmse"], "*", ms=12, color=color, mec="k", mew=0.5,
                    label="threshold, " + ("training rows" if pop != "mixed" else r"pooled rows; label: $\tau^2$"))
            for t, r in thr.iterrows() if pop == "mixed" else ():
                ax.annotate(f"{t * t:.3g}", (r["l0"], r["nmse"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    else:
        mp = err_df[err_df["method"] == "MP-SAE"].groupby("inference_k")[["l0", "nmse"]].mean()
        ax.plot(mp["l0"], mp["nmse"], "o-", ms=3, color=mp_color, label="MP-SAE, fixed k")
        th = d[d["true_s"] == s_train].groupby("target_nmse")[["l0", "nmse"]].mean()
        ax.plot(th["l0"], th["nmse"], "*", ms=12, color=dark, mec="k", mew=0.5, label=f"MP-SAE, threshold mode (s = {s_train}; label: target $\\tau^2$)")
        for t, r in th.iterrows():
            ax.annotate(f"{t:.3g}", (r["l0"], r["nmse"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(yscale="log", xlabel="mean L0 (atoms used per input)", ylabel="mean normalised MSE",
           title="MP-SAE: fixed k against threshold mode")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def _recovery_scatter(ax, rec, mcc: str = "mcc", mcc_label: str = "decoder MCC with the true features") -> tuple[int, int]:
    """Held-out FVU against decoder MCC (column ``mcc``) for each (method, seed) of ``rec``,
    half-way (hollow) and at the end (filled), an arrow from one to the other; returns the two steps."""
    rec = rec.assign(mcc=rec[mcc])
    colors = method_colors(rec["method"])
    half, end = sorted(rec.step.unique())[0], sorted(rec.step.unique())[-1]
    first_seed = rec.seed.min()
    for (method, seed), g in rec.groupby(["method", "seed"], sort=False):
        a, b = g[g.step == half].iloc[0], g[g.step == end].iloc[0]
        ax.annotate("", xy=(b.fvu, b.mcc), xytext=(a.fvu, a.mcc), arrowprops=dict(arrowstyle="->", color=colors[method], alpha=0.6))
        ax.scatter([a.fvu], [a.mcc], facecolor="none", edgecolor=colors[method], s=40)
        ax.scatter([b.fvu], [b.mcc], color=colors[method], s=40, label=method if seed == first_seed else None)
    ax.set(xscale="log", xlabel="held-out FVU at the training k (log scale; lower: better reconstruction)",
           ylabel=f"{mcc_label} (higher: better recovery)")
    plain_log_axis(ax, "x")
    ax.legend(title="method", fontsize=8)
    return half, end


def superposition_figure(df):
    """Reconstruction against recovery on Zipf data (``experiments.mp.superposition_recovery``):
    one panel per degree of superposition n / d and SAE width (a row per width, the widest
    first), held-out FVU against decoder MCC for each run, half-way (hollow) and at the end
    (filled); below width 1 the MCC is over the matched pairs (SynthSAEBench's reading). The claim
    holds in a panel when MP-SAE's points sit left of (lower FVU) and below (lower MCC) TopK's."""
    use_style()
    df = df if "width" in df.columns else df.assign(width=1.0, n_latents=df.n, mcc_matched=df.mcc)
    ratios, widths = sorted(df.ratio.unique()), sorted(df.width.unique(), reverse=True)
    cells = [(w, r) for w in widths for r in ratios]
    fig, panels, _ = panel_grid(len(cells), ncols=min(2, len(ratios)) if len(ratios) > 1 else 1)
    for ax, (w, r) in zip(panels, cells):
        g = df[(df.ratio == r) & (df.width == w)]
        wide = w >= 1
        half, end = _recovery_scatter(ax, g, "mcc" if wide else "mcc_matched",
                                      "decoder MCC with the true features" if wide else "decoder MCC over the matched pairs")
        k = f", k = {int(g.k.iloc[0])}" if "k" in g.columns else ""
        ax.set_title(f"n = {int(g.n.iloc[0])} features = {r} d, {int(g.n_latents.iloc[0])} latents{k}\n"
                     f"(hollow: step {half:,}, filled: step {end:,})", fontsize=10)
    return fig


def noisy_superposition_figure(df):
    """Reconstruction and recovery against additive noise
    (``experiments.mp.noisy_superposition_recovery``): a column per degree of superposition n / d;
    top, held-out FVU against the noise level nu (solid: on the noisy rows, what the rule reads;
    dashed: against the clean rows); bottom, decoder MCC over the matched pairs, with TopK's MCC
    minus 0.02 dotted (the rule's margin: the claim's recovery half holds where MP-SAE is below it).
    Markers: means over seeds at the end of training; whiskers: the seeds' range."""
    import matplotlib.pyplot as plt
    import numpy as np

    use_style()
    end = df[df.step == df.step.max()]
    ratios, methods = sorted(end.ratio.unique()), list(dict.fromkeys(end.method))
    colors = method_colors(methods)
    fig, axes = plt.subplots(2, len(ratios), figsize=(5.2 * len(ratios), 7.6), squeeze=False, sharex=True, constrained_layout=True)
    levels = sorted(end.noise.unique())
    for j, r in enumerate(ratios):
        g = end[end.ratio == r]
        for method in methods:
            at = g[g.method == method].groupby("noise")
            for ax, col, style, label in ((axes[0, j], "fvu", "-", f"{method}: on the noisy rows"),
                                          (axes[0, j], "fvu_signal", "--", f"{method}: against the clean rows"),
                                          (axes[1, j], "mcc_matched", "-", method)):
                mean, lo, hi = at[col].mean(), at[col].min(), at[col].max()
                ax.errorbar(mean.index, mean.to_numpy(), yerr=np.vstack([mean - lo, hi - mean]), color=colors[method], ls=style,
                            marker="o", ms=4, capsize=3, label=label)
            if method == "TopK":
                margin = at.mcc_matched.mean() - 0.02
                axes[1, j].plot(margin.index, margin.to_numpy(), color=colors[method], ls=":", lw=1.2,
                                label="TopK's MCC - 0.02 (the rule's margin)")
        n, M, k = int(g.n.iloc[0]), int(g.n_latents.iloc[0]), int(g.k.iloc[0])
        axes[0, j].set_title(f"n = {n} features = {r} d, {M} latents, k = {k}", fontsize=10)
        axes[0, j].set(ylabel="held-out FVU (fraction of variance unexplained)")
        axes[1, j].set(xlabel="additive noise level ν (noise norm / signal norm)", ylabel="decoder MCC over the matched pairs")
        axes[1, j].set_xticks(levels)
    axes[0, -1].legend(fontsize=8)
    axes[1, -1].legend(fontsize=8)
    fig.suptitle(f"reconstruction and recovery with additive noise (end of training, step {int(end.step.max()):,}; "
                 "markers: means over seeds, whiskers: their range)", fontsize=10)
    return fig


def recovery_figure(rec):
    """Reconstruction against recovery (``experiments.mp.recovery_study``): held-out FVU against
    the decoder MCC with the true features for each run, half-way (hollow) and at the end (filled),
    an arrow from one to the other; and FRR at cosine 0.9 at both readings."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.3))
    half, end = _recovery_scatter(axes[0], rec)
    axes[0].set_title(f"reconstruction against recovery (hollow: step {half:,}, filled: step {end:,})")
    ax = axes[1]
    sns.barplot(rec.assign(step=rec.step.map(lambda s: f"step {s:,}")), x="method", y="frr_09", hue="step", ax=ax, errorbar=("pi", 100),
                palette=["#bbbbbb", "#555555"])
    mark_zero_bars(ax)
    ax.set(xlabel="method", ylabel="FRR: true features with a learned atom at cosine >= 0.9", ylim=(0, 1.05),
           title="feature recovery rate (bars: mean, whiskers: seeds' range)")
    ax.legend(title="reading", fontsize=8)
    fig.tight_layout()
    return fig
