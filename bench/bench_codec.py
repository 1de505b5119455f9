"""Image codecs (megapixels per second, CPU, one thread): encoding images to a .vlc file and decoding it back with
`vq-codec`, the `factorized` baseline and the mean-scale `hyperprior` (`varilab.families.codec`: network, quantisation,
range coding by constriction, the container), against JPEG and WebP through Pillow.

Images: 512 Fashion-MNIST test images (28 x 28) in [0, 1], or, where the Debian package is missing, 512 generated
28 x 28 images (smooth stripes with noise), named in the result. Both learned codecs have hidden 64, 8 latent channels
and two stride-2 convolutions (a 7 x 7 latent grid), as in the rate-distortion reproduction, where vq-codec at m = 4,
K = 64 (1.43 bits per pixel on Fashion-MNIST) lies 0.31 dB above the factorized front, whose nearest run is latent 8
at 1.41 bits per pixel: vq-codec quantises each latent vector with m = 4 codebooks of K = 64 codes, the factorized
model each latent to an integer in [-15, 15] under a density per channel. The hyperprior runs at its defaults, the
configuration that passes WebP in docs/repro/learned_codec_vs_webp.md (ReLU transforms, hidden 64, 8 latent channels
on a 14 x 14 grid, codes in [-63, 63] under 64 Gaussian scale tables, an 8-channel hyper latent on 7 x 7). Their weights are freshly initialised (speed does not depend on
training; random codes are the coder's worst case, about 6 bits each) and their integer tables frozen. JPEG (quality
75) and WebP (quality 50) code each image on its own.

Encoding runs the encoder, quantises, range-codes and packs the file; decoding checks and unpacks the file,
range-decodes and runs the decoder. The contenders alternate (ABBA) after one warm-up each; figures are medians over
rounds, as seconds per megapixel and megapixels per second. --quick: 64 images, one round. Run alone: `python
bench/bench_codec.py [--quick]`.

CompressAI's bmshj2018 factorized prior (N = 64, M = 32, untrained, its own ANS coder) runs in .venv-compressai
(bench/compressai/setup.sh) in a process of its own, timed once (after a warm-up call on 8 images) on the same images
padded to 32 x 32: beside the others, not interleaved with them. Where that environment is missing, the result says so.
"""
from __future__ import annotations

import io
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import timing  # bench/timing.py

FULL = {"images": 512, "rounds": 5}
QUICK = {"images": 64, "rounds": 1}


def _images(n: int) -> tuple[torch.Tensor, str]:
    try:
        from varilab.data import load

        x = load("fashion-mnist").x_test[:n].reshape(-1, 1, 28, 28)
        return x, "Fashion-MNIST test images"
    except (ImportError, OSError, ValueError):
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:28, :28] / 27.0
        phase = rng.uniform(0, 6, (n, 1, 1))
        x = 0.5 + 0.35 * np.sin(7 * xx[None] + 3 * yy[None] + phase) + 0.05 * rng.standard_normal((n, 28, 28))
        return torch.as_tensor(np.clip(x, 0, 1)[:, None], dtype=torch.float32), "generated stripes (Fashion-MNIST missing)"


JPEG, WEBP = "JPEG (Pillow, quality 75)", "WebP (Pillow, quality 50)"
CLASSIC = {JPEG: ("JPEG", 75), WEBP: ("WEBP", 50)}


def _classic_encode(grey: np.ndarray, name: str = JPEG) -> list[bytes]:
    from PIL import Image

    fmt, quality = CLASSIC[name]
    out = []
    for img in np.rint(grey * 255).astype(np.uint8):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, fmt, quality=quality)
        out.append(buf.getvalue())
    return out


def _classic_decode(files: list[bytes]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("L"), dtype=np.float32) / 255 for b in files])


def _run(model_name: str, x: torch.Tensor, out: Path):
    """A codec Run around a fresh model of `model_name`, its weights file written so files carry its identity."""
    from varilab.checkpoint import save_weights
    from varilab.families import codec as family
    from varilab.families.folder import WEIGHTS
    from varilab.families.protocol import Run

    own = {"latent": 8, "downsample": 2}  # the reproduction's; the hyperprior at its defaults
    if model_name == "hyperprior":
        own = {"latent": 8, "downsample": 1, "support": 63, "transform": "relu"}
    opts = replace(family.CodecOptions(model=model_name), hidden=64, groups=4, codes=64, **own)
    model = family.make_model(opts, None).eval()  # the data set only shapes INR codecs
    model.freeze_tables()
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / WEIGHTS, model)

    class Data:
        image_shape = tuple(x.shape[-2:])
        name = "bench"

    return Run(out, family.FAMILY, opts, model, Data())


