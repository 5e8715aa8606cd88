"""The propositions of MP-SAE (docs/papers.md#mp-sae-propositions) measured in float64:
``notebooks/04_mp_theory.ipynb``.

Every check runs the per-input reference :func:`~sae_theory.models.matching_pursuit_reference`
(the fast path is tested against it) on three dictionaries of the same shape (p atoms in R^d):

* ``"random unit"``: Gaussian atoms scaled to unit norm;
* ``"trained"``: an MP-SAE trained on SparseFeatureModel data (unit norm by ``post_step``);
* ``"non-unit"``: the random atoms with norms spread over [0.5, 2]: what the propositions need
  unit norm for. The official toy code does not renormalise during training
  (docs/papers.md#mp-sae-implementations), but on the toy its atoms stay within a few percent of
  unit norm (notebook 06 prints them).
"""

from __future__ import annotations

import pandas as pd
import torch

from ..data import SparseFeatureModel
from ..models import matching_pursuit_reference
from ..profiles import Profile
from .mp import trained_sae

__all__ = ["convergence", "dictionaries", "earlier_atom_cosines", "proposition_checks"]

F64 = torch.float64


def _trained_dictionary(profile: Profile, seed: int) -> torch.Tensor:
    """The atoms of the MP-SAE of :func:`sae_theory.experiments.mp.trained_sae` (same data, model
    and trainer as notebook 05), trained here at Adam lr 1e-3; float64 on the CPU."""
    sae, _ = trained_sae("MP-SAE", profile, seed, lr=1e-3)
    return sae.W_dec.detach().to("cpu", F64)


def dictionaries(profile: Profile) -> dict[str, torch.Tensor]:
    """The three dictionaries (p, d), float64 on the CPU, for the first seed."""
    S, seed = profile.mp, profile.seeds[0]
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(S.n_latents, S.d, generator=g, dtype=F64)
    D /= D.norm(dim=1, keepdim=True)
    norms = 0.5 + 1.5 * torch.rand(S.n_latents, 1, generator=g, dtype=F64)
    # the trained atoms are unit norm in float32 (|norm - 1| ~ 6e-8); the propositions are exact
    # identities only for atoms unit in the dtype of the check, so they are renormalised in float64
    T = _trained_dictionary(profile, seed)
    return {"random unit": D, "trained": T / T.norm(dim=1, keepdim=True), "non-unit": D * norms}


def _inputs(profile: Profile, d: int) -> torch.Tensor:
    """Unit-norm test inputs from the same SparseFeatureModel family (another seed)."""
    S = profile.mp
    data = SparseFeatureModel(S.n, d, S.s, seed=profile.seeds[0] + 100)
    X, _ = data.sample(S.theory_inputs, torch.Generator().manual_seed(profile.seeds[0] + 100))
    X = X.to(F64)
    return X / X.norm(dim=1, keepdim=True).clamp(min=1e-300)


