"""Run profiles: one knob from a 2-core laptop to a GPU.

A :class:`Profile` fixes everything an experiment function needs that is not science: the
device, the dtypes, the seeds and the scale of every study. Experiment functions take a profile
and nothing global, so the same notebook runs at laptop scale (``quick``) and at paper scale
(``full``).

>>> from sae_theory.profiles import get_profile
>>> P = get_profile("quick")            # device="auto": CUDA when present, else CPU
>>> P.theory_dtype
torch.float64
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ._checks import check_int
from ._json import to_jsonable

__all__ = [
    "FeatureModelScale",
    "GBAReadingsScale",
    "HierarchyScale",
    "MPScale",
    "Profile",
    "RealDataScale",
    "RealGBAScale",
    "RealScale",
    "ResonanceScale",
    "ToyScale",
    "PROFILE_NAMES",
    "OVERRIDES_ENV",
    "THREADS_ENV",
    "apply_overrides",
    "get_profile",
    "parse_overrides",
    "parse_threads",
    "resolve_device",
    "resolve_threads",
    "set_threads",
]

#: The profile a notebook uses when ``SAE_THEORY_PROFILE`` is not set.
DEFAULT_PROFILE = "quick"
#: Environment variable that overrides every profile's ``cpu_threads`` (a positive int, or
#: ``"all"`` for torch's default of one thread per physical core).
THREADS_ENV = "SAE_THEORY_THREADS"
#: Environment variable of scale overrides that :func:`get_profile` applies to every profile it
#: returns, e.g. ``hierarchy.seeds=0;hierarchy.absorption_seeds=0`` (:func:`parse_overrides`);
#: ``sae-theory reproduce --set`` passes them to the notebooks this way.
OVERRIDES_ENV = "SAE_THEORY_OVERRIDES"


@dataclass(frozen=True)
class FeatureModelScale:
    """Scale of the feature-model study (``notebooks/01_feature_model.ipynb``)."""

    frequency_n_features: int
    """Number of features n in the frequency check."""
    frequency_samples: int
    """Samples N drawn per law in the frequency check."""
    grid_n: tuple[int, ...]
    """Numbers of features n in the identifiability grid."""
    grid_d: tuple[int, ...]
    """Ambient dimensions d in the identifiability grid."""
    grid_s: tuple[int, ...]
    """Row sparsities s in the identifiability grid."""
    grid_planted: tuple[float, ...]
    """Probabilities of the planted co-occurrence (0 = none) in the identifiability grid."""
    grid_samples: int
    """Samples N drawn per grid cell."""
    h3_n: int
    """Number of features n in the H3 sample-size study."""
    h3_samples: tuple[int, ...]
    """Sample sizes N in the H3 sample-size study."""
    band_n: tuple[int, ...]
    """Values of n over which the theorem's band is plotted."""


@dataclass(frozen=True)
class ResonanceScale:
    """Scale of the BA resonance study (``notebooks/02_gba_resonance.ipynb``)."""

    n: int
    """Number of features n (balanced, s-sparse)."""
    s: int
    """Row sparsity s; f = s/n."""
    grid_d: tuple[int, ...]
    """Dimensions d of the phase diagram (both sides of sqrt(n))."""
    grid_p_over_f: tuple[float, ...]
    """Target frequencies of the phase diagram, as multiples of f."""
    width_multiples: tuple[int, ...]
    """Widths M / n of the FRR-against-width sweep."""
    width_d: int
    """Dimension d of the width sweep."""
    width_p_over_f: float
    """Target frequency (multiple of f) of the width sweep."""
    steps: int
    """Optimiser steps per run."""
    batch_size: int
    """Rows per step."""
    n_samples: int
    """Rows of the fixed training set per d (each run iterates over it)."""


@dataclass(frozen=True)
class ToyScale:
    """Scale of the GBA imbalanced toy (``notebooks/03_gba_vs_topk.ipynb``)."""

    n_latents: int
    """Width M of every SAE."""
    steps: int
    """Optimiser steps per run."""
    batch_size: int
    """Rows per step."""
    n_samples: int
    """Rows of the fixed training set."""
    frontier_topk: tuple[int, ...]
    """K values of the TopK L2-vs-fraction-active frontier."""
    frontier_l1: tuple[float, ...]
    """L1 coefficients of the ReLU frontier."""
    widths: tuple[int, ...] = ()
    """Widths M of the width sweep (the paper does not state the toy's width)."""
    sweep_topk: tuple[int, ...] = ()
    """K values of the TopK sweep (the paper reports K = 20, 30, 50)."""
    long_steps: int = 0
    """Length of the TopK convergence runs (the paper's K = 20, 30, 50, tied and untied); 0: none."""


