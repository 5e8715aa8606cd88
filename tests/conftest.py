"""Shared fixtures: every test starts from the same global RNG state. Tests still
pass explicit generators; the seeding only guards against hidden use of global state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

GLOBAL_SEED = 0


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(GLOBAL_SEED)
    np.random.seed(GLOBAL_SEED)
    torch.manual_seed(GLOBAL_SEED)
    yield


@pytest.fixture
def cpu_generator():
    """A fresh explicit CPU generator, seeded."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session", autouse=True)
def _thread_rule():
    """The package's one thread rule (:func:`sae_theory.profiles.set_threads`: one intra-op
    thread unless ``SAE_THEORY_THREADS`` says otherwise) for the whole session: on a busy 2-core
    machine a second thread can make the tiny problems of the tests many times slower."""
    from sae_theory.profiles import set_threads

    set_threads()
    yield
