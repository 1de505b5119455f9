"""The codec family's files: `varilab compress` writes a run's symbols, range-coded under the integer tables saved
with its weights, into a checked `.vlc` file (`varilab.codec.container`); `varilab decompress` turns one back into
images, refusing files of another model."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from .. import folder
from ..inputs import read
from ..options import option
from ..protocol import Command, Run


def images(ds, split: str = "train"):
    """A split of the run's data as images [N, 1, H, W]."""
    x = ds.x_train if split == "train" else ds.x_test
    return x.reshape(len(x), 1, *ds.image_shape)


def identity(run: Run) -> str:
    from ...codec.container import model_hash

    return model_hash((run.dir / folder.WEIGHTS).read_bytes())


def encode(run: Run, x) -> tuple[bytes, dict]:
    """A .vlc file's bytes for images x [N, 1, H, W] in [0, 1], and what it holds."""
    data, meta, _ = encoded(run, x)
    return data, meta


def encoded(run: Run, x):
    """(a .vlc file's bytes, what it holds, the symbol rows written [R, n]) for images x [N, 1, H, W]."""
    from ...codec import container, entropy

    m = run.model
    rows, grid, bits = m.symbols(x.to(m.tables.device))
    stream = entropy.encode(rows.cpu().numpy(), m.table_rows().cpu().numpy())
    meta = {"model": run.options.model, "images": list(x.shape), "grid": grid, "estimated_bits": bits}
    return container.pack(identity(run), meta, stream), meta, rows.cpu()


def decode(run: Run, data: bytes):
    """(images [N, 1, H, W], symbol rows [R, N h w]) of a .vlc file's bytes written by this run's model."""
    import numpy as np
    import torch

    from ...codec import container, entropy

    m = run.model
    meta, stream = container.unpack(data, identity(run))
    tables = m.table_rows().cpu().numpy()
    n = check_header(run, meta, len(tables))
    try:
        symbols = entropy.decode(stream, tables, n)
    except Exception:  # the range decoder's own assertion on a stream shorter than the header promises
        raise ValueError(f"its stream does not hold the {n:,} symbols per row its header promises; the file is "
                         "damaged or was not written by varilab") from None
    rows = torch.as_tensor(symbols, dtype=torch.long)
    return m.from_symbols(rows.to(m.tables.device), meta["grid"]).cpu(), rows


def check_header(run: Run, meta, table_rows: int) -> int:
    """The symbols per row a file's header promises, once its shapes are those of this run's images and fit in
    memory; a header with a valid checksum can still be crafted."""
    shape = [1, *run.data.image_shape]
    images, grid = (meta.get("images"), meta.get("grid")) if isinstance(meta, dict) else (None, None)
    if not (isinstance(images, list) and len(images) == 4 and all(isinstance(v, int) for v in images)
            and images[0] >= 1 and images[1:] == shape):
        raise ValueError(f"its header describes images {images}; this run's are [N, {', '.join(map(str, shape))}]")
    if not (isinstance(grid, list) and grid and all(isinstance(v, int) and v >= 1 for v in grid)
            and grid[0] == images[0]):
        raise ValueError(f"its header's symbol grid {grid!r} is not one of {images[0]} images")
    n = 1
    for v in grid:
        n *= v
    folder.check_memory(8 * n * max(table_rows, 1) + 4 * images[0] * shape[1] * shape[2],
                        f"decoding {n:,} symbols per row", "the header is damaged or crafted")
    return n


CONTAINERS = {"vlc": "format version, the model's weights hash, shapes, the range-coded stream, a CRC32"}


@dataclass
class CompressOptions:
    AXIS = "container"
    container: str = option("vlc", "the file format", choices=CONTAINERS)
    input: str = option("test", "images to compress: an .npy [N, H, W] or [N, 1, H, W] in [0, 1], or 'test' for "
                        "the run's test split")
    out: str = option("", "the .vlc file to write")


@dataclass
class DecompressOptions:
    AXIS = "container"
    container: str = option("vlc", "the file format", choices=CONTAINERS)
    input: str = option("", "the .vlc file, written by this run's model")


def compress(run: Run, opts: CompressOptions) -> tuple[dict, list[str]]:
    from ...checkpoint import atomic_write

    if not opts.out:
        raise ValueError("--out is required: the .vlc file to write")
    if not Path(opts.out).parent.is_dir():
        raise ValueError(f"--out {opts.out}: its folder {Path(opts.out).parent} does not exist")
    x = run_images(run, opts.input)
    data, meta = encode(run, x)
    atomic_write(opts.out, data)  # a reader, or a second compress to the same path, never sees half a file
    pixels = x.shape[0] * x.shape[-1] * x.shape[-2]
    result = {"file": opts.out, "bytes": len(data), "bpp_file": 8 * len(data) / pixels,
              "bpp_estimated": meta["estimated_bits"] / pixels, "images": int(x.shape[0])}
    return result, [f"{opts.out}: {len(data):,} bytes for {x.shape[0]} images, {result['bpp_file']:.4f} bits per "
                    f"pixel in the file ({result['bpp_estimated']:.4f} estimated by the model)"]


def run_images(run: Run, spec: str):
    import torch

    if spec == "test":
        return images(run.data, "test")
    if not spec:
        raise ValueError("--input is required: an .npy of images or 'test'")
    x = read(spec, "--input")  # real, finite, not empty
    given = list(x.shape)
    if x.ndim == 3:
        x = x[:, None]
    shape = tuple(run.data.image_shape)
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != shape:
        raise ValueError(f"--input {spec}: expected images [N, {shape[0]}, {shape[1]}] like the run's, got {given}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"--input {spec}: pixel values must lie in [0, 1]")
    return torch.as_tensor(x, dtype=torch.float32)


def decompress(run: Run, opts: DecompressOptions, out: Path, quiet: bool = False) -> tuple[dict, list[str]]:
    """images.npy [N, 1, H, W] and codes.npy (one row per codebook or channel) into the folder `out`."""
    import numpy as np

    from ...checkpoint import atomic_write

    if not opts.input:
        raise ValueError("--input FILE.vlc is required")
    try:
        x, codes = decode(run, Path(opts.input).read_bytes())
    except (ValueError, OSError) as e:
        raise ValueError(f"--input {opts.input}: {e}") from None
    for name, array in (("images.npy", x.numpy()), ("codes.npy", codes.numpy())):  # codes: a row per codebook
        buffer = io.BytesIO()  # or channel (recombiner: one)
        np.save(buffer, array)
        atomic_write(out / name, buffer.getvalue())
    return ({"images": int(x.shape[0]), "out": str(out)},
            [f"{out / 'images.npy'}: {x.shape[0]} images decoded from {opts.input}"])


COMPRESS = Command("images to a .vlc bitstream with a codec run", CompressOptions, compress, choices=CONTAINERS,
                   about_run="the codec run (varilab train --model vq-codec)", writes_file=True)
DECOMPRESS = Command("a .vlc bitstream back to images with the run that wrote it", DecompressOptions, decompress,
                     choices=CONTAINERS, about_run="the codec run that wrote the file",
                     writes=("images.npy", "codes.npy"))
