"""MP-SAE (Costa et al. 2025, mp_sae.md §1): a tied SAE whose encoder is unrolled matching pursuit.

One dictionary D (p atoms of dimension d, rows of ``W_dec``, unit norm) selects, scores, updates
the residual and decodes:

    r(0) = x - b_dec ;  z = 0
    for t = 1..k:
        c(t) = D r(t-1)                     correlations, (p,)
        j(t) = argmax_j relu(c(t))_j        selection ("relu", the authors' code); "abs": argmax |c|
        a_t  = relu(c(t)_j(t))              coefficient ("abs": the signed c(t)_j(t))
        z_j(t) += a_t                       an atom may be selected again: its code accumulates
        r(t) = r(t-1) - a_t D_j(t)
    x_hat = z D + b_dec

Stopping (per input): after ``k`` steps; with ``threshold`` set, as soon as ||r|| < threshold
(checked before every step, so ``k`` is then a cap); with ``stop_on_repeat``, after the first step
that leaves the support {j : z_j != 0} unchanged (the official toy code's rule: that step is
applied, then the input stops).

Two implementations of the same pursuit:

* :func:`matching_pursuit_reference`: a per-input loop that mirrors the lines above, for tests and
  the theory notebook (float64). It also works with atoms that are not unit norm, to show what
  breaks then.
* :meth:`MPSAE.pursuit`, the fast batched path. Selection needs only correlations, and
  c(t) = c(t-1) - a_t G[j(t)] with the Gram matrix G = D D^T, so after one (B, d) x (d, p) product
  each step costs O(B p) instead of O(B d p). Rows are processed in blocks whose correlations stay
  in cache; every buffer is allocated once per call. G is cached and rebuilt when the dictionary
  changes (an optimiser step, ``post_step``, ``load_state_dict``: keyed on the weight's version
  counter). The rule for using it (``gram="auto"``): G must fit in ``gram_max_bytes`` and, when it
  is not cached yet, building it (p^2 d multiply-adds) must cost less than the direct pursuit
  (k B d p): p <= k B. Otherwise correlations are recomputed directly, r D^T, at every step.

Training: the selection runs under ``no_grad``; the coefficients are then recomputed
differentiably from the gathered atoms, a_t = relu(<r(t-1), D_j(t)>) (the SAELens trick,
mp_sae.md §8), and x_hat = x - r(k). :class:`_UnrolledPursuit` gives that recomputation a
hand-written backward that walks the steps in reverse, so the graph holds O(B d + B k), neither
the O(k B d) of plain autograd nor the O(k B p) of the naive loop. Gradients are those of the
unrolled loop: every selected atom, none for the others. Options: the dead-atom
auxiliary loss of the authors' library (mp_sae.md §2) and atom dropout in early training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .base import SAE, SAEConfig, TrainOutput, reconstruction_loss, unit_rows_
from .registry import register_sae

__all__ = ["MPSAE", "MPSAEConfig", "MPResult", "SELECTIONS", "matching_pursuit_reference"]

SELECTIONS = ("relu", "abs")
GRAM_MODES = ("auto", "always", "never")
BLOCK_BYTES = 8 << 20
"""Target size of one block of correlations (rows x p) in the fast path: small enough to stay in a
CPU core's cache level that is much faster than memory, large enough to amortise the per-operation
dispatch cost (measured in ``benchmarks/bench_mp.py``)."""


class MPResult(NamedTuple):
    """What a pursuit returns.

    codes (B, p); indices (B, k) selected atom per step; alphas (B, k) coefficient per step (0 for
    steps an input did not take); steps (B,) number of steps each input took; residual (B, d) the
    final residual r (of x - b_dec). indices is -1 where alphas is 0: a step not taken, or one
    that changed nothing (relu selection when no correlation is positive).
    """

    codes: Tensor
    indices: Tensor
    alphas: Tensor
    steps: Tensor
    residual: Tensor


# ------------------------------------------------------------------------------------------------
# reference
# ------------------------------------------------------------------------------------------------


def matching_pursuit_reference(
    x: Tensor,
    D: Tensor,
    k: int,
    *,
    threshold: float | None = None,
    selection: str = "relu",
    stop_on_repeat: bool = False,
    b_dec: Tensor | None = None,
) -> tuple[MPResult, list[list[Tensor]]]:
    """Matching pursuit, one input at a time, line by line (module docstring). For tests and
    theory checks, not for speed.

    x (B, d), D (p, d) with atoms as rows (unit norm for the propositions to hold; not required).
    Returns the :class:`MPResult` and, per input, the list of residuals r(0), ..., r(T).
    Ties in the argmax go to the lowest index (as ``torch.argmax``).
    """
    _check_selection(selection)
    B, p = x.shape[0], D.shape[0]
    codes = torch.zeros(B, p, dtype=x.dtype, device=x.device)
    indices = torch.full((B, k), -1, dtype=torch.long, device=x.device)
    alphas = torch.zeros(B, k, dtype=x.dtype, device=x.device)
    steps = torch.zeros(B, dtype=torch.long, device=x.device)
    residuals = torch.zeros_like(x)
    trace: list[list[Tensor]] = []
    for b in range(B):
        r = x[b] - (b_dec if b_dec is not None else 0)
        z = codes[b]
        history = [r.clone()]
        for t in range(k):
            if threshold is not None and float(torch.linalg.vector_norm(r)) < threshold:
                break
            c = D @ r  # correlation of the residual with every atom
            if selection == "relu":
                j = int(torch.argmax(torch.relu(c)))
                a = torch.relu(c[j])
            else:
                j = int(torch.argmax(c.abs()))
                a = c[j]
            before = bool(z[j] != 0)
            z[j] = z[j] + a
            r = r - a * D[j]
            indices[b, t], alphas[b, t] = (j if a != 0 else -1), a
            steps[b] = t + 1
            history.append(r.clone())
            if stop_on_repeat and before == bool(z[j] != 0):  # support unchanged
                break
        residuals[b] = r
        trace.append(history)
    return MPResult(codes, indices, alphas, steps, residuals), trace


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------


def _check_selection(selection: str) -> None:
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}.")


def _check_threshold(threshold: float | None, name: str = "threshold") -> None:
    if threshold is not None and not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"{name} must be None or a finite number >= 0 (a residual norm), got {threshold!r}.")


@dataclass(frozen=True)
class MPSAEConfig(SAEConfig):
    """Config of :class:`MPSAE`. ``n_latents`` is the number of atoms p."""

    k: int = 16
    """Pursuit steps per input (training and default inference); the cap when ``threshold`` is set."""
    threshold: float | None = None
    """Stop an input once ||r|| < threshold (None: always take k steps)."""
    stop_on_repeat: bool = False
    """Stop an input after the first step that leaves its support unchanged (official toy rule)."""
    selection: str = "relu"
    """``"relu"``: argmax of relu(c), coefficient relu(c_j) >= 0 (the authors' code, default);
    ``"abs"``: classic matching pursuit, argmax |c|, signed coefficient."""
    use_b_dec: bool = False
    """Learn a pre-bias b_dec (r(0) = x - b_dec, x_hat = z D + b_dec). Off, as in the paper; off
    keeps b_dec as a zero buffer-like parameter the optimiser never sees."""
    gram: str = "auto"
    """Selection through the Gram matrix: ``"auto"`` (rule in the module docstring), ``"always"``,
    ``"never"`` (direct correlations every step)."""
    gram_max_bytes: int = 2 << 30
    """Largest Gram matrix (p^2 x element size) that ``"auto"`` builds."""
    aux_coefficient: float = 0.0
    """Weight of the dead-atom auxiliary loss (the authors' library recommends 1e-2; 0 = off):
    loss -= aux_coefficient * mean over inputs n and dead atoms j of <r_n, D_j>, r the final
    residual, when more than ``aux_min_dead`` atoms are dead in the batch."""
    aux_dead_threshold: float = 1e-2
    """An atom is dead in a batch when its largest code is below this."""
    aux_min_dead: int = 10
    """The auxiliary loss acts only when more than this many atoms are dead."""
    atom_dropout: float = 0.0
    """Probability of removing each atom from selection in a training forward pass (one mask per
    pass, shared by the batch and the steps, as the authors' library). 0 = off."""
    atom_dropout_steps: int = 0
    """Training passes during which dropout is on (it helps early; the authors' advice)."""

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an int >= 1 (pursuit steps), got {self.k!r}.")
        _check_threshold(self.threshold)
        _check_selection(self.selection)
        if self.gram not in GRAM_MODES:
            raise ValueError(f"gram must be one of {GRAM_MODES}, got {self.gram!r}.")
        if isinstance(self.gram_max_bytes, bool) or not isinstance(self.gram_max_bytes, int) or self.gram_max_bytes < 0:
            raise ValueError(f"gram_max_bytes must be an int >= 0, got {self.gram_max_bytes!r}.")
        if not (math.isfinite(self.aux_coefficient) and self.aux_coefficient >= 0):
            raise ValueError(f"aux_coefficient must be a finite number >= 0, got {self.aux_coefficient}.")
        if not (math.isfinite(self.aux_dead_threshold) and self.aux_dead_threshold >= 0):
            raise ValueError(f"aux_dead_threshold must be a finite number >= 0, got {self.aux_dead_threshold}.")
        if isinstance(self.aux_min_dead, bool) or not isinstance(self.aux_min_dead, int) or self.aux_min_dead < 0:
            raise ValueError(f"aux_min_dead must be an int >= 0, got {self.aux_min_dead!r}.")
        if not (0.0 <= self.atom_dropout < 1.0):
            raise ValueError(f"atom_dropout must lie in [0, 1) (a probability of removing an atom), got {self.atom_dropout}.")
        if isinstance(self.atom_dropout_steps, bool) or not isinstance(self.atom_dropout_steps, int) or self.atom_dropout_steps < 0:
            raise ValueError(f"atom_dropout_steps must be an int >= 0, got {self.atom_dropout_steps!r}.")
        if self.atom_dropout > 0 and self.atom_dropout_steps == 0:
            raise ValueError("atom_dropout > 0 needs atom_dropout_steps > 0 (the training passes it stays on for).")


@register_sae("MP-SAE", config=MPSAEConfig, aliases=("MP",))
class MPSAE(SAE):
    """Matching-pursuit SAE (module docstring).

    Parameters (SAELens names): ``W_dec`` (p, d) the dictionary, unit rows (renormalised by
    ``post_step``); ``W_enc`` = ``W_dec.T`` (a view: the weights are tied); ``b_dec`` (d,) the
    pre-bias, trained only with ``use_b_dec``. There is no encoder bias.

    >>> sae = MPSAE(d=64, n_latents=256, k=8)
    >>> x = torch.randn(5, 64)
    >>> sae.encode(x).ne(0).sum(1).le(8).all().item()
    True
    """

    config: MPSAEConfig

    def __init__(self, config: MPSAEConfig | None = None, **kwargs):
        config = config if config is not None else MPSAEConfig(**kwargs)
        super().__init__(config)
        W = self._new(config.n_latents, config.d, generator=self._generator())
        unit_rows_(W)
        self.W_dec = nn.Parameter(W)
        self.b_dec = nn.Parameter(self._new(config.d, fill=0.0), requires_grad=config.use_b_dec)
        # training passes so far (drives atom dropout; a buffer so a resumed run continues exactly)
        self.register_buffer("n_train_passes", torch.zeros((), dtype=torch.long, device=config.device))
        self._gram: tuple[tuple, Tensor] | None = None

    @classmethod
    def from_dictionary(cls, D: Tensor, *, normalize: bool = True, **kwargs) -> MPSAE:
        """An MP-SAE whose atoms are the rows of D (p, d), in D's dtype and device. ``normalize``
        scales them to unit norm first (the propositions need it; a zero row raises)."""
        if not isinstance(D, Tensor) or D.ndim != 2 or not D.dtype.is_floating_point:
            raise ValueError("D must be a floating (p, d) tensor with the atoms as rows.")
        if not bool(torch.isfinite(D).all()):
            raise ValueError("D has NaN or Inf entries.")
        D = D.detach().clone()
        if normalize:
            norms = D.norm(dim=1)
            if bool((norms == 0).any()):
                raise ValueError(f"D has {int((norms == 0).sum())} zero rows, which cannot be normalised; drop them.")
            D /= norms[:, None]
        kwargs.setdefault("dtype", D.dtype)
        kwargs.setdefault("device", str(D.device))
        sae = cls(d=D.shape[1], n_latents=D.shape[0], **kwargs)
        with torch.no_grad():
            sae.W_dec.copy_(D)
        return sae

    # -- contract ------------------------------------------------------------------------------
    @property
    def W_enc(self) -> Tensor:
        """(d, p) view of the dictionary."""
        return self.W_dec.T

    @property
    def dictionary(self) -> Tensor:
        return self.W_dec

    @property
    def k(self) -> int:
        return self.config.k

    def encode(self, x: Tensor, k: int | None = None, threshold: float | None = None) -> Tensor:
        """Codes (B, p). ``k`` overrides the number of steps (the cap in threshold mode) and
        ``threshold`` the residual-norm stop, for inference at another sparsity than training."""
        return self.pursuit(x, k=k, threshold=threshold).codes

    def pre_activations(self, x: Tensor) -> Tensor:
        """The codes: matching pursuit has no pre-activation apart from its output, so firing
        statistics (and ``TrainOutput.pre_acts``) count the codes themselves."""
        return self.encode(x)

    def decode(self, codes: Tensor) -> Tensor:
        """x_hat = z D + b_dec."""
        return self._check_codes(codes) @ self.W_dec + self.b_dec

    @torch.no_grad()
    def post_step(self) -> None:
        """Renormalise the atoms to unit norm (Props C.1-C.2 need it)."""
        unit_rows_(self.W_dec)

    # -- the Gram matrix -----------------------------------------------------------------------
    def _gram_key(self) -> tuple:
        W = self.W_dec
        return (W.data_ptr(), W._version, W.dtype, W.device, tuple(W.shape))

    def gram(self) -> Tensor:
        """G = D D^T (p, p), cached until the dictionary changes."""
        key = self._gram_key()
        if self._gram is None or self._gram[0] != key:
            with torch.no_grad():
                W = self.W_dec.detach()
                self._gram = (key, W @ W.T)
        return self._gram[1]

    def uses_gram(self, batch_size: int, k: int | None = None) -> bool:
        """Whether a pursuit of ``batch_size`` inputs and ``k`` steps selects through G (the rule
        of the module docstring)."""
        mode = self.config.gram
        if mode != "auto":
            return mode == "always"
        p = self.n_latents
        if p * p * self.W_dec.element_size() > self.config.gram_max_bytes:
            return False
        cached = self._gram is not None and self._gram[0] == self._gram_key()
        return cached or p <= (self.k if k is None else k) * batch_size

    # -- the pursuit -----------------------------------------------------------------------------
    def _resolve(self, k: int | None, threshold: float | None) -> tuple[int, float | None]:
        k = self.config.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        _check_threshold(threshold)
        return k, self.config.threshold if threshold is None else threshold

    @torch.no_grad()
    def pursuit(self, x: Tensor, k: int | None = None, threshold: float | None = None, *, keep: Tensor | None = None,
                codes: bool = True) -> MPResult:
        """Batched matching pursuit of x (B, d) (or (..., d), flattened): the fast path.

        ``keep`` (p,) optional 0/1 mask of atoms allowed to be selected (atom dropout).
        ``codes=False`` skips the (B, p) codes (``MPResult.codes`` is then None) where the rule
        does not need them (training: indices and coefficients suffice).
        Same result as :func:`matching_pursuit_reference` (up to rounding; see the tests).
        """
        x = self._check_input(x)
        lead = x.shape[:-1]
        x = x.reshape(-1, self.d)
        k, threshold = self._resolve(k, threshold)
        D = self.W_dec.detach()
        xc = x - self.b_dec.detach()
        if keep is not None:
            D = D * keep[:, None]
        if self.uses_gram(x.shape[0], k):
            G = self.gram() if keep is None else self.gram() * keep[:, None] * keep[None, :]
            out = _pursuit_gram(xc, D, G, k, threshold, self.config.selection, self.config.stop_on_repeat, codes)
        else:
            out = _pursuit_direct(xc, D, k, threshold, self.config.selection, self.config.stop_on_repeat)
        if len(lead) != 1 and out.codes is not None:
            out = MPResult(out.codes.reshape(*lead, -1), out.indices.reshape(*lead, k), out.alphas.reshape(*lead, k),
                           out.steps.reshape(lead), out.residual.reshape(*lead, self.d))
        return out

    def training_forward(self, x: Tensor) -> TrainOutput:
        x = self._check_input(x).reshape(-1, self.d)
        cfg = self.config
        keep = None
        if self.training and cfg.atom_dropout > 0 and int(self.n_train_passes) < cfg.atom_dropout_steps:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + int(self.n_train_passes))
            keep = (torch.rand(self.n_latents, generator=gen) >= cfg.atom_dropout).to(self.W_dec.dtype).to(self.W_dec.device)
        if self.training:
            self.n_train_passes += 1
        sel = self.pursuit(x, keep=keep, codes=cfg.stop_on_repeat)
        # differentiable recomputation of the coefficients from the gathered atoms, with a
        # hand-written backward that walks the steps in reverse (O(B d + B k) saved, not O(k B p))
        idx = sel.indices.clamp(min=0)  # -1 (no atom added) -> any valid row, multiplied by 0
        taken = sel.alphas != 0  # steps not taken (stopped inputs, dropped atoms) add nothing
        r, A = _UnrolledPursuit.apply(x - self.b_dec, self.W_dec, idx, taken, cfg.selection == "relu")
        codes = torch.zeros(x.shape[0], self.n_latents, dtype=x.dtype, device=x.device).scatter_add(1, idx, A)
        x_hat = x - r
        mse = reconstruction_loss(x, x_hat)
        loss = mse
        metrics = {"mse": mse.detach(), "steps": sel.steps.to(x.dtype).mean()}
        if cfg.aux_coefficient > 0:
            dead = codes.detach().amax(0) < cfg.aux_dead_threshold
            n_dead = int(dead.sum())
            if n_dead > cfg.aux_min_dead:
                aux = (r @ self.W_dec[dead].T).mean()
                loss = loss - cfg.aux_coefficient * aux
                metrics["aux"] = aux.detach()
        return TrainOutput(loss, x_hat, codes, codes, metrics)


# ------------------------------------------------------------------------------------------------
# fast batched pursuit
# ------------------------------------------------------------------------------------------------


ARGMAX_CHUNK = 128
"""Row argmax in two levels when p is a multiple of this: the maximum of each chunk of 128
correlations (a vectorised reduction), then the argmax over the chunk maxima and inside the
winning chunk. PyTorch's CPU argmax with indices is not vectorised and was about 3x slower on
(256, 4096) blocks; the result is the same, ties included (the first maximum wins)."""


def _row_max(C: Tensor, vals: Tensor, idx: Tensor) -> None:
    """vals, idx <- the maximum of each row of C and its first index (as ``torch.max(C, 1)``)."""
    n, p = C.shape
    c = ARGMAX_CHUNK
    if p % c or p < 2 * c or C.device.type != "cpu":
        torch.max(C, 1, out=(vals, idx))
        return
    V = C.view(n, p // c, c)
    torch.max(V.amax(2), 1, out=(vals, idx))  # value and first chunk holding it
    inner = V.gather(1, idx.view(n, 1, 1).expand(n, 1, c)).view(n, c).argmax(1)
    idx.mul_(c).add_(inner)


def _select(C: Tensor, vals: Tensor, idx: Tensor, absbuf: Tensor | None, selection: str) -> tuple[Tensor, Tensor]:
    """Fill (vals, idx) with the selected atom and its score; return (c_j, alpha).

    "relu": argmax_j relu(c_j) equals argmax_j c_j whenever some c_j > 0; when none is, relu(c)
    is all zeros, alpha = 0 and the step changes nothing, whichever atom is named.
    """
    if selection == "relu":
        _row_max(C, vals, idx)
        return vals, vals.clamp(min=0)
    torch.abs(C, out=absbuf)
    _row_max(absbuf, vals, idx)
    c = C.gather(1, idx[:, None]).squeeze(1)
    return c, c


def _pursuit_gram(xc: Tensor, D: Tensor, G: Tensor, k: int, threshold: float | None, selection: str, stop_on_repeat: bool,
                  want_codes: bool = True) -> MPResult:
    B, p = xc.shape[0], D.shape[0]
    C = xc @ D.T  # (B, p), the only B x p product
    keep_codes = want_codes or stop_on_repeat
    codes = torch.zeros_like(C) if keep_codes else None
    indices = torch.full((B, k), -1, dtype=torch.long, device=xc.device)
    alphas = torch.zeros(B, k, dtype=xc.dtype, device=xc.device)
    steps = torch.zeros(B, dtype=torch.long, device=xc.device)
    adaptive = threshold is not None or stop_on_repeat
    diag = torch.diagonal(G)
    rows = max(1, min(B, BLOCK_BYTES // max(1, p * C.element_size())))
    Gb = torch.empty(rows, p, dtype=C.dtype, device=C.device)
    absbuf = torch.empty(rows, p, dtype=C.dtype, device=C.device) if selection == "abs" else None
    vals = torch.empty(rows, dtype=C.dtype, device=C.device)
    idx = torch.empty(rows, dtype=torch.long, device=C.device)
    for s in range(0, B, rows):
        e = min(B, s + rows)
        n = e - s
        Cb, zb = C[s:e], (codes[s:e] if keep_codes else None)
        Gn, vn, jn = Gb[:n], vals[:n], idx[:n]
        an = absbuf[:n] if absbuf is not None else None
        if adaptive:
            active = torch.ones(n, dtype=torch.bool, device=C.device)
            rnorm2 = xc[s:e].pow(2).sum(1) if threshold is not None else None
        for t in range(k):
            if threshold is not None:
                active &= rnorm2 >= threshold * threshold
            if adaptive and not bool(active.any()):
                break
            c, a = _select(Cb, vn, jn, an, selection)
            if adaptive:
                a = a * active
            torch.index_select(G, 0, jn, out=Gn)
            Cb.addcmul_(Gn, a[:, None], value=-1)
            if threshold is not None:  # ||r - a D_j||^2 = ||r||^2 - 2 a c_j + a^2 G_jj
                rnorm2 = (rnorm2 - a * (2 * c - a * diag[jn])).clamp_(min=0)
            if stop_on_repeat:
                before = zb.gather(1, jn[:, None]).squeeze(1)
                zb.scatter_add_(1, jn[:, None], a[:, None])
                steps[s:e] += active
                active &= (before != 0) != (before + a != 0)  # the support changed
            else:
                if keep_codes:
                    zb.scatter_add_(1, jn[:, None], a[:, None])
                if adaptive:
                    steps[s:e] += active
            indices[s:e, t] = jn.masked_fill_(a == 0, -1)
            alphas[s:e, t] = a
        if not adaptive:
            steps[s:e] = k
    residual = xc - _decode_sparse(indices, alphas, D)
    return MPResult(codes if want_codes else None, indices, alphas, steps, residual)


def _pursuit_direct(xc: Tensor, D: Tensor, k: int, threshold: float | None, selection: str, stop_on_repeat: bool) -> MPResult:
    B, p = xc.shape[0], D.shape[0]
    r = xc.clone()
    C = torch.empty(B, p, dtype=xc.dtype, device=xc.device)
    codes = torch.zeros_like(C)
    indices = torch.full((B, k), -1, dtype=torch.long, device=xc.device)
    alphas = torch.zeros(B, k, dtype=xc.dtype, device=xc.device)
    steps = torch.zeros(B, dtype=torch.long, device=xc.device)
    absbuf = torch.empty_like(C) if selection == "abs" else None
    vals = torch.empty(B, dtype=xc.dtype, device=xc.device)
    idx = torch.empty(B, dtype=torch.long, device=xc.device)
    Db = torch.empty_like(xc)
    active = torch.ones(B, dtype=torch.bool, device=xc.device)
    adaptive = threshold is not None or stop_on_repeat
    for t in range(k):
        if threshold is not None:
            active &= torch.linalg.vector_norm(r, dim=1) >= threshold
        if adaptive and not bool(active.any()):
            break
        torch.mm(r, D.T, out=C)
        c, a = _select(C, vals, idx, absbuf, selection)
        if adaptive:
            a = a * active
        torch.index_select(D, 0, idx, out=Db)
        r.addcmul_(Db, a[:, None], value=-1)
        before = codes.gather(1, idx[:, None]).squeeze(1) if stop_on_repeat else None
        codes.scatter_add_(1, idx[:, None], a[:, None])
        steps += active
        if stop_on_repeat:
            active &= (before != 0) != (before + a != 0)
        indices[:, t] = idx.masked_fill_(a == 0, -1)
        alphas[:, t] = a
    return MPResult(codes, indices, alphas, steps, r)


def _decode_sparse(indices: Tensor, alphas: Tensor, D: Tensor) -> Tensor:
    """sum_t alphas[:, t] D[indices[:, t]], (B, d), without a B x p product."""
    out = torch.zeros(indices.shape[0], D.shape[1], dtype=D.dtype, device=D.device)
    for t in range(indices.shape[1]):
        out.addcmul_(D[indices[:, t].clamp(min=0)], alphas[:, t, None])  # -1: alpha is 0
    return out


class _UnrolledPursuit(torch.autograd.Function):
    """The pursuit's coefficients and final residual as a function of (x - b_dec, D), for fixed
    selections, with the gradient of the unrolled loop:

        r(0) = x0;  a_t = act(<r(t-1), D_j(t)>) * taken_t;  r(t) = r(t-1) - a_t D_j(t)

    (act = relu or identity). Autograd through that loop stores r(t-1) and D_j(t) for every step,
    O(k B d). The backward here walks the steps in reverse and rebuilds r(t-1) = r(t) + a_t D_j(t)
    instead, so it stores only r(k) and the (B, k) coefficients. Rebuilding adds one rounding per
    step; :func:`_unrolled_autograd` is the plain version the tests compare it with.
    """

    @staticmethod
    def forward(ctx, x0: Tensor, W: Tensor, idx: Tensor, taken: Tensor, relu: bool):
        r = x0.detach().clone()
        A = torch.empty(idx.shape, dtype=x0.dtype, device=x0.device)
        mask = taken.to(x0.dtype)
        for t in range(idx.shape[1]):
            Dj = W.detach()[idx[:, t]]
            a = (r * Dj).sum(-1)
            if relu:
                a.clamp_(min=0)
            a.mul_(mask[:, t])
            r.addcmul_(Dj, a[:, None], value=-1)
            A[:, t] = a
        ctx.save_for_backward(r, W, idx, mask, A)
        ctx.relu = relu
        ctx.set_materialize_grads(False)
        return r.clone(), A.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_r: Tensor | None, g_A: Tensor | None):
        r, W, idx, mask, A = ctx.saved_tensors
        W = W.detach()
        g_r = torch.zeros_like(r) if g_r is None else g_r.clone()
        g_W = torch.zeros_like(W) if ctx.needs_input_grad[1] else None
        r = r.clone()
        for t in reversed(range(idx.shape[1])):
            Dj = W[idx[:, t]]
            a = A[:, t]
            r.addcmul_(Dj, a[:, None])  # r <- r(t-1)
            # d loss / d a_t: through r(t) = r(t-1) - a_t D_j, and directly (codes)
            g_a = -(g_r * Dj).sum(-1)
            if g_A is not None:
                g_a = g_a + g_A[:, t]
            # through a_t = act(<r(t-1), D_j>) * taken: relu' = 1[a_t > 0] (0 where the step was void)
            g_pre = g_a * ((a > 0).to(a.dtype) if ctx.relu else mask[:, t])
            if g_W is not None:
                g_W.index_add_(0, idx[:, t], g_pre[:, None] * r - a[:, None] * g_r)
            g_r.addcmul_(Dj, g_pre[:, None])
        return g_r, g_W, None, None, None


def _unrolled_autograd(x0: Tensor, W: Tensor, idx: Tensor, taken: Tensor, relu: bool) -> tuple[Tensor, Tensor]:
    """Plain-autograd version of :class:`_UnrolledPursuit` (O(k B d) memory), for tests."""
    r = x0
    alphas = []
    for t in range(idx.shape[1]):
        Dj = W[idx[:, t]]
        a = (r * Dj).sum(-1)
        if relu:
            a = torch.relu(a)
        a = a * taken[:, t]
        r = r - a[:, None] * Dj
        alphas.append(a)
    return r, torch.stack(alphas, 1)
