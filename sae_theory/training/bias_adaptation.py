"""Bias Adaptation (BA) and Group Bias Adaptation (GBA), Algorithms 1-2 of the GBA paper
(docs/papers.md#gba-algorithms), as a post-step hook of the generic trainer.

Algorithm 1 collects, for every neuron m, the pre-activations y_m of every token since the last
update (a buffer of B tokens); once B tokens have been seen it calls Algorithm 2 and empties the
buffer. Algorithm 2 needs only three statistics of that buffer, kept here as O(M) running
counters (never the buffer itself):

    q_m  = #{y_m > 0} / #tokens                 firing frequency
    r_m  = max(max y_m, 0)                      peak positive pre-activation
    r̄_k  = sum_{m in G_k} r_m / #{m in G_k : r_m > 0}     mean positive peak of group k

and updates the neuron bias b (``model.b_enc``), group k having target frequency p_k:

    if q_m > p_k:  b_m <- max(b_m - gamma_minus * r_m, -1)     fires too often: raise threshold
    if q_m < eps:  b_m <- min(b_m + gamma_plus * r̄_k, 0)       (nearly) dead: lower threshold

(the printed algorithm has min and max swapped in the second line; the clamp b in [-1, 0] is the
intended reading, docs/papers.md#gba-algorithms). Neurons with eps <= q_m <= p_k are left alone.

**Empty groups.** When no neuron of group k has a positive peak, r̄_k is 0/0. We then use the mean
positive peak over *all* neurons, and if no neuron anywhere has one, the dead neurons are not
moved (there is no scale to move them by). Either way no NaN reaches b.

The target frequencies are geometric from HTF down to LTF over K groups,
p_k = HTF * (LTF / HTF)^((k-1)/(K-1)), k = 1..K. Groups are contiguous equal blocks of neurons,
as in the first author's library (docs/papers.md#gba-author-code), or a seeded random assignment. BA
is the one-group case with a single target p: :meth:`GBAConfig.bias_adaptation`.

**Readings beyond the printed algorithm** (both off by default, so the defaults are Algorithms 1-2
as printed; ``sae_theory.experiments.gba_readings`` measures them):

* ``GBAConfig.bias_init = "target_quantile"``: instead of starting at b = 0, every bias is set at
  the hook's first call so that its neuron fires on a fraction p_k of that step's batch,
  b_m = clamp(-Q_{1-p_k}(u_m), -1, 0) with u = y - b the unbiased projections and Q the linearly
  interpolated quantile (:func:`quantile_bias`). The analysed algorithm's bias is "fixed or set to
  realise frequency p" (docs/papers.md#gba-recovery-theorem; the digest's §4.1); b = 0 is our
  inference (docs/papers.md#gba-constants).
* ``GBAConfig.raise_below_target = True``: two-sided control. A neuron with eps <= q_m < p_k is
  raised too, b_m <- min(b_m + gamma_plus * r_m, 0), by its own peak as the lowering rule uses. The
  authors describe the bias as "shifted until the neuron reaches its TAF" (the digest's §3.4); the
  printed Algorithm 2 moves only neurons above target or dead (docs/papers.md#gba-algorithms).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .._checks import check_bool, check_int, check_number

__all__ = ["BIAS_INITS", "GBAConfig", "GroupBiasAdaptation", "bias_update", "bias_update_reference", "group_assignment",
           "quantile_bias", "quantile_bias_reference", "target_frequencies"]

#: How the neuron bias starts (``GBAConfig.bias_init``).
BIAS_INITS = ("zero", "target_quantile")


@dataclass(frozen=True)
class GBAConfig:
    """Hyper-parameters of (Group) Bias Adaptation. Defaults: docs/papers.md#gba-constants."""

    n_groups: int = 10
    """K >= 1 groups of neurons, one target frequency each."""
    htf: float = 0.1
    """Highest target frequency, in (0, 1). The ICLR version recommends 0.5."""
    ltf: float = 1e-3
    """Lowest target frequency, in (0, htf); equal to htf only when n_groups = 1."""
    gamma_minus: float = 0.01
    """Step gamma_- of the threshold raise (bias decrease) for neurons above target."""
    gamma_plus: float = 0.01
    """Step gamma_+ of the bias increase for (nearly) dead neurons."""
    dead_eps: float = 1e-6
    """eps: a neuron firing on fewer than this fraction of the buffer counts as dead; < ltf."""
    buffer_size: int = 25_600
    """B: tokens between two updates (the paper: every 50 steps of batch 512)."""
    assignment: str = "contiguous"
    """``"contiguous"`` equal blocks (the authors' library) or ``"random"`` (seeded)."""
    seed: int = 0
    """Seed of the random assignment."""
    bias_init: str = "zero"
    """How the bias starts: ``"zero"`` (b = 0 as the model builds it; docs/papers.md#gba-constants,
    inferred) or ``"target_quantile"`` (at the hook's first call b_m = clamp(-Q_{1-p_k}(u_m), -1, 0)
    on that step's batch, so each neuron starts at its target frequency: the analysed algorithm's
    bias "set to realise frequency p", docs/papers.md#gba-recovery-theorem; module docstring)."""
    raise_below_target: bool = False
    """Two-sided control: also raise a neuron with eps <= q_m < p_k by gamma_plus * r_m (clamped at
    0). The printed Algorithm 2 leaves it alone (docs/papers.md#gba-algorithms); the authors' prose
    has the bias "shifted until the neuron reaches its TAF" (module docstring)."""

    def __post_init__(self):
        check_int("n_groups (K)", self.n_groups, minimum=1)
        for name in ("htf", "ltf", "gamma_minus", "gamma_plus", "dead_eps"):
            check_number(name, getattr(self, name))
        for name in ("htf", "ltf"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 < v < 1):
                raise ValueError(f"{name} must be a target frequency in (0, 1), got {v}.")
        if self.n_groups == 1 and self.htf != self.ltf:
            raise ValueError(f"one group has one target: set htf == ltf (got htf={self.htf}, ltf={self.ltf}) or use GBAConfig.bias_adaptation(p).")
        if self.n_groups > 1 and not self.ltf < self.htf:
            raise ValueError(f"need ltf < htf for {self.n_groups} groups, got ltf={self.ltf} >= htf={self.htf}; swap them.")
        if not (math.isfinite(self.dead_eps) and 0 <= self.dead_eps < self.ltf):
            raise ValueError(f"dead_eps must lie in [0, ltf={self.ltf}), got {self.dead_eps}; a dead neuron must fire less often than any target.")
        for name in ("gamma_minus", "gamma_plus"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v}.")
        check_int("buffer_size (tokens between updates)", self.buffer_size, minimum=1)
        check_int("seed", self.seed)
        if self.assignment not in ("contiguous", "random"):
            raise ValueError(f"assignment must be 'contiguous' or 'random', got {self.assignment!r}.")
        if self.bias_init not in BIAS_INITS:
            raise ValueError(f"bias_init must be one of {BIAS_INITS}, got {self.bias_init!r}.")
        check_bool("raise_below_target", self.raise_below_target)

    @classmethod
    def bias_adaptation(cls, p: float, **kwargs: Any) -> "GBAConfig":
        """BA: one group with the single target frequency p."""
        return cls(n_groups=1, htf=p, ltf=p, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_frequencies(cfg: GBAConfig) -> Tensor:
    """p_k = HTF (LTF/HTF)^((k-1)/(K-1)), k = 1..K, float64 (K,); (HTF,) when K = 1."""
    K = cfg.n_groups
    if K == 1:
        return torch.tensor([cfg.htf], dtype=torch.float64)
    k = torch.arange(K, dtype=torch.float64)
    return cfg.htf * (cfg.ltf / cfg.htf) ** (k / (K - 1))


def group_assignment(n_latents: int, cfg: GBAConfig) -> Tensor:
    """Group index (0..K-1) of each neuron, LongTensor (M,). Contiguous: neuron m is in group
    floor(m K / M) (equal blocks; when K does not divide M they hold floor(M/K) or ceil(M/K)
    neurons, e.g. M = 10, K = 4 gives sizes 3, 2, 3, 2); random: a seeded permutation of that."""
    if cfg.n_groups > n_latents:
        raise ValueError(f"n_groups={cfg.n_groups} exceeds the number of neurons {n_latents}; use fewer groups.")
    groups = torch.arange(n_latents) * cfg.n_groups // n_latents
    if cfg.assignment == "random":
        groups = groups[torch.randperm(n_latents, generator=torch.Generator().manual_seed(cfg.seed))]
    return groups


def bias_update_reference(b, q, r, groups, targets, gamma_minus, gamma_plus, eps, raise_below_target=False):
    """Algorithm 2 line by line, one neuron at a time, in float64 Python (the oracle).

    Parameters are sequences: b, q, r of length M, groups (group index per neuron), targets
    (p_k per group). ``raise_below_target``: the two-sided reading (module docstring). Returns the
    new b as a list.
    """
    M, K = len(b), len(targets)
    r_all = [x for x in r if x > 0]
    r_global = sum(r_all) / len(r_all) if r_all else None
    r_bar = []
    for k in range(K):
        members = [m for m in range(M) if groups[m] == k]
        num = sum(r[m] for m in members)
        den = sum(1 for m in members if r[m] > 0)
        r_bar.append(num / den if den > 0 else r_global)  # empty group: global mean (module doc)
    new_b = list(b)
    for m in range(M):
        k = groups[m]
        if q[m] > targets[k]:
            new_b[m] = max(b[m] - gamma_minus * r[m], -1.0)
        if q[m] < eps and r_bar[k] is not None:
            new_b[m] = min(b[m] + gamma_plus * r_bar[k], 0.0)
        elif raise_below_target and eps <= q[m] < targets[k]:
            new_b[m] = min(b[m] + gamma_plus * r[m], 0.0)
    return new_b


def bias_update(b: Tensor, q: Tensor, r: Tensor, groups: Tensor, targets: Tensor, gamma_minus: float, gamma_plus: float, eps: float,
                raise_below_target: bool = False) -> Tensor:
    """Algorithm 2, vectorised: the new bias (M,) from the statistics of one buffer.

    b, q, r: (M,) current bias, firing frequency, peak positive pre-activation; groups (M,) long;
    targets (K,) float; ``raise_below_target``: the two-sided reading (module docstring). Same
    semantics as :func:`bias_update_reference`, in b's dtype.
    """
    K = targets.numel()
    r = r.to(b.dtype)
    positive = (r > 0).to(b.dtype)
    num = torch.zeros(K, dtype=b.dtype, device=b.device).index_add_(0, groups, r)
    den = torch.zeros(K, dtype=b.dtype, device=b.device).index_add_(0, groups, positive)
    total = positive.sum()
    r_global = r.sum() / total.clamp(min=1)  # only used where total > 0
    r_bar = torch.where(den > 0, num / den.clamp(min=1), r_global)  # guarded: no 0/0
    p = targets.to(b.dtype)[groups]
    q = q.to(b.dtype)
    lowered = torch.clamp(b - gamma_minus * r, min=-1.0)
    raised = torch.clamp(b + gamma_plus * r_bar[groups], max=0.0)
    revive = (q < eps) & ((den[groups] > 0) | (total > 0))
    kept = b
    if raise_below_target:
        kept = torch.where((q >= eps) & (q < p), torch.clamp(b + gamma_plus * r, max=0.0), b)
    return torch.where(q > p, lowered, torch.where(revive, raised, torch.where(q < eps, b, kept)))


def quantile_bias_reference(u, p):
    """``bias_init="target_quantile"`` one neuron at a time in float64 Python (the oracle).

    u: a list of B rows of M unbiased projections; p: M target frequencies. Neuron m gets
    b_m = clamp(-Q, -1, 0) with Q the (1 - p_m) quantile of its column, linearly interpolated
    between order statistics: position h = (1 - p_m)(B - 1), Q = s[floor h] + (h - floor h)
    (s[floor h + 1] - s[floor h]) on the sorted column s (numpy's and torch's default). Returns b
    as a list.
    """
    B, M = len(u), len(p)
    out = []
    for m in range(M):
        col = sorted(row[m] for row in u)
        h = (1.0 - p[m]) * (B - 1)
        lo = math.floor(h)
        hi = min(lo + 1, B - 1)
        Q = col[lo] + (h - lo) * (col[hi] - col[lo])
        out.append(min(max(-Q, -1.0), 0.0))
    return out


def quantile_bias(u: Tensor, p: Tensor) -> Tensor:
    """The bias (M,) that makes each neuron fire on a fraction p_m of the batch u (B, M):
    b_m = clamp(-Q_{1-p_m}(u_m), -1, 0), Q linearly interpolated (:func:`quantile_bias_reference`),
    in u's dtype. u: unbiased projections W (x - b_dec); p: (M,) targets in (0, 1)."""
    if u.dim() != 2 or p.dim() != 1 or p.numel() != u.shape[1]:
        raise ValueError(f"need u (B, M) and p (M,), got shapes {tuple(u.shape)} and {tuple(p.shape)}.")
    if u.shape[0] < 1:
        raise ValueError("u has no rows; the quantile needs at least one token.")
    B = u.shape[0]
    s = u.sort(dim=0).values
    h = (1.0 - p.to(torch.float64)) * (B - 1)
    lo = h.floor()
    frac = (h - lo).to(u.dtype)
    lo = lo.long().clamp(max=B - 1)
    hi = (lo + 1).clamp(max=B - 1)
    s_lo = s.gather(0, lo.to(u.device)[None]).squeeze(0)
    s_hi = s.gather(0, hi.to(u.device)[None]).squeeze(0)
    return torch.clamp(-(s_lo + frac.to(u.device) * (s_hi - s_lo)), -1.0, 0.0)


class GroupBiasAdaptation:
    """Post-step hook of :func:`sae_theory.training.train` running Algorithms 1-2 on ``model.b_enc``.

    The model must expose ``b_enc`` (M,) as a buffer outside the optimiser and report its
    pre-activations y (B, M) in ``TrainOutput.pre_acts`` — :class:`~sae_theory.models.TiedSAE`
    does, and so do the tied baselines built with ``train_b_enc=False``. :meth:`check_model`
    refuses any other model (TypeError naming ``model.b_enc``); the hook runs it at its first call
    with a model, before it reads or writes anything, and a caller can run it before training.
    State: O(M) counters, checkpointed through ``state_dict``.

    >>> gba = GroupBiasAdaptation(GBAConfig(n_groups=10, htf=0.5, ltf=1e-3))   # doctest: +SKIP
    >>> train(model, data, cfg, hooks=[gba])                                    # doctest: +SKIP
    """

    def __init__(self, config: GBAConfig | None = None, **kwargs: Any):
        self.config = config if config is not None else GBAConfig(**kwargs)
        self.targets = target_frequencies(self.config)
        self.groups: Tensor | None = None
        self._fires: Tensor | None = None
        self._peak: Tensor | None = None
        self._tokens = 0
        self.n_updates = 0
        self.bias_initialised = self.config.bias_init == "zero"  # "target_quantile": set at the first call
        self._checked_model: int | None = None  # id of the model check_model last accepted

    def check_model(self, model) -> None:
        """Raise unless this hook can drive ``model``: ``model.b_enc`` must be a floating (M,)
        tensor that the optimiser does not train (a buffer, or a parameter with
        ``requires_grad=False`` outside ``model.optimizer_parameters()``), and the config's groups
        must fit its M neurons. Nothing is read from or written to the model beyond that.

        Raises
        ------
        TypeError
            No ``b_enc``, one that is not a floating 1-D tensor, or one the optimiser trains (then
            bias adaptation and gradient steps would both move it: e.g. :class:`~sae_theory.models.TopKSAE`,
            or a tied baseline with its default ``train_b_enc=True``).
        ValueError
            More groups than neurons.
        """
        name = type(model).__name__
        b = getattr(model, "b_enc", None)
        if not isinstance(b, Tensor):
            raise TypeError(f"model ({name}) has no b_enc tensor for GroupBiasAdaptation to adapt; it drives the neuron bias of "
                            "TiedSAE (or of a tied baseline built with train_b_enc=False).")
        if b.dim() != 1 or not b.is_floating_point():
            raise TypeError(f"model.b_enc of {name} must be a floating (M,) tensor, got {b.dtype} of shape {tuple(b.shape)}.")
        params = model.optimizer_parameters() if callable(getattr(model, "optimizer_parameters", None)) else ()
        if b.requires_grad or any(p is b for p in params):
            raise TypeError(f"model.b_enc of {name} is trained by the optimiser, so gradient steps and bias adaptation would both "
                            "move it; GroupBiasAdaptation drives a bias outside the optimiser: use TiedSAE, or build a tied "
                            "baseline with train_b_enc=False.")
        group_assignment(b.numel(), self.config)  # raises when n_groups exceeds the neurons
        self._checked_model = id(model)

    def _setup(self, b: Tensor) -> None:
        M = b.numel()
        self.groups = group_assignment(M, self.config).to(b.device)
        self.targets = self.targets.to(b.device)
        self._fires = torch.zeros(M, dtype=torch.long, device=b.device)
        self._peak = torch.zeros(M, dtype=b.dtype, device=b.device)

    def reset_statistics(self) -> None:
        """Empty the buffer statistics (after an update)."""
        if self._fires is not None:
            self._fires.zero_()
            self._peak.zero_()
        self._tokens = 0

    def neuron_targets(self, n_latents: int) -> Tensor:
        """Target frequency p of every neuron, float64 (M,)."""
        return target_frequencies(self.config)[group_assignment(n_latents, self.config)]

    def observe(self, pre_acts: Tensor, fired: Tensor | None = None) -> None:
        """Add a batch of pre-activations y (B, M) to the running statistics.

        ``fired``, optional: the 0/1 mask 1[y > 0] (B, M) when the forward pass already computed it
        (``TrainOutput.fired``); the firing counts are then one column sum of it.
        """
        with torch.no_grad():
            self._observe(pre_acts, fired)

    def _observe(self, pre_acts: Tensor, fired: Tensor | None) -> None:
        # Runs on every training step, so it is kept to four tensor operations on a 2-D batch.
        y = pre_acts.detach()
        if y.dim() != 2:
            y = y.reshape(-1, y.shape[-1])
        if fired is None:
            # #{y > 0} per neuron as a float sum of sign(y) clamped to {0, 1}: about 2x faster on
            # CPU than reducing a bool tensor.
            fired = torch.sign(y).clamp_(min=0)
        elif fired.dim() != 2:
            fired = fired.reshape(y.shape)
        # Float column sums of 0/1 are exact while the batch has fewer rows than the dtype's integer
        # range (2^24 in float32); larger batches are summed in float64.
        counts = fired.sum(0) if y.shape[0] < 2**24 else fired.sum(0, dtype=torch.float64)
        self._fires += counts.to(torch.long)
        peak = y.amax(0)
        if peak.dtype != self._peak.dtype:
            peak = peak.to(self._peak.dtype)
        torch.maximum(self._peak, peak, out=self._peak)  # starts at 0: r = max(max y, 0)
        self._tokens += y.shape[0]

    @torch.no_grad()
    def __call__(self, model, step: int, out) -> None:
        if self._checked_model != id(model):
            self.check_model(model)
        b = model.b_enc
        if self._fires is None:
            self._setup(b)
        elif self._fires.device != b.device:  # counters loaded on the CPU (checkpoint), model elsewhere
            self._fires, self._peak = self._fires.to(b.device), self._peak.to(b.device)
            self.groups, self.targets = self.groups.to(b.device), self.targets.to(b.device)
        if out.pre_acts.shape[-1] != b.numel():
            raise ValueError(f"pre_acts has {out.pre_acts.shape[-1]} neurons but model.b_enc has {b.numel()}.")
        if not self.bias_initialised:
            # bias_init="target_quantile": this step's projections u = y - b set b, and the step is
            # not counted (its firing was decided by the bias before)
            u = out.pre_acts.detach().reshape(-1, b.numel()) - b
            b.copy_(quantile_bias(u, self.targets[self.groups]).to(b.dtype))
            self.bias_initialised = True
            return
        self._observe(out.pre_acts, getattr(out, "fired", None))
        if self._tokens >= self.config.buffer_size:
            q = self._fires.to(torch.float64) / self._tokens
            c = self.config
            b.copy_(bias_update(b, q, self._peak, self.groups, self.targets, c.gamma_minus, c.gamma_plus, c.dead_eps,
                                raise_below_target=c.raise_below_target))
            self.n_updates += 1
            self.reset_statistics()

    def state_dict(self) -> dict[str, Any]:
        return dict(
            fires=None if self._fires is None else self._fires.clone(),
            peak=None if self._peak is None else self._peak.clone(),
            tokens=self._tokens,
            n_updates=self.n_updates,
            bias_initialised=self.bias_initialised,
            config=self.config.to_dict(),
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # a state saved before a field existed has that field's default
        if {**self.config.to_dict(), **state["config"]} != self.config.to_dict():
            raise ValueError("this checkpoint's bias adaptation config differs from the hook's; build the hook with the saved config.")
        self._tokens, self.n_updates = int(state["tokens"]), int(state["n_updates"])
        # states saved before bias_init existed: the zero init needs nothing; otherwise the first call set b
        self.bias_initialised = bool(state.get("bias_initialised", self.config.bias_init == "zero" or state["fires"] is not None))
        if state["fires"] is not None:
            self._fires, self._peak = state["fires"].clone(), state["peak"].clone()
            self.groups = group_assignment(self._fires.numel(), self.config).to(self._fires.device)
            self.targets = target_frequencies(self.config).to(self._fires.device)
        else:  # a state saved before the first call: forget any buffer this hook holds
            self._fires = self._peak = self.groups = None
            self.targets = target_frequencies(self.config)