def run(quick: bool) -> dict:
    import tempfile

    from varilab.families import codec as family

    plan = QUICK if quick else FULL
    t_start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, source = _images(plan["images"])
        megapixels = x.numel() / 1e6
        tmp = Path(tempfile.mkdtemp(prefix="varilab-bench-codec-"))
        runs = {name: _run(name, x, tmp / name) for name in ("vq-codec", "factorized", "hyperprior")}
        files = {name: family.encode(r, x)[0] for name, r in runs.items()}
        grey = x[:, 0].numpy()
        fns = {}
        for name, r in runs.items():
            fns[("encode", name)] = lambda arg, r=r: family.encode(r, x)
            fns[("decode", name)] = lambda arg, r=r, data=files[name]: family.decode(r, data)
        classic_files = {name: _classic_encode(grey, name) for name in CLASSIC}
        for name, coded in classic_files.items():
            fns[("encode", name)] = lambda arg, name=name: _classic_encode(grey, name)
            fns[("decode", name)] = lambda arg, coded=coded: _classic_decode(coded)
        with torch.no_grad():
            times, other_busy = timing.other_cpu_busy(lambda: timing.abba(fns, None, None, plan["rounds"], megapixels))
    finally:
        torch.set_num_threads(threads)
    rows, ratios = timing.per_group(times, ("encode", "decode"), baseline="factorized")
    for row in rows:
        row["megapixels_per_s"] = 1 / row["median_s"]
    peer_notes = []
    for model, label in (("factorized", "bmshj2018"), ("mean-scale", "mbt2018-mean")):
        peer, note = _compressai(x, tmp, model, label)
        peer_notes.append(note)
        if peer:
            base = {r["name"].split(" / ")[0]: r["median_s"] for r in rows if r["name"].endswith(" / factorized")}
            for group in ("encode", "decode"):
                median = 1 / peer[f"{group}_mp_s"]
                rows.append({"name": f"{group} / CompressAI {label} (own process, one run)", "median_s": median,
                             "p10_s": median, "p90_s": median, "runs": 1,  # one run: no spread measured
                             "ratio": median / base[group], "megapixels_per_s": peer[f"{group}_mp_s"]})
    rate = {name: 8 * len(data) / (megapixels * 1e6) for name, data in files.items()}
    faster = ratios["decode / vq-codec"] < 1
    print(f"[bench] codec: decode vq-codec / factorized {ratios['decode / vq-codec']:.3f}", file=sys.stderr)
    return {
        "title": f"Image codecs: encode and decode, {len(x)} images of 28 x 28 (CPU, one thread)",
        "description": " ".join(" ".join(__doc__.split("\n\n")[i].split()) for i in (0, 1, 2)),
        "unit": "s/megapixel",
        "baseline": "decode / factorized",  # each group against its own factorized row
        "contenders": rows,
        "target": {"text": "vq-codec decodes faster than the factorized baseline (their rate-distortion comparison is "
                           "the reproduction's)", "decode_ratio": ratios["decode / vq-codec"], "met": bool(faster)},
        "notes": ["Ratios: each group (encode, decode) against its own factorized row; megapixels per second are "
                  "1 / median.", f"Images: {source}.",
                  "Bits per pixel of these untrained models' files: " + ", ".join(f"{k} {v:.3f}" for k, v in rate.items())
                  + "; " + ", ".join(f"{name}: {8 * sum(map(len, coded)) / (megapixels * 1e6):.3f}"
                                     for name, coded in classic_files.items()) + ".", *peer_notes],
        "checks": {"other_cpu_busy_while_timing": other_busy},
        "settings": {**plan, "threads": 1},
        "seconds": time.perf_counter() - t_start,
    }


PEER_ENV = Path(__file__).resolve().parent.parent / ".venv-compressai" / "bin" / "python"


def _compressai(x: torch.Tensor, tmp: Path, model: str = "factorized", label: str = "bmshj2018") -> tuple[dict | None, str]:
    """CompressAI's encode and decode megapixels per second on images x, or None and why not."""
    import json
    import os
    import subprocess

    if not PEER_ENV.exists():
        return None, ("CompressAI: missing (.venv-compressai not built; bench/compressai/setup.sh builds it, `make "
                      "bench` tries).")
    images = tmp / "peer.npy"
    np.save(images, x[:, 0].numpy())
    proc = subprocess.run([str(PEER_ENV), str(Path(__file__).resolve().parent / "compressai" / "bmshj2018.py"),
                           "--train", str(images), "--test", str(images), "--rate-weight", "0.01", "--steps", "0",
                           "--n", "64", "--m", "32", "--model", model], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        return None, f"CompressAI: failed ({(proc.stderr.strip().splitlines() or ['no message'])[-1]})."
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    return peer, (f"CompressAI {label} (untrained, N 64, M 32, {peer['parameters']:,} parameters): "
                  f"{peer['bpp_file']:.3f} bits per pixel; timed once in its own process, after one warm-up call on 8 images.")


if __name__ == "__main__":
    timing.main(__doc__, run)
