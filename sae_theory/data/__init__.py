"""Generative models of data: the GBA statistical feature model X = H V and its laws."""

from .activations import ActivationCache, ActivationRequest, ActivationShards, extract_activations, import_activations, open_cache
from .hierarchical import ConceptTree, HierarchicalFeatureModel, Magnitudes, mixing_epsilon
from .features import coherent_features, gaussian_features, welch_bound
from .laws import Balanced, Bernoulli, CoefficientLaw, Constant, LogNormal, MixedSparsity, SupportLaw, Uniform, Zipf
from .sparse_feature_model import SparseFeatureModel

__all__ = [
    "ActivationCache",
    "ActivationRequest",
    "ActivationShards",
    "Balanced",
    "Bernoulli",
    "CoefficientLaw",
    "ConceptTree",
    "Constant",
    "HierarchicalFeatureModel",
    "LogNormal",
    "Magnitudes",
    "MixedSparsity",
    "SparseFeatureModel",
    "SupportLaw",
    "Uniform",
    "Zipf",
    "coherent_features",
    "extract_activations",
    "import_activations",
    "open_cache",
    "gaussian_features",
    "mixing_epsilon",
    "welch_bound",
]
