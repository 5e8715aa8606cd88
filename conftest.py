"""Root conftest: applies to the unit tests and to the notebooks run by nbmake.

The test command trains afresh: unless ``SAE_THEORY_CACHE`` is set, the run cache
(:mod:`sae_theory.experiments.cache`) lives in a temporary folder for the session (the notebook
kernels inherit it, so notebook 07 reuses notebook 06's runs) and is deleted at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_TMP_CACHE: str | None = None


def pytest_configure(config):
    global _TMP_CACHE
    if not os.environ.get("SAE_THEORY_CACHE"):
        _TMP_CACHE = tempfile.mkdtemp(prefix="sae_theory_runs_")
        os.environ["SAE_THEORY_CACHE"] = _TMP_CACHE


def pytest_unconfigure(config):
    if _TMP_CACHE is not None:
        shutil.rmtree(_TMP_CACHE, ignore_errors=True)
        os.environ.pop("SAE_THEORY_CACHE", None)
