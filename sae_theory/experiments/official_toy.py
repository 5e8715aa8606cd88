"""The official MP-SAE toy training loop, restated: the paper's own code path for the hierarchy
claims (docs/papers.md#mp-sae-implementations, #mp-sae-training; github mpsae/MP-SAE at acce7a28,
``sae.py``: ``MatchingPursuitSAE.step`` and ``get_wsd_scheduler``).

What it does, as the official code does it:

* one weight W (p, d), atoms as rows, Gaussian and normalised to unit rows once at initialisation,
  never renormalised; no bias;
* the pursuit runs until every row has stopped: a row stops once its support did not change in an
  iteration (the ReLU'd maximum was 0 or re-selected an atom) or its residual norm is below the
  threshold (0.05); the codes are accumulated through the whole loop, which autograd differentiates;
* loss ``sum_d (z W - x)^2`` averaged over the batch; Adam (lr 3e-2, betas (0.5, 0.9375)); the
  gradient norm clipped at 1; a ``LambdaLR`` warmup-stable-decay schedule whose factor for the
  t-th optimiser step (t = 1, 2, ...) is ``(t - 1) / 100`` during the 100 warmup steps (0 at the
  first step), 1, then a linear decay over the last 20% towards 0.1.

Where it differs from :func:`sae_theory.training.train` on :class:`~sae_theory.models.MPSAE` with the
toy's settings (notebook 06): the schedule (ours: ``t / 100`` during warmup, one step earlier, and
the decay reaching exactly 0.1 at the last step) and the cap (the official loop has none; ours
stops at ``mp_max_steps`` = 8). The step itself is the same: ``tests/test_official_toy_step.py``
checks the atoms agree to 1e-12 in float64 after each of six steps.

What is ours: the data (the same tree, magnitudes and mixing as the official ``toy_model.py``
and notebook, through :class:`~sae_theory.data.HierarchicalFeatureModel`, drawn from a generator
seeded with ``seed``, the stream our trainer uses for that seed) and the initial atoms (our
MP-SAE's for ``seed + 1``, drawn as the official code draws them: Gaussian, unit rows), so the two
loops start from the same point and see the same batches; float32 on the CPU; evaluation through
:func:`~sae_theory.experiments.hierarchical.evaluate_fit`, with the pursuit uncapped as in the
official ``get_acts``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.hierarchical import HierarchicalFeatureModel
from ..models import MPSAE
from ..profiles import Profile
from .cache import cache_dir, code_fingerprint, run_key
from .hierarchical import evaluate_fit, exact_row

__all__ = ["METHOD", "official_exact_recovery", "official_pursuit", "official_wsd_factor", "train_official_toy",
           "train_official_toy_cached"]

#: The method label of the official loop's runs in tables.
METHOD = "MP-SAE (official loop)"
THRESHOLD, LR, BETAS, BATCH_SIZE, WARMUP, COOLDOWN, END_FACTOR = 0.05, 3e-2, (0.5, 0.9375), 200, 100, 0.2, 0.1


def official_wsd_factor(t: int, n_steps: int) -> float:
    """The official schedule's learning-rate factor after ``t`` scheduler steps (t = 0 for the
    first optimiser step): ``get_wsd_scheduler(n_warmup_steps=100, percent_cooldown=0.2,
    end_lr_factor=0.1)``."""
    if t < WARMUP:
        return t / WARMUP
    if t < (1 - COOLDOWN) * n_steps:
        return 1.0
    return 1 - (1 - END_FACTOR) * min(t - (1 - COOLDOWN) * n_steps, (1 - COOLDOWN) * n_steps) / (COOLDOWN * n_steps + 1e-2)


def official_pursuit(W: Tensor, x: Tensor, threshold: float = THRESHOLD) -> Tensor:
    """The official training pursuit of the rows of ``x`` (B, d) on the atoms W (p, d): the codes
    (B, p), differentiable in W through every iteration."""
    r = x.clone()
    z = torch.zeros(x.shape[0], W.shape[0], dtype=x.dtype, device=x.device)
    prev = torch.zeros_like(z, dtype=torch.bool)
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    while not bool(done.all()):
        values, indices = torch.max(torch.relu(r @ W.T), dim=1, keepdim=True)
        step = torch.zeros_like(z).scatter(1, indices, values)
        z = torch.where(done[:, None], z, z + step)
        r = torch.where(done[:, None], r, r - step @ W)
        support = z != 0
        done = done | (support == prev).all(1) | (r.norm(dim=1) < threshold)
        prev = support
    return z


def train_official_toy(data: HierarchicalFeatureModel, *, steps: int, seed: int, batch_size: int = BATCH_SIZE) -> Tensor:
    """W (p, d) after ``steps`` steps of the official loop on ``data`` (module docstring)."""
    W0 = MPSAE(d=data.d, n_latents=data.tree.n_atoms, seed=seed + 1).W_dec.detach()
    W = torch.nn.Parameter(W0.to(data.features.dtype).clone())
    opt = torch.optim.Adam([W], lr=LR, betas=BETAS)
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = LR * official_wsd_factor(t, steps)
        x = data.sample(batch_size, gen)[0]
        z = official_pursuit(W, x)
        loss = ((z @ W - x) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([W], 1.0)
        opt.step()
    return W.detach()


def _source_fingerprint() -> str:
    """sha256 (16 hex digits) of this module's source: a change of the loop starts fresh runs."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def train_official_toy_cached(data: HierarchicalFeatureModel, *, data_key: dict, steps: int, seed: int,
                              batch_size: int = BATCH_SIZE) -> Tensor:
    """:func:`train_official_toy`, stored in the run cache (:mod:`sae_theory.experiments.cache`:
    ``$SAE_THEORY_CACHE``, ``off`` to disable) under a key of ``data_key`` (which must identify
    ``data`` completely), the length, seed and batch size, the package's code fingerprint and this
    module's source. A stored run loads bit-identical; one that cannot be read is trained again."""
    from safetensors.torch import load_file, save_file

    payload = dict(kind="official_toy", code=code_fingerprint(), loop=_source_fingerprint(), data=data_key, steps=steps,
                   seed=seed, batch_size=batch_size, dtype=str(data.features.dtype))
    key = run_key(payload)
    root = cache_dir()
    path = None if root is None else root / key / "official_W.safetensors"
    if path is not None and path.is_file():
        try:
            return load_file(str(path))["W"]
        except Exception as exc:  # a damaged file is trained again, never used
            warnings.warn(f"the cached official-loop run {path} cannot be read ({type(exc).__name__}: {exc}); training it again.",
                          stacklevel=2)
            shutil.rmtree(path.parent, ignore_errors=True)
    W = train_official_toy(data, steps=steps, seed=seed, batch_size=batch_size)
    if path is not None:  # written beside the final folder and renamed: a kill leaves no half run
        tmp = path.parent.with_name(f".{key}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({"W": W.contiguous()}, str(tmp / path.name))
        try:
            os.replace(tmp, path.parent)
        except OSError:  # another process stored the same run first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return W


def official_exact_recovery(profile: Profile, *, rhos: tuple[float, ...] = (0.0, 0.3), seeds: tuple[int, ...] | None = None,
                            progress: bool = True) -> pd.DataFrame:
    """:func:`~sae_theory.experiments.hierarchical.exact_recovery` for the official loop: the same
    seeds (default ``exact_seeds``, else ``seeds``), data and length (``profile.hierarchy.steps``),
    the same columns, ``method`` = :data:`METHOD`. Runs are cached
    (:func:`train_official_toy_cached`)."""
    H = profile.hierarchy
    seeds = (H.exact_seeds or H.seeds) if seeds is None else tuple(seeds)
    if not seeds:
        raise ValueError("seeds must name at least one seed.")
    rows = []
    for rho, seed in tqdm([(r, s) for r in rhos for s in seeds], desc="official loop", disable=not progress):
        data = HierarchicalFeatureModel(rho, rho, seed=seed)
        data_key = dict(model="HierarchicalFeatureModel", rho_parent=rho, rho_child=rho, magnitudes=dataclasses.asdict(data.magnitudes),
                        seed=seed, tree="toy", d=data.d)
        W = train_official_toy_cached(data, data_key=data_key, steps=H.steps, seed=seed, batch_size=H.batch_size)
        sae = MPSAE.from_dictionary(W, normalize=False, k=W.shape[0] + 1, threshold=THRESHOLD, stop_on_repeat=True,
                                    unit_norm_decoder=False)
        rows.append(exact_row(evaluate_fit(sae, data, method=METHOD, rho=rho, seed=seed, eval_samples=H.eval_samples), H.steps))
    return pd.DataFrame(rows)