@dataclass(frozen=True)
class MPScale:
    """Scale of the MP-SAE studies (``notebooks/04_mp_theory.ipynb``, ``05_mp_adaptive_sparsity.ipynb``)."""

    n: int
    """Features of the SparseFeatureModel the SAEs are trained on."""
    d: int
    """Input dimension."""
    s: int
    """Row sparsity of the data (active features per input)."""
    n_latents: int
    """Width p of every SAE."""
    k: int
    """Training k of MP-SAE and TopK (and the target L0 of the ReLU-L1 SAE)."""
    steps: int
    """Optimiser steps per training run."""
    batch_size: int
    """Rows per step."""
    n_samples: int
    """Rows of the fixed training set."""
    theory_inputs: int
    """Inputs on which the propositions are checked (float64, per-input reference)."""
    theory_steps: int
    """Pursuit steps in the proposition checks."""
    inference_k_max_multiple: int
    """Inference k runs from 1 to this multiple of the training k."""
    superposition_ratios: tuple[int, ...] = (4, 16)
    """Reconstruction against recovery on Zipf data (:func:`sae_theory.experiments.mp.superposition_recovery`):
    the numbers of true features n as multiples of ``d`` (how far in superposition), each SAE as wide as n."""
    zipf_mean_support: float = 4.0
    """Expected active features per row of that Zipf data (its true mean L0; the SAEs' k is its rounding)."""
    zipf_max_frequency: float = 0.3
    """Frequency of that Zipf data's most frequent feature (sets the exponent)."""
    superposition_widths: tuple[float, ...] = (1.0, 0.25)
    """SAE widths of that study as fractions of n: 1 (as wide as the truth: a perfect dictionary is a
    permutation of it) and 1/4 (SynthSAEBench-16k's recommended 4,096 latents for its 16,384 features:
    the SAE is narrower than the truth and covers its most frequent features)."""
    superposition_noise: tuple[float, ...] = (0.1, 0.3)
    """Additive noise levels nu > 0 of :func:`sae_theory.experiments.mp.noisy_superposition_recovery`: the same
    Zipf data with Gaussian noise of covariance (nu^2 / d) I added to every unit-norm row, so the noise norm is
    about nu times the signal's (nu = 0.1: 1% of the energy; 0.3: 8%). Not in SynthSAEBench, whose data carry
    no additive noise; the levels are ours."""


@dataclass(frozen=True)
class HierarchyScale:
    """Scale of the hierarchy studies (``notebooks/06_hierarchy.ipynb``, ``07_cross_paper.ipynb``)
    on the MP-SAE toy tree (20 atoms in R^20, 20 latents; the paper: 15,000 steps of 200)."""

    steps: int
    """Optimiser steps per training run."""
    batch_size: int
    """Rows per step (fresh samples every step)."""
    rhos: tuple[float, ...]
    """Within-level correlations of the Fig 4 study."""
    seeds: tuple[int, ...]
    """Seeds of the hierarchy studies: the steps sweep, the training curves, the heatmaps (first
    seed) and Fig 4 unless ``fig4_seeds`` is set."""
    absorption_cells: tuple[tuple[float, float], ...]
    """(child mean, child std) cells of the Table 1 study."""
    absorption_seeds: tuple[int, ...]
    """Seeds of the Table 1 study (the paper: 15 runs)."""
    eval_samples: int
    """Held-out rows for matching, L0, FVU and the co-active Babel score."""
    mp_max_steps: int
    """Cap on MP-SAE's pursuit steps (it stops earlier on the residual threshold or a repeat)."""
    convergence_steps: tuple[int, ...] = ()
    """Training lengths of the convergence study (MP-SAE, with and without renormalisation, at
    rho <= 0.3, first seed): the exact-recovery verdict counts as converged when that seed's
    outcome is the same at ``steps`` and at the longest."""
    exact_seeds: tuple[int, ...] = ()
    """Seeds of the exact-recovery rate (MP-SAE at rho <= 0.3, ``steps`` steps): whether one run
    ends exact depends on its trajectory, so the verdict reads the fraction of exact runs (the
    paper: medians over 10 runs). Empty: ``seeds``."""
    fig4_seeds: tuple[int, ...] = ()
    """Seeds of the Fig 4 study (:func:`~sae_theory.experiments.hierarchical.hierarchy`; the paper:
    medians over 10). Its verdicts read medians over them: one run at rho >= 0.6 can land far from
    the others, on either side of the baselines, depending even on how the machine's matrix
    products round (README, Verdicts). Empty: ``seeds``."""


