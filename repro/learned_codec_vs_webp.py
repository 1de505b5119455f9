"""Learned codecs against WebP on Fashion-MNIST: what holds the learned codecs near 23 dB, and whether the best of them,
the mean-scale hyperprior, reaches WebP between 0.5 and 2 bits per pixel.

Data: the vq-codec reproduction's (the first 2,000 Fashion-MNIST training images, the codec family's seeded split
holding out 400 test images). Rates are the bytes of real files over the test images' pixels: one .vlc file of the
400 images for a learned codec (its header shared), one file per image for JPEG and WebP (Pillow, every byte counted).

1. The ceiling: the factorized model as the vq-codec reproduction trains it (ReLU transforms, latents on a 7x7 grid,
   lambda 1e-3, 20 epochs of 25 steps) and one change at a time: a lower lambda, ten times the epochs, a finer latent
   grid (14x14), wider transforms, the GDN transforms of learned image codecs (at Adam 5e-4: at 2e-3 they diverged),
   no downsampling; then the hyperprior (ReLU transforms, 14x14 latents).
   Each run's test PSNR and rate (the model's estimate) per epoch, and its file's rate and PSNR at the end.
2. The hyperprior's rate-distortion curve (four lambdas, 150 epochs) beside JPEG's and WebP's, with
   the Bjontegaard delta rate of each learned curve against WebP's (`varilab.codec.rd.bd_rate`, over the PSNR range
   both reach).

The finding holds when the best learned codec's PSNR is at least WebP's at two rates of WebP's curve between 0.5 and
2 bits per pixel (WebP's qualities 0 to 100 give its points; below its lowest rate it has no file to compare).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from varilab.codec import classic
from varilab.codec.rd import bd_rate, quality_at

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _jobs import codec_split, run_all, train_then_eval  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / ".venv-compressai" / "bin" / "python"
PEER_LAMBDAS = (1e-3,)  # CompressAI's mean-scale hyperprior (mbt2018-mean) at the hyperprior's lowest-rate lambda
FIGURE = ROOT / "docs" / "repro" / "learned_codec_vs_webp.png"
FACTORIZED = ["--model", "factorized", "--hidden", "64"]
# (the change, its options, epochs); every arm is the factorized model of the vq-codec reproduction but for its change
BASE = [*FACTORIZED, "--transform", "relu", "--downsample", "2", "--latent", "16"]
FINE = [*FACTORIZED, "--transform", "relu", "--downsample", "1", "--latent", "4", "--rate-weight", "1e-4"]
GDN = [*FACTORIZED, "--transform", "gdn", "--rate-weight", "1e-4", "--lr", "5e-4"]  # GDN diverged at 2e-3
HYPER = ["--model", "hyperprior", "--transform", "relu", "--downsample", "1", "--latent", "8"]
CEILING = {
    "the reproduction's factorized (ReLU, 7x7 latents, lambda 1e-3)": ([*BASE, "--rate-weight", "1e-3"], 20),
    "lambda 1e-4": ([*BASE, "--rate-weight", "1e-4"], 20),
    "lambda 1e-4, 10x the epochs": ([*BASE, "--rate-weight", "1e-4"], 200),
    "lambda 1e-4, 14x14 latents": (FINE, 20),
    "lambda 1e-4, 14x14 latents, 10x the epochs": (FINE, 200),
    "lambda 1e-4, 14x14 latents, 128 channels": ([*FINE, "--hidden", "128"], 20),
    "GDN transforms, 7x7 latents, lambda 1e-4": ([*GDN, "--downsample", "2", "--latent", "16"], 20),
    "GDN, no downsampling (32 channels, one latent per pixel)": ([*GDN, "--downsample", "0", "--latent", "1",
                                                                 "--hidden", "32"], 20),
    "hyperprior (ReLU, 14x14 latents), lambda 1e-4": ([*HYPER, "--rate-weight", "1e-4"], 20),
}
HYPER_LAMBDAS = (3e-5, 1e-4, 3e-4, 1e-3)
HYPER_EPOCHS = 150
WEBP_QUALITIES = (0, 5, 10, 20, 35, 50, 65, 80, 95, 100)
JPEG_QUALITIES = (5, 10, 20, 35, 50, 75, 95)
BAND = (0.5, 2.0)
PAPER = ("the best learned codec (a mean-scale hyperprior) is at least as good as WebP in PSNR at two rates between "
         "0.5 and 2 bits per pixel on Fashion-MNIST test images")


def classic_curve(test: np.ndarray, fmt: str, qualities) -> list[tuple[float, float]]:
    points = []
    for q in qualities:
        decoded, size = classic.code(test, fmt, q)
        points.append((8 * size / test.size, float(-10 * np.log10(((decoded - test) ** 2).mean()))))
    return points


RIFF = 20  # bytes of a WebP file's container: "RIFF", its size, "WEBP", then the "VP8 " chunk's tag and size


def container_note(webp, hyper, pixels_per_image: int) -> str:
    """The comparison again with WebP's container bytes taken off every file: a learned file of many images pays its
    header once, a WebP file per image pays RIFF's 20 bytes each."""
    off = 8 * RIFF / pixels_per_image
    rates, psnrs = zip(*hyper)
    read = [(r - off, p, quality_at(rates, psnrs, r - off)) for r, p in webp if BAND[0] <= r - off <= BAND[1]]
    wins = sum(o >= p for _, p, o in read)
    return (f"Without WebP's container ({RIFF} bytes a file, {off:.2f} bits per pixel at this size) its points in the "
            f"band are at " + ", ".join(f"{r:.2f} bpp {p:.2f} dB (hyperprior {o:.2f})" for r, p, o in read)
            + f": the hyperprior is at or above WebP at {wins} of {len(read)}"
            + (" (read along its curve's end below its lowest rate)" if any(r < min(rates) for r, _, _ in read) else "")
            + ".")


