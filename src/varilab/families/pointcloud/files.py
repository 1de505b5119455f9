"""What the pointcloud family's squeeze3d runs code: shapes [N, points, 3], from the run's held-out shapes, an .npy or
a mesh file; `varilab compress` and `varilab decompress` are the shared ones (`families.coding`) over this medium.
Each code scalar's symbol is uniform on its 2^(bits / code-dims) levels, so it is range-coded under a flat table:
a shape costs its --bits, and a file adds its header and the stream's last 32-bit word once."""
from __future__ import annotations

from .. import coding
from ..protocol import Run


def _squeeze3d(run: Run):
    if run.options.model != "squeeze3d":
        raise ValueError(f"{run.dir} is a {run.options.model} run; compress and decompress take a squeeze3d run")
    return run.model


def read(run: Run, spec: str):
    """The shapes to compress: 'test' (the run's held-out shapes), an .npy [N, points, 3] or a mesh file."""
    import torch

    from ...data import pointclouds as pc

    model = _squeeze3d(run)
    points = model.generator.config.points
    if spec == "test":
        x = run.data.x_test.reshape(len(run.data.x_test), points, 3)
    elif not spec:
        raise ValueError("--input is required: an .npy of shapes, a mesh file or 'test'")
    else:
        x = torch.as_tensor(pc.read_points(spec, points=points, seed=run.options.seed))
    return x.float()


def item(run: Run) -> list[int]:
    return [_squeeze3d(run).generator.config.points, 3]


def symbols(run: Run, x):
    """(rows [code_dims, N] of symbols, the grid [N], the bits they take)."""
    model = _squeeze3d(run)
    s = model.compress(x)  # [N, code_dims]
    return s.T.contiguous(), [len(x)], float(len(x) * model.config.bits)


def table_rows(run: Run):
    """Flat integer tables [code_dims, L]: every symbol costs bits / code-dims bits."""
    import numpy as np
    import torch

    from ...codec.tables import quantise

    model = _squeeze3d(run)
    return torch.as_tensor(quantise(np.ones((model.config.code_dims, model.levels))))


def from_symbols(run: Run, rows, grid):
    return _squeeze3d(run).decompress(rows.T.contiguous())


SHAPES = coding.Medium("shapes", read, item, "point", lambda x: x.shape[0] * x.shape[1], "points.npy",
                       "shapes to compress: an .npy [N, points, 3], a mesh file (.ply, .obj, .stl, .off) or 'test' "
                       "for the run's held-out shapes", symbols=symbols, table_rows=table_rows,
                       from_symbols=from_symbols)
COMPRESS, DECOMPRESS = coding.commands(SHAPES, "the squeeze3d run (varilab train --model squeeze3d)")