@dataclass(frozen=True)
class GBAReadingsScale:
    """Scale of the deployed-GBA readings study (:func:`sae_theory.experiments.gba_readings.deployed_readings`):
    readings of Algorithm 2 and of the deployed tied SAE on the imbalanced toy and on Zipf data."""

    readings: tuple[str, ...]
    """Readings trained (keys of ``gba_readings.READINGS``)."""
    matched: tuple[str, ...]
    """Readings whose final L0 a TopK run is matched to (K = round(L0))."""
    n_latents: int
    """Width M of every SAE, on both data sets."""
    steps: int
    """Optimiser steps per run."""
    batch_size: int
    """Rows per step."""
    n_samples: int
    """Rows of the fixed training set of each data set."""
    log_every: int
    """Steps between two logged training losses (the convergence curve)."""
    n_seeds: int
    """Seeds used: the first ``n_seeds`` of ``Profile.seeds``."""
    zipf_n: int = 256
    """Features of the Zipf data."""
    zipf_d: int = 64
    """Dimension of the Zipf data."""
    zipf_mean_support: float = 4.0
    """Expected active features per Zipf row (its true mean L0)."""
    zipf_max_frequency: float = 0.3
    """Frequency of the most frequent Zipf feature (sets the exponent)."""
    eval_samples: int = 20_000
    """Held-out rows for FVU and L0."""


@dataclass(frozen=True)
class RealDataScale:
    """What both real-network studies read from a transformer (:mod:`sae_theory.data.activations`):
    the model, place and layer, the tokens, the held-out split and the SAEs' width."""

    model: str
    """The transformer (an :class:`~sae_theory.data.ActivationRequest` model: ``"minilm"``,
    ``"smollm2"``, ...)."""
    layer: int
    """Its block whose output is read."""
    place: str
    """``"resid_post"`` (residual stream after the block) or ``"mlp_out"``."""
    fallback_model: str
    """The model used when ``model``'s package is not installed (``""``: none, the study stops)."""
    fallback_layer: int
    """The fallback model's layer."""
    tokens: int
    """Tokens extracted (training and held-out); the corpus may give fewer (the packaged Wikipedia
    sample holds about 683,000 MiniLM tokens: extraction then warns and keeps what there is)."""
    eval_tokens: int
    """The last tokens of the extraction (later documents than the training tokens), held out."""
    expansion: int
    """Width p of every SAE as a multiple of the model's d."""
    corpus: str = field(default="gensim-wiki", kw_only=True)
    """The text extracted (an :class:`~sae_theory.data.ActivationRequest` corpus): ``"gensim-wiki"``,
    the Wikipedia sample inside gensim, or a ``.txt`` file or folder of your own (e.g. for more
    tokens than the sample holds: ``--set real.corpus=/path/to/texts``)."""
    activations: str = field(default="", kw_only=True)
    """A finished activation cache to use in place of an extraction (a folder written by
    :func:`~sae_theory.data.import_activations` from your own activations, e.g. CLIP or SigLIP
    embeddings, or by :func:`~sae_theory.data.extract_activations`): ``--set
    real.activations=/path/to/cache`` runs the same study on it; ``model``, ``layer``, ``place`` and
    ``corpus`` are then not used. Empty: extract."""


@dataclass(frozen=True)
class RealScale(RealDataScale):
    """Scale of the real-network study (``notebooks/09_mp_real_network.ipynb``,
    :mod:`sae_theory.experiments.real_mp`): SAEs on a transformer's activations
    (:mod:`sae_theory.data.activations`), one SAE per method and sparsity level k."""

    ks: tuple[int, ...]
    """Sparsity levels: MP-SAE's pursuit steps, TopK's and BatchTopK's k, the target L0 of the
    ReLU and JumpReLU controllers."""
    steps: int
    """Optimiser steps per run."""
    batch_size: int
    """Tokens per step."""
    lr: float
    """Learning rate of every method (AdamW, constant)."""
    inference_k_max_multiple: int
    """Inference k runs from 1 to this multiple of the training k."""
    babel_rows: int
    """Held-out tokens on which the co-active Babel is read."""


