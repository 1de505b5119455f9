"""Intrinsic dimension against manifolds of known dimension, and the disks whose dimension is 3 by construction."""
from __future__ import annotations

import math

import numpy as np
import pytest

from varilab.data import load
from varilab.data.synthetic import disks
from varilab.diagnostics.intrinsic import intrinsic_dimension


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_two_nn_finds_the_dimension_of_a_linearly_embedded_cube(d):
    rng = np.random.default_rng(d)
    x = rng.uniform(size=(3000, d)) @ rng.standard_normal((d, 20))  # a d-dimensional flat in 20 dimensions
    assert intrinsic_dimension(x) == pytest.approx(d, abs=0.1 + 0.05 * d)


def test_curved_manifolds_count_their_own_dimension_not_the_space_they_fill():
    t = np.random.default_rng(0).uniform(0, 2 * math.pi, 3000)
    circle = np.c_[np.cos(t), np.sin(t), np.zeros_like(t)]  # a circle needs two coordinates but is 1-dimensional
    assert intrinsic_dimension(circle) == pytest.approx(1.0, abs=0.1)
    u = np.random.default_rng(1).uniform(size=(4000, 2))
    roll = np.c_[(3 + 9 * u[:, 0]) * np.cos(3 + 9 * u[:, 0]), 10 * u[:, 1], (3 + 9 * u[:, 0]) * np.sin(3 + 9 * u[:, 0])]
    assert intrinsic_dimension(roll) == pytest.approx(2.0, abs=0.2)
    assert intrinsic_dimension(roll, method="mle") == pytest.approx(2.0, abs=0.3)


def test_repeated_rows_are_dropped_and_bad_input_is_refused():
    x = np.random.default_rng(0).uniform(size=(1000, 2))
    assert intrinsic_dimension(np.r_[x, x[:300]]) == pytest.approx(intrinsic_dimension(x))  # no log(r2 / 0)
    with pytest.raises(ValueError, match="unknown intrinsic-dimension method"):
        intrinsic_dimension(x, method="pca")
    with pytest.raises(ValueError, match="NaN"):
        intrinsic_dimension(np.r_[x, [[np.nan, 0.0]]])
    with pytest.raises(ValueError, match="at least 20 distinct rows"):
        intrinsic_dimension(np.repeat(x[:5], 10, axis=0))


def test_disks_cover_their_area_and_lie_on_a_three_dimensional_manifold():
    images, factors = disks(3000, size=32, seed=0)
    assert images.shape == (3000, 32, 32) and factors.shape == (3000, 3)
    area = math.pi * (factors[:, 2] * 32) ** 2  # pi r^2 in pixels: the ramp's cover sums to the disk's area
    assert np.abs(images.sum((1, 2)) - area).max() < 1.0  # within a pixel (the ramp adds pi / 12 on a circle)
    assert intrinsic_dimension(images) == pytest.approx(3.0, abs=0.35)
    ds = load("disks", n=200, seed=1)
    assert ds.x_train.shape == (160, 1024) and ds.y_train.shape == (160, 3)
