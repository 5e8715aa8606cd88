"""Figures of notebook 09 (MP-SAE on a real transformer's activations,
:mod:`sae_theory.experiments.real_mp`): one function per figure, each taking the experiment's
tidy frames."""

from __future__ import annotations

from ..models.registry import method_order
from .core import hue_kwargs, method_colors, use_style

__all__ = ["real_babel_figure", "real_frontier_figure", "real_inference_figure", "real_training_figure"]


def _plain_log(ax, axis: str = "x", ticks=None) -> None:
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


def real_frontier_figure(frontier_df, eleuther_df=None, *, model_label: str = ""):
    """Fig 5 (``experiments.real_mp.frontier``): held-out R^2 against L0, one point per SAE (one
    per method and sparsity level), and the latents silent on every held-out token; with
    ``eleuther_df`` (``experiments.real_mp.eleuther_table()``), two more panels: our FVU of MP-SAE
    and TopK against k, and EleutherAI's on SmolLM2 in a panel of its own (another model and
    scale: beside ours, not on the same axes)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    df = frontier_df
    order = method_order(df["method"])
    n = 4 if eleuther_df is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.2))
    ax = axes[0]
    sns.lineplot(df.sort_values("l0"), x="l0", y="r2", hue="method", style="method", style_order=order, markers=True, dashes=False,
                 estimator=None, sort=False, ax=ax, **hue_kwargs(order))
    ax.set(xscale="log", xlabel="L0: active latents per held-out token (log scale)", ylabel="R² on held-out tokens (global mean)",
           title=f"Fig 5 here: R² against L0{', ' + model_label if model_label else ''}")
    ks = sorted(df["k"].unique())
    _plain_log(ax, "x", ks)
    ax.legend(title="method", fontsize=8)
    ax = axes[1]
    sns.barplot(df, x="k", y="dead_fraction", hue="method", ax=ax, **hue_kwargs(order))
    ax.set(xlabel="sparsity level k (training)", ylabel="fraction of latents silent on every held-out token",
           title="dead latents", ylim=(0, min(1.0, 1.4 * float(df["dead_fraction"].max()) + 0.02)))
    ax.legend(title="method", fontsize=8, ncol=3, loc="upper center")
    if eleuther_df is not None:
        pair = [m for m in ("TopK", "MP-SAE") if m in set(df["method"])]
        colors = method_colors(pair)
        ours = df[df["method"].isin(pair)]
        ax = axes[2]
        sns.lineplot(ours, x="k", y="fvu", hue="method", hue_order=pair, palette=colors, marker="o", ax=ax)
        ax.set(xscale="log", xlabel="k (training)", ylabel="FVU on held-out tokens", title=f"ours: {model_label or 'this study'}")
        _plain_log(ax, "x", ks)
        ax.legend(title="method", fontsize=8)
        ax = axes[3]
        sns.lineplot(eleuther_df, x="k", y="fvu", hue="method", hue_order=pair, palette=colors, marker="s", linestyle="--", ax=ax)
        eks = sorted(eleuther_df["k"].unique())
        ax.set(xscale="log", xlabel="K (training)", ylabel="FVU (quoted)",
               title="EleutherAI (quoted): SmolLM2-135M layer 10, 64x\nanother model and scale: not comparable")
        _plain_log(ax, "x", eks)
        ax.legend(title="method", fontsize=8)
    fig.tight_layout()
    return fig


def real_inference_figure(sweep_df):
    """Figs 6 and 8 (``experiments.real_mp.inference_sweep``): normalised error against the
    inference k, one panel per training k (its value dashed), and the effective rank of the codes
    against the inference k for the runs where it was read."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    df = sweep_df
    order = method_order(df["method"])
    train_ks = sorted(df["train_k"].unique())
    rank = df.dropna(subset=["effective_rank"])
    fig, axes = plt.subplots(1, len(train_ks) + 1, figsize=(4.6 * (len(train_ks) + 1), 4.2))
    for ax, k in zip(axes, train_ks):
        sns.lineplot(df[df["train_k"] == k], x="inference_k", y="nmse", hue="method", style="method", style_order=order, markers=True,
                     dashes=False, ax=ax, legend=ax is axes[0], **hue_kwargs(order))
        ax.axvline(k, color="k", ls="--", lw=1, label=f"training k = {k}")
        ax.set(xscale="log", yscale="log", xlabel="inference k (log scale)", ylabel="normalised MSE ||x - x̂||² / ||x||² (held out)",
               title=f"Fig 8 here: SAEs trained at k = {k}")
        _plain_log(ax, "x", [j for j in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if j <= df.loc[df["train_k"] == k, "inference_k"].max()])
        _plain_log(ax, "y")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    if len(rank):
        rk = int(rank["train_k"].iloc[0])
        sns.lineplot(rank, x="inference_k", y="effective_rank", hue="method", style="method", style_order=order, markers=True,
                     dashes=False, ax=ax, **hue_kwargs(order))
        ax.axvline(rk, color="k", ls="--", lw=1, label=f"training k = {rk}")
        ax.set(xscale="log", xlabel="inference k (log scale)", ylabel="effective rank of the codes (ZᵀZ)",
               title=f"Fig 6 here: effective rank (trained at k = {rk})")
        _plain_log(ax, "x", sorted(rank["inference_k"].unique()))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def real_babel_figure(babel_df, gram_df):
    """Figs 7 and 17 (``experiments.real_mp.babel_scores``, ``gram_histogram``): the Babel
    function mu_1(r) of each whole dictionary against r (one training k: the middle one), the
    co-active Babel against the held-out L0 (it grows with L0), and the histogram of the
    off-diagonal atom cosines."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    order = method_order(babel_df["method"])
    ks = sorted(babel_df["k"].unique())
    k_mid = ks[len(ks) // 2]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    ax = axes[0]
    sns.lineplot(babel_df[babel_df["k"] == k_mid], x="r", y="babel", hue="method", style="method", style_order=order, markers=True,
                 dashes=False, ax=ax, **hue_kwargs(order))
    ax.set(xscale="log", xlabel="r (atoms summed)", ylabel=r"whole-dictionary Babel $\mu_1(r)$",
           title=f"Fig 7 here: whole dictionary (trained at k = {k_mid})")
    _plain_log(ax, "x", sorted(babel_df["r"].unique()))
    ax.legend(title="method", fontsize=8)
    ax = axes[1]
    per_run = babel_df.drop_duplicates(["method", "k"]).sort_values("l0")
    sns.lineplot(per_run, x="l0", y="babel_coactive", hue="method", style="method", style_order=order, markers=True, dashes=False,
                 estimator=None, sort=False, ax=ax, **hue_kwargs(order))
    ax.set(xscale="log", xlabel="L0: active latents per held-out token (log scale; one point per training k)",
           ylabel=r"co-active Babel $\mu_1(|S|-1)$, mean over tokens", title="Fig 7 here: atoms co-activated on held-out tokens")
    _plain_log(ax, "x", ks)
    ax.legend(title="method", fontsize=8)
    ax = axes[2]
    colors = method_colors(order)
    for m in order:
        g = gram_df[gram_df["method"] == m]
        if len(g):
            edges = list(g["bin_left"]) + [g["bin_right"].iloc[-1]]
            ax.stairs(g["density"].to_numpy(), edges, color=colors[m], lw=1.3, label=f"{m} (std {g['std'].iloc[0]:.3f})")
    k_hist = int(gram_df["k"].iloc[0]) if len(gram_df) else 0
    ax.set(yscale="log", xlabel="cosine between two atoms (off-diagonal of D Dᵀ)", ylabel="density (log scale)",
           title=f"Fig 17 here: atom cosines (trained at k = {k_hist})")
    ax.legend(title="method", fontsize=8)
    fig.tight_layout()
    return fig


def real_training_figure(curves_df):
    """Convergence (``experiments.real_mp.training_curves``): the training batch's reconstruction
    error (without the penalties) and its L0 against the step, one column per sparsity level, one
    line per method."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    use_style()
    order = method_order(curves_df["method"])
    ks = sorted(curves_df["k"].unique())
    fig, axes = plt.subplots(2, len(ks), figsize=(4.6 * len(ks), 7.4), squeeze=False)
    for j, k in enumerate(ks):
        g = curves_df[curves_df["k"] == k]
        for i, (col, label) in enumerate((("mse", "training-batch reconstruction error ||x - x̂||²"),
                                          ("l0", "training-batch L0 (active latents per token)"))):
            ax = axes[i][j]
            sns.lineplot(g, x="step", y=col, hue="method", ax=ax, legend=(i, j) == (0, len(ks) - 1), linewidth=1.2, **hue_kwargs(order))
            ax.set(xlabel="training step", ylabel=label, yscale="log", title=f"trained at k = {k}")
            _plain_log(ax, "y")
            if col == "l0":
                ax.axhline(k, color="k", ls="--", lw=0.8, label=f"target L0 = {k}")
                ax.legend(fontsize=7)
    axes[0][-1].legend(title="method", fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig
