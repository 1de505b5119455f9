"""Bitstreams: integer tables, range coding by constriction, and the .vlc container's refusals."""
import numpy as np
import pytest

from varilab.codec import container, entropy, tables

pytest.importorskip("constriction")


def _symbols(k=64, rows=4, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    counts = tables.quantise(rng.dirichlet(np.full(k, 0.3), size=rows))
    symbols = np.stack([rng.choice(k, size=n, p=c / c.sum()) for c in counts])
    return symbols, counts


def test_tables_are_integers_summing_to_the_precision_with_every_symbol_kept():
    p = np.array([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1e-9, 0.5, 0.5, 0.0]])
    c = tables.quantise(p, precision=8)
    assert c.dtype == np.int64 and (c.sum(-1) == 256).all() and (c >= 1).all()
    np.testing.assert_array_equal(c[1], [64, 64, 64, 64])  # exact where exact is possible
    np.testing.assert_array_equal(tables.quantise(p * 3.0, precision=8), c)  # only the proportions matter
    for bad in (np.array([[np.nan, 1.0]]), np.array([[-0.1, 1.0]]), np.array([[0.0, 0.0]])):
        with pytest.raises(ValueError):
            tables.quantise(bad)


def test_round_trip_is_exact_and_the_length_is_the_cross_entropy():
    symbols, counts = _symbols()
    stream = entropy.encode(symbols, counts)
    np.testing.assert_array_equal(entropy.decode(stream, counts, symbols.shape[1]), symbols)
    ideal = tables.code_length(symbols, counts)  # sum -log2 p: the cross-entropy of the data under the tables
    assert ideal <= 8 * len(stream) <= ideal * 1.001 + 64 * len(counts)


def test_parts_under_indexed_tables_round_trip_at_their_cross_entropy():
    """A stream of rows, then symbols each under the table its index picks (a hyperprior's scales), read back in
    order; its length is the sum of -log2 p of each symbol under its own table."""
    rows, counts = _symbols(rows=2, n=500, seed=2)
    tabs = tables.quantise(np.random.default_rng(3).dirichlet(np.full(64, 0.3), size=5))
    rng = np.random.default_rng(4)
    index = rng.integers(0, 5, 3000)
    symbols = np.array([rng.choice(64, p=tabs[i] / tabs[i].sum()) for i in index])
    writer = entropy.Writer()
    writer.rows(rows, counts)
    writer.indexed(symbols, index, tabs)
    stream = writer.stream()
    reader = entropy.Reader(stream)
    np.testing.assert_array_equal(reader.rows(counts, 500), rows)
    np.testing.assert_array_equal(reader.indexed(index, tabs), symbols)
    ideal = tables.code_length(rows, counts) + tables.code_length(symbols[:, None], tabs[index])
    assert ideal <= 8 * len(stream) <= ideal * 1.001 + 64 * 7
    with pytest.raises(ValueError, match="one table index"):
        writer.indexed(symbols, index + 5, tabs)


def test_the_same_tables_give_the_same_bytes():
    symbols, counts = _symbols(seed=1)
    assert entropy.encode(symbols, counts) == entropy.encode(symbols.copy(), counts.copy())


def test_bad_symbols_are_refused():
    symbols, counts = _symbols(rows=2, n=10)
    with pytest.raises(ValueError, match="must lie in"):
        entropy.encode(symbols + 64, counts)
    with pytest.raises(ValueError, match="expected symbols"):
        entropy.encode(symbols[0], counts)


def test_the_container_round_trips_and_refuses_damage_and_other_models():
    model = container.model_hash(b"weights of one model")
    data = container.pack(model, {"shape": [2, 3]}, b"\x01\x02\x03\x04")
    assert container.unpack(data, model) == ({"shape": [2, 3]}, b"\x01\x02\x03\x04")
    refusals = {
        "not a varilab": b"P6\n" + data[3:],
        "truncated": data[:-5],
        "truncated or extended": data + b"\x00",
        "corrupted": data[:20] + bytes([data[20] ^ 1]) + data[21:],
        "newer": data[:4] + (9).to_bytes(2, "little") + data[6:],
    }
    for message, damaged in refusals.items():
        with pytest.raises(ValueError, match=message):
            container.unpack(damaged, model)
    with pytest.raises(ValueError, match="another model"):
        container.unpack(data, container.model_hash(b"weights of another"))
    for cut in range(len(data)):  # every truncation is refused with a ValueError, never another exception
        with pytest.raises(ValueError):
            container.unpack(data[:cut], model)


def test_jpeg_and_webp_rates_come_from_the_bytes_and_rise_with_quality():
    from varilab.codec import classic

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:28, :28] / 27.0
    images = np.clip(0.5 + 0.4 * np.sin(6 * xx[None] + 4 * yy[None] + rng.uniform(0, 6, (6, 1, 1))), 0, 1)
    for fmt in ("jpeg", "webp"):
        low, low_bytes = classic.code(images, fmt, 10)
        high, high_bytes = classic.code(images, fmt, 90)
        assert low.shape == images.shape and high_bytes > low_bytes
        assert ((high - images) ** 2).mean() < ((low - images) ** 2).mean()
        target = 8 * (low_bytes + high_bytes) / 2 / images.size
        hit = classic.at_rate(images, fmt, target)
        assert 10 <= hit["quality"] <= 90 and abs(hit["bpp"] - target) < 0.25 * target
    with pytest.raises(ValueError, match="unknown format"):
        classic.code(images, "gif", 50)
    with pytest.raises(ValueError, match="lie in"):
        classic.code(images * 2, "jpeg", 50)


