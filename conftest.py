"""Root conftest: applies to the unit tests and to the notebooks run by nbmake.

The test command trains afresh: unless ``SAE_THEORY_CACHE`` is set, the run cache
(:mod:`sae_theory.experiments.cache`) lives in a temporary folder for the session (the notebook
kernels inherit it, so notebook 07 reuses notebook 06's runs) and is deleted at the end; likewise
the activation cache (``SAE_THEORY_ACTIVATIONS``, :mod:`sae_theory.data.activations`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_TMP: dict[str, str] = {}
#: The caches the test command keeps temporary unless set: the run cache and the activation cache
#: (sae_theory.data.activations), so a test run neither reads an earlier run's results nor leaves
#: files in the user's ~/.cache.
_CACHE_VARIABLES = {"SAE_THEORY_CACHE": "sae_theory_runs_", "SAE_THEORY_ACTIVATIONS": "sae_theory_activations_"}


def pytest_configure(config):
    for variable, prefix in _CACHE_VARIABLES.items():
        if not os.environ.get(variable):
            _TMP[variable] = tempfile.mkdtemp(prefix=prefix)
            os.environ[variable] = _TMP[variable]


def pytest_unconfigure(config):
    for variable, folder in list(_TMP.items()):
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop(variable, None)
        del _TMP[variable]


#: The notebooks, slowest first (07 right after 06, its group), with their cold quick-profile times in
#: minutes (the test command's --durations on 2026-12-07, one thread per worker; 06 measured alone
#: after Fig 4 went to three seeds at quick).
#: Under ``-n 2 --dist loadgroup`` (the README's command) the first two start at once on the two
#: workers and everything else fills in around them; 06 and 07 share a group, so 07 runs after 06 on
#: the same worker and finds 06's hierarchy runs in the shared run cache instead of training them again.
NOTEBOOK_ORDER = {
    "03_gba_vs_topk.ipynb": 14.3,
    "06_hierarchy.ipynb": 12.9,
    "07_cross_paper.ipynb": 1.4,
    "05_mp_adaptive_sparsity.ipynb": 5.2,
    "09_mp_real_network.ipynb": 4.4,
    "08_gba_real_network.ipynb": 4.2,
    "02_gba_resonance.ipynb": 1.5,
    "01_feature_model.ipynb": 0.4,
    "04_mp_theory.ipynb": 0.4,
}
XDIST_GROUPS = {"06_hierarchy.ipynb": "hierarchy", "07_cross_paper.ipynb": "hierarchy"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n``): notebooks first, in :data:`NOTEBOOK_ORDER`, then the unit tests
    in their usual order, so that the two long notebooks start at once and the unit tests fill the
    gaps; a notebook not listed runs after the listed ones. A serial run keeps the usual order
    (unit tests first: the quick feedback)."""
    if not hasattr(config, "workerinput"):  # the controller or a serial run
        return

    rank = {name: i for i, name in enumerate(NOTEBOOK_ORDER)}

    def key(item):
        name = item.path.name
        if item.path.suffix == ".ipynb":
            return (0, rank.get(name, len(rank)))
        return (1, 0)

    for item in items:
        if item.path.name in XDIST_GROUPS:
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS[item.path.name]))
    items.sort(key=key)  # stable: the unit tests keep their order
