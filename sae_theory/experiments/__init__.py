"""One function per paper figure or table, each taking a :class:`~sae_theory.profiles.Profile`
and returning a tidy DataFrame, so a figure can be redrawn without recomputing."""

from .feature_model import frequency_check, h3_sample_size, identifiability_grid, theorem_band
from .gba import consistency, frontier, gba_vs_topk, resonance
from .gba_readings import deployed_readings
from .mp_theory import convergence, earlier_atom_cosines, proposition_checks
from .mp import adaptive_sparsity, threshold_l0, threshold_tradeoff
from .hierarchical import absorption, hierarchy
from .cross_paper import mp_on_feature_model
from . import real_gba, real_mp

__all__ = ["deployed_readings", "absorption", "hierarchy", "mp_on_feature_model", "adaptive_sparsity", "threshold_l0", "threshold_tradeoff", "consistency", "convergence", "earlier_atom_cosines", "proposition_checks", "frequency_check", "frontier", "gba_vs_topk", "h3_sample_size", "identifiability_grid", "resonance", "theorem_band"]
