"""CompressAI's factorized-prior model (Balle et al., 2018, `bmshj2018-factorized`), or its mean-scale hyperprior
(Minnen et al., 2018, `mbt2018-mean`), trained at varilab's scale, run in .venv-compressai (bench/compressai/setup.sh),
printing one JSON line.

usage: bmshj2018.py --train X.npy --test Y.npy --rate-weight L [--model factorized|mean-scale] [--steps S] [--n N]
       [--m M] [--seed 0]

Images are grey [N, H, W] in [0, 1], padded (edge pixels repeated) to a multiple of 16 for the four stride-2 layers
(mean-scale: of 32, its hyper transforms keeping one of their two stride-2 layers, so that 28-pixel images are not
padded to 64); the decoded images are cropped back. The objective is varilab's, MSE + L * bpp (CompressAI's lmbda * 255^2 MSE + bpp
with lmbda = 1 / (255^2 L)). Bits per pixel count the bytes of CompressAI's strings over the original pixels (the
latent shape, known to both sides, is not counted). Timing: one thread, the whole test set in one batch.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--rate-weight", type=float, required=True)
    p.add_argument("--steps", type=int, default=3000, help="training steps (0: untrained, for timing)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", choices=("factorized", "mean-scale"), default="factorized")
    a = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    from compressai.losses import RateDistortionLoss
    from compressai.models import FactorizedPrior, MeanScaleHyperprior
    from compressai.models.utils import conv, deconv

    xtr = torch.as_tensor(np.load(a.train), dtype=torch.float32)[:, None]
    xte = torch.as_tensor(np.load(a.test), dtype=torch.float32)[:, None]
    h, w = xte.shape[-2:]
    side = 16 if a.model == "factorized" else 32
    ph, pw = (-h) % side, (-w) % side
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)

    def padded(x):
        return F.pad(x, pad, mode="replicate")

    if a.model == "factorized":
        net = FactorizedPrior(a.n, a.m)
    else:  # h_a's last convolution and h_s's first at stride 1: the hyper latent one stride-2 below y, as varilab's
        net = MeanScaleHyperprior(a.n, a.m)
        net.h_a[4] = conv(a.n, a.n, stride=1, kernel_size=5)
        net.h_s[0] = conv(a.n, a.m, stride=1, kernel_size=5)
    net.g_a[0], net.g_s[-1] = conv(1, a.n), deconv(a.n, 1)  # grey images: one channel in and out
    main_params = [q for n, q in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [q for n, q in net.named_parameters() if n.endswith(".quantiles")]
    opt, aux_opt = torch.optim.Adam(main_params, 1e-3), torch.optim.Adam(aux_params, 1e-3)
    loss_fn = RateDistortionLoss(lmbda=1.0 / (255 ** 2 * a.rate_weight))
    t0 = time.perf_counter()
    for _ in range(a.steps):
        x = padded(xtr[torch.randint(len(xtr), (a.batch_size,))])
        loss = loss_fn(net(x), x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        aux = net.aux_loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
    train_s = time.perf_counter() - t0
    net.eval()
    net.update(force=True)
    x = padded(xte)
    with torch.no_grad():
        warm = net.compress(x[:8])  # one warm-up call each, as the in-process contenders get
        net.decompress(warm["strings"], warm["shape"])
        t = time.perf_counter()
        enc = net.compress(x)
        enc_s = time.perf_counter() - t
        t = time.perf_counter()
        dec = net.decompress(enc["strings"], enc["shape"])
        dec_s = time.perf_counter() - t
    xhat = dec["x_hat"].clamp(0, 1)[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]
    mse = float(F.mse_loss(xhat, xte))
    pixels = xte.numel()
    nbytes = sum(len(s) for part in enc["strings"] for s in part)  # the hyperprior's side strings counted too
    tag = "bmshj2018" if a.model == "factorized" else "mbt2018-mean"
    np.save(a.test.replace(".npy", f"-{tag}-{a.rate_weight:g}.npy"), xhat[:, 0].numpy())
    print(json.dumps({"bpp_file": 8 * nbytes / pixels, "psnr": -10 * math.log10(max(mse, 1e-12)), "mse": mse,
                      "bytes": nbytes, "encode_mp_s": pixels / enc_s / 1e6, "decode_mp_s": pixels / dec_s / 1e6,
                      "train_seconds": train_s, "parameters": sum(q.numel() for q in net.parameters())}))


if __name__ == "__main__":
    main()
