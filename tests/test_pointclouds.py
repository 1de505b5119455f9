"""Point clouds: the Chamfer distance, the compression ratio, procedural and out-of-distribution shapes, user files."""
import builtins
import importlib.util

import numpy as np
import pytest
import torch

from varilab.core import chamfer, compression_ratio, raw_bytes
from varilab.core.chamfer import percentiles
from varilab.data import pointclouds

needs_trimesh = pytest.mark.skipif(importlib.util.find_spec("trimesh") is None,
                                   reason=f"trimesh is not installed: {pointclouds.INSTALL}")


def brute_chamfer(a, b):
    """Double loop over points: mean_a min_b |a - b|^2 + mean_b min_a |a - b|^2."""
    d = [[float(((p - q) ** 2).sum()) for q in b] for p in a]
    return np.mean([min(row) for row in d]) + np.mean([min(col) for col in zip(*d)])


# --- the Chamfer distance ---

def test_chamfer_equals_a_double_loop_on_small_sets():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, 3, generator=g, dtype=torch.float64), torch.randn(3, 5, 3, generator=g, dtype=torch.float64)
    want = [brute_chamfer(a[i].numpy(), b[i].numpy()) for i in range(3)]
    np.testing.assert_allclose(chamfer(a, b).numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(chamfer(a, b, max_elements=1).numpy(), want, rtol=1e-10)  # one set per chunk
    assert float(chamfer(a, b, reduction="mean")) == pytest.approx(np.mean(want))
    assert float(chamfer(a, b, reduction="sum")) == pytest.approx(np.sum(want))


def test_chamfer_is_symmetric_zero_on_identical_sets_and_blind_to_point_order():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 64, 3, generator=g), torch.randn(4, 48, 3, generator=g)
    torch.testing.assert_close(chamfer(a, b), chamfer(b, a))
    assert chamfer(a, a).abs().max() == 0  # exactly: distances from the differences, no cancellation
    a.requires_grad_(True)
    chamfer(a, a.detach()).sum().backward()
    assert torch.isfinite(a.grad).all()  # a zero distance has a finite gradient
    assert (chamfer(a, b) > 0).all()
    torch.testing.assert_close(chamfer(a[:, torch.randperm(64, generator=g)], b[:, torch.randperm(48, generator=g)]),
                               chamfer(a, b))


