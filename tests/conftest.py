import os

import pytest
import torch

# `make test` runs the tests on every core (pytest-xdist); each worker gets its share of them, at least one thread.
_THREADS = str(max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
torch.set_num_threads(int(_THREADS))


@pytest.fixture
def digits_small():
    """The first 400 digits, for quick training runs."""
    from varilab.data import load, make_dataset

    ds = load("digits", seed=0)
    return make_dataset("digits-small", ds.x_train[:400].numpy().reshape(-1, 8, 8), seed=0)
