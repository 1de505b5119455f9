"""`varilab compress` and `varilab decompress` for every family whose models code their inputs as symbols: the
symbols range-coded under the integer tables the run holds, in a checked `.vlc` file (`varilab.codec.container`),
and back, refusing files of another model. A family lists the two commands `commands(medium)` makes for what it
codes (a `Medium`: the codec family's images, the pointcloud family's shapes). By default the run's model answers
`symbols(x) -> (rows [R, n], grid, estimated bits)`, `table_rows() -> counts [R, K]` and
`from_symbols(rows, grid) -> x`; a medium may name other functions of the run for them."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import folder
from .options import option
from .protocol import Command, Run

CONTAINERS = {"vlc": "format version, the model's weights hash, shapes, the range-coded stream, a CRC32"}


@dataclass(frozen=True)
class Medium:
    """What a family's runs code. `read(run, spec)`: the inputs [N, *item] ('test': the run's test split, else a
    file, checked); `item(run)`: the shape of one input; `units(x)`: how many `unit`s (pixels, points) x holds;
    `output`: the file `decompress` writes the inputs to; `input_help`: what --input takes."""
    noun: str
    read: Callable
    item: Callable
    unit: str
    units: Callable
    output: str
    input_help: str
    symbols: Callable = lambda run, x: run.model.symbols(x)
    table_rows: Callable = lambda run: run.model.table_rows()
    from_symbols: Callable = lambda run, rows, grid: run.model.from_symbols(rows, grid)


def _device(run: Run):
    return next(run.model.parameters()).device


def identity(run: Run) -> str:
    from ..codec.container import model_hash

    return model_hash((run.dir / folder.WEIGHTS).read_bytes())


def encoded(run: Run, x, medium: Medium | None = None):
    """(a .vlc file's bytes, what it holds, the symbol rows written [R, n]) for inputs x [N, *item]."""
    from ..codec import container, entropy

    medium = medium or DEFAULT
    if hasattr(run.model, "write"):  # tables picked by what was coded before it (a hyperprior): the model writes parts
        writer = entropy.Writer()
        rows, grid, bits = run.model.write(x.to(_device(run)), writer)
        stream, check = writer.stream(), {"symbols_crc32": symbols_crc(rows)}
    else:
        rows, grid, bits = medium.symbols(run, x.to(_device(run)))
        stream, check = entropy.encode(rows.cpu().numpy(), medium.table_rows(run).cpu().numpy()), {}
    meta = {"model": run.options.model, "images": list(x.shape), "grid": grid, "estimated_bits": bits, **check}
    return container.pack(identity(run), meta, stream), meta, rows.cpu()  # "images": the inputs' shape (format 1)


def symbols_crc(rows) -> int:
    """CRC32 of symbol rows as little-endian int64: a model that reads its tables from decoded values (its scales
    computed in floating point) is checked to have read back the symbols it wrote."""
    import zlib

    return zlib.crc32(rows.cpu().numpy().astype("<i8").tobytes())


def encode(run: Run, x, medium: Medium | None = None) -> tuple[bytes, dict]:
    """A .vlc file's bytes for inputs x [N, *item], and what it holds."""
    data, meta, _ = encoded(run, x, medium)
    return data, meta


def decode(run: Run, data: bytes, item: list[int], medium: Medium | None = None):
    """(inputs [N, *item], symbol rows [R, n]) of a .vlc file's bytes written by this run's model."""
    import torch

    from ..codec import container, entropy

    medium = medium or DEFAULT
    meta, stream = container.unpack(data, identity(run))
    tables = medium.table_rows(run).cpu().numpy()
    n = check_header(meta, item, len(tables), medium.noun)
    try:
        if hasattr(run.model, "read"):
            x, rows = run.model.read(entropy.Reader(stream), meta["grid"])
        else:
            rows = torch.as_tensor(entropy.decode(stream, tables, n), dtype=torch.long)
            x = medium.from_symbols(run, rows.to(_device(run)), meta["grid"])
    except Exception:  # the range decoder's own assertion on a stream shorter than the header promises
        raise ValueError(f"its stream does not hold the {n:,} symbols per row its header promises; the file is "
                         "damaged or was not written by varilab") from None
    if "symbols_crc32" in meta and symbols_crc(rows) != meta["symbols_crc32"]:
        raise ValueError("the codes read back differ from those written (their checksum): a scale fell on the other "
                         "side of a table boundary in this machine's arithmetic; decode on the machine that wrote it")
    return x.cpu(), rows.cpu()


def check_header(meta, item: list[int], table_rows: int, noun: str = "inputs") -> int:
    """The symbols per row a file's header promises, once its shapes are those of this run's inputs and fit in
    memory; a header with a valid checksum can still be crafted."""
    shape, grid = (meta.get("images"), meta.get("grid")) if isinstance(meta, dict) else (None, None)
    if not (isinstance(shape, list) and len(shape) == 1 + len(item) and all(isinstance(v, int) for v in shape)
            and shape[0] >= 1 and shape[1:] == item):
        raise ValueError(f"its header describes {noun} {shape}; this run's are [N, {', '.join(map(str, item))}]")
    if not (isinstance(grid, list) and grid and all(isinstance(v, int) and v >= 1 for v in grid)
            and grid[0] == shape[0]):
        raise ValueError(f"its header's symbol grid {grid!r} is not one of {shape[0]} {noun}")
    n = 1
    for v in grid:
        n *= v
    size = 1
    for v in shape:
        size *= v
    folder.check_memory(8 * n * max(table_rows, 1) + 4 * size, f"decoding {n:,} symbols per row",
                        "the header is damaged or crafted")
    return n


@dataclass
class CompressOptions:
    AXIS = "container"
    container: str = option("vlc", "the file format", choices=CONTAINERS)
    input: str = option("test", "the inputs to compress, or 'test' for the run's test split")
    out: str = option("", "the .vlc file to write")


@dataclass
class DecompressOptions:
    AXIS = "container"
    container: str = option("vlc", "the file format", choices=CONTAINERS)
    input: str = option("", "the .vlc file, written by this run's model")


def compress(medium: Medium, run: Run, opts: CompressOptions) -> tuple[dict, list[str]]:
    from ..checkpoint import atomic_write

    if not opts.out:
        raise ValueError("--out is required: the .vlc file to write")
    if not Path(opts.out).parent.is_dir():
        raise ValueError(f"--out {opts.out}: its folder {Path(opts.out).parent} does not exist")
    x = medium.read(run, opts.input)
    data, meta = encode(run, x, medium)
    atomic_write(opts.out, data)  # a reader, or a second compress to the same path, never sees half a file
    units, u = medium.units(x), medium.unit
    result = {"file": opts.out, "bytes": len(data), f"bp{u[0]}_file": 8 * len(data) / units,
              f"bp{u[0]}_estimated": meta["estimated_bits"] / units, medium.noun: int(x.shape[0])}
    return result, [f"{opts.out}: {len(data):,} bytes for {x.shape[0]} {medium.noun}, {8 * len(data) / units:.4f} bits "
                    f"per {u} in the file ({meta['estimated_bits'] / units:.4f} estimated by the model)"]


def decompress(medium: Medium, run: Run, opts: DecompressOptions, out: Path, quiet: bool = False):
    """The inputs (`medium.output`) and codes.npy (one row per codebook, channel or code scalar) into `out`."""
    import numpy as np

    from ..checkpoint import atomic_write

    if not opts.input:
        raise ValueError("--input FILE.vlc is required")
    try:
        x, codes = decode(run, Path(opts.input).read_bytes(), medium.item(run), medium)
    except (ValueError, OSError) as e:
        raise ValueError(f"--input {opts.input}: {e}") from None
    for name, array in ((medium.output, x.numpy()), ("codes.npy", codes.numpy())):
        buffer = io.BytesIO()
        np.save(buffer, array)
        atomic_write(out / name, buffer.getvalue())
    return ({medium.noun: int(x.shape[0]), "out": str(out)},
            [f"{out / medium.output}: {x.shape[0]} {medium.noun} decoded from {opts.input}"])


DEFAULT = Medium("inputs", None, None, "value", None, "inputs.npy", "")  # the model's own coding methods


def commands(medium: Medium, about_run: str) -> tuple[Command, Command]:
    """`varilab compress` and `varilab decompress` of a family's runs, which code `medium`."""
    import dataclasses
    import functools

    options = dataclasses.make_dataclass("CompressOptions", [("input", str, option("test", medium.input_help))],
                                         bases=(CompressOptions,))  # --input says what this family's runs take
    return (Command(f"{medium.noun} to a .vlc bitstream", options, functools.partial(compress, medium),
                    choices=CONTAINERS, about_run=about_run, writes_file=True),
            Command(f"a .vlc bitstream back to {medium.noun} with the run that wrote it", DecompressOptions,
                    functools.partial(decompress, medium), choices=CONTAINERS, about_run="the run that wrote the file",
                    writes=(medium.output, "codes.npy")))