@dataclass(frozen=True)
class RealGBAScale(RealDataScale):
    """Scale of GBA's real-network study (``notebooks/08_gba_real_network.ipynb``,
    :mod:`sae_theory.experiments.real_gba`): tied SAEs on a transformer's activations, GBA and BA
    against the paper's tied TopK and L1 baselines. The paper's place is ``"mlp_out"`` and its
    width about 43 x d."""

    steps: int
    """Optimiser steps per run."""
    batch_size: int
    """Tokens per step."""
    log_every: int
    """Steps between two logged training losses."""
    buffer_steps: int
    """Optimiser steps between two Algorithm 2 updates (the paper: 50 steps of 512 tokens)."""
    readings: tuple[str, ...]
    """GBA readings trained (keys of ``gba_readings.READINGS``); the first is the main one (BA and
    the consistency study use it)."""
    ba_targets: tuple[float, ...]
    """BA's single target frequencies (the paper hand-tunes one per run)."""
    topk_ks: tuple[int, ...]
    """K of the tied TopK frontier."""
    l1_coefficients: tuple[float, ...]
    """lambda of the tied L1 frontier."""
    consistency_seeds: int
    """Seeds of the consistency study (the first of ``Profile.seeds``; the paper: 3)."""
    consistency_topk: int
    """K of the TopK run of the consistency study."""
    consistency_l1: float
    """lambda of the L1 run of the consistency study."""
    alphas: tuple[float, ...]
    """Top fractions of neurons whose MCS is read (the paper: 0.003 and 0.0005 of about 66k neurons,
    i.e. about 197 and 33 neurons)."""
    n_groups: int = 10
    """GBA's groups (the paper's v1 runs: 10)."""
    htf: float = 0.1
    """GBA's highest target frequency (v1: 0.1)."""
    ltf: float = 1e-3
    """GBA's lowest target frequency (v1: 0.001)."""


@dataclass(frozen=True)
class Profile:
    """Everything an experiment needs besides the science.

    Build one with :func:`get_profile`; override single fields with
    ``dataclasses.replace(profile, ...)`` or ``get_profile(name, seeds=(0, 1))``.
    """

    name: str
    """``"quick"`` or ``"full"``."""
    device: str
    """Resolved device string (``"cpu"``, ``"cuda"``, ...). ``"auto"`` is resolved by :func:`get_profile`."""
    dtype: torch.dtype = torch.float32
    """Dtype for training and data streaming."""
    theory_dtype: torch.dtype = torch.float64
    """Dtype for every theory check (conditions, propositions). Always float64."""
    seeds: tuple[int, ...] = (0,)
    """Seeds over which stochastic experiments are repeated."""
    feature_model: FeatureModelScale = field(default=None)  # type: ignore[assignment]
    """Scale of the feature-model study."""
    resonance: ResonanceScale = field(default=None)  # type: ignore[assignment]
    """Scale of the BA resonance study."""
    toy: ToyScale = field(default=None)  # type: ignore[assignment]
    """Scale of the GBA-vs-TopK imbalanced toy."""
    mp: MPScale = field(default=None)  # type: ignore[assignment]
    """Scale of the MP-SAE studies."""
    hierarchy: HierarchyScale = field(default=None)  # type: ignore[assignment]
    """Scale of the hierarchy studies."""
    gba_readings: GBAReadingsScale = field(default=None)  # type: ignore[assignment]
    """Scale of the deployed-GBA readings study."""
    real: RealScale = field(default=None)  # type: ignore[assignment]
    """Scale of the real-network study (MP-SAE on a transformer's activations)."""
    real_gba: RealGBAScale = field(default=None)  # type: ignore[assignment]
    """Scale of GBA's real-network study."""
    cpu_threads: int | None = 1
    """torch's intra-op threads on CPU (:func:`set_threads`); None: torch's default (one per
    physical core). ``quick`` uses 1: its problems are small, and on a busy 2-core machine a
    second thread made a BA step 4-10x slower (22-25 ms with one thread, 103-255 ms with two, at
    load 4-5). The environment variable ``SAE_THEORY_THREADS`` overrides it."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """The scale fields changed from the named profile (:func:`apply_overrides`), as sorted
    ``(dotted path, value)`` pairs; empty for the profile as defined. Figure sidecars and verdicts
    carry it, so a ``full`` run with fewer seeds says so."""

    def __post_init__(self):
        if self.cpu_threads is not None:
            check_int("cpu_threads", self.cpu_threads, minimum=1)  # None: torch's default

    def is_stock(self, name: str) -> bool:
        """Whether this is profile ``name`` as defined, with no :attr:`overrides`: the scale at
        which a notebook's magnitude assertions were measured. A ``quick`` run with ``--set``
        overrides is another scale, where those magnitudes are not expected to hold."""
        if name not in _PROFILES:
            raise ValueError(f"name must be one of {sorted(_PROFILES)}, got {name!r}.")
        return self.name == name and not self.overrides

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dtypes as strings), for figure sidecars and checkpoints; ``overrides``
        as a ``{path: value}`` mapping."""
        out = to_jsonable(self, "profile")
        out["overrides"] = {path: to_jsonable(value, path) for path, value in self.overrides}
        return out


