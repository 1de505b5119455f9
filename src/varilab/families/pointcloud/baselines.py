"""What a squeeze3d run's codes are measured against, at its own --bits a shape:

- coordinates: k points of the shape, each coordinate uniform on [-1, 1] to b bits, k = bits // (3 b), at the b
  that decodes closest on average (a decoder told b and k: no header is counted);
- the generator's latent: G's own encoder's mean, each of its L coordinates uniform on [-3, 3] to bits // L bits
  (when bits >= L), decoded by G;
- Draco: its smallest file of each shape (1 point kept, 1 bit a coordinate) and the Chamfer distance at 8 bits with
  all points, to say where it stands: its container alone is larger than any code here."""
from __future__ import annotations

LATENT_RANGE = 3.0  # a standard normal latent's values: |l| < 3 but for 0.3% of them


def coordinates(x, bits: int) -> dict:
    """The best coordinate quantiser within `bits` a shape: {"chamfer", "points", "bits_per_coordinate"}, or None."""
    import torch

    from ...codec import points as pc
    from ...core import chamfer

    best = None
    for b in range(1, 17):
        k = bits // (3 * b)
        if k < 1:
            break
        decoded = torch.stack([torch.as_tensor(pc.dequantise(pc.quantise(pc.subsample(s.numpy(), k), b), b))
                               for s in x.cpu()])
        d = float(chamfer(x.cpu(), decoded).mean())
        if best is None or d < best["chamfer"]:
            best = {"chamfer": d, "points": k, "bits_per_coordinate": b}
    return best


def latent(generator, x, bits: int) -> dict | None:
    """G's latent quantised directly: {"chamfer", "bits_per_coordinate"}, or None when bits < its dimensions."""
    import torch

    from ...codec import points as pc
    from ...core import chamfer

    dims = generator.config.latent
    b = min(bits // dims, 16)
    if b < 1:
        return None
    with torch.no_grad():
        mean = generator.means(x).cpu().numpy()
        q = pc.dequantise(pc.quantise(mean, b, LATENT_RANGE), b, LATENT_RANGE)
        decoded = generator.decode_all(torch.as_tensor(q).to(x.device))
    return {"chamfer": float(chamfer(x, decoded).mean()), "bits_per_coordinate": b}


def draco(x) -> dict | None:
    """Draco's smallest file per shape, and its Chamfer distance at 8 bits a coordinate with every point kept."""
    try:
        import DracoPy  # noqa: F401
    except ImportError:
        return None
    import numpy as np
    import torch

    from ...codec import points as pc
    from ...core import chamfer

    shapes = x.cpu().numpy()
    smallest = np.mean([len(pc.draco_encode(s, bits=1, keep=1)) for s in shapes])
    files = [pc.draco_encode(s, bits=8) for s in shapes]
    decoded = [torch.as_tensor(pc.draco_decode(f)) for f in files]
    d = float(np.mean([float(chamfer(x[i:i + 1].cpu(), decoded[i][None])) for i in range(len(files))]))
    return {"smallest_bytes": float(smallest), "bytes_at_8_bits": float(np.mean([len(f) for f in files])),
            "chamfer_at_8_bits": d}
