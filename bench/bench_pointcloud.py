"""Point-cloud codecs (shapes per second, CPU, one thread): Squeeze3D's `compress` and `decompress` through a .vlc
file (`varilab.families.pointcloud`: E's PointNet encoder, f, quantisation, range coding by constriction, the
container; and back through g and G's decoder) against Google's Draco through DracoPy (its point-cloud encoder at 8
bits a coordinate, compression level 10, and its decoder), on the same procedural shapes of 512 points.

The Squeeze3D run is freshly initialised at the family's default sizes (16 latents, width 256, 16-bit codes of 4 x 4
bits): its speed does not depend on training. Squeeze3D codes all shapes into one file; Draco writes a file a shape.
The contenders alternate (ABBA) after one warm-up each; figures are medians over rounds, as seconds per shape and
shapes per second. Peak memory: each contender alone in a fresh process, compressing and decompressing 10,000
shapes. --quick: 64 shapes, one round, no memory run. Run alone: `python bench/bench_pointcloud.py [--quick]`."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import timing  # bench/timing.py

FULL = {"shapes": 1000, "rounds": 5, "memory_shapes": 10_000}
QUICK = {"shapes": 64, "rounds": 1, "memory_shapes": None}
SQUEEZE, DRACO = "Squeeze3D (16 bits a shape)", "Draco (DracoPy, 8 bits a coordinate)"


def _shapes(n: int) -> torch.Tensor:
    from varilab.data import pointclouds as pc

    return torch.as_tensor(pc.procedural(n, points=512, seed=0)[0])


def _run(out: Path):
    """A squeeze3d Run around fresh E, G and mapping networks, its weights file written so files carry its identity."""
    import dataclasses

    from varilab.checkpoint import save_weights
    from varilab.families import pointcloud as family
    from varilab.families.folder import WEIGHTS
    from varilab.families.protocol import Run
    from varilab.models.pointcloud.autoencoder import PointCloudAEConfig

    opts = family.PointCloudOptions(model="squeeze3d", generator="-", encoder="-")
    parts = {k: dataclasses.asdict(PointCloudAEConfig()) for k in ("encoder", "generator")}
    model = family.make_model(opts, parts).eval()
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / WEIGHTS, model)
    return Run(out, family.FAMILY, opts, model, None)


def _contenders(x: torch.Tensor, tmp: Path) -> dict:
    from varilab.codec import points as pc
    from varilab.families import coding
    from varilab.families.pointcloud.files import SHAPES

    run = _run(tmp / "squeeze3d")
    shapes = x.numpy()
    vlc = coding.encode(run, x, SHAPES)[0]
    draco = [pc.draco_encode(s, bits=8) for s in shapes]
    return {("compress", SQUEEZE): lambda arg: coding.encode(run, x, SHAPES),
            ("decompress", SQUEEZE): lambda arg: coding.decode(run, vlc, [512, 3], SHAPES),
            ("compress", DRACO): lambda arg: [pc.draco_encode(s, bits=8) for s in shapes],
            ("decompress", DRACO): lambda arg: [pc.draco_decode(f) for f in draco]}, len(vlc), sum(map(len, draco))


def run(quick: bool) -> dict:
    import tempfile

    plan = QUICK if quick else FULL
    t_start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = _shapes(plan["shapes"])
        fns, vlc_bytes, draco_bytes = _contenders(x, Path(tempfile.mkdtemp(prefix="varilab-bench-pc-")))
        with torch.no_grad():
            times, other_busy = timing.other_cpu_busy(lambda: timing.abba(fns, None, None, plan["rounds"], len(x)))
    finally:
        torch.set_num_threads(threads)
    rows, ratios = timing.per_group(times, ("compress", "decompress"), baseline=DRACO)
    for row in rows:
        row["shapes_per_s"] = 1 / row["median_s"]
        contender = row["name"].split(" / ", 1)[1]
        row["peak_rss_mb"] = (timing.child_peak_rss(__file__, contender) if plan["memory_shapes"] else None)
    print(f"[bench] pointcloud: compress Squeeze3D / Draco {ratios[f'compress / {SQUEEZE}']:.3f}", file=sys.stderr)
    return {
        "title": f"Point-cloud codecs: compress and decompress, {len(x)} shapes of 512 points (CPU, one thread)",
        "description": " ".join(__doc__.split("\n\n")[0].split()),
        "unit": "s/shape",
        "baseline": "Draco doing the same (compress or decompress)",
        "baselines": [f"compress / {DRACO}", f"decompress / {DRACO}"],
        "columns": [{"key": "shapes_per_s", "header": "shapes/s", "format": "{:,.0f}"}],
        "contenders": rows,
        "notes": [f"File bytes a shape: Squeeze3D {vlc_bytes / len(x):.2f} (one file of {vlc_bytes:,} bytes), Draco "
                  f"{draco_bytes / len(x):.1f}.",
                  "Peak RSS: each contender alone in a fresh process, compressing and decompressing "
                  f"{plan['memory_shapes'] or 0:,} shapes (the same for both groups)." if plan["memory_shapes"] else
                  "Peak RSS: not measured with --quick."],
        "checks": {"other_cpu_busy_while_timing": other_busy},
        "settings": {**plan, "threads": 1},
        "seconds": time.perf_counter() - t_start,
    }


def _rss_child(name: str, quick: bool) -> None:
    """Compress FULL's memory_shapes shapes with one contender and decompress them, in this fresh process."""
    import tempfile

    from varilab.codec import points as pc
    from varilab.families import coding
    from varilab.families.pointcloud.files import SHAPES

    torch.set_num_threads(1)
    x = _shapes(FULL["memory_shapes"])
    with torch.no_grad():
        if name == SQUEEZE:
            run = _run(Path(tempfile.mkdtemp(prefix="varilab-bench-pc-")))
            coding.decode(run, coding.encode(run, x, SHAPES)[0], [512, 3], SHAPES)
        else:
            [pc.draco_decode(pc.draco_encode(s, bits=8)) for s in x.numpy()]


if __name__ == "__main__":
    timing.main(__doc__, run, _rss_child)