_QUICK = dict(
    seeds=(0, 1, 2),
    feature_model=FeatureModelScale(
        frequency_n_features=256,
        frequency_samples=40_000,
        grid_n=(256, 1024, 4096),
        grid_d=(32, 128, 512),
        grid_s=(1, 3, 8),
        grid_planted=(0.0, 0.5, 1.0),
        grid_samples=20_000,
        h3_n=4096,
        h3_samples=(1_000, 10_000, 100_000, 1_000_000),
        band_n=(2**8, 2**10, 2**12, 2**14, 2**16),
    ),
    resonance=ResonanceScale(
        n=128, s=3, grid_d=(8, 16, 32, 64), grid_p_over_f=(0.5, 1.0, 2.0, 4.0, 10.0),
        width_multiples=(1, 2, 4, 8), width_d=64, width_p_over_f=1.5,
        steps=2000, batch_size=256, n_samples=100_000,
    ),
    toy=ToyScale(n_latents=512, steps=2000, batch_size=256, n_samples=200_000,
                 frontier_topk=(5, 10, 20, 30, 50), frontier_l1=(0.3, 0.1, 0.03),
                 widths=(512, 1024, 2048, 4096), sweep_topk=(3, 5, 10, 15, 20, 30, 50), long_steps=15_000),
    mp=MPScale(n=256, d=64, s=6, n_latents=512, k=8, steps=2000, batch_size=256, n_samples=100_000,
               theory_inputs=200, theory_steps=64, inference_k_max_multiple=4,
               superposition_ratios=(4, 16), zipf_mean_support=4.0, zipf_max_frequency=0.3),
    hierarchy=HierarchyScale(steps=3000, batch_size=200, rhos=(0.0, 0.3, 0.6, 0.9), seeds=(0,),
                             absorption_cells=((0.1, 1 / 40), (0.5, 1 / 40), (1.0, 1 / 40)), absorption_seeds=(0,),
                             eval_samples=2000, mp_max_steps=8, convergence_steps=(1000, 3000, 6000),
                             exact_seeds=(0, 1, 2, 3, 4), fig4_seeds=(0, 1, 2)),
    gba_readings=GBAReadingsScale(readings=("printed", "two-sided", "small a", "small a + target init"),
                                  matched=("printed", "small a", "small a + target init"), n_latents=512, steps=3000, batch_size=256,
                                  n_samples=200_000, log_every=100, n_seeds=1),
    real=RealScale(model="minilm", layer=3, place="resid_post", fallback_model="", fallback_layer=3, tokens=100_000,
                   eval_tokens=2048, expansion=4, ks=(8, 16, 32), steps=300, batch_size=256, lr=3e-3,
                   inference_k_max_multiple=4, babel_rows=1024),
)

_QUICK["real_gba"] = RealGBAScale(
    model="minilm", layer=3, place="mlp_out", fallback_model="", fallback_layer=3, tokens=100_000, eval_tokens=4096, expansion=2,
    steps=800, batch_size=256, log_every=20, buffer_steps=10, readings=("printed", "small a"), ba_targets=(0.02, 0.1),
    topk_ks=(8, 16, 32, 64, 128), l1_coefficients=(0.2, 0.1, 0.05, 0.03), consistency_seeds=3, consistency_topk=32,
    consistency_l1=0.05, alphas=(0.05, 0.01))

