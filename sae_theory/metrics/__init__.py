"""Metrics as pure functions of tensors (docs/papers.md#gba-metrics,
docs/papers.md#gba-author-code): feature recovery (FRR, SynthSAEBench's decoder-cosine MCC),
cross-seed consistency (MCS), reconstruction (L0, FVU, MSE) and per-neuron activation statistics.

Everything computes in float64 internally, whatever the input dtype or device; scalars come back
as Python floats, per-row or per-neuron vectors as float64 tensors on CPU.
"""

from .reconstruction import (
    ActivationStats,
    activation_frequency,
    dead_fraction,
    fraction_active,
    fvu,
    l0,
    max_activation,
    mse,
    z_score,
)
from .convergence import metric_settled, plateaued
from .hierarchy import COACTIVE_READINGS, absorption, babel, babel_coactive, coactive_readings, effective_rank, flat_mse, hierarchical_mse, match_latents
from .modality import modality_score
from .recovery import best_cosine, decoder_mcc, feature_recovery_rate, max_cosine_similarity, mcs_fraction, top_fraction, unit_rows

__all__ = [
    "COACTIVE_READINGS",
    "modality_score",
    "absorption",
    "babel",
    "babel_coactive",
    "coactive_readings",
    "effective_rank",
    "flat_mse",
    "hierarchical_mse",
    "match_latents",
    "ActivationStats",
    "activation_frequency",
    "best_cosine",
    "dead_fraction",
    "decoder_mcc",
    "feature_recovery_rate",
    "fraction_active",
    "fvu",
    "l0",
    "max_activation",
    "max_cosine_similarity",
    "mcs_fraction",
    "mse",
    "metric_settled",
    "plateaued",
    "top_fraction",
    "unit_rows",
    "z_score",
]
