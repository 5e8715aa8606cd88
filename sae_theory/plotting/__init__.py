"""Figures: style, files with provenance, the method palette, and one figure function per
experiment.

* :mod:`~sae_theory.plotting.core`: :func:`use_style`, the figure folders (:func:`figure_dir`,
  ``$SAE_THEORY_FIGURE_DIR``), :func:`save_figure` with its JSON sidecar, and
  :func:`method_colors` (one colour per registered SAE family, shades for its variants);
* :mod:`~sae_theory.plotting.feature_model`: notebook 01 (feature model, identifiability);
* :mod:`~sae_theory.plotting.gba`: notebooks 02-03 (resonance band, imbalanced toy);
* :mod:`~sae_theory.plotting.mp`: notebooks 04-05 (MP-SAE theory, adaptive sparsity);
* :mod:`~sae_theory.plotting.hierarchy`: notebooks 06-07 (hierarchy, cross-paper);
* :mod:`~sae_theory.plotting.real`: notebook 09 (MP-SAE on a real transformer).

Everything public is re-exported here, so ``from sae_theory import plotting; plotting.X`` works
for every name. Figures whose hue is a method order it by
:func:`~sae_theory.models.registry.method_order` and colour it by :func:`method_colors`.

>>> from sae_theory.plotting import use_style, save_figure      # doctest: +SKIP
>>> use_style()                                                   # doctest: +SKIP
>>> save_figure(fig, "gba_fig_resonance", P, config=cfg)          # doctest: +SKIP
"""

from . import core, feature_model, gba, hierarchy, mp, real
from .core import (
    FIGURE_DIR_ENV,
    GRID_WIDTH,
    PNG_DPI,
    UNKNOWN_METHOD_COLOR,
    UPDATE_FIGURES_ENV,
    WALL_CLOCK_COLUMNS,
    base_figure_dir,
    figure_dir,
    hue_kwargs,
    mark_zero_bars,
    method_colors,
    name_zero_curves,
    panel_grid,
    plain_log_axis,
    repo_root,
    save_figure,
    shared_legend,
    use_style,
    written_figures,
)
from .feature_model import band_figure, conditions_figure, feature_frequency_figure, h3_sample_size_figure
from .gba import deployed_readings_figure, resonance_figure, topk_convergence_figure, toy_controls_figure, toy_figure, toy_sensitivity_figure
from .hierarchy import cross_paper_figure, hierarchy_figure, hierarchy_heatmaps, steps_sweep_figure, training_curves_figure
from .mp import adaptive_sparsity_figure, mp_theory_figure, noisy_superposition_figure, recovery_figure, superposition_figure
from .real import gba_real_consistency_figure, gba_real_frontier_figure, gba_real_neurons_figure, real_babel_figure, real_frontier_figure, real_inference_figure, real_inference_training_figure, real_training_figure

# every public name of the submodules, in their order (each module's __all__ is tested against its definitions)
__all__ = [*core.__all__, *feature_model.__all__, *gba.__all__, *mp.__all__, *hierarchy.__all__, *real.__all__]