_FULL = dict(
    cpu_threads=None,
    seeds=(0, 1, 2, 3, 4),
    feature_model=FeatureModelScale(
        frequency_n_features=4096,
        frequency_samples=1_000_000,
        grid_n=(1024, 4096, 16384, 65536),
        grid_d=(64, 256, 1024),
        grid_s=(1, 3, 8, 16),
        grid_planted=(0.0, 0.1, 0.5, 1.0),
        grid_samples=1_000_000,
        h3_n=65536,
        h3_samples=(10_000, 100_000, 1_000_000, 10_000_000, 30_000_000),
        band_n=(2**8, 2**10, 2**12, 2**14, 2**16, 2**18, 2**20),
    ),
    resonance=ResonanceScale(
        n=4096, s=3, grid_d=(16, 32, 64, 128, 256), grid_p_over_f=(0.5, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 10.0),
        width_multiples=(1, 2, 4, 8), width_d=256, width_p_over_f=1.5,
        steps=20_000, batch_size=1024, n_samples=2_000_000,
    ),
    toy=ToyScale(n_latents=512, steps=30_000, batch_size=512, n_samples=2_000_000,
                 frontier_topk=(3, 5, 10, 15, 20, 30, 50), frontier_l1=(1.0, 0.3, 0.1, 0.03, 0.01, 0.003),
                 widths=(512, 1024, 2048, 4096), sweep_topk=(3, 5, 10, 15, 20, 30, 50), long_steps=60_000),
    mp=MPScale(n=4096, d=256, s=16, n_latents=16384, k=32, steps=20_000, batch_size=1024, n_samples=2_000_000,
               theory_inputs=2000, theory_steps=256, inference_k_max_multiple=4,
               superposition_ratios=(4, 16), zipf_mean_support=4.0, zipf_max_frequency=0.3),
    hierarchy=HierarchyScale(steps=15_000, batch_size=200, rhos=(0.0, 0.3, 0.6, 0.9), seeds=tuple(range(10)),
                             absorption_cells=((0.1, 1 / 400), (0.1, 1 / 40), (0.5, 1 / 400), (0.5, 1 / 40), (0.5, 1 / 8),
                                               (1.0, 1 / 400), (1.0, 1 / 40), (1.0, 1 / 8), (1.0, 1 / 4)),
                             absorption_seeds=tuple(range(15)), eval_samples=2000, mp_max_steps=8,
                             convergence_steps=(1500, 3000, 7500, 15_000)),
    gba_readings=GBAReadingsScale(readings=("printed", "two-sided", "target init", "small a", "small a + target init"),
                                  matched=("printed", "small a", "small a + target init"), n_latents=512, steps=20_000,
                                  batch_size=256, n_samples=1_000_000, log_every=250, n_seeds=3),
    # EleutherAI's SmolLM2 table: layer 10's residual stream, expansion 64 (p = 36,864; real_mp.ELEUTHER_SETUP), a GPU job.
    # The packaged Wikipedia sample holds about 700,000 SmolLM2 tokens: 1,000,000 needs --set real.corpus=<your texts>
    real=RealScale(model="smollm2", layer=10, place="resid_post", fallback_model="minilm", fallback_layer=3, tokens=1_000_000,
                   eval_tokens=16_384, expansion=64, ks=(8, 16, 32, 64, 128), steps=8000, batch_size=1024, lr=1e-3,
                   inference_k_max_multiple=4, babel_rows=2048),
)

_FULL["real_gba"] = RealGBAScale(
    model="smollm2", layer=10, place="mlp_out", fallback_model="minilm", fallback_layer=3, tokens=1_000_000, eval_tokens=16_384,
    expansion=16, steps=8000, batch_size=1024, log_every=100, buffer_steps=50, readings=("printed", "small a"),
    ba_targets=(0.003, 0.01, 0.05), topk_ks=(16, 32, 64, 128, 256, 512), l1_coefficients=(0.1, 0.03, 0.01, 0.003, 0.001),
    consistency_seeds=3, consistency_topk=64, consistency_l1=0.01, alphas=(0.01, 0.003))

_PROFILES: dict[str, dict[str, Any]] = {"quick": _QUICK, "full": _FULL}
PROFILE_NAMES: tuple[str, ...] = tuple(_PROFILES)


