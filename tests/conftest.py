import os

import pytest
import torch

# `make test` runs the tests on every core (pytest-xdist); each worker gets its share of them, at least one thread,
# and so do the processes a test starts (the CLI, the harnesses) through OMP_NUM_THREADS. The controller reads this
# file before it starts the workers, which inherit its environment: a value set here is replaced by each worker's
# share (otherwise 2 workers on 2 cores each start 2-thread processes, and oversubscribed threads run several times
# slower); a value the user set is kept.
_THREADS = str(max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))
if "OMP_NUM_THREADS" not in os.environ or os.environ.get("_VARILAB_TESTS_SET_THREADS") == "1":
    os.environ["OMP_NUM_THREADS"] = _THREADS
    os.environ["_VARILAB_TESTS_SET_THREADS"] = "1"
torch.set_num_threads(int(_THREADS))


@pytest.fixture
def digits_small():
    """The first 400 digits, for quick training runs."""
    from varilab.data import load, make_dataset

    ds = load("digits", seed=0)
    return make_dataset("digits-small", ds.x_train[:400].numpy().reshape(-1, 8, 8), seed=0)
