"""Point clouds: procedural primitives, out-of-distribution shapes and a user's files, as float32 [shapes, points, 3].

Every set is normalised the same way: centred on its mean point and scaled so that its farthest point lies at
distance 1 (the unit bounding sphere about the centroid), so sizes never leak into a Chamfer distance.

Meshes come from trimesh, the optional extra `varilab[pointcloud]`; without it every loader here fails at once with
the command that installs it. Nothing is downloaded.

>>> x, kinds = procedural(6, points=64, seed=0)
>>> x.shape, kinds[:3]
((6, 64, 3), ['sphere', 'box', 'torus'])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import file_suffix

INSTALL = "pip install 'varilab[pointcloud]'  (trimesh==5.2.0)"
KINDS = ("sphere", "box", "torus", "cylinder", "cone", "capsule")
MESH_SUFFIXES = (".ply", ".obj", ".stl", ".off")
SUFFIXES = (".npy",) + MESH_SUFFIXES


def _trimesh():
    try:
        import trimesh
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"trimesh is not installed; install the point-cloud extra: {INSTALL}") from None
    return trimesh


def normalise(x: np.ndarray) -> np.ndarray:
    """[..., P, 3] -> each set centred on its mean point, its farthest point at distance 1."""
    x = x - x.mean(axis=-2, keepdims=True)  # x - mean(x)
    return x / np.linalg.norm(x, axis=-1).max(axis=-1)[..., None, None]  # x / max_p |x_p|


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly from SO(3): Q of the QR of a Gaussian matrix, signs fixed, det +1."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))  # Q diag(sign r_ii): Haar on O(3)
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _primitive(trimesh, kind: str, rng: np.random.Generator):
    """One primitive mesh with random proportions (its overall size is normalised away later)."""
    c = trimesh.creation
    if kind == "sphere":
        return c.icosphere(subdivisions=3, radius=1.0)
    if kind == "box":
        return c.box(extents=rng.uniform(0.4, 1.6, 3))
    if kind == "torus":
        return c.torus(major_radius=1.0, minor_radius=rng.uniform(0.15, 0.5))
    if kind == "cylinder":
        return c.cylinder(radius=rng.uniform(0.3, 1.0), height=rng.uniform(0.5, 2.0))
    if kind == "cone":
        return c.cone(radius=rng.uniform(0.3, 1.0), height=rng.uniform(0.5, 2.0))
    if kind == "capsule":
        return c.capsule(radius=rng.uniform(0.2, 0.6), height=rng.uniform(0.5, 2.0))
    raise ValueError(f"kinds: unknown kind {kind!r}; expected some of {', '.join(KINDS)}")


def _sample(trimesh, mesh, points: int, rng: np.random.Generator) -> np.ndarray:
    xyz, _ = trimesh.sample.sample_surface(mesh, points, seed=int(rng.integers(2**32)))
    return normalise(np.asarray(xyz, dtype=np.float64)).astype(np.float32)


def procedural(n_shapes: int, points: int = 512, seed: int = 0, kinds=KINDS) -> tuple[np.ndarray, list[str]]:
    """(float32 [n_shapes, points, 3], the kind of each shape), deterministic for a seed.

    Shape i is kinds[i % len(kinds)], so each kind is present once n_shapes >= len(kinds). Each primitive gets random
    proportions, an anisotropic scale (aspect, 0.6 to 1.4 per axis) and a rotation uniform on SO(3), then `points`
    points sampled uniformly on its surface, then `normalise`.
    """
    if int(n_shapes) != n_shapes or n_shapes < 1 or int(points) != points or points < 1:
        raise ValueError(f"procedural: expected positive integers n_shapes and points, got {n_shapes!r}, {points!r}")
    kinds = list(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds: expected some of {', '.join(KINDS)}, got {kinds}")
    trimesh = _trimesh()
    rng = np.random.default_rng(seed)
    out = np.empty((n_shapes, points, 3), dtype=np.float32)
    labels = [kinds[i % len(kinds)] for i in range(n_shapes)]
    for i, kind in enumerate(labels):
        mesh = _primitive(trimesh, kind, rng)
        transform = np.eye(4)
        transform[:3, :3] = random_rotation(rng) @ np.diag(rng.uniform(0.6, 1.4, 3))  # x -> R S x
        mesh.apply_transform(transform)
        out[i] = _sample(trimesh, mesh, points, rng)
    return out, labels


def _ood_meshes(trimesh) -> dict:
    """Shapes outside the primitives: a solid of revolution, a flat ring and parts joined (their inner faces kept)."""
    c, join = trimesh.creation, trimesh.util.concatenate

    def at(mesh, x=0.0, y=0.0, z=0.0):
        return mesh.apply_translation([x, y, z])

    legs = [at(c.box(extents=[0.15, 0.15, 1.0]), x, y, -0.5) for x in (-0.8, 0.8) for y in (-0.5, 0.5)]
    return {
        "vase": c.revolve(np.array([[0.0, 0.0], [0.6, 0.0], [0.9, 0.6], [0.35, 1.4], [0.5, 1.9], [0.0, 1.9]])),
        "washer": c.annulus(r_min=0.6, r_max=1.0, height=0.25),
        "snowman": join([c.icosphere(radius=1.0), at(c.icosphere(radius=0.7), z=1.5), at(c.icosphere(radius=0.45), z=2.5)]),
        "dumbbell": join([c.cylinder(radius=0.12, height=2.0), at(c.icosphere(radius=0.5), z=-1.0),
                          at(c.icosphere(radius=0.5), z=1.0)]),
        "l-block": join([at(c.box(extents=[2.0, 0.6, 0.6]), x=0.7), at(c.box(extents=[0.6, 0.6, 2.0]), z=0.7)]),
        "table": join([at(c.box(extents=[2.0, 1.3, 0.12]), z=0.06)] + legs),
    }


def out_of_distribution(points: int = 512, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """(float32 [k, points, 3], names): shapes built by trimesh that are none of the procedural kinds, normalised."""
    trimesh = _trimesh()
    rng = np.random.default_rng(seed)
    meshes = _ood_meshes(trimesh)
    return np.stack([_sample(trimesh, m, points, rng) for m in meshes.values()]), list(meshes)


def read_points(path: str | Path, points: int = 512, seed: int = 0, normalised: bool = True) -> np.ndarray:
    """A user's point sets as float32 [shapes, points, 3].

    `.npy`: [shapes, P, 3] (or [P, 3], one shape) real finite numbers with P >= points, subsampled without
    replacement (deterministic for a seed) when P > points. `.ply/.obj/.stl/.off`: one shape read by trimesh, `points`
    points sampled on its surface (a vertex-only `.ply` is a point cloud, subsampled like a `.npy`). Each set is
    normalised (see `normalise`) unless `normalised=False`. Bad input raises one ValueError naming the file.
    """
    path = Path(path)
    suffix = file_suffix(path, SUFFIXES)
    rng = np.random.default_rng(seed)
    if suffix == ".npy":
        x = _check_sets(path, _load_npy(path), points)
    else:
        x = _read_mesh(path, points, rng)
    x = _subsample(x, points, rng)
    if normalised:
        spread = np.linalg.norm(x - x.mean(axis=1, keepdims=True), axis=-1).max(axis=-1)
        if (spread == 0).any():
            raise ValueError(f"{path}: shape {int(np.argmax(spread == 0))} has all its points at one place; "
                             f"expected a set with some extent")
        x = normalise(x)
    return x.astype(np.float32)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read it as .npy (object arrays are refused): {e}") from None


def _check_sets(path: Path, x: np.ndarray, points: int) -> np.ndarray:
    """[shapes, P, 3] (or [P, 3]) of real finite numbers with P >= points, as float64, or one ValueError."""
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{path}: expected real numbers, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{path}: expected an array [shapes, points, 3] (or [points, 3]), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{path}: is empty (shape {x.shape}); expected at least one shape of {points} points")
    if x.shape[1] < points:
        raise ValueError(f"{path}: has {x.shape[1]} points per shape, expected at least {points}")
    bad = ~np.isfinite(x).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} of {len(x)} shapes hold NaN or infinite values "
                         f"(first: shape {int(np.argmax(bad))}); expected finite numbers")
    return x.astype(np.float64)


def _read_mesh(path: Path, points: int, rng: np.random.Generator) -> np.ndarray:
    trimesh = _trimesh()
    try:
        loaded = trimesh.load(path, file_type=path.suffix.lower()[1:])
        if isinstance(loaded, trimesh.PointCloud):
            return _check_sets(path, np.asarray(loaded.vertices), points)
        mesh = loaded if isinstance(loaded, trimesh.Trimesh) else trimesh.load(path, force="mesh")
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read it as a {path.suffix.lower()} mesh: {e}") from None
    except Exception as e:  # trimesh's parsers raise KeyError, IndexError, ... on broken files
        raise ValueError(f"{path}: cannot read it as a {path.suffix.lower()} mesh: {type(e).__name__}: {e}") from None
    if len(mesh.faces) == 0 or not mesh.area > 0:
        raise ValueError(f"{path}: the mesh has no surface ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces); "
                         f"expected a mesh with faces")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError(f"{path}: the mesh has NaN or infinite vertices; expected finite coordinates")
    xyz, _ = trimesh.sample.sample_surface(mesh, points, seed=int(rng.integers(2**32)))
    return np.asarray(xyz, dtype=np.float64)[None]


def _subsample(x: np.ndarray, points: int, rng: np.random.Generator) -> np.ndarray:
    if x.shape[1] == points:
        return x
    idx = np.stack([np.sort(rng.choice(x.shape[1], points, replace=False)) for _ in range(len(x))])
    return np.take_along_axis(x, idx[..., None], axis=1)
