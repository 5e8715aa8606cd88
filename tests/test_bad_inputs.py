"""A catalogue of bad inputs across the public API (issue 13, points 4 and 8).

Every case is a real bad input: a callable, the exception type it must raise and a regex that
the message must match, naming the argument at fault (and, where it helps, what was given).
NaN and infinity are separate cases wherever a tensor or a number is taken. After the catalogue,
a few tests check that a refused call changed nothing (the model, a hook's state, a running
statistic), and that every registered SAE is in the catalogue.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import sae_theory
from sae_theory import metrics
from sae_theory.data import (
    Balanced,
    Bernoulli,
    ConceptTree,
    Constant,
    HierarchicalFeatureModel,
    LogNormal,
    Magnitudes,
    MixedSparsity,
    SparseFeatureModel,
    Uniform,
    Zipf,
    coherent_features,
    gaussian_features,
    mixing_epsilon,
    welch_bound,
)
from sae_theory.io import load_sae, save_sae
from sae_theory.models.mp.reference import matching_pursuit_reference
from sae_theory.models import (
    MPSAE,
    BatchTopKSAE,
    JumpReLUSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TiedReLUSAE,
    TiedSAE,
    TiedTopKSAE,
    TopKSAE,
    build_sae,
    registered_saes,
)
from sae_theory.theory import bounds
from sae_theory.theory.conditions import check_conditional_orthogonality, check_identifiability, mutual_coherence
from sae_theory.training import GBAConfig, GroupBiasAdaptation, SparsityController, TrainConfig, train

NAN, INF = math.nan, math.inf
D, M = 6, 10


@dataclass(frozen=True)
class Case:
    """One bad input: ``call()`` must raise ``exc`` with a message matching ``match``."""

    call: Callable[[], object]
    exc: type[BaseException]
    match: str


def _x(n: int = 4, d: int = D, dtype: torch.dtype = torch.float32, fill: float | None = None, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    if fill is not None:
        x[1, 2] = fill
    return x


def _data(fill: float) -> torch.Tensor:
    """16 rows of training data, every row with a ``fill`` (so the first batch has one)."""
    x = _x(16)
    x[:, 2] = fill
    return x


def _codes(n: int = 4, m: int = M, dtype: torch.dtype = torch.float32, fill: float | None = None) -> torch.Tensor:
    z = torch.relu(_x(n, m, dtype))
    if fill is not None:
        z[0, 1] = fill
    return z


# ---------------------------------------------------------------------------------------------
# the SAEs: one builder per registered class (test_every_registered_sae_is_in_the_catalogue)
# ---------------------------------------------------------------------------------------------
SAE_BUILDERS: dict[str, Callable[[], sae_theory.SAE]] = {
    "MPSAE": lambda: MPSAE(d=D, n_latents=M, k=3),
    "ReLUSAE": lambda: ReLUSAE(d=D, n_latents=M),
    "TopKSAE": lambda: TopKSAE(d=D, n_latents=M, k=3),
    "BatchTopKSAE": lambda: BatchTopKSAE(d=D, n_latents=M, k=3),
    "JumpReLUSAE": lambda: JumpReLUSAE(d=D, n_latents=M),
    "MatryoshkaSAE": lambda: MatryoshkaSAE(d=D, n_latents=M, n_prefixes=3),
    "TiedSAE": lambda: TiedSAE(d=D, n_latents=M),
    "TiedTopKSAE": lambda: TiedTopKSAE(d=D, n_latents=M, k=3),
    "TiedReLUSAE": lambda: TiedReLUSAE(d=D, n_latents=M),
}

X_NONFINITE = r"\bx contains \d+ NaN or infinite value"
X_SHAPE = r"\bx must have shape \(\.\.\., d=6\)"
CODES_NONFINITE = r"\bcodes contains \d+ NaN or infinite value"
CODES_SHAPE = r"\bcodes must have shape \(\.\.\., n_latents=10\)"

#: kind -> (call on a built SAE, exception, message)
SAE_CASES: dict[str, tuple[Callable, type[BaseException], str]] = {
    "encode-nan": (lambda s: s.encode(_x(fill=NAN)), ValueError, X_NONFINITE),
    "encode-inf": (lambda s: s.encode(_x(fill=INF)), ValueError, X_NONFINITE),
    "encode-neg-inf": (lambda s: s.encode(_x(fill=-INF)), ValueError, X_NONFINITE),
    "forward-nan": (lambda s: s(_x(fill=NAN)), ValueError, X_NONFINITE),
    "forward-inf": (lambda s: s(_x(fill=INF)), ValueError, X_NONFINITE),
    "training_forward-nan": (lambda s: s.training_forward(_x(fill=NAN)), ValueError, X_NONFINITE),
    "training_forward-inf": (lambda s: s.training_forward(_x(fill=INF)), ValueError, X_NONFINITE),
    "encode-wrong-width": (lambda s: s.encode(_x(d=D + 1)), ValueError, X_SHAPE),
    "encode-0d": (lambda s: s.encode(torch.tensor(1.0)), ValueError, X_SHAPE),
    "encode-not-a-tensor": (lambda s: s.encode(_x().tolist()), TypeError, r"\bx must be a torch\.Tensor of shape \(\.\.\., d=6\), got list"),
    "encode-wrong-dtype": (lambda s: s.encode(_x(dtype=torch.float64)), TypeError, r"\bx has dtype torch\.float64 but the SAE's parameters are torch\.float32"),
    "encode-int-dtype": (lambda s: s.encode(torch.ones(4, D, dtype=torch.long)), TypeError, r"\bx has dtype torch\.int64"),
    "decode-nan": (lambda s: s.decode(_codes(fill=NAN)), ValueError, CODES_NONFINITE),
    "decode-inf": (lambda s: s.decode(_codes(fill=INF)), ValueError, CODES_NONFINITE),
    "decode-wrong-width": (lambda s: s.decode(_codes(m=M + 1)), ValueError, CODES_SHAPE),
    "decode-0d": (lambda s: s.decode(torch.tensor(1.0)), ValueError, CODES_SHAPE),
    "decode-not-a-tensor": (lambda s: s.decode(_codes().tolist()), TypeError, r"\bcodes must be a torch\.Tensor of shape \(\.\.\., n_latents=10\), got list"),
    "decode-wrong-dtype": (lambda s: s.decode(_codes(dtype=torch.float64)), TypeError, r"\bcodes has dtype torch\.float64 but the SAE's parameters are torch\.float32"),
}


def _sae_case(name: str, kind: str) -> Case:
    call, exc, match = SAE_CASES[kind]
    return Case(lambda: call(SAE_BUILDERS[name]()), exc, match)


MODEL_CASES = {f"{name}.{kind}": _sae_case(name, kind) for name in SAE_BUILDERS for kind in SAE_CASES}

MODEL_CASES.update({
    # per-model arguments of encode / decode and the configs
    "TopKSAE.encode-k-zero": Case(lambda: TopKSAE(d=D, n_latents=M, k=3).encode(_x(), k=0), ValueError, r"\bk must lie in \[1, n_latents=10\]"),
    "TopKSAE.encode-k-float": Case(lambda: TopKSAE(d=D, n_latents=M, k=3).encode(_x(), k=1.5), TypeError, r"\bk must be an integer"),
    "TopKSAE.encode-k-too-large": Case(lambda: TopKSAE(d=D, n_latents=M, k=3).encode(_x(), k=M + 1), ValueError, r"\bk must lie in \[1, n_latents=10\], got 11"),
    "BatchTopKSAE.encode-batch-1d": Case(lambda: BatchTopKSAE(d=D, n_latents=M, k=3).encode(_x()[0], batch=True), ValueError, r"batch=True needs x of shape \(B, d\)"),
    "MatryoshkaSAE.decode-prefix-zero": Case(lambda: MatryoshkaSAE(d=D, n_latents=M, n_prefixes=3).decode(_codes(), prefix=0), ValueError, r"\bprefix must be >= 1"),
    "MatryoshkaSAE.decode-prefix-nan-codes": Case(lambda: MatryoshkaSAE(d=D, n_latents=M, n_prefixes=3).decode(_codes(fill=NAN), prefix=2), ValueError, CODES_NONFINITE),
    "MPSAE.encode-threshold-nan": Case(lambda: MPSAE(d=D, n_latents=M, k=3).encode(_x(), threshold=NAN), ValueError, r"\bthreshold must be None or a finite number"),
    "MPSAE.encode-k-zero": Case(lambda: MPSAE(d=D, n_latents=M, k=3).encode(_x(), k=0), ValueError, r"\bk must be >= 1"),
    "MPSAE.from_dictionary-nan": Case(lambda: MPSAE.from_dictionary(torch.full((M, D), NAN)), ValueError, r"\bD has NaN or Inf"),
    "matching_pursuit_reference.x-nan": Case(lambda: matching_pursuit_reference(_x(fill=NAN), torch.eye(D), 2), ValueError, r"\bx contains \d+ NaN"),
    "matching_pursuit_reference.D-inf": Case(lambda: matching_pursuit_reference(_x(), torch.full((M, D), INF), 2), ValueError, r"\bD contains \d+ NaN or infinite"),
    "matching_pursuit_reference.D-width": Case(lambda: matching_pursuit_reference(_x(), torch.eye(D + 1), 2), ValueError, r"\bD must have shape \(p, d=6\)"),
    "matching_pursuit_reference.b_dec-nan": Case(lambda: matching_pursuit_reference(_x(), torch.eye(D), 2, b_dec=torch.full((D,), NAN)), ValueError, r"\bb_dec contains"),
    "matching_pursuit_reference.k-zero": Case(lambda: matching_pursuit_reference(_x(), torch.eye(D), 0), ValueError, r"\bk must be >= 1"),
    "TiedSAE.init_b_dec_-nan": Case(lambda: TiedSAE(d=D, n_latents=M).init_b_dec_(_x(fill=NAN)), ValueError, X_NONFINITE),
    "TiedSAE.init_b_dec_-inf": Case(lambda: TiedSAE(d=D, n_latents=M).init_b_dec_(_x(fill=INF)), ValueError, X_NONFINITE),
    "SAEConfig.d-zero": Case(lambda: TopKSAE(d=0, n_latents=M, k=1), ValueError, r"\bd must be >= 1"),
    "SAEConfig.n_latents-float": Case(lambda: ReLUSAE(d=D, n_latents=10.0), TypeError, r"\bn_latents must be an integer"),
    "SAEConfig.dtype-int": Case(lambda: ReLUSAE(d=D, n_latents=M, dtype=torch.int64), ValueError, r"\bdtype must be a floating torch\.dtype"),
    "SAEConfig.seed-str": Case(lambda: ReLUSAE(d=D, n_latents=M, seed="0"), TypeError, r"\bseed must be an integer"),
    "SAEConfig.device-unknown": Case(lambda: ReLUSAE(d=D, n_latents=M, device="gpu7"), ValueError, r"\bdevice must be a torch device"),
    "ReLUSAEConfig.l1-nan": Case(lambda: ReLUSAE(d=D, n_latents=M, l1_coefficient=NAN), ValueError, r"\bl1_coefficient must be a finite number"),
    "ReLUSAEConfig.l1-inf": Case(lambda: ReLUSAE(d=D, n_latents=M, l1_coefficient=INF), ValueError, r"\bl1_coefficient must be a finite number"),
    "ReLUSAEConfig.l1-str": Case(lambda: ReLUSAE(d=D, n_latents=M, l1_coefficient="0.1"), TypeError, r"\bl1_coefficient must be a real number"),
    "JumpReLUSAEConfig.l0-str": Case(lambda: JumpReLUSAE(d=D, n_latents=M, l0_coefficient="0.1"), TypeError, r"\bl0_coefficient must be a real number"),
    "JumpReLUSAEConfig.bandwidth-nan": Case(lambda: JumpReLUSAE(d=D, n_latents=M, bandwidth=NAN), ValueError, r"\bbandwidth must be a finite number"),
    "MatryoshkaSAEConfig.l1-nan": Case(lambda: MatryoshkaSAE(d=D, n_latents=M, l1_coefficient=NAN), ValueError, r"\bl1_coefficient must be a finite number"),
    "MatryoshkaSAEConfig.pareto_power-nan": Case(lambda: MatryoshkaSAE(d=D, n_latents=M, pareto_power=NAN), ValueError, r"\bpareto_power must lie in \(0, 1\]"),
    "BatchTopKSAEConfig.threshold_lr-nan": Case(lambda: BatchTopKSAE(d=D, n_latents=M, k=2, threshold_lr=NAN), ValueError, r"\bthreshold_lr must lie in \(0, 1\]"),
    "BatchTopKSAEConfig.k-inf": Case(lambda: BatchTopKSAE(d=D, n_latents=M, k=INF), ValueError, r"\bk must be a finite number"),
    "TiedSAEConfig.theta-nan": Case(lambda: TiedSAE(d=D, n_latents=M, activation="jumprelu_biased", theta=NAN), ValueError, r"\btheta must be"),
    "TiedSAEConfig.output_scale_init-inf": Case(lambda: TiedSAE(d=D, n_latents=M, output_scale_init=INF), ValueError, r"\boutput_scale_init must be a finite number"),
    "TiedSAEConfig.theta-str": Case(lambda: TiedSAE(d=D, n_latents=M, activation="jumprelu_biased", theta="0.1"), TypeError, r"\btheta must be a real number"),
    "TiedTopKSAEConfig.k-zero": Case(lambda: TiedTopKSAE(d=D, n_latents=M, k=0), ValueError, r"\bk must be >= 1"),
    "build_sae.unknown-name": Case(lambda: build_sae("NoSuchSAE", d=D, n_latents=M), KeyError, r"no registered SAE is called 'NoSuchSAE'"),
})

# ---------------------------------------------------------------------------------------------
# data: the feature models, their laws and helpers
# ---------------------------------------------------------------------------------------------
_FEATURES = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), dim=1)


def _features(fill: float) -> torch.Tensor:
    V = _FEATURES.clone()
    V[3, 1] = fill
    return V


DATA_CASES = {
    "SparseFeatureModel.n_features-zero": Case(lambda: SparseFeatureModel(0, 8, 1), ValueError, r"\bn_features must be >= 1"),
    "SparseFeatureModel.d-float": Case(lambda: SparseFeatureModel(16, 8.0, 1), TypeError, r"\bd must be an integer"),
    "SparseFeatureModel.sparsity-too-large": Case(lambda: SparseFeatureModel(16, 8, 17), ValueError, r"\bsparsity s=17 exceeds n_features=16"),
    "SparseFeatureModel.sparsity-str": Case(lambda: SparseFeatureModel(16, 8, "3"), TypeError, r"\bsparsity must be an int or a SupportLaw"),
    "SparseFeatureModel.sparsity-and-frequencies": Case(lambda: SparseFeatureModel(16, 8, 2, frequencies=[0.1] * 16), ValueError, r"exactly one of sparsity= .* or frequencies="),
    "SparseFeatureModel.frequencies-nan": Case(lambda: SparseFeatureModel(16, 8, frequencies=[NAN] + [0.1] * 15), ValueError, r"\bfrequencies\[0\] = nan"),
    "SparseFeatureModel.frequencies-wrong-length": Case(lambda: SparseFeatureModel(16, 8, frequencies=[0.1] * 15), ValueError, r"\bfrequencies has 15 entries but n_features=16"),
    "SparseFeatureModel.features-nan": Case(lambda: SparseFeatureModel(16, 8, 2, features=_features(NAN)), ValueError, r"\bfeatures contains 1 NaN or infinite"),
    "SparseFeatureModel.features-inf": Case(lambda: SparseFeatureModel(16, 8, 2, features=_features(INF)), ValueError, r"\bfeatures contains 1 NaN or infinite"),
    "SparseFeatureModel.features-wrong-shape": Case(lambda: SparseFeatureModel(16, 8, 2, features=_FEATURES[:, :7]), ValueError, r"\bfeatures must have shape \(n_features, d\)"),
    "SparseFeatureModel.coherence-nan": Case(lambda: SparseFeatureModel(16, 8, 2, coherence=NAN), ValueError, r"\bcoherence must lie in \[0, 1\)"),
    "SparseFeatureModel.planted_probability-nan": Case(lambda: SparseFeatureModel(16, 8, 2, planted_probability=NAN), ValueError, r"\bplanted_probability must lie in \[0, 1\]"),
    "SparseFeatureModel.dtype-int": Case(lambda: SparseFeatureModel(16, 8, 2, dtype=torch.int32), TypeError, r"\bdtype must be a floating torch\.dtype"),
    "SparseFeatureModel.coefficients-unknown": Case(lambda: SparseFeatureModel(16, 8, 2, coefficients="gamma"), ValueError, r"\bcoefficients='gamma' is not a law"),
    "SparseFeatureModel.coefficients-nan": Case(lambda: SparseFeatureModel(16, 8, 2, coefficients=NAN), ValueError, r"\bConstant\.value must be a finite number"),
    "SparseFeatureModel.coefficients-lognormal-overflows-float32": Case(
        lambda: SparseFeatureModel(16, 8, 2, coefficients=LogNormal(mu=80.0, sigma=1.0)), ValueError, r"\bcoefficients=LogNormal\(mu=80\.0, sigma=1\.0\).*float32"),
    "SparseFeatureModel.coefficients-lognormal-sigma-overflows-float16": Case(
        lambda: SparseFeatureModel(16, 8, 2, coefficients=LogNormal(mu=0.0, sigma=2.0), dtype=torch.float16), ValueError, r"\bcoefficients=LogNormal\(mu=0\.0, sigma=2\.0\).*float16"),
    "SparseFeatureModel.coefficients-constant-overflows-float32": Case(
        lambda: SparseFeatureModel(16, 8, 2, coefficients=Constant(1e39)), ValueError, r"\bcoefficients=Constant\(value=1e\+39\).*float32"),
    "SparseFeatureModel.coefficients-uniform-overflows-float16": Case(
        lambda: SparseFeatureModel(16, 8, 2, coefficients=Uniform(1.0, 1e5), dtype=torch.float16), ValueError, r"\bcoefficients=Uniform\(low=1\.0, high=100000\.0\).*float16"),
    "SparseFeatureModel.sample-negative": Case(lambda: SparseFeatureModel(16, 8, 2).sample(-1), ValueError, r"\bn_samples must be >= 0"),
    "SparseFeatureModel.sample-h_layout": Case(lambda: SparseFeatureModel(16, 8, 2).sample(4, h_layout="csr"), ValueError, r"\bh_layout must be 'sparse' or 'dense'"),
    "SparseFeatureModel.sample-generator": Case(lambda: SparseFeatureModel(16, 8, 2).sample(4, generator=0), TypeError, r"\bgenerator must be a torch\.Generator"),
    "LogNormal.mu-nan": Case(lambda: LogNormal(mu=NAN), ValueError, r"\bLogNormal\.mu must be"),
    "LogNormal.mu-inf": Case(lambda: LogNormal(mu=INF), ValueError, r"\bLogNormal\.mu must be"),
    "LogNormal.sigma-inf": Case(lambda: LogNormal(sigma=INF), ValueError, r"\bLogNormal\.sigma must be a finite number"),
    "LogNormal.sigma-negative": Case(lambda: LogNormal(sigma=-1.0), ValueError, r"\bLogNormal\.sigma must be a finite number >= 0"),
    "LogNormal.overflows-float64": Case(lambda: LogNormal(mu=700.0, sigma=1.0), ValueError, r"\bLogNormal\(mu=700\.0, sigma=1\.0\).*overflow"),
    "LogNormal.mean-overflows-float64": Case(lambda: LogNormal(mu=0.0, sigma=40.0), ValueError, r"\bLogNormal\(mu=0\.0, sigma=40\.0\).*overflow.*the mean exp"),
    "Constant.value-inf": Case(lambda: Constant(INF), ValueError, r"\bConstant\.value must be a finite number > 0"),
    "Uniform.low-nan": Case(lambda: Uniform(NAN, 1.0), ValueError, r"\bUniform\.low must be a finite number"),
    "Uniform.high-inf": Case(lambda: Uniform(0.5, INF), ValueError, r"\bUniform\.high must be a finite number"),
    "Uniform.low-above-high": Case(lambda: Uniform(2.0, 1.0), ValueError, r"\bUniform needs low <= high"),
    "Balanced.s-zero": Case(lambda: Balanced(0), ValueError, r"\bsparsity \(s\) must be >= 1"),
    "MixedSparsity.weights-nan": Case(lambda: MixedSparsity((3, 20), (NAN, 1.0)), ValueError, r"\bweights must be finite"),
    "MixedSparsity.weights-wrong-length": Case(lambda: MixedSparsity((3, 20), (1.0,)), ValueError, r"\bweights has 1 entries but sparsities has 2"),
    "MixedSparsity.sparsities-zero": Case(lambda: MixedSparsity((0, 3)), ValueError, r"\bsparsities\[0\] must be >= 1"),
    "Bernoulli.probability-inf": Case(lambda: Bernoulli((0.5, INF)), ValueError, r"\bfrequencies\[1\] = inf"),
    "Zipf.exponent-nan": Case(lambda: Zipf(exponent=NAN), ValueError, r"\bexponent must be a finite number"),
    "Zipf.mean_support-inf": Case(lambda: Zipf(mean_support=INF), ValueError, r"\bmean_support must be a finite number"),
    "welch_bound.n-float": Case(lambda: welch_bound(100.5, 8), TypeError, r"\bn_features must be an integer"),
    "welch_bound.d-zero": Case(lambda: welch_bound(100, 0), ValueError, r"\bd must be >= 1"),
    "gaussian_features.n-zero": Case(lambda: gaussian_features(0, 4), ValueError, r"\bn_features must be >= 1"),
    "coherent_features.coherence-inf": Case(lambda: coherent_features(8, 4, INF), ValueError, r"\bcoherence must lie in \[0, 1\)"),
    "mixing_epsilon.rho-nan": Case(lambda: mixing_epsilon(NAN, 3), ValueError, r"\brho must lie in \[0, 1\)"),
    "mixing_epsilon.group_size-one": Case(lambda: mixing_epsilon(0.3, 1), ValueError, r"\bgroup_size must be >= 2"),
    # the hierarchical toy
    "HierarchicalFeatureModel.rho_parent-one": Case(lambda: HierarchicalFeatureModel(rho_parent=1.0), ValueError, r"\brho_parent must lie in \[0, 1\)"),
    "HierarchicalFeatureModel.rho_child-nan": Case(lambda: HierarchicalFeatureModel(rho_child=NAN), ValueError, r"\brho_child must lie in \[0, 1\)"),
    "HierarchicalFeatureModel.d-too-small": Case(lambda: HierarchicalFeatureModel(d=5), ValueError, r"\bd must be >= 20"),
    "HierarchicalFeatureModel.tree-wrong-type": Case(lambda: HierarchicalFeatureModel(tree={"parents": (0,)}), TypeError, r"\btree must be a ConceptTree"),
    "HierarchicalFeatureModel.magnitudes-wrong-type": Case(lambda: HierarchicalFeatureModel(magnitudes=(1.5, 0.25)), TypeError, r"\bmagnitudes must be a Magnitudes"),
    "HierarchicalFeatureModel.seed-str": Case(lambda: HierarchicalFeatureModel(seed="0"), TypeError, r"\bseed must be an integer"),
    "HierarchicalFeatureModel.dtype-int": Case(lambda: HierarchicalFeatureModel(dtype=torch.int64), TypeError, r"\bdtype must be a floating torch\.dtype"),
    "HierarchicalFeatureModel.magnitudes-overflow-float32": Case(
        lambda: HierarchicalFeatureModel(magnitudes=Magnitudes(parent_mean=1e39)), ValueError, r"\bmagnitudes=Magnitudes\(parent_mean=1e\+39.*overflow float32"),
    "HierarchicalFeatureModel.sample-zero": Case(lambda: HierarchicalFeatureModel().sample(0), ValueError, r"\bn_samples must be >= 1"),
    "HierarchicalFeatureModel.sample-generator": Case(lambda: HierarchicalFeatureModel().sample(4, generator=1), TypeError, r"\bgenerator must be a torch\.Generator"),
    "Magnitudes.parent_mean-nan": Case(lambda: Magnitudes(parent_mean=NAN), ValueError, r"\bparent_mean must be a finite number"),
    "Magnitudes.child_mean-inf": Case(lambda: Magnitudes(child_mean=INF), ValueError, r"\bchild_mean must be a finite number"),
    "Magnitudes.parent_std-negative": Case(lambda: Magnitudes(parent_std=-0.1), ValueError, r"\bparent_std must be a finite number >= 0"),
    "Magnitudes.child_std-inf": Case(lambda: Magnitudes(child_std=INF), ValueError, r"\bchild_std must be a finite number >= 0"),
    "Magnitudes.parent_mean-str": Case(lambda: Magnitudes(parent_mean="1.5"), TypeError, r"\bparent_mean must be a real number"),
    "ConceptTree.parent_probs-nan": Case(
        lambda: ConceptTree(parents=(0, 1), parent_probs=(NAN, 1.0), children=((), ()), child_probs=((), ())), ValueError, r"\bparent_probs\[0\] must be a finite number"),
    "ConceptTree.parent_probs-wrong-length": Case(
        lambda: ConceptTree(parents=(0, 1), parent_probs=(1.0,), children=((), ()), child_probs=((), ())), ValueError, r"\bparent_probs has 1 entries but parents has 2"),
    "ConceptTree.parent_probs-sum": Case(
        lambda: ConceptTree(parents=(0, 1), parent_probs=(0.5, 0.6), children=((), ()), child_probs=((), ())), ValueError, r"\bparent_probs must .*sum to 1"),
    "ConceptTree.child_probs-inf": Case(
        lambda: ConceptTree(parents=(0,), parent_probs=(1.0,), children=((1, 2),), child_probs=((INF, 0.1),)), ValueError, r"\bchild_probs\[0\]\[0\] must be a finite number"),
    "ConceptTree.child_probs-one-per-child": Case(
        lambda: ConceptTree(parents=(0,), parent_probs=(1.0,), children=((1, 2),), child_probs=((0.5,),)), ValueError, r"\bchild_probs\[0\] has 1 entries but children\[0\] has 2"),
    "ConceptTree.parents-float-index": Case(
        lambda: ConceptTree(parents=(0.0, 1), parent_probs=(0.5, 0.5), children=((), ()), child_probs=((), ())), TypeError, r"\bparents\[0\] must be an integer"),
    "ConceptTree.atoms-not-0-to-n": Case(
        lambda: ConceptTree(parents=(0, 2), parent_probs=(0.5, 0.5), children=((), ()), child_probs=((), ())), ValueError, r"atom indices of parents and children must be 0\.\.n_atoms-1"),
}

# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
_LEARNED = _x(12, 8, torch.float64, seed=2)
_TRUE = _x(10, 8, torch.float64, seed=3)


def _filled(t: torch.Tensor, fill: float) -> torch.Tensor:
    t = t.clone()
    t[0, 0] = fill
    return t


def _stats_update(codes):
    return metrics.ActivationStats().update(codes)


METRIC_CASES = {
    "l0.nan": Case(lambda: metrics.l0(_codes(fill=NAN)), ValueError, r"\bcodes contains NaN or infinite"),
    "l0.inf": Case(lambda: metrics.l0(_codes(fill=INF)), ValueError, r"\bcodes contains NaN or infinite"),
    "l0.int": Case(lambda: metrics.l0(torch.ones(4, 3, dtype=torch.long)), TypeError, r"\bcodes must have a floating dtype"),
    "l0.1d": Case(lambda: metrics.l0(torch.ones(3)), ValueError, r"\bcodes must be 2-D"),
    "fraction_active.nan": Case(lambda: metrics.fraction_active(_codes(fill=NAN)), ValueError, r"\bcodes contains NaN or infinite"),
    "mse.x-nan": Case(lambda: metrics.mse(_x(fill=NAN), _x()), ValueError, r"\bx contains NaN or infinite"),
    "mse.x_hat-inf": Case(lambda: metrics.mse(_x(), _x(fill=INF)), ValueError, r"\bx_hat contains NaN or infinite"),
    "fvu.x-inf": Case(lambda: metrics.fvu(_x(fill=INF), _x()), ValueError, r"\bx contains NaN or infinite"),
    "fvu.x_hat-nan": Case(lambda: metrics.fvu(_x(), _x(fill=NAN)), ValueError, r"\bx_hat contains NaN or infinite"),
    "fvu.shape-mismatch": Case(lambda: metrics.fvu(_x(), _x(5)), ValueError, r"\bx and x_hat must have the same shape"),
    "fvu.constant-x": Case(lambda: metrics.fvu(torch.ones(4, D), _x()), ValueError, r"fvu is undefined for x"),
    "feature_recovery_rate.learned-nan": Case(lambda: metrics.feature_recovery_rate(_filled(_LEARNED, NAN), _TRUE), ValueError, r"\blearned contains NaN or infinite"),
    "feature_recovery_rate.true-inf": Case(lambda: metrics.feature_recovery_rate(_LEARNED, _filled(_TRUE, INF)), ValueError, r"\btrue contains NaN or infinite"),
    "feature_recovery_rate.tau-nan": Case(lambda: metrics.feature_recovery_rate(_LEARNED, _TRUE, tau=NAN), ValueError, r"\btau must lie in \(0, 1\]"),
    "feature_recovery_rate.d-mismatch": Case(lambda: metrics.feature_recovery_rate(_LEARNED, _TRUE[:, :7]), ValueError, r"\blearned and true must have the same number of columns"),
    "max_cosine_similarity.A-nan": Case(lambda: metrics.max_cosine_similarity(_filled(_LEARNED, NAN), _TRUE), ValueError, r"\bA contains NaN or infinite"),
    "max_cosine_similarity.B-inf": Case(lambda: metrics.max_cosine_similarity(_LEARNED, _filled(_TRUE, INF)), ValueError, r"\bB contains NaN or infinite"),
    "best_cosine.true-zero-row": Case(lambda: metrics.best_cosine(_LEARNED, torch.zeros(2, 8, dtype=torch.float64)), ValueError, r"\btrue has 2 zero row"),
    "mcs_fraction.others-nan": Case(lambda: metrics.mcs_fraction(_LEARNED, [_filled(_LEARNED, NAN)], 0.8), ValueError, r"\bothers\[0\] contains NaN or infinite"),
    "mcs_fraction.threshold-nan": Case(lambda: metrics.mcs_fraction(_LEARNED, [_LEARNED], NAN), ValueError, r"\bthreshold must lie in \(0, 1\]"),
    "top_fraction.scores-nan": Case(lambda: metrics.top_fraction(torch.tensor([1.0, NAN]), 0.5), ValueError, r"\bscores contains NaN or infinite"),
    "top_fraction.alpha-inf": Case(lambda: metrics.top_fraction(torch.tensor([1.0, 2.0]), INF), ValueError, r"\balpha must lie in \(0, 1\]"),
    "ActivationStats.update-nan": Case(lambda: _stats_update(_codes(fill=NAN)), ValueError, r"\bcodes contains NaN or infinite"),
    "ActivationStats.update-inf": Case(lambda: _stats_update(_codes(fill=INF)), ValueError, r"\bcodes contains NaN or infinite"),
    "dead_fraction.eps-nan": Case(lambda: metrics.dead_fraction(_codes(), eps=NAN), ValueError, r"\beps must lie in \[0, 1\)"),
    "z_score.nan": Case(lambda: metrics.z_score(_codes(fill=NAN)), ValueError, r"\bcodes contains NaN or infinite"),
    "plateaued.nan": Case(lambda: metrics.plateaued([1.0] * 9 + [NAN]), ValueError, r"\bvalues\[9\] is nan"),
    "plateaued.tail-inf": Case(lambda: metrics.plateaued([1.0] * 10, tail=INF), ValueError, r"\btail must be a finite number"),
    "metric_settled.inf": Case(lambda: metrics.metric_settled([0.5, INF]), ValueError, r"\bvalues\[1\] is inf"),
    "match_latents.nan": Case(lambda: metrics.match_latents(_filled(_LEARNED, NAN), _TRUE), ValueError, r"\blearned_acts contains NaN or Inf"),
    "match_latents.rows-mismatch": Case(lambda: metrics.match_latents(_LEARNED, _TRUE), ValueError, r"\blearned_acts has 12 rows but true_acts has 10"),
    "flat_mse.learned-inf": Case(lambda: metrics.flat_mse(_filled(_TRUE, INF), _TRUE, [0] * 10), ValueError, r"\blearned contains NaN or Inf"),
    "flat_mse.shape-mismatch": Case(lambda: metrics.flat_mse(_LEARNED, _TRUE, [0] * 10), ValueError, r"\blearned has shape \(12, 8\) but true has shape \(10, 8\)"),
    "flat_mse.levels-wrong-length": Case(lambda: metrics.flat_mse(_TRUE, _TRUE, [0] * 9), ValueError, r"\blevels has 9 entries but learned has 10 atoms"),
    "flat_mse.levels-nan": Case(lambda: metrics.flat_mse(_TRUE, _TRUE, [NAN] + [0] * 9), ValueError, r"\blevels must hold integer levels"),
    "hierarchical_mse.levels-wrong-length": Case(lambda: metrics.hierarchical_mse(_TRUE, [0, 1] * 4), ValueError, r"\blevels has 8 entries but learned has 10 atoms"),
    "hierarchical_mse.learned-nan": Case(lambda: metrics.hierarchical_mse(_filled(_TRUE, NAN), [0, 1] * 5), ValueError, r"\blearned contains NaN or Inf"),
    "absorption.learned-nan": Case(lambda: metrics.absorption(_filled(_TRUE, NAN), _TRUE, {1: 0}), ValueError, r"\blearned contains NaN or Inf"),
    "absorption.shape-mismatch": Case(lambda: metrics.absorption(_LEARNED, _TRUE, {1: 0}), ValueError, r"\blearned has shape \(12, 8\) but true has shape \(10, 8\)"),
    "absorption.parent_of-out-of-range": Case(lambda: metrics.absorption(_TRUE, _TRUE, {1: 10}), ValueError, r"\bparent_of\[1\] = 10 is not an atom index in \[0, 10\)"),
    "absorption.recovery_tau-nan": Case(lambda: metrics.absorption(_TRUE, _TRUE, {1: 0}, recovery_tau=NAN), ValueError, r"\brecovery_tau must be a finite number"),
    "babel.D-inf": Case(lambda: metrics.babel(_filled(_TRUE, INF), 2), ValueError, r"\bD contains NaN or Inf"),
    "babel.r-float": Case(lambda: metrics.babel(_TRUE, 1.5), TypeError, r"\br must be an integer"),
    "babel.r-too-large": Case(lambda: metrics.babel(_TRUE, 10), ValueError, r"\br must lie in \[1, p - 1 = 9\]"),
    "babel_coactive.codes-nan": Case(lambda: metrics.babel_coactive(_TRUE, _filled(_codes(m=10, dtype=torch.float64), NAN)), ValueError, r"\bcodes contains NaN or Inf"),
    "babel_coactive.codes-wrong-width": Case(lambda: metrics.babel_coactive(_TRUE, _codes(m=11, dtype=torch.float64)), ValueError, r"\bcodes has 11 columns but D has 10 atoms"),
    "effective_rank.inf": Case(lambda: metrics.effective_rank(_filled(_codes(dtype=torch.float64), INF)), ValueError, r"\bcodes contains NaN or Inf"),
}

# ---------------------------------------------------------------------------------------------
# theory: the identifiability conditions and the recovery theorem's bounds
# ---------------------------------------------------------------------------------------------
_H = torch.relu(_x(40, 10, torch.float64, seed=4))
_V = _x(10, 8, torch.float64, seed=5)

THEORY_CASES = {
    "check_identifiability.H-nan": Case(lambda: check_identifiability(_filled(_H, NAN), _V), ValueError, r"\bH contains NaN or infinite"),
    "check_identifiability.H-inf": Case(lambda: check_identifiability(_filled(_H, INF), _V), ValueError, r"\bH contains NaN or infinite"),
    "check_identifiability.H-sparse-nan": Case(lambda: check_identifiability(_filled(_H, NAN).to_sparse(), _V), ValueError, r"\bH contains NaN or infinite"),
    "check_identifiability.V-nan": Case(lambda: check_identifiability(_H, _filled(_V, NAN)), ValueError, r"\bV contains NaN or infinite"),
    "check_identifiability.V-inf": Case(lambda: check_identifiability(_H, _filled(_V, INF)), ValueError, r"\bV contains NaN or infinite"),
    "check_identifiability.H-negative": Case(lambda: check_identifiability(_filled(_H, -1.0), _V), ValueError, r"\bH has negative entries"),
    "check_identifiability.H-columns": Case(lambda: check_identifiability(_H[:, :9], _V), ValueError, r"\bH has 9 columns but V has 10 rows"),
    "check_identifiability.h2_ratio-nan": Case(lambda: check_identifiability(_H, _V, h2_ratio=NAN), ValueError, r"\bh2_ratio must"),
    "check_identifiability.h2_ratio-str": Case(lambda: check_identifiability(_H, _V, h2_ratio="0.1"), TypeError, r"\bh2_ratio must be a real number"),
    "check_identifiability.max_support-zero": Case(lambda: check_identifiability(_H, _V, max_support=0), ValueError, r"\bmax_support must be >= 1"),
    "check_identifiability.max_support-float": Case(lambda: check_identifiability(_H, _V, max_support=2.5), TypeError, r"\bmax_support must be an integer"),
    "check_identifiability.max_coherence-nan": Case(lambda: check_identifiability(_H, _V, max_coherence=NAN), ValueError, r"\bmax_coherence must be a finite number"),
    "check_identifiability.cosines-inf": Case(lambda: check_identifiability(_H, _V, cosines=(INF, 0.0)), ValueError, r"\bcosines\[0\] must be a finite number"),
    "mutual_coherence.V-nan": Case(lambda: mutual_coherence(_filled(_V, NAN)), ValueError, r"\bV contains NaN or infinite"),
    "check_conditional_orthogonality.D-inf": Case(lambda: check_conditional_orthogonality(_filled(_V, INF), [0] * 10), ValueError, r"\bD contains NaN or infinite"),
    "check_conditional_orthogonality.levels-wrong-length": Case(lambda: check_conditional_orthogonality(_V, [0] * 9), ValueError, r"\blevels has 9 entries but D has 10 atoms"),
    "check_conditional_orthogonality.tol-nan": Case(lambda: check_conditional_orthogonality(_V, [0] * 10, tol=NAN), ValueError, r"\btol must be a finite number"),
    "check_conditional_orthogonality.tol-negative": Case(lambda: check_conditional_orthogonality(_V, [0] * 10, tol=-1.0), ValueError, r"\btol must be a finite number >= 0"),
    "resonance_band.n-nan": Case(lambda: bounds.resonance_band(NAN, 64, 3), ValueError, r"\bn must be"),
    "resonance_band.n-inf": Case(lambda: bounds.resonance_band(INF, 64, 3), ValueError, r"\bn must be > 1 and finite, got inf"),
    "resonance_band.d-inf": Case(lambda: bounds.resonance_band(1000, INF, 3), ValueError, r"\bd must be >= 1 and finite, got inf"),
    "resonance_band.s-inf": Case(lambda: bounds.resonance_band(1000, 64, INF), ValueError, r"\bs must be > 0 and finite, got inf"),
    "resonance_band.n-str": Case(lambda: bounds.resonance_band("1000", 64, 3), TypeError, r"\bn must be a real number"),
    "in_resonance_band.p-nan": Case(lambda: bounds.in_resonance_band(NAN, 1000, 64, 3), ValueError, r"\bp must be a finite number \(a target frequency\), got nan"),
    "width_lower_bound.p-inf": Case(lambda: bounds.width_lower_bound(1000, INF, 3), ValueError, r"\bp must lie in \(0, 1\]"),
    "success_probability.eps-nan": Case(lambda: bounds.success_probability(1000, NAN), ValueError, r"\beps must lie in \[0, 1\)"),
    "critical_dimension.varsigma-inf": Case(lambda: bounds.critical_dimension(1000, 3, INF), ValueError, r"\bvarsigma must lie in \[0, 1\)"),
    "band_in_frequency.f-nan": Case(lambda: bounds.band_in_frequency(NAN, 64, 3), ValueError, r"\bf must lie in \(0, 1\)"),
    "simplified_band_in_frequency.d-nan": Case(lambda: bounds.simplified_band_in_frequency(0.01, NAN), ValueError, r"\bd must be >= 1 and finite, got nan"),
}


# ---------------------------------------------------------------------------------------------
# training: data, config and hooks on models they cannot drive
# ---------------------------------------------------------------------------------------------
def _cfg(**kw) -> TrainConfig:
    return TrainConfig(steps=kw.pop("steps", 3), batch_size=kw.pop("batch_size", 4), progress=False, **kw)


def _train(model, data, hooks=(), **cfg):
    return train(model, data, _cfg(**cfg), hooks=hooks)


def _gba() -> GroupBiasAdaptation:
    return GroupBiasAdaptation(GBAConfig(n_groups=2, htf=0.5, ltf=0.1, buffer_size=4))


TRAINING_CASES = {
    "train.data-nan": Case(lambda: _train(TiedSAE(d=D, n_latents=M), _data(NAN)), ValueError, r"the batch from TensorSource.* has \d+ NaN or infinite"),
    "train.data-inf": Case(lambda: _train(TiedSAE(d=D, n_latents=M), _data(INF)), ValueError, r"the batch from TensorSource.* has \d+ NaN or infinite"),
    "train.data-wrong-width": Case(lambda: _train(TopKSAE(d=D, n_latents=M, k=2), _x(16, d=D + 1)), ValueError, r"the SAE needs \(batch, d=6\)"),
    "train.data-1d": Case(lambda: _train(TopKSAE(d=D, n_latents=M, k=2), _x(16)[0]), ValueError, r"\bX must have shape \(N, d\)"),
    "train.cfg-wrong-type": Case(lambda: train(TopKSAE(d=D, n_latents=M, k=2), _x(16), {"steps": 3}), TypeError, r"\bcfg must be a TrainConfig"),
    "train.hook-not-callable": Case(lambda: _train(TopKSAE(d=D, n_latents=M, k=2), _x(16), hooks=[3]), TypeError, r"\bhooks\[0\] \(int\) is not callable"),
    "TrainConfig.lr-nan": Case(lambda: _cfg(lr=NAN), ValueError, r"\blr must"),
    "TrainConfig.steps-zero": Case(lambda: _cfg(steps=0), ValueError, r"\bsteps must be >= 1"),
    "GBAConfig.htf-nan": Case(lambda: GBAConfig(htf=NAN), ValueError, r"\bhtf must be a target frequency in \(0, 1\)"),
    "GBAConfig.gamma_plus-inf": Case(lambda: GBAConfig(gamma_plus=INF), ValueError, r"\bgamma_plus must be > 0"),
    "GBAConfig.htf-str": Case(lambda: GBAConfig(htf="0.1"), TypeError, r"\bhtf must be a real number"),
    "GBAConfig.seed-float": Case(lambda: GBAConfig(seed=0.5), TypeError, r"\bseed must be an integer"),
    "GBAConfig.n_groups-zero": Case(lambda: GBAConfig(n_groups=0), ValueError, r"\bn_groups \(K\) must be >= 1"),
    "GroupBiasAdaptation.on-TopKSAE": Case(lambda: _gba().check_model(TopKSAE(d=D, n_latents=M, k=2)), TypeError, r"\bmodel\.b_enc of TopKSAE is trained by the optimiser"),
    "GroupBiasAdaptation.on-tied-L1-baseline": Case(lambda: _gba().check_model(TiedReLUSAE(d=D, n_latents=M)), TypeError, r"\bmodel\.b_enc of TiedReLUSAE is trained by the optimiser.*train_b_enc=False"),
    "GroupBiasAdaptation.on-MPSAE": Case(lambda: _gba().check_model(MPSAE(d=D, n_latents=M, k=2)), TypeError, r"\bmodel \(MPSAE\) has no b_enc"),
    "GroupBiasAdaptation.too-many-groups": Case(lambda: GroupBiasAdaptation(GBAConfig(n_groups=M + 1, htf=0.5, ltf=0.01)).check_model(TiedSAE(d=D, n_latents=M)), ValueError, r"\bn_groups=11 exceeds the number of neurons 10"),
    "GroupBiasAdaptation.train-on-TopKSAE": Case(lambda: _train(TopKSAE(d=D, n_latents=M, k=2), _x(16), hooks=[_gba()]), TypeError, r"\bmodel\.b_enc of TopKSAE is trained by the optimiser"),
    "GroupBiasAdaptation.train-on-tied-TopK-baseline": Case(lambda: _train(TiedTopKSAE(d=D, n_latents=M, k=2), _x(16), hooks=[_gba()]), TypeError, r"\bmodel\.b_enc of TiedTopKSAE is trained by the optimiser"),
    "SparsityController.target_l0-nan": Case(lambda: SparsityController(target_l0=NAN), ValueError, r"\btarget_l0 must be a finite number"),
    "SparsityController.coefficient-inf": Case(lambda: SparsityController(target_l0=2.0, coefficient=INF), ValueError, r"\bcoefficient must be a finite number"),
    "SparsityController.on-TopKSAE": Case(lambda: SparsityController(target_l0=2.0).check_model(TopKSAE(d=D, n_latents=M, k=2)), TypeError, r"\bSparsityController needs a model with a 'l1_coefficient'"),
    "SparsityController.attribute-not-a-scalar": Case(lambda: SparsityController(target_l0=2.0, attribute="W_dec").check_model(ReLUSAE(d=D, n_latents=M)), TypeError, r"\battribute='W_dec' of ReLUSAE is a tensor of shape \(10, 6\)"),
    "SparsityController.train-on-TiedTopK": Case(lambda: _train(TiedTopKSAE(d=D, n_latents=M, k=2), _x(16), hooks=[SparsityController(target_l0=2.0)]), TypeError, r"\bSparsityController needs a model with a 'l1_coefficient'"),
}


# ---------------------------------------------------------------------------------------------
# io: saving and loading
# ---------------------------------------------------------------------------------------------
def _saved(tmp_path, edit: Callable | None = None):
    folder = tmp_path / "run"
    save_sae(TopKSAE(d=D, n_latents=M, k=2), folder)
    if edit is not None:
        edit(folder)
    return folder


def _edit_config(fn):
    def edit(folder):
        meta = json.loads((folder / "config.json").read_text())
        fn(meta)
        (folder / "config.json").write_text(json.dumps(meta))

    return edit


def _swap_weights(folder):
    other = folder.parent / "other"
    save_sae(TopKSAE(d=D + 1, n_latents=M, k=2), other)
    (folder / "sae.safetensors").write_bytes((other / "sae.safetensors").read_bytes())


#: cases that need a folder: (folder maker(tmp_path), exception, message)
IO_CASES = {
    "load_sae.missing-folder": (lambda tmp: tmp / "nothing", FileNotFoundError, r"nothing does not exist or is not a folder"),
    "load_sae.empty-folder": (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", FileNotFoundError, r"empty/sae\.safetensors is missing"),
    "load_sae.a-file": (lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt", FileNotFoundError, r"f\.txt does not exist or is not a folder"),
    "load_sae.config-not-json": (lambda tmp: _saved(tmp, lambda f: (f / "config.json").write_text("{oops")), ValueError, r"config\.json is not valid JSON"),
    "load_sae.unknown-class": (lambda tmp: _saved(tmp, _edit_config(lambda m: m.update(sae_class="MysterySAE"))), ValueError, r"config\.json names SAE class 'MysterySAE'"),
    "load_sae.config-unknown-field": (lambda tmp: _saved(tmp, _edit_config(lambda m: m["config"].update(colour="red"))), ValueError, r"config\.json holds a config TopKSAEConfig cannot take.*colour"),
    "load_sae.config-bad-value": (lambda tmp: _saved(tmp, _edit_config(lambda m: m["config"].update(k=0))), ValueError, r"config\.json holds a config TopKSAEConfig cannot take.*\bk must be >= 1"),
    "load_sae.weights-damaged": (lambda tmp: _saved(tmp, lambda f: (f / "sae.safetensors").write_bytes(b"\x00" * 16)), ValueError, r"sae\.safetensors cannot be read"),
    "load_sae.weights-of-another-model": (lambda tmp: _saved(tmp, _swap_weights), ValueError, r"(?s)sae\.safetensors does not fit the TopKSAE that config\.json describes.*size mismatch for W_dec"),
}


@pytest.mark.parametrize("kind", list(IO_CASES))
def test_io_bad_input_raises_naming_it(tmp_path, kind):
    make, exc, match = IO_CASES[kind]
    folder = make(tmp_path)
    with pytest.raises(exc, match=match):
        load_sae(folder)


OTHER_IO_CASES = {
    "load_sae.folder-none": Case(lambda: load_sae(None), TypeError, r"\bfolder must be a path"),
    "load_sae.folder-int": Case(lambda: load_sae(3), TypeError, r"\bfolder must be a path"),
    "save_sae.not-an-sae": Case(lambda: save_sae("model", "unused"), TypeError, r"\bmodel must be an SAE"),
    "save_sae.folder-none": Case(lambda: save_sae(TopKSAE(d=D, n_latents=M, k=2), None), TypeError, r"\bfolder must be a path"),
}

ALL_CASES = {**MODEL_CASES, **DATA_CASES, **METRIC_CASES, **THEORY_CASES, **TRAINING_CASES, **OTHER_IO_CASES}


@pytest.mark.parametrize("case", [pytest.param(c, id=k) for k, c in ALL_CASES.items()])
def test_bad_input_raises_naming_it(case: Case):
    with pytest.raises(case.exc, match=case.match):
        case.call()


def test_the_catalogue_has_at_least_60_cases():
    assert len(ALL_CASES) + len(IO_CASES) >= 60


def test_every_registered_sae_is_in_the_catalogue():
    assert sorted(SAE_BUILDERS) == sorted(r.name for r in registered_saes())


# ---------------------------------------------------------------------------------------------
# refused means unchanged
# ---------------------------------------------------------------------------------------------
def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_init_b_dec_with_nan_leaves_the_model_unchanged():
    sae = TiedSAE(d=D, n_latents=M)
    before = _state(sae)
    with pytest.raises(ValueError):
        sae.init_b_dec_(_x(fill=NAN))
    assert _same(sae, before)


@pytest.mark.parametrize("name", ["BatchTopKSAE", "MatryoshkaSAE", "MPSAE"])
def test_training_forward_with_nan_leaves_the_pass_counters_unchanged(name):
    sae = SAE_BUILDERS[name]()
    before = _state(sae)
    with pytest.raises(ValueError):
        sae.training_forward(_x(fill=NAN))
    assert _same(sae, before)


def test_train_with_nan_data_leaves_the_model_unchanged():
    sae = TopKSAE(d=D, n_latents=M, k=2)
    before = _state(sae)
    with pytest.raises(ValueError):
        _train(sae, _data(NAN))
    assert _same(sae, before)


def test_activation_stats_refusing_nan_keep_their_state():
    stats = metrics.ActivationStats().update(_codes())
    mean = stats.mean.clone()
    with pytest.raises(ValueError):
        stats.update(_codes(fill=NAN))
    assert stats.count == 4 and torch.equal(stats.mean, mean)


@pytest.mark.parametrize("make", [lambda: TopKSAE(d=D, n_latents=M, k=2), lambda: TiedReLUSAE(d=D, n_latents=M)])
def test_gba_hook_refusing_a_model_leaves_it_and_itself_unchanged(make):
    sae, hook = make(), _gba()
    before = _state(sae)
    out = sae.training_forward(_x())
    with pytest.raises(TypeError):
        hook(sae, 1, out)
    assert _same(sae, before)
    assert hook.state_dict()["fires"] is None and hook.state_dict()["tokens"] == 0


def test_gba_hook_drives_models_whose_bias_is_outside_the_optimiser():
    for sae in (TiedSAE(d=D, n_latents=M), TiedTopKSAE(d=D, n_latents=M, k=2, train_b_enc=False)):
        _gba().check_model(sae)  # no error


def test_sparsity_controller_drives_every_penalised_sae():
    SparsityController(target_l0=2.0).check_model(ReLUSAE(d=D, n_latents=M))
    SparsityController(target_l0=2.0).check_model(TiedReLUSAE(d=D, n_latents=M))
    SparsityController(target_l0=2.0).check_model(MatryoshkaSAE(d=D, n_latents=M, n_prefixes=3))
    SparsityController(target_l0=2.0, attribute="l0_coefficient").check_model(JumpReLUSAE(d=D, n_latents=M))


def test_train_refuses_a_hook_that_cannot_drive_the_model_before_step_1():
    sae = TopKSAE(d=D, n_latents=M, k=2)
    before = _state(sae)
    with pytest.raises(TypeError):
        _train(sae, _x(16), hooks=[_gba()])
    assert _same(sae, before)


def test_public_modules_are_covered():
    """The catalogue reaches every area of the public API it promises."""
    names = " ".join(list(ALL_CASES) + list(IO_CASES))
    for needle in ("encode", "decode", "forward", "train", "SparseFeatureModel", "LogNormal", "Magnitudes", "ConceptTree",
                   "HierarchicalFeatureModel", "feature_recovery_rate", "fvu", "check_identifiability", "resonance_band",
                   "GroupBiasAdaptation", "SparsityController", "load_sae", "save_sae"):
        assert needle in names, needle
