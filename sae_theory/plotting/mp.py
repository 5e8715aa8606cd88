"""Figures of notebooks 04 and 05 (MP-SAE: the propositions of its theory and adaptive sparsity)
(:mod:`sae_theory.experiments.mp_theory`, :mod:`sae_theory.experiments.mp`).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

from .core import hue_kwargs, method_colors, use_style

__all__ = ["adaptive_sparsity_figure", "mp_theory_figure"]


@contextmanager
def _seaborn_boxplot():
    """seaborn's boxplot passes matplotlib's deprecated ``vert=`` itself (matplotlib >= 3.11):
    that warning is about seaborn's call, not ours, so it is silenced around the call only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"vert: bool was deprecated", category=DeprecationWarning)
        yield


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
    for ax, col, title, what in ((axes[0], "last_inner", "C.1: |<D_j(t), r(t)>|", "inner product of the residual with the atom just selected"),
                                 (axes[1], "norm_drop_error", "C.2: |drop of ||r||^2 - alpha^2|", "error of the squared-residual drop")):
        d = props.assign(value=np.log10(props[col].clip(lower=tiny)))
        sns.histplot(d, x="value", hue="dictionary", element="step", stat="probability", common_norm=False, bins=60, ax=ax)
        ax.axvline(-12, color="k", ls="--", lw=1, label="pass mark 1e-12")
        ax.set(xlabel=f"log10 |{what}|\n(exact 0 drawn at -18)", ylabel="fraction of MP steps", title=title)
    e = earlier.copy()
    e["group"] = np.where(e["kind"] == "unselected atom", "unselected", "lag " + e["lag"].clip(upper=4).astype(str).str.replace("4", "4+"))
    order = ["lag 0", "lag 1", "lag 2", "lag 3", "lag 4+", "unselected"]
    with _seaborn_boxplot():
        sns.boxplot(e, x="group", y="cosine", hue="dictionary", order=order, ax=axes[2], showfliers=False)
    axes[2].set(xlabel="atom selected t - s steps before (lag) / never selected", ylabel="|cos(r(t), atom)|",
                title="residual vs earlier atoms")
    sns.lineplot(conv, x="step", y="distance_to_projection", hue="dictionary", style="selection", marker="o", ax=axes[3])
    axes[3].set(xscale="log", yscale="log", ylabel="max ||x_hat(t) - P_span(D) x||", title="C.3: convergence to the projection")
    fig.tight_layout()
    return fig


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
    sns.lineplot(err_df, x="inference_k", y="nmse", hue="method", **hue_kwargs(err_df["method"]), marker="o", markersize=3,
                 errorbar=("pi", 100), ax=axes[0])
    axes[0].axvline(train_k, color="k", ls="--", lw=0.8, label=f"training k = {train_k}")
    axes[0].set(yscale="log", xlabel="inference k", ylabel=r"normalised MSE  $\|x-\hat x\|^2/\|x\|^2$",
                title="error against inference k (same training L0)")
    axes[0].legend(fontsize=7)

    d = l0_df.assign(target_label=l0_df["target_nmse"].map(lambda v: f"{v:.3g}"))
    order_t = [f"{v:.3g}" for v in sorted(d["target_nmse"].unique(), reverse=True)]
    with _seaborn_boxplot():
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
        ax.plot(mp["l0"], mp["nmse"], "o-", ms=3, color=method_colors(["MP-SAE"])["MP-SAE"], label="MP-SAE, fixed k")
        th = d[d["true_s"] == s_train].groupby("target_nmse")[["l0", "nmse"]].mean()
        ax.plot(th["l0"], th["nmse"], "*", ms=11, color="C3", label=f"threshold mode (s = {s_train})")
        for t, r in th.iterrows():
            ax.annotate(f"{t:.3g}", (r["l0"], r["nmse"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set(yscale="log", xlabel="mean L0", ylabel="mean normalised MSE", title="MP-SAE: fixed k against threshold mode")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
