"""Run by test_ddp.py, once under `torchrun --nproc_per_node 2` and once alone: trains and writes weights to argv[1].

The objective is deterministic (the decoder is evaluated at the posterior mean), so that two processes
sharing each global batch must end with exactly the weights of one process taking the whole batch.
"""
import itertools
import sys

import torch

from varilab.core import kl
from varilab.data import make_dataset
from varilab.models import build_model
from varilab.train import fit


def deterministic_loss(model, x):
    q = model.encode(x)
    recon = model.decode(q.mean).log_prob(x)
    kl_z = kl(q, model.prior())
    return {"loss": (kl_z - recon).mean(), "kl": kl_z.mean()}


if __name__ == "__main__":
    torch.set_num_threads(1)
    x = torch.rand(300, 12, generator=torch.Generator().manual_seed(0)).numpy()
    ds = make_dataset("uniform", x, seed=0)
    torch.manual_seed(0)
    model = build_model("vae", 12, latent_dim=3, hidden=[16])
    # 240 training rows in global batches of 45 (5 x 45 + 15): shares of 23/22 and 8/7 rows, so the
    # per-rank loss scaling matters
    objective = deterministic_loss
    if sys.argv[1] == "diverge":  # the loss turns NaN on every rank at the first step of epoch 2 (6 steps an epoch)
        steps = itertools.count()

        def objective(model, x):
            out = deterministic_loss(model, x)
            return {**out, "loss": out["loss"] * float("nan")} if next(steps) >= 6 else out
    fit(model, ds, out=sys.argv[1], epochs=3, batch_size=45, lr=1e-2, objective=objective, quiet=True)
