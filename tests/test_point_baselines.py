"""The point-cloud baselines: coordinate quantisation within a byte budget, and Draco."""
import numpy as np
import pytest

from varilab.codec import points as pc


def _shape(n=512, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1).max()  # inside the unit ball


def _chamfer(a, b):
    d = ((a[:, None] - b[None]) ** 2).sum(-1)
    return d.min(1).mean() + d.min(0).mean()


def test_quantisation_round_trips_within_half_a_step():
    x = _shape()
    for bits in (1, 4, 11, 16):
        back = pc.dequantise(pc.quantise(x, bits), bits)
        assert np.abs(back - x).max() <= 1 / (2**bits - 1) + 1e-6  # half of a step 2r / (2^b - 1)


@pytest.mark.parametrize("budget", [2, 3, 8, 16, 64, 200])
def test_the_coordinate_file_fits_its_budget_and_decodes_the_points_it_kept(budget):
    x = _shape()
    data = pc.coords_encode(x, budget, score=_chamfer)
    assert len(data) <= budget
    b = (data[0] & 15) + 1
    y = pc.coords_decode(data)
    k = len(y)
    assert k >= 1 and 3 * k * b <= 8 * (budget - 1)
    np.testing.assert_allclose(y, pc.dequantise(pc.quantise(pc.subsample(x, k), b), b))
    if budget >= 64:  # more bytes, closer
        assert _chamfer(y, x) < _chamfer(pc.coords_decode(pc.coords_encode(x, budget // 4, score=_chamfer)), x)


def test_a_budget_without_room_for_a_point_is_refused():
    with pytest.raises(ValueError, match="holds no point"):
        pc.coords_encode(_shape(), 1)


def test_draco_keeps_its_points_to_within_its_quantisation_and_fewer_points_cost_fewer_bytes():
    pytest.importorskip("DracoPy")
    x = _shape()
    data = pc.draco_encode(x, bits=11)
    y = pc.draco_decode(data)
    assert y.shape == (512, 3)
    assert _chamfer(y, x) < 1e-5  # 11 bits over a cube of side 2: steps of 1e-3
    assert len(pc.draco_encode(x, bits=8, keep=64)) < len(pc.draco_encode(x, bits=8))
    with pytest.raises(ValueError, match="1 to 30 bits"):
        pc.draco_encode(x, bits=0)
