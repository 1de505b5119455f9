import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)


@pytest.fixture
def digits_small():
    """The first 400 digits, for quick training runs."""
    from varilab.data import load, make_dataset

    ds = load("digits", seed=0)
    return make_dataset("digits-small", ds.x_train[:400].numpy().reshape(-1, 8, 8), seed=0)
