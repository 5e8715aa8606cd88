"""The theorem side: identifiability conditions measured on data, the recovery theorem's bounds
as float functions, and their sympy derivations (imported lazily: training never needs sympy)."""

from . import bounds
from .conditions import ConditionResult, IdentifiabilityReport, check_identifiability, cosine_extremes, mutual_coherence

__all__ = ["ConditionResult", "IdentifiabilityReport", "bounds", "check_identifiability", "cosine_extremes", "mutual_coherence"]