def test_chamfer_gradient_is_that_of_the_full_distance_table():
    """The neighbours are searched without gradient; the gradient must still be that of mean min |a - b|^2 taken
    over the whole [N, M] table of differences."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 40, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 30, 3, generator=g, dtype=torch.float64, requires_grad=True)
    chamfer(a, b).sum().backward()
    a2, b2 = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    d2 = (a2[:, :, None] - b2[:, None]).square().sum(-1)  # [B, N, M]
    (d2.min(2).values.mean(1) + d2.min(1).values.mean(1)).sum().backward()
    torch.testing.assert_close(a.grad, a2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


def test_chamfer_refuses_mismatched_shapes_and_unknown_reductions():
    with pytest.raises(ValueError, match=r"same B and D.*\(2, 4, 3\).*\(3, 4, 3\)"):
        chamfer(torch.zeros(2, 4, 3), torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="reduction: expected one of none, mean, sum"):
        chamfer(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), reduction="max")


def test_percentiles_of_per_shape_distances():
    assert percentiles(torch.arange(101.0), qs=(0, 50, 90)) == {0: 0.0, 50: 50.0, 90: 90.0}


# --- the compression ratio ---

def test_ratio_arithmetic():
    assert raw_bytes(512) == 512 * 3 * 4 == 6144
    assert raw_bytes(512, dims=3, dtype_bytes=2) == 3072
    assert compression_ratio(6144, 4) == 1536.0
    assert compression_ratio(raw_bytes(512), 16 / 8) == 3072.0  # a 16-bit code
    with pytest.raises(ValueError, match="code_bytes=0"):
        compression_ratio(6144, 0)
    with pytest.raises(ValueError, match="expected points a positive integer"):
        raw_bytes(0)


# --- procedural and out-of-distribution shapes ---

def _assert_normalised(x):
    """Centred on the mean point, the farthest point at distance 1."""
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1).max(axis=1), 1, atol=1e-5)


@needs_trimesh
def test_procedural_shapes_are_normalised_deterministic_and_cover_every_kind():
    x, kinds = pointclouds.procedural(12, points=512, seed=0)
    assert x.shape == (12, 512, 3) and x.dtype == np.float32 and np.isfinite(x).all()
    _assert_normalised(x)
    assert set(kinds) == set(pointclouds.KINDS) and len(kinds) == 12
    again, kinds_again = pointclouds.procedural(12, points=512, seed=0)
    np.testing.assert_array_equal(x, again)
    assert kinds == kinds_again
    other, _ = pointclouds.procedural(12, points=512, seed=1)
    assert not np.allclose(x, other)


@needs_trimesh
def test_procedural_keeps_to_the_kinds_asked_for():
    x, kinds = pointclouds.procedural(4, points=32, seed=0, kinds=("torus", "cone"))
    assert x.shape == (4, 32, 3) and kinds == ["torus", "cone", "torus", "cone"]
    with pytest.raises(ValueError, match="kinds: expected some of sphere"):
        pointclouds.procedural(2, kinds=("teapot",))


@needs_trimesh
def test_out_of_distribution_shapes_load_and_are_normalised():
    x, names = pointclouds.out_of_distribution(points=256, seed=0)
    assert x.shape == (len(names), 256, 3) and len(names) >= 4 and np.isfinite(x).all()
    assert not set(names) & set(pointclouds.KINDS)
    _assert_normalised(x)
    np.testing.assert_array_equal(x, pointclouds.out_of_distribution(points=256, seed=0)[0])


def test_a_missing_trimesh_names_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_trimesh(name, *args, **kwargs):
        if name == "trimesh" or name.startswith("trimesh."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trimesh)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'varilab\[pointcloud\]'"):
        pointclouds.procedural(2)


# --- a user's files ---

@needs_trimesh
def test_read_points_reads_a_good_npy_and_subsamples_it_deterministically(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "clouds.npy"
    np.save(path, rng.normal(size=(3, 700, 3)) * 5 + 2)
    x = pointclouds.read_points(path, points=512, seed=0)
    assert x.shape == (3, 512, 3) and x.dtype == np.float32
    _assert_normalised(x)
    np.testing.assert_array_equal(x, pointclouds.read_points(path, points=512, seed=0))
    assert not np.array_equal(x, pointclouds.read_points(path, points=512, seed=1))
    raw = pointclouds.read_points(path, points=700, normalised=False)
    np.testing.assert_allclose(raw, np.load(path).astype(np.float32))  # every point kept, in order


@needs_trimesh
def test_read_points_samples_a_mesh_written_by_trimesh(tmp_path):
    import trimesh

    for suffix in pointclouds.MESH_SUFFIXES:
        path = tmp_path / f"x{suffix}"
        trimesh.creation.box(extents=[1.0, 2.0, 3.0]).export(path)
        x = pointclouds.read_points(path, points=256, seed=0)
        assert x.shape == (1, 256, 3) and np.isfinite(x).all(), suffix
        _assert_normalised(x)


BAD = {
    "nan.npy": (lambda p: np.save(p, np.full((2, 600, 3), np.nan)), "NaN or infinite"),
    "two_d.npy": (lambda p: np.save(p, np.zeros((5, 10, 2))), r"expected an array \[shapes, points, 3\].*\(5, 10, 2\)"),
    "few.npy": (lambda p: np.save(p, np.ones((2, 100, 3))), "has 100 points per shape, expected at least 512"),
    "complex.npy": (lambda p: np.save(p, np.ones((1, 600, 3), dtype=complex)), "expected real numbers, got dtype complex128"),
    "object.npy": (lambda p: np.save(p, np.array([[None] * 3] * 600, dtype=object)), r"cannot read it as \.npy"),
    "empty.npy": (lambda p: np.save(p, np.zeros((0, 600, 3))), "is empty"),
    "still.npy": (lambda p: np.save(p, np.ones((1, 600, 3))), "has all its points at one place"),
    "points.txt": (lambda p: p.write_text("1 2 3\n"), r"unsupported file type \.txt"),
    "broken.ply": (lambda p: p.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1 2\n"),
                   r"cannot read it as a \.ply mesh"),
    "empty.obj": (lambda p: p.write_text(""), "the mesh has no surface"),
}


@needs_trimesh
@pytest.mark.parametrize("name", sorted(BAD))
def test_read_points_refuses_bad_input_in_one_error_naming_the_file(tmp_path, name):
    write, message = BAD[name]
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError, match=message) as info:
        pointclouds.read_points(path, points=512)
    assert str(info.value).startswith(str(path)), info.value
