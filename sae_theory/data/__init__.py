"""Generative models of data: the GBA statistical feature model X = H V and its laws."""

from .features import coherent_features, gaussian_features, welch_bound
from .laws import Balanced, Bernoulli, CoefficientLaw, Constant, LogNormal, MixedSparsity, SupportLaw, Uniform, Zipf
from .sparse_feature_model import SparseFeatureModel

__all__ = [
    "Balanced",
    "Bernoulli",
    "CoefficientLaw",
    "Constant",
    "LogNormal",
    "MixedSparsity",
    "SparseFeatureModel",
    "SupportLaw",
    "Uniform",
    "Zipf",
    "coherent_features",
    "gaussian_features",
    "welch_bound",
]