def cost(name: str) -> float:
    """A job's rough CPU seconds, to start the longest first."""
    if name.startswith("CompressAI"):
        return 3.2 * HYPER_EPOCHS
    if name.startswith("hyperprior curve"):
        return 3.0 * HYPER_EPOCHS
    args, epochs = CEILING[name]
    return epochs * (20.0 if args[args.index("--downsample") + 1] == "0" else 2.0)


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run(quick: bool = False) -> dict:
    from varilab.data.builtin import fashion_mnist

    scale = 20 if quick else 1  # quick: a twentieth of the epochs, 200 images
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "fashion-mnist.npy"
        np.save(path, fashion_mnist()[0][:200 if quick else 2000].astype(np.float32))
        train, test = codec_split(path)
        test = test.astype(np.float64)
        lines, folders = {}, {}
        arms = dict(list(CEILING.items())[:2]) if quick else CEILING
        for i, (name, (args, epochs)) in enumerate(arms.items()):
            folders[name] = root / f"arm{i}"
            lines[name] = train_then_eval(str(folders[name]), *args, "--data", str(path), "--epochs",
                                          str(max(1, epochs // scale)))
        for lam in HYPER_LAMBDAS[:2] if quick else HYPER_LAMBDAS:
            name = f"hyperprior curve, lambda {lam:g}"
            folders[name] = root / f"hyper-{lam:g}"
            lines[name] = train_then_eval(str(folders[name]), *HYPER, "--rate-weight", str(lam), "--data", str(path),
                                          "--epochs", str(max(1, HYPER_EPOCHS // scale)))
        if PEER.exists() and not quick:  # the published model, the same steps on the same images
            np.save(root / "train.npy", train)
            np.save(root / "test.npy", test.astype(np.float32))
            for lam in PEER_LAMBDAS:
                lines[f"CompressAI mbt2018-mean, lambda {lam:g}"] = " ".join([
                    str(PEER), str(ROOT / "bench" / "compressai" / "bmshj2018.py"), "--model", "mean-scale", "--train",
                    str(root / "train.npy"), "--test", str(root / "test.npy"), "--rate-weight", str(lam), "--steps",
                    str(HYPER_EPOCHS * -(-len(train) // 64)), "--n", "64", "--m", "32"])
        results = run_all(dict(sorted(lines.items(), key=lambda kv: -cost(kv[0]))))
        curves = {name: history(folder) for name, folder in folders.items()}
        peer_note = ("CompressAI's mbt2018-mean (N 64, M 32, its own entropy coders; its bits are the bytes of its "
                     "strings, both parts; images padded to 32 x 32, its hyper transforms with one stride-2 layer "
                     "instead of two) trained the same steps at batch 64 on the same images, in .venv-compressai. "
                     if PEER.exists() and not quick else "CompressAI: missing (.venv-compressai not built). ")
    webp = classic_curve(test, "webp", WEBP_QUALITIES)
    jpeg = classic_curve(test, "jpeg", JPEG_QUALITIES)
    steps_per_epoch = -(-len(train) // 64)
    rows = []
    peers = {n: e for n, e in results.items() if n.startswith("CompressAI")}
    for name, e in results.items():
        if name in peers:
            continue
        h = curves[name]
        best = max(m["test_psnr"] for m in h)
        gap = h[-1]["psnr"] - h[-1]["test_psnr"]  # noisy-latent training PSNR against the rounded test PSNR
        rows.append(f"| {name} | {len(h) * steps_per_epoch:,} | {e['bpp_file']:.3f} | {e['psnr']:.2f} | "
                    f"{best:.2f} | {h[-1]['test_psnr'] - h[len(h) // 2]['test_psnr']:+.2f} | {gap:+.2f} |")
    hyper = sorted((e["bpp_file"], e["psnr"]) for n, e in results.items() if n.startswith("hyperprior curve"))
    w_rates, w_psnr = zip(*webp)
    checks, compared = {}, []
    for rate, psnr in webp:  # WebP's own points inside the band: the learned curve read at WebP's rates
        if BAND[0] <= rate <= BAND[1] and len(hyper) > 1:
            ours = quality_at(*zip(*hyper), rate)
            inside = hyper[0][0] <= rate <= hyper[-1][0]
            compared.append((rate, psnr, ours, inside))
    wins = [c for c in compared if c[2] >= c[1] and c[3]]
    checks[f"hyperprior at or above WebP at two of WebP's rates in {BAND[0]}-{BAND[1]} bpp ({len(wins)} of "
           f"{len(compared)})"] = len(wins) >= 2
    bd = {}
    peer_curve = sorted((e["bpp_file"], e["psnr"]) for e in peers.values())
    for name, points in (("hyperprior", hyper), ("JPEG", jpeg), ("CompressAI mbt2018-mean", peer_curve)):
        if len(points) < 2:
            continue
        try:
            bd[name] = bd_rate(w_rates, w_psnr, *zip(*points))
        except ValueError as err:
            bd[name] = str(err)
    if not quick:
        figure(curves, steps_per_epoch, results, hyper, webp, jpeg, peer_curve)
    table = ("| run | steps | bpp (file) | PSNR (dB, file) | best test PSNR over training (dB) | test PSNR, second half "
             "(dB) | train - test PSNR at the end (dB) |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    table += ("\n\n| codec | bpp (file) | PSNR (dB) |\n|---|---|---|\n"
              + "\n".join(f"| hyperprior | {r:.3f} | {q:.2f} |" for r, q in hyper)
              + "\n" + "\n".join(f"| WebP q{q} | {r:.3f} | {p:.2f} |" for q, (r, p) in zip(WEBP_QUALITIES, webp))
              + "\n" + "\n".join(f"| JPEG q{q} | {r:.3f} | {p:.2f} |" for q, (r, p) in zip(JPEG_QUALITIES, jpeg))
              + "".join(f"\n| {n} ({HYPER_EPOCHS * steps_per_epoch:,} steps) | {e['bpp_file']:.3f} | {e['psnr']:.2f} |"
                        for n, e in peers.items()))
    table += ("\n\n| at WebP's rate (bpp) | WebP PSNR (dB) | hyperprior PSNR (dB) | within the hyperprior's rates |\n"
              "|---|---|---|---|\n" + "\n".join(f"| {r:.3f} | {p:.2f} | {o:.2f} | {'yes' if i else 'no'} |"
                                                for r, p, o, i in compared))
    against_peer = "".join(
        f" At CompressAI's {r:.3f} bpp ({n.split(', ')[1]}): CompressAI {q:.2f} dB, the hyperprior "
        f"{quality_at(*zip(*hyper), r):.2f} dB{'' if hyper[0][0] <= r <= hyper[-1][0] else ' (read along its curve)'}."
        for n, (r, q) in ((n, (e["bpp_file"], e["psnr"])) for n, e in peers.items()) if len(hyper) > 1)
    bd_text = "; ".join(f"{k} {v:+.1f}%" if isinstance(v, float) else f"{k}: {v}" for k, v in bd.items())
    return {"title": "Learned codecs against WebP on Fashion-MNIST: the ceiling and the hyperprior",
            "finding": PAPER, "held": all(checks.values()), "checks": checks, "table": table,
            "notes": f"BD-rate against WebP (negative: fewer bits for the same PSNR): {bd_text}. "
                     f"{container_note(webp, hyper, test[0].size) if len(hyper) > 1 else ''} "
                     f"{peer_note}{against_peer.strip()} Test images: {len(test)} of 28 x 28; training images: {len(train)}, batch 64 "
                     f"({steps_per_epoch} steps an epoch). Figure: docs/repro/learned_codec_vs_webp.png (test PSNR "
                     "against training steps for each run; PSNR against the file rate).",
            "bd_rate": bd, "webp": webp, "jpeg": jpeg, "hyperprior": hyper,
            "results": results, "curves": {k: [(m["epoch"], m["test_psnr"], m["test_bpp"]) for m in v]
                                           for k, v in curves.items()}}


def figure(curves, steps_per_epoch, results, hyper, webp, jpeg, peer=()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for name, h in curves.items():
        if name.startswith("hyperprior curve") or name not in CEILING:
            continue
        a.plot([m["epoch"] * steps_per_epoch for m in h], [m["test_psnr"] for m in h], label=name)
        b.plot([results[name]["bpp_file"]], [results[name]["psnr"]], "o", label=name)
    a.set(xscale="log", xlabel="training steps (batch 64)", ylabel="test PSNR (dB), rounded latents",
          title="PSNR against training")
    a.legend(fontsize=7)
    for label, points, style in (("hyperprior (4 lambdas)", hyper, "k-o"), ("WebP", webp, "b--s"),
                                 ("JPEG", jpeg, "r:^"), ("CompressAI mbt2018-mean", peer, "m-D")):
        if points:
            b.plot(*zip(*points), style, label=label)
    b.axvspan(*BAND, color="0.93")
    b.set(xlabel="bits per pixel (file)", ylabel="PSNR (dB)", title="rate-distortion (test images)", xlim=(0, 6))
    b.legend(fontsize=7)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1)[:4000])
