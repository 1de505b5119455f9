"""`varilab train --model vq-codec`, `compress` and `decompress`: real files that decode to the codes the encoder
chose, whatever the thread count, and one-line refusals of damaged files and files of another model."""
import json
import os
import re

import numpy as np
import pytest
import torch

from pages import says_each_thing_once
from varilab import cli

pytest.importorskip("constriction")
TINY = ["--data", "digits", "--epochs", "2", "--groups", "2", "--codes", "16", "--latent", "8", "--hidden", "16",
        "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("codec")
    for name, seed in (("a", "0"), ("b", "1")):
        assert cli.main(["train", "--model", "vq-codec", *TINY, "--seed", seed, "--out", str(root / name)]) == 0
    return root


def test_eval_reports_file_bits_beside_the_estimate_and_the_codes_round_trip(runs, capsys):
    assert cli.main(["eval", str(runs / "a"), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["codes_round_trip"] is True
    assert 0.9 * e["bpp_estimated"] < e["bpp_file"] < 1.2 * e["bpp_estimated"] + 0.05
    assert 1 <= min(min(p) for p in e["perplexity"]) <= max(max(p) for p in e["perplexity"]) <= 16
    from varilab.codec import classic
    from varilab.families.registry import load

    t = classic.trivial(load(runs / "a").data.x_test.reshape(-1, 8, 8).numpy())
    worse = any(k <= e["bpp_file"] and q >= e["psnr"] for k, q in t["bits"].items()) or e["bpp_file"] > t["lossless_bpp"]
    assert bool(e["worse_than_trivial"]) == worse  # the sentence exactly when a trivial baseline beats the file


def test_a_file_worse_than_rounding_the_pixels_says_so_on_the_page(runs, capsys):
    assert cli.main(["eval", str(runs / "a"), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert cli.main(["report", str(runs / "a"), "--force"]) == 0
    page = (runs / "a" / "report.html").read_text()
    says_each_thing_once(page)
    assert ("This run&#x27;s file is no use on these images" in page or "This run's file is no use" in page) == \
        bool(e["worse_than_trivial"])
    assert "worse_than_trivial" not in page and ">ms_ssim<" not in page  # the warning says it once; no None row


def test_a_file_decodes_identically_with_another_thread_count(runs, tmp_path, capsys):
    f = tmp_path / "x.vlc"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 0
        torch.set_num_threads(2)
        assert cli.main(["decompress", str(runs / "a"), "--input", str(f), "--out", str(tmp_path / "d2")]) == 0
        torch.set_num_threads(1)
        assert cli.main(["decompress", str(runs / "a"), "--input", str(f), "--out", str(tmp_path / "d1")]) == 0
    finally:
        torch.set_num_threads(threads)
    one, two = np.load(tmp_path / "d1/images.npy"), np.load(tmp_path / "d2/images.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "d1/codes.npy"), np.load(tmp_path / "d2/codes.npy"))
    np.testing.assert_allclose(one, two, atol=1e-6)
    assert one.shape == (359, 1, 8, 8) and one.min() >= 0 and one.max() <= 1


def test_damaged_and_foreign_files_are_refused_in_one_line(runs, tmp_path, capsys):
    f = tmp_path / "x.vlc"
    assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 0
    data = f.read_bytes()
    cases = {"truncated": data[:-9], "corrupted": data[:-20] + bytes([data[-20] ^ 4]) + data[-19:],
             "not a varilab": b"GIF89a" + data[6:]}
    for message, damaged in cases.items():
        (tmp_path / "bad.vlc").write_bytes(damaged)
        assert cli.main(["decompress", str(runs / "a"), "--input", str(tmp_path / "bad.vlc"),
                         "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert cli.main(["decompress", str(runs / "b"), "--input", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "another model" in capsys.readouterr().err


def test_a_crafted_header_with_a_valid_checksum_is_one_line_naming_the_file(runs, tmp_path, capsys):
    """A .vlc of this run's model whose header promises an absurd grid, or more symbols than its stream holds, was an
    assertion deep in the range decoder (or an allocation until killed)."""
    from varilab.codec import container
    from varilab.families import registry
    from varilab.families.coding import identity

    f = tmp_path / "x.vlc"
    assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 0
    meta, stream = container.unpack(f.read_bytes())
    n = meta["images"][0]
    ident = identity(registry.load(runs / "a"))
    cases = {"huge": ({**meta, "grid": [n, 10**6, 10**6]}, stream, r"would need about [\d,.]+ GiB"),
             "short": ({**meta, "grid": [n, 64, 64]}, stream, r"does not hold the [\d,]+ symbols"),
             "shape": ({**meta, "images": [n, 1, 28, 28]}, stream, r"images \[\d+, 1, 28, 28\]; this run's are"),
             "grid": ({**meta, "grid": "x"}, stream, "symbol grid 'x'")}
    for name, (header, body, pattern) in cases.items():
        (tmp_path / f"{name}.vlc").write_bytes(container.pack(ident, header, body))
        rc = cli.main(["decompress", str(runs / "a"), "--input", str(tmp_path / f"{name}.vlc"), "--out",
                       str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], (name, err)
        assert f"--input {tmp_path / name}.vlc: " in err[0] and re.search(pattern, err[0]), (name, err)
    assert not (tmp_path / "o" / "images.npy").exists()


def test_an_empty_or_complex_array_to_compress_is_one_line_naming_the_file(runs, tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8), dtype=np.float32))
    np.save(tmp_path / "complex.npy", np.full((2, 8, 8), 0.5 + 0.1j))
    for name, message in (("empty", "an empty array (shape [0, 8, 8])"), ("complex", "expected real numbers")):
        assert cli.main(["compress", str(runs / "a"), "--input", str(tmp_path / f"{name}.npy"),
                         "--out", str(tmp_path / f"{name}.vlc")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--input {tmp_path / name}.npy: {message}" in err[0], err
        assert not (tmp_path / f"{name}.vlc").exists()


def test_a_second_compress_to_the_same_file_is_refused_while_the_first_writes_it(runs, tmp_path, capsys):
    """Two compress to one .vlc both succeeded, the last writer winning; now the file's lock refuses the second,
    naming the first, and a finished file is replaced only with --force."""
    from varilab.families import folder

    f = tmp_path / "x.vlc"
    with folder.file_lock(f, "compress"):  # the first writer, still at work
        assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 2
        err = capsys.readouterr().err
        assert f"{f} is being written by process {os.getpid()} (varilab compress)" in err
        assert not f.exists()
    assert not (tmp_path / ".x.vlc.lock").exists()
    assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 0
    capsys.readouterr()
    assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_files_are_written_whole_or_not_at_all(runs, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "x.vlc"
    assert cli.main(["compress", str(runs / "a"), "--out", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and len(err.splitlines()) == 1
    f = tmp_path / "x.vlc"
    f.write_bytes(b"an older file")
    assert cli.main(["compress", str(runs / "a"), "--out", str(f), "--force"]) == 0
    assert cli.main(["decompress", str(runs / "a"), "--input", str(f), "--out", str(tmp_path / "d")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "x.vlc"]  # replaced, no temporary left behind
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [".lock", "codes.npy", "images.npy"]  # and the
    # folder's lock, as attack and solve leave: a second command writing it at the same time is refused
    assert np.load(tmp_path / "d" / "images.npy").shape[1] == 1


def test_the_factorized_baseline_writes_and_reads_its_files(tmp_path, capsys):
    out = tmp_path / "fac"
    assert cli.main(["train", "--model", "factorized", "--data", "digits", "--epochs", "1", "--latent", "4",
                     "--hidden", "8", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["codes_round_trip"] is True and e["support"] == 15
    assert 0.9 * e["bpp_estimated"] < e["bpp_file"] < 1.1 * e["bpp_estimated"] + 0.05
    assert cli.main(["train", "--model", "factorized", "--groups", "4", "--out", str(tmp_path / "x")]) == 2
    assert "--groups" in capsys.readouterr().err  # an option of vq-codec only is refused for factorized


def test_the_report_shows_decodings_beside_jpeg_and_webp(runs, capsys):
    assert cli.main(["report", str(runs / "a"), "--force"]) == 0
    page = (runs / "a" / "report.html").read_text()
    assert "<th>ema_decay</th>" in page and "<th>tau_start</th>" not in page  # only the ema quantiser's options
    assert "jpeg (quality" in page and "webp (quality" in page and "perplexity" in page
    assert page.count("<img") >= 3


def test_the_report_says_when_jpeg_cannot_reach_the_run_rate_and_compares_at_its_lowest(runs, capsys):
    """8x8 digits: a JPEG file of each image costs tens of bits per pixel in headers alone, far above the run's rate;
    the page says so in words and marks the row, instead of calling quality 1 the closest."""
    from varilab.codec import classic
    from varilab.families import registry
    from varilab.families.codec.files import images

    assert cli.main(["eval", str(runs / "a"), "--json"]) == 0
    bpp = json.loads(capsys.readouterr().out)["bpp_file"]
    grey = images(registry.load(runs / "a").data, "test")[:, 0].numpy()
    lowest = 8 * classic.code(grey, "jpeg", 1)[1] / grey.size
    assert lowest > bpp  # the case: JPEG's lowest rate is above this run's
    assert cli.main(["report", str(runs / "a"), "--force"]) == 0
    page = (runs / "a" / "report.html").read_text()
    assert (f"JPEG cannot reach {bpp:.2f} bpp on these images: its lowest rate is {lowest:.2f} bpp (quality 1); the "
            "comparison is at its lowest") in page
    assert "jpeg (quality 1, its lowest rate: above this run&#x27;s)" in page  # the table's row is marked


INR = ["--data", "faces", "--epochs", "30", "--units", "8", "--layers", "1", "--fourier", "3", "--kappa", "8",
       "--fit-steps", "150", "--finetune-steps", "2", "--quiet"]


@pytest.mark.parametrize("model", ["recombiner", "combiner"])
def test_inr_codecs_send_blocks_of_kappa_bits_that_decode_identically_with_another_thread_count(model, tmp_path,
                                                                                               capsys):
    out = tmp_path / model
    assert cli.main(["train", "--model", model, *INR, "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["codes_round_trip"] is True and e["coded_bits"] == e["test_images"] * e["blocks"] * 8
    assert 0.85 < e["coded_over_kl"] < 1.15  # each block's lambda tuned to spend its kappa bits
    assert e["bpp_file"] * e["test_images"] * 625 >= e["coded_bits"]  # the file holds at least the blocks
    f, threads = tmp_path / "x.vlc", torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert cli.main(["compress", str(out), "--out", str(f)]) == 0
        torch.set_num_threads(2)
        assert cli.main(["decompress", str(out), "--input", str(f), "--out", str(tmp_path / "d2")]) == 0
        torch.set_num_threads(1)
        assert cli.main(["decompress", str(out), "--input", str(f), "--out", str(tmp_path / "d1")]) == 0
    finally:
        torch.set_num_threads(threads)
    one, two = np.load(tmp_path / "d1/images.npy"), np.load(tmp_path / "d2/images.npy")
    np.testing.assert_allclose(one, two, atol=1e-6)
    assert one.shape == (40, 1, 25, 25)
    from varilab.families import registry
    from varilab.families.codec.files import images

    r = registry.load(out)  # the progress bar's total is the work coding reports, step for step
    calls = []
    r.model.on_step = calls.append
    picks, _, _ = r.model.code(images(r.data, "test")[:3])
    assert len(calls) == r.model.coding_work(3)
    calls.clear()
    r.model.latents_of(picks)
    assert len(calls) == r.model.coding_work(3, decoding=True)
    if model == "recombiner":
        page = r.family.report(r)  # the prior-mean test error is drawn as what it is, on a panel of its own
        assert ("test_mse", "test images from the prior mean, unfitted (eval fits each)") in page.curves
        assert ("mse", "training posteriors' squared error", False) in page.curves
        assert cli.main(["train", "--model", "recombiner", "--groups", "4", "--out", str(tmp_path / "y")]) == 2
        assert "--groups" in capsys.readouterr().err
        assert cli.main(["report", str(out), "--force"]) == 0
        page = (out / "report.html").read_text()
        assert "shared-seed candidates" in page and "webp (quality" in page
        says_each_thing_once(page)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU beside the CPU")
def test_a_file_written_on_the_gpu_decodes_identically_on_the_cpu(runs):
    from varilab.families import codec as family
    from varilab.families.registry import load

    run = load(runs / "a")  # on the GPU where there is one
    x = family.images(run.data, "test")[:64]
    data, _ = family.encode(run, x)
    on_gpu, codes_gpu = family.decode(run, data)
    run.model.cpu()
    on_cpu, codes_cpu = family.decode(run, data)
    assert torch.equal(codes_gpu.cpu(), codes_cpu)
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=0)


def test_compress_and_decompress_replace_nothing_without_force(runs, tmp_path, capsys):
    """An existing .vlc or decompression is replaced only with --force, and a run's own files never."""
    f = tmp_path / "x.vlc"
    assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 0
    first = f.read_bytes()
    f.write_bytes(b"mine")
    capsys.readouterr()
    assert cli.main(["compress", str(runs / "a"), "--out", str(f)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and f.read_bytes() == b"mine"
    assert cli.main(["compress", str(runs / "a"), "--out", str(f), "--force"]) == 0 and f.read_bytes() == first
    weights = runs / "a" / "model.safetensors"
    before = weights.read_bytes()
    assert cli.main(["compress", str(runs / "a"), "--out", str(weights), "--force"]) == 2
    assert "a file of the run" in capsys.readouterr().err and weights.read_bytes() == before
    d = tmp_path / "d"
    assert cli.main(["decompress", str(runs / "a"), "--input", str(f), "--out", str(d)]) == 0
    images = (d / "images.npy").read_bytes()
    capsys.readouterr()
    assert cli.main(["decompress", str(runs / "a"), "--input", str(f), "--out", str(d)]) == 2
    assert "pass --force" in capsys.readouterr().err
    (tmp_path / "bad.vlc").write_bytes(first[:-3])  # a truncated file: refused, the earlier decompression kept
    assert cli.main(["decompress", str(runs / "a"), "--input", str(tmp_path / "bad.vlc"), "--out", str(d), "--force"]) == 2
    assert (d / "images.npy").read_bytes() == images and not (d / ".previous-decompress").exists()
