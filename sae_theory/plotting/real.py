"""Figures of notebook 09 (MP-SAE on a real transformer's activations,
:mod:`sae_theory.experiments.real_mp`): one function per figure, each taking the experiment's
tidy frames."""

from __future__ import annotations

from ..models.registry import method_order
from .core import panel_grid, shared_legend, hue_kwargs, method_colors, plain_log_axis, use_style

__all__ = ["gba_real_consistency_figure", "gba_real_frontier_figure", "gba_real_neurons_figure", "real_babel_figure", "real_frontier_figure", "real_inference_figure", "real_inference_training_figure", "real_training_figure"]


def _method_handles(ax):
    """The method legend seaborn put on ``ax`` (lines with their markers), removed from ``ax``."""
    handles, labels = ax.get_legend_handles_labels()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    return handles, labels


def real_frontier_figure(frontier_df, eleuther_df=None, *, model_label: str = ""):
    """Fig 5 (``experiments.real_mp.frontier``): held-out R^2 against L0, one point per SAE (one
    per method and sparsity level), and the latents silent on every held-out token; with
    ``eleuther_df`` (``experiments.real_mp.eleuther_table()``), two more panels: our FVU of MP-SAE
    and TopK against k, and EleutherAI's on SmolLM2 in a panel of its own (another model and
    scale: beside ours, not on the same axes). Panels in rows of two, one method legend above
    them (each method keeps its colour and marker in every panel; EleutherAI's lines dashed)."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    use_style()
    df = frontier_df
    order = method_order(df["method"])
    style = dict(hue="method", style="method", style_order=order, markers=True, dashes=False, **hue_kwargs(order))
    fig, axes, _ = panel_grid(4 if eleuther_df is not None else 2)
    ax = axes[0]
    sns.lineplot(df.sort_values("l0"), x="l0", y="r2", estimator=None, sort=False, ax=ax, **style)
    ax.set(xscale="log", xlabel="L0: active latents per held-out token (log scale)", ylabel="R² on held-out tokens (global mean)",
           title=f"Fig 5 here: R² against L0{', ' + model_label if model_label else ''}")
    ks = sorted(df["k"].unique())
    plain_log_axis(ax, "x", ks)
    handles, labels = _method_handles(ax)
    ax = axes[1]
    # saturation=1: the bars take the method's palette colour exactly, as in the shared legend
    sns.barplot(df, x="k", y="dead_fraction", hue="method", saturation=1, ax=ax, legend=False, **hue_kwargs(order))
    ax.set(xlabel="sparsity level k (training)", ylabel="fraction of latents silent on every held-out token",
           title="dead latents", ylim=(0, min(1.0, 1.1 * float(df["dead_fraction"].max()) + 0.02)))
    if eleuther_df is not None:
        pair = [m for m in ("TopK", "MP-SAE") if m in set(df["method"])]
        ours = df[df["method"].isin(pair)]
        ax = axes[2]
        sns.lineplot(ours, x="k", y="fvu", ax=ax, legend=False, **style)
        ax.set(xscale="log", xlabel="k (training)", ylabel="FVU on held-out tokens", title=f"ours: {model_label or 'this study'}")
        plain_log_axis(ax, "x", ks)
        ax = axes[3]
        sns.lineplot(eleuther_df[eleuther_df["method"].isin(pair)], x="k", y="fvu", linestyle="--", ax=ax, legend=False, **style)
        eks = sorted(eleuther_df["k"].unique())
        ax.set(xscale="log", xlabel="K (training)", ylabel="FVU (quoted)",
               title="EleutherAI (quoted): SmolLM2-135M layer 10, 64x\nanother model and scale: not comparable")
        plain_log_axis(ax, "x", eks)
        handles += [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls="--")]
        labels += ["ours", "EleutherAI (quoted)"]
    shared_legend(fig, handles, labels, title="method")
    return fig


def real_inference_figure(sweep_df):
    """Figs 6 and 8 (``experiments.real_mp.inference_sweep``): normalised error against the
    inference k, one panel per training k (its value dashed), and the effective rank of the codes
    against the inference k for the runs where it was read. Panels in rows of two, one method
    legend (above them, or in the last row's free cell)."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    use_style()
    df = sweep_df
    order = method_order(df["method"])
    style = dict(hue="method", style="method", style_order=order, markers=True, dashes=False, **hue_kwargs(order))
    train_ks = sorted(df["train_k"].unique())
    rank = df.dropna(subset=["effective_rank"])
    fig, axes, spare = panel_grid(len(train_ks) + 1)
    for ax, k in zip(axes, train_ks):
        sns.lineplot(df[df["train_k"] == k], x="inference_k", y="nmse", ax=ax, legend=ax is axes[0], **style)
        ax.axvline(k, color="k", ls="--", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="inference k (log scale)", ylabel="normalised MSE ||x - x̂||² / ||x||² (held out)",
               title=f"Fig 8 here: SAEs trained at k = {k}")
        plain_log_axis(ax, "x", [j for j in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if j <= df.loc[df["train_k"] == k, "inference_k"].max()])
        plain_log_axis(ax, "y")
    handles, labels = _method_handles(axes[0])
    ax = axes[-1]
    if len(rank):
        rk = int(rank["train_k"].iloc[0])
        sns.lineplot(rank, x="inference_k", y="effective_rank", ax=ax, legend=False, **style)
        ax.axvline(rk, color="k", ls="--", lw=1)
        ax.set(xscale="log", xlabel="inference k (log scale)", ylabel="effective rank of the codes (ZᵀZ)",
               title=f"Fig 6 here: effective rank (trained at k = {rk})")
        plain_log_axis(ax, "x", sorted(rank["inference_k"].unique()))
    handles.append(Line2D([], [], color="k", ls="--", lw=1))
    labels.append("the panel's training k")
    shared_legend(fig, handles, labels, title="method", spare=spare)
    return fig


def real_inference_training_figure(df):
    """Fig 20's reading (``experiments.real_mp.inference_over_training``): normalised error against
    the inference k, one panel per method and reading (MP-SAE twice: the k largest latents of its
    longest code, the paper's Fig 20 reading, and k pursuit steps), one line per point of training
    (light: early, dark: the end), the training k dashed. MP-SAE's error should keep falling beyond
    the training k once trained long enough; TopK's rises past it; the others flatten at their own L0."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    use_style()
    if "reading" not in df.columns:  # a frame from before MP-SAE was read two ways
        df = df.assign(reading="")
    order = method_order(df["method"])
    panels = [(m, r) for m in order for r in sorted(df.loc[df["method"] == m, "reading"].unique())]
    steps = sorted(df["step"].unique())
    shades = dict(zip(steps, sns.color_palette("rocket_r", len(steps) + 1)[1:]))  # skip the palest shade
    k = int(df["train_k"].iloc[0])
    # rows of three with a cell left for the legend (above the panels it would collide with the title); six panels: rows of four
    fig, axes, spare = panel_grid(len(panels), ncols=4 if len(panels) % 3 == 0 else 3, panel_height=3.6)
    for ax, (method, reading) in zip(axes, panels):
        d = df[(df["method"] == method) & (df["reading"] == reading)]
        for step in steps:
            g = d[d["step"] == step].sort_values("inference_k")
            ax.plot(g["inference_k"], g["nmse"], marker="o", ms=3, color=shades[step], lw=1.4)
        ax.axvline(k, color="k", ls="--", lw=1)
        title = f"{method}\n({reading})" if reading else method
        ax.set(xscale="log", yscale="log", xlabel="inference k (log scale)", ylabel="normalised MSE (held out)", title=title)
        plain_log_axis(ax, "x", [j for j in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if j <= d["inference_k"].max()])
        plain_log_axis(ax, "y")
    handles = [Line2D([], [], color=shades[s], marker="o", ms=3, lw=1.4) for s in steps] + [Line2D([], [], color="k", ls="--", lw=1)]
    labels = [f"after {s:,} steps" for s in steps] + [f"training k = {k}"]
    shared_legend(fig, handles, labels, title="point of training", spare=spare)
    fig.suptitle(f"Fig 20 here: error against inference k along training (SAEs trained at k = {k})")
    return fig


def real_babel_figure(babel_df, gram_df):
    """Figs 7 and 17 (``experiments.real_mp.babel_scores``, ``gram_histogram``): the Babel
    function mu_1(r) of each whole dictionary against r (one training k: the middle one), the
    co-active Babel against the held-out L0 (it grows with L0), and the histogram of the
    off-diagonal atom cosines. Two rows of two cells; the fourth holds the one method legend,
    with each method's standard deviation of the atom cosines (the histogram's)."""
    import seaborn as sns

    use_style()
    order = method_order(babel_df["method"])
    style = dict(hue="method", style="method", style_order=order, markers=True, dashes=False, **hue_kwargs(order))
    ks = sorted(babel_df["k"].unique())
    k_mid = ks[len(ks) // 2]
    fig, axes, spare = panel_grid(3)
    ax = axes[0]
    sns.lineplot(babel_df[babel_df["k"] == k_mid], x="r", y="babel", ax=ax, **style)
    ax.set(xscale="log", xlabel="r (atoms summed)", ylabel=r"whole-dictionary Babel $\mu_1(r)$",
           title=f"Fig 7 here: whole dictionary (trained at k = {k_mid})")
    plain_log_axis(ax, "x", sorted(babel_df["r"].unique()))
    handles, labels = _method_handles(ax)
    ax = axes[1]
    per_run = babel_df.drop_duplicates(["method", "k"]).sort_values("l0")
    sns.lineplot(per_run, x="l0", y="babel_coactive", estimator=None, sort=False, ax=ax, legend=False, **style)
    ax.set(xscale="log", xlabel="L0: active latents per held-out token (log scale; one point per training k)",
           ylabel=r"co-active Babel $\mu_1(|S|-1)$, mean over tokens", title="Fig 7 here: atoms co-activated on held-out tokens")
    plain_log_axis(ax, "x", ks)
    ax = axes[2]
    colors = method_colors(order)
    stds = {}
    for m in order:
        g = gram_df[gram_df["method"] == m]
        if len(g):
            edges = list(g["bin_left"]) + [g["bin_right"].iloc[-1]]
            ax.stairs(g["density"].to_numpy(), edges, color=colors[m], lw=1.3, label=m)
            stds[m] = float(g["std"].iloc[0])
    k_hist = int(gram_df["k"].iloc[0]) if len(gram_df) else 0
    ax.set(yscale="log", xlabel="cosine between two atoms (off-diagonal of D Dᵀ)", ylabel="density (log scale)",
           title=f"Fig 17 here: atom cosines (trained at k = {k_hist})")
    labels = [f"{m} (std {stds[m]:.3f})" if m in stds else m for m in labels]
    shared_legend(fig, handles, labels, title=f"method\n(std: of its atom cosines, Fig 17, k = {k_hist})", spare=spare)
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
            plain_log_axis(ax, "y")
            if col == "l0":
                ax.axhline(k, color="k", ls="--", lw=0.8, label=f"target L0 = {k}")
                ax.legend(fontsize=7)
    axes[0][-1].legend(title="method", fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# notebook 08: GBA on a real network (experiments.real_gba)
# --------------------------------------------------------------------------------------------

#: Colour key of each family of notebook 08: the tied models' registered labels, so GBA, TopK and
#: L1 keep their colours of the other GBA figures.
_GBA_REAL_KEYS = {"GBA": "GBA", "BA": "BA", "TopK": "Tied TopK", "L1": "Tied L1"}
_GBA_READING_MARKERS = ("*", "D", "P", "X", "^")


def _gba_real_colors() -> dict[str, str]:
    colors = method_colors(list(_GBA_REAL_KEYS.values()))
    return {family: colors[key] for family, key in _GBA_REAL_KEYS.items()}


def gba_real_frontier_figure(front, curves=None, *, model_label: str = "", paper_note: str = ""):
    """The loss-sparsity frontier of GBA on a real network (``experiments.real_gba.frontier``): L2
    loss against the fraction of active neurons (log), TopK post-act (solid) and pre-act (dashed)
    curves, L1 and BA points, one marker per GBA reading; with ``curves``
    (``experiments.real_gba.training_curves``) a second panel, the training loss against the step
    of every run (convergence). ``paper_note`` is written in the first panel (the paper's point on
    another model)."""
    import matplotlib.pyplot as plt

    use_style()
    colors = _gba_real_colors()
    n = 2 if curves is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 4.6), squeeze=False)
    ax = axes[0][0]
    tk = front[front.family == "TopK"].sort_values("fraction_active")
    ax.plot(tk.fraction_active, tk.l2_loss, "o-", color=colors["TopK"], label="TopK, post-act fraction (K kept)")
    for _, r in tk.iterrows():
        ax.annotate(f"K={r.value}", (r.fraction_active, r.l2_loss), textcoords="offset points", xytext=(4, 4), fontsize=7, color=colors["TopK"])
    pre = tk.sort_values("fraction_pre")
    ax.plot(pre.fraction_pre, pre.l2_loss, "o--", color=colors["TopK"], alpha=0.55, label="TopK, pre-act fraction (y > 0)")
    l1 = front[front.family == "L1"].sort_values("fraction_active")
    ax.plot(l1.fraction_active, l1.l2_loss, "s-", color=colors["L1"], label="L1")
    ba = front[front.family == "BA"]
    ax.scatter(ba.fraction_active, ba.l2_loss, marker="v", s=60, color=colors["BA"], edgecolor="k", linewidth=0.5, zorder=4,
               label="BA (" + ", ".join(f"p={v}" for v in ba.value) + ")")
    gba = front[front.family == "GBA"]
    for i, (_, r) in enumerate(gba.iterrows()):
        ax.scatter([r.fraction_active], [r.l2_loss], marker=_GBA_READING_MARKERS[i % len(_GBA_READING_MARKERS)], s=160, color=colors["GBA"],
                   edgecolor="k", linewidth=0.7, zorder=5, label=f"GBA, reading '{r.value}'")
    ax.set(xscale="log", xlabel="fraction of neurons active per held-out token (L0 / M, log scale)",
           ylabel="L2 loss: mean ||x - x̂||² (unit-norm rows)", title=f"loss-sparsity frontier{', ' + model_label if model_label else ''}")
    if paper_note:
        ax.text(0.02, 0.02, paper_note, transform=ax.transAxes, fontsize=7, va="bottom", ha="left", color="0.3")
    ax.legend(fontsize=7, loc="upper right")
    if curves is not None:
        ax = axes[0][1]
        for method, g in curves.groupby("method", sort=False):
            family = g.family.iloc[0]
            ax.plot(g.step, g.loss, color=colors[family], alpha=0.9 if family == "GBA" else 0.5, lw=1.6 if family == "GBA" else 1.0)
        from matplotlib.lines import Line2D

        ax.legend([Line2D([], [], color=colors[f]) for f in _GBA_REAL_KEYS], [f"{f} runs" for f in _GBA_REAL_KEYS], fontsize=7)
        ax.set(yscale="log", xlabel="training step", ylabel="training loss (log scale)", title="convergence: training loss of every run")
    fig.tight_layout()
    return fig


def gba_real_consistency_figure(cons):
    """Cross-seed consistency (``experiments.real_gba.consistency``): the share of the top-alpha
    neurons whose MCS reaches each threshold, mean over seeds (bars: the seeds' range), one panel
    per selection criterion, line style per alpha."""
    import matplotlib.pyplot as plt

    use_style()
    colors = _gba_real_colors()
    selections = list(dict.fromkeys(cons.selection))
    alphas = sorted(cons.alpha.unique(), reverse=True)
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(selections), figsize=(5.4 * len(selections), 4.2), sharey=True, squeeze=False)
    for ax, sel in zip(axes[0], selections):
        c = cons[cons.selection == sel]
        for (method, alpha), g in c.groupby(["method", "alpha"], sort=False):
            s = g.groupby("threshold").fraction.agg(["mean", "min", "max"])
            n_sel = int(g.n_selected.median())
            ax.errorbar(s.index, s["mean"], yerr=[s["mean"] - s["min"], s["max"] - s["mean"]], color=colors[method],
                        linestyle=styles[alphas.index(alpha) % len(styles)], marker="o", ms=4, capsize=2,
                        label=f"{method}, top {alpha:.1%} ({n_sel} neurons)")
        ax.set(xlabel="MCS threshold (max cosine with another seed's neurons)", ylabel="share of selected neurons with MCS >= threshold",
               title=f"top neurons by {sel}", ylim=(-0.03, 1.03))
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def gba_real_neurons_figure(diag):
    """Per-neuron diagnostics (``experiments.real_gba.neuron_diagnostics``): Z-score against max
    activation coloured by MCS, for each method, and GBA's firing frequency against Z-score.
    Neurons that never fire on the held-out tokens are left out."""
    import matplotlib.pyplot as plt

    use_style()
    methods = list(dict.fromkeys(diag.method))
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(4.8 * (len(methods) + 1), 4.2))
    alive = diag[diag.frequency > 0]
    sc = None
    for ax, method in zip(axes, methods):
        d = alive[alive.method == method]
        sc = ax.scatter(d.max_activation, d.z_score, c=d.mcs, cmap="viridis", vmin=0, vmax=1, s=8)
        ax.set(xscale="log", xlabel="max activation on held-out tokens (log scale)", ylabel="Z-score: (max - mean) / std",
               title=f"{method}: Z-score against max activation")
        plain_log_axis(ax, "x")
    d = alive[alive.method == methods[0]]
    ax = axes[-1]
    ax.scatter(d.z_score, d.frequency, c=d.mcs, cmap="viridis", vmin=0, vmax=1, s=8)
    ax.set(yscale="log", xlabel="Z-score", ylabel="firing frequency on held-out tokens (log scale)",
           title=f"{methods[0]}: frequency against Z-score")
    fig.tight_layout()
    if sc is not None:
        fig.colorbar(sc, ax=list(axes), label="MCS with the other seeds' runs (min)", shrink=0.85)
    return fig
