"""A quick probe, not a benchmark of record: tokens per second of one TopK SAE training step through
`varilab.models.sae` against the same step written densely inline.

Shape: d = 384, F = 3072, k = 32, batch 512, float32, CPU, Adam (lr 4e-4). A step is the loss,
backward, removing the decoder gradient's parallel part, the Adam update and renormalising the
decoder columns. The dense contender scatters the k codes into a [B, F] matrix and multiplies it by
W_dec, and lets autograd differentiate the full encoder matmul. No latent is dead in so few tokens,
so AuxK is inactive in both. Both start from the same weights, see the same batches and alternate
step by step after a warm-up; their losses at the start must agree.

Run: `python bench/sae_speed_probe.py [--steps N]` (about 20 to 40 s on 2 cores at the default).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from varilab.models.sae import SAE, SAEConfig, train_step

D, FEATURES, K, BATCH, LR = 384, 3072, 32, 512, 4e-4


def dense_step(p: dict, opt: torch.optim.Optimizer, x: torch.Tensor) -> torch.Tensor:
    """The plain TopK step: full encoder matmul, codes scattered to [B, F], dense decoder matmul."""
    opt.zero_grad(set_to_none=True)
    pre = (x - p["b_dec"]) @ p["W_enc"].T + p["b_enc"]  # W_enc (x - b_dec) + b_enc
    values, indices = torch.relu(pre).topk(K, dim=-1)
    z = torch.zeros_like(pre).scatter(1, indices, values)  # TopK(ReLU(pre)), [B, F]
    x_hat = z @ p["W_dec"] + p["b_dec"]
    loss = (x - x_hat).pow(2).sum(-1).mean()
    loss.backward()
    with torch.no_grad():
        W, g = p["W_dec"], p["W_dec"].grad
        g.sub_((g * W).sum(1, keepdim=True) * W)  # unit-norm rows: drop g's part along d_j
        opt.step()
        W.div_(W.norm(dim=1, keepdim=True))
    return loss.detach()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per contender")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = torch.randn(8, BATCH, D) * 2 + 0.5
    model = SAE(SAEConfig(d=D, features=FEATURES, k=K))
    model.init_from_data(data[0], iters=20)
    dense = {n: torch.nn.Parameter(t.detach().clone()) for n, t in model.named_parameters()}
    opt_v = torch.optim.Adam(model.parameters(), lr=LR)
    opt_d = torch.optim.Adam(dense.values(), lr=LR)

    with torch.no_grad():
        loss_v = model.loss(data[0])["loss"]
        pre = (data[0] - dense["b_dec"]) @ dense["W_enc"].T + dense["b_enc"]
        v, i = torch.relu(pre).topk(K, dim=-1)
        x_hat = torch.zeros_like(pre).scatter(1, i, v) @ dense["W_dec"] + dense["b_dec"]
        loss_d = (data[0] - x_hat).pow(2).sum(-1).mean()
    assert torch.allclose(loss_v, loss_d, rtol=1e-4), (float(loss_v), float(loss_d))
    model.tokens_since_fired.zero_()

    for s in range(3):  # warm-up
        train_step(model, opt_v, data[s % len(data)])
        dense_step(dense, opt_d, data[s % len(data)])
    times = {"varilab topk (sparse backward)": [], "dense topk loop": []}
    for s in range(args.steps):
        x = data[s % len(data)]
        order = [0, 1] if s % 2 == 0 else [1, 0]  # alternate who goes first
        for c in order:
            t0 = time.perf_counter()
            if c == 0:
                train_step(model, opt_v, x)
            else:
                dense_step(dense, opt_d, x)
            times[list(times)[c]].append(time.perf_counter() - t0)
    result = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = {"median_step_s": med, "tokens_per_s": BATCH / med}
        print(f"{name:32s} median step {med * 1e3:7.1f} ms   {BATCH / med:9.0f} tokens/s")
    names = list(times)
    print(f"speed-up: {result[names[1]]['median_step_s'] / result[names[0]]['median_step_s']:.2f}x "
          f"(threads: {torch.get_num_threads()})")
    return result


if __name__ == "__main__":
    main()
