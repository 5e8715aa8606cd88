"""Shared fixtures: every test starts from the same global RNG state (STYLE.md §7). Tests still
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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny problems: on a busy 2-core machine the thread pool's
    overhead can make a 32 x 8 backward pass hundreds of times slower. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