def resolve_device(device: str | torch.device = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA device is present, else ``"cpu"``; others pass through.

    Raises
    ------
    ValueError
        If a CUDA device is requested but none is available.
    """
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but torch.cuda.is_available() is False; "
            "use device='auto' or device='cpu'."
        )
    return device


def parse_threads(raw: str) -> int | None:
    """A thread setting as written in ``SAE_THEORY_THREADS`` or ``--threads``: a positive
    integer, or ``"all"`` (None: torch's default, one thread per physical core).

    Raises
    ------
    ValueError
        If ``raw`` is neither.
    """
    raw = str(raw).strip()
    if raw.lower() == "all":
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"a thread count must be a positive integer or 'all', got {raw!r}.")
    return int(raw)


def resolve_threads(profile: Profile | None = None) -> int | None:
    """The thread count :func:`set_threads` applies: ``$SAE_THEORY_THREADS`` when set (see
    :func:`parse_threads`), else ``profile.cpu_threads``, else 1 (the ``quick`` rule). None means
    torch's default.

    Raises
    ------
    ValueError
        If ``SAE_THEORY_THREADS`` is set to something else than a positive integer or ``"all"``.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            return parse_threads(raw)
        except ValueError as exc:
            raise ValueError(f"{THREADS_ENV}: {exc} Unset it to use the profile's cpu_threads.") from None
    return 1 if profile is None else profile.cpu_threads


def set_threads(profile: Profile | None = None) -> int:
    """Apply the one thread rule of sae_theory to torch (intra-op threads) and return the count.

    The count is :func:`resolve_threads`: ``$SAE_THEORY_THREADS``, else ``profile.cpu_threads``
    (``quick``: 1), else 1. Every notebook calls this after :func:`get_profile`, the test suite
    calls it once per session, and ``sae-theory reproduce --threads N`` passes N to the notebooks
    through the environment, so CPU runs never oversubscribe the cores. A profile whose device
    is not the CPU is left at torch's default.

    Raises
    ------
    TypeError
        If ``profile`` is not a :class:`Profile` (e.g. a thread count: set ``$SAE_THEORY_THREADS``
        or the profile's ``cpu_threads`` instead).
    """
    if profile is not None and not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile or None, got {type(profile).__name__} {profile!r}; to choose a thread count, "
                        "set $SAE_THEORY_THREADS or dataclasses.replace(profile, cpu_threads=N).")
    if profile is not None and not str(profile.device).startswith("cpu"):
        return torch.get_num_threads()
    n = resolve_threads(profile)
    if n is None:
        n = _DEFAULT_THREADS
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


#: torch's own default, read before anything changes it.
_DEFAULT_THREADS = torch.get_num_threads()


def get_profile(name: str | None = None, *, device: str = "auto", **overrides: Any) -> Profile:
    """Return the named profile with its device resolved.

    Parameters
    ----------
    name
        ``"quick"`` (each notebook in about two minutes on two CPU cores) or ``"full"``
        (paper-like scale: CPU hours or GPU minutes). ``None`` reads the environment variable
        ``SAE_THEORY_PROFILE`` and falls back to ``"quick"``.
    device
        ``"auto"`` (CUDA when present, else CPU), or an explicit device string.
    **overrides
        Any other :class:`Profile` field, e.g. ``seeds=(0, 1)``.

    Raises
    ------
    ValueError
        For an unknown profile name or field.
    """
    if name is None:
        name = os.environ.get("SAE_THEORY_PROFILE", DEFAULT_PROFILE)
    if name not in _PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {PROFILE_NAMES}.")
    fields = {f.name for f in dataclasses.fields(Profile)} - {"name", "device"}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown Profile field(s) {sorted(unknown)}; valid fields are {sorted(fields)}.")
    if overrides.get("theory_dtype", torch.float64) != torch.float64:
        raise ValueError("theory_dtype must stay torch.float64: theory checks always run in float64.")
    kwargs = {**_PROFILES[name], **overrides}
    profile = Profile(name=name, device=resolve_device(device), **kwargs)
    raw = os.environ.get(OVERRIDES_ENV, "").strip()
    if raw:
        try:
            profile = apply_overrides(profile, parse_overrides(raw))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"${OVERRIDES_ENV}: {exc} Unset it to use the profile as defined.") from None
    return profile