def test_ssim_and_ms_ssim_are_one_for_identical_images_and_fall_with_noise():
    from varilab.codec import classic

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4, 28, 28))
    assert classic.ssim(x, x) == pytest.approx(1.0)
    a = classic.ssim(np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1), x)
    b = classic.ssim(np.clip(x + 0.3 * rng.standard_normal(x.shape), 0, 1), x)
    assert 1 > a > b
    assert 0 < classic.ssim(np.clip(x[:, :8, :8] + 0.1, 0, 1), x[:, :8, :8]) < 1  # small images: a smaller window
    assert classic.ms_ssim(x, x) == pytest.approx(1.0)
    ma = classic.ms_ssim(np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1), x)
    mb = classic.ms_ssim(np.clip(x + 0.3 * rng.standard_normal(x.shape), 0, 1), x)
    assert 1 > ma > mb > 0
    with pytest.raises(ValueError, match="differ in shape"):
        classic.ms_ssim(x[:2], x)


def test_quality_at_another_codecs_rate_interpolates_and_extrapolates_its_curve():
    from varilab.codec.rd import inside, quality_at

    rates, psnr = [0.5, 1.0, 2.0], [20.0, 24.0, 28.0]
    assert quality_at(rates, psnr, 1.5) == pytest.approx(26.0)
    assert quality_at(rates[::-1], psnr[::-1], 0.75) == pytest.approx(22.0)  # any order
    assert quality_at(rates, psnr, 3.0) == pytest.approx(32.0) and not inside(rates, 3.0)  # the last segment's line
    assert quality_at(rates, psnr, 0.25) == pytest.approx(18.0) and inside(rates, 1.0)
    assert quality_at([1.0, 1.0], [2.0, 3.0], 5.0) == 3.0  # one rate: a flat curve at its best
    with pytest.raises(ValueError, match="needs points"):
        quality_at([], [], 1.0)


def test_the_front_keeps_only_points_no_other_beats():
    from varilab.codec.rd import front

    rates, psnr = front([2.0, 0.5, 1.0, 1.5, 1.0], [21.0, 20.0, 22.5, 22.0, 21.0])
    assert rates == [0.5, 1.0] and psnr == [20.0, 22.5]  # 1.5 and 2.0 cost more for less
    rates, psnr = front([2.0, 0.5, 1.0, 1.5, 1.0], [21.0, 20.0, 22.5, 22.0, 21.0], pad=True)
    assert rates == [0.5, 1.0, 2.0] and psnr == [20.0, 22.5, 22.5]  # flat out to the costliest run: padding
    assert front([0.5, 1.0], [20.0, 22.0], pad=True) == ([0.5, 1.0], [20.0, 22.0])  # the best run is the costliest


def test_bd_rate_against_hand_computed_examples():
    from varilab.codec.rd import bd_rate

    psnr = [30, 33, 36, 39]
    ref = [1, 2, 4, 8]  # ln r = ln 2 (q - 30) / 3
    assert bd_rate(ref, psnr, [0.5, 1, 2, 4], psnr) == pytest.approx(-50, abs=1e-9)  # half the rate everywhere
    # the same curve 1.5 dB better: at every q its rate is 2^(-1/2) the reference's, on the overlap [31.5, 39]
    assert bd_rate(ref, psnr, ref, [31.5, 34.5, 37.5, 40.5]) == pytest.approx(100 * (2 ** -0.5 - 1), abs=1e-9)
    # ln r = ln r_ref + 0.01 (q - 30)^2 on [30, 36]: mean offset 0.01 * 6^3 / 3 / 6 = 0.12
    q = np.array([30.0, 32, 34, 36])
    base = np.log(2) * (q - 30) / 3
    assert bd_rate(np.exp(base), q, np.exp(base + 0.01 * (q - 30) ** 2), q) == pytest.approx(100 * np.expm1(0.12),
                                                                                                abs=1e-9)
    assert bd_rate(ref, psnr, ref, psnr) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="share no quality range"):
        bd_rate(ref, psnr, ref, [40, 41, 42, 43])
    with pytest.raises(ValueError, match="positive rates"):
        bd_rate(ref, psnr, [0, 1, 2, 3], psnr)


def test_trivial_baselines_by_hand_and_the_sentence_when_a_file_is_worse():
    from varilab.codec import classic

    x = np.array([[[0.0, 0.4], [0.6, 1.0]]])  # 1 bit: levels {0, 1} -> 0, 0, 1, 1: MSE (0.16 + 0.16) / 4
    t = classic.trivial(x)
    assert t["bits"][1] == pytest.approx(-10 * np.log10(0.08))
    assert t["bits"][2] == pytest.approx(-10 * np.log10((2 * (0.4 - 1 / 3) ** 2) / 4))  # levels 0, 1/3, 2/3, 1
    assert t["lossless_bpp"] == pytest.approx(2.0)  # four distinct 8-bit values, once each
    said = classic.beaten_by_trivial(2.5, 10.0, x)
    assert "rounding each pixel to 1 bit (1 bit per pixel" in said and "lossless entropy (2.00" in said
    assert classic.beaten_by_trivial(0.5, 10.0, x) == ""  # below every k-bit rate and below the entropy
    assert "lossless entropy" in classic.beaten_by_trivial(2.5, 80.0, x)