def proposition_checks(profile: Profile, dicts: dict[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """Props C.1 and C.2 at every step of every input, per dictionary.

    Columns: ``dictionary, input, step, alpha, last_inner`` = |<D_j(t), r(t)>| (C.1: 0 for unit
    atoms), ``norm_drop_error`` = |(||r(t-1)||^2 - ||r(t)||^2) - alpha_t^2| (C.2: 0 for unit atoms),
    ``residual_norm`` = ||r(t)||. Only steps that added an atom (alpha != 0) are listed.
    """
    dicts = dicts if dicts is not None else dictionaries(profile)
    S = profile.mp
    rows = []
    for name, D in dicts.items():
        X = _inputs(profile, D.shape[1])
        out, trace = matching_pursuit_reference(X, D, S.theory_steps)
        for b, hist in enumerate(trace):
            for t in range(int(out.steps[b])):
                a = float(out.alphas[b, t])
                if a == 0:
                    continue
                j = int(out.indices[b, t])
                r_prev, r = hist[t], hist[t + 1]
                drop = float(r_prev @ r_prev - r @ r)
                rows.append(dict(dictionary=name, input=b, step=t + 1, alpha=a, last_inner=abs(float(D[j] @ r)),
                                 norm_drop_error=abs(drop - a * a), residual_norm=float(r.norm())))
    return pd.DataFrame(rows)


def earlier_atom_cosines(profile: Profile, dicts: dict[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """The paper's remark that residuals are nearly orthogonal to *all* earlier selected atoms.

    For every input and step t >= 2, |cos(r(t), D_j(s))| for each step s <= t (``lag`` = t - s;
    lag 0 is the last atom, C.1's exact zero), and, as the reference for "nearly", |cos(r(t), D_i)|
    for one atom i drawn at random among those never selected for that input (``kind`` =
    "unselected atom", ``lag`` = -1). Unit-norm dictionaries only.
    """
    dicts = dicts if dicts is not None else dictionaries(profile)
    S = profile.mp
    steps = min(S.theory_steps, 4 * S.k)
    rows = []
    g = torch.Generator().manual_seed(profile.seeds[0] + 7)
    for name, D in dicts.items():
        if name == "non-unit":
            continue
        X = _inputs(profile, D.shape[1])
        out, trace = matching_pursuit_reference(X, D, steps)
        p = D.shape[0]
        for b, hist in enumerate(trace):
            n = int(out.steps[b])
            chosen = out.indices[b, :n]
            if n < 2 or bool((chosen < 0).any()):
                continue
            R = torch.stack(hist[2 : n + 1])  # r(2), ..., r(n)
            Rn = R.norm(dim=1, keepdim=True)
            atoms = D[chosen]
            cos = (R @ atoms.T).abs() / (Rn * atoms.norm(dim=1)[None, :])  # (t - 1, s - 1)
            t_idx, s_idx = torch.tril_indices(n - 1, n, offset=1)  # s <= t
            keep = Rn.squeeze(1)[t_idx] > 0
            t_idx, s_idx = t_idx[keep], s_idx[keep]
            rows.append(pd.DataFrame(dict(dictionary=name, input=b, step=(t_idx + 2).numpy(), lag=(t_idx + 1 - s_idx).numpy(),
                                          kind="selected atom", cosine=cos[t_idx, s_idx].numpy())))
            unused = torch.ones(p, dtype=torch.bool)
            unused[chosen] = False
            free = unused.nonzero().squeeze(1)
            pick = free[torch.randint(len(free), (n - 1,), generator=g)]
            other = D[pick]
            rows.append(pd.DataFrame(dict(dictionary=name, input=b, step=list(range(2, n + 1)), lag=-1, kind="unselected atom",
                                          cosine=((R * other).sum(1).abs() / (Rn.squeeze(1) * other.norm(dim=1))).numpy())))
    return pd.concat(rows, ignore_index=True)


def convergence(profile: Profile) -> pd.DataFrame:
    """Prop C.3: x_hat(t) converges to the orthogonal projection of x onto span(D).

    Two random unit dictionaries of p atoms in R^d: ``"full rank"`` (span = R^d, so x_hat -> x) and
    ``"rank d/2"`` (atoms confined to a random d/2-dimensional subspace, so x_hat -> P x, not x).
    The proposition is about classic matching pursuit (``selection="abs"``, Mallat & Zhang); the
    authors' ReLU selection only reaches the cone of the atoms (non-negative codes), which for
    p >> d random atoms is the whole span, so both are run. Columns: ``selection, dictionary,
    step, distance_to_projection`` (max over unit inputs of ||x_hat(t) - P x||), ``distance_to_x``.
    """
    S = profile.mp
    d, p = S.d, S.n_latents
    g = torch.Generator().manual_seed(profile.seeds[0] + 3)
    X = torch.randn(min(S.theory_inputs, 30), d, generator=g, dtype=F64)
    X /= X.norm(dim=1, keepdim=True)
    Q, _ = torch.linalg.qr(torch.randn(d, d // 2, generator=g, dtype=F64))  # basis of the subspace
    full = torch.randn(p, d, generator=g, dtype=F64)
    low = torch.randn(p, d // 2, generator=g, dtype=F64) @ Q.T
    rows = []
    checkpoints = sorted({2**i for i in range(20)} & set(range(1, 8 * d + 1)) | {8 * d})
    T = max(checkpoints)
    for selection in ("abs", "relu"):
        for name, D, P in (("full rank", full, torch.eye(d, dtype=F64)), ("rank d/2", low, Q @ Q.T)):
            D = D / D.norm(dim=1, keepdim=True)
            _, trace = matching_pursuit_reference(X, D, T, selection=selection)
            target = X @ P
            for t in checkpoints:
                # x_hat(t) = x - r(t)
                R = torch.stack([hist[min(t, len(hist) - 1)] for hist in trace])
                x_hat = X - R
                rows.append(dict(selection=selection, dictionary=name, step=t,
                                 distance_to_projection=float((x_hat - target).norm(dim=1).max()),
                                 distance_to_x=float((x_hat - X).norm(dim=1).max())))
    return pd.DataFrame(rows)