def parse_overrides(text: str) -> dict[str, str]:
    """``"study.field=value;study.field=value"`` (as in ``$SAE_THEORY_OVERRIDES`` or one
    ``--set`` each) -> ``{"study.field": "value"}``; the values stay text until
    :func:`apply_overrides` reads them against the field they replace.

    Raises
    ------
    ValueError
        If an item is not ``path=value`` or a path is given twice.
    """
    out: dict[str, str] = {}
    for item in str(text).split(";"):
        item = item.strip()
        if not item:
            continue
        path, sep, value = item.partition("=")
        path, value = path.strip(), value.strip()
        if not sep or not path or not value:
            raise ValueError(f"override {item!r} is not 'path=value', e.g. 'hierarchy.seeds=0,1,2'.")
        if path in out:
            raise ValueError(f"override path {path!r} is given twice.")
        out[path] = value
    return out


def _read_value(path: str, raw: Any, current: Any) -> Any:
    """``raw`` (text from the command line, or a Python value) as the type of ``current``."""
    if not isinstance(raw, str):
        return tuple(raw) if isinstance(current, tuple) and isinstance(raw, (list, tuple)) else raw
    text = raw.strip()

    def scalar(tok: str, like: Any) -> Any:
        tok = tok.strip()
        try:
            if isinstance(like, bool):
                if tok.lower() not in ("true", "false"):
                    raise ValueError
                return tok.lower() == "true"
            if isinstance(like, int):
                return int(tok)
            if isinstance(like, float):
                return float(tok)
        except ValueError:
            raise ValueError(f"override {path}={raw!r}: {tok!r} is not a {type(like).__name__}.") from None
        return tok

    if isinstance(current, tuple):
        if text in ("", "()"):
            return ()
        like = current[0] if current else 0
        if isinstance(like, tuple):
            raise ValueError(f"override {path}: a tuple of tuples cannot be set from text; use get_profile(..., {path.split('.')[0]}=...) in Python.")
        return tuple(scalar(t, like) for t in text.strip("()").split(",") if t.strip())
    if current is None:
        return scalar(text, 0) if text.lstrip("-").isdigit() else text
    return scalar(text, current)


def apply_overrides(profile: Profile, overrides: dict[str, Any]) -> Profile:
    """``profile`` with the dotted fields of ``overrides`` replaced (``"seeds"``,
    ``"hierarchy.steps"``, ``"toy.widths"``, ...), recorded in :attr:`Profile.overrides`.

    Text values are read as the type of the field they replace (a tuple field from ``"0,1,2"``).

    Raises
    ------
    ValueError
        For an unknown study or field, ``name``/``device``/``theory_dtype``, or a value of the
        wrong type.
    """
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile, got {type(profile).__name__}.")
    top = {f.name for f in dataclasses.fields(Profile)} - {"name", "device", "theory_dtype", "overrides", "dtype"}
    changes: dict[str, Any] = {}
    scales: dict[str, dict[str, Any]] = {}
    for path, raw in overrides.items():
        parts = str(path).split(".")
        if len(parts) == 1:
            if parts[0] not in top:
                raise ValueError(f"unknown override {path!r}; top-level fields are {sorted(top)}, or 'study.field' such as 'hierarchy.seeds'.")
            changes[parts[0]] = _read_value(path, raw, getattr(profile, parts[0]))
            continue
        if len(parts) != 2:
            raise ValueError(f"override {path!r} must be 'field' or 'study.field', e.g. 'hierarchy.seeds'.")
        study, name = parts
        scale = getattr(profile, study, None) if study in top else None
        if not dataclasses.is_dataclass(scale):
            studies = sorted(f for f in top if dataclasses.is_dataclass(getattr(profile, f, None)))
            raise ValueError(f"unknown study {study!r} in override {path!r}; choose one of {studies}.")
        names = {f.name for f in dataclasses.fields(scale)}
        if name not in names:
            raise ValueError(f"unknown field {name!r} of {study} in override {path!r}; its fields are {sorted(names)}.")
        scales.setdefault(study, {})[name] = _read_value(path, raw, getattr(scale, name))
    for study, fields in scales.items():
        changes[study] = dataclasses.replace(getattr(profile, study), **fields)
    recorded = dict(profile.overrides)
    for path, raw in overrides.items():
        parts = str(path).split(".")
        value = changes[parts[0]] if len(parts) == 1 else getattr(changes[parts[0]], parts[1])
        recorded[str(path)] = value
    return dataclasses.replace(profile, **changes, overrides=tuple(sorted(recorded.items())))
