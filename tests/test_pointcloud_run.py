"""`varilab train --model pointcloud-ae` and `--model squeeze3d` through the command line: the runs evaluate, diagnose,
sample and report; a squeeze3d run holds its encoder and generator, so it decodes without them."""
import json
import shutil

import numpy as np
import pytest

from pages import says_each_thing_once
from varilab.cli import main

pytest.importorskip("trimesh")
TINY = ["--shapes", "120", "--points", "128", "--epochs", "2", "--width", "32", "--latent", "4", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pc")
    assert main(["train", "--model", "pointcloud-ae", *TINY, "--out", str(root / "G")]) == 0
    assert main(["train", "--model", "pointcloud-ae", *TINY, "--seed", "1", "--out", str(root / "E")]) == 0
    assert main(["train", "--model", "squeeze3d", "--generator", str(root / "G"), "--encoder", str(root / "E"),
                 "--bits", "8", "--code-dims", "2", "--samples", "500", "--epochs", "2", "--quiet",
                 "--out", str(root / "S")]) == 0
    return root


def test_the_autoencoder_run_evaluates_diagnoses_samples_and_reports(runs, capsys):
    capsys.readouterr()
    assert main(["eval", str(runs / "G"), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["shapes"] == 24 and 0 < e["chamfer"] <= e["chamfer_p90"] < 4  # normalised shapes: the unit ball
    assert main(["diagnose", str(runs / "G"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["kl_per_dim"]) == 4
    assert main(["sample", str(runs / "G"), "--n", "3"]) == 0
    assert np.load(runs / "G" / "samples.npy").shape == (3, 384)
    assert main(["report", str(runs / "G"), "--force"]) == 0
    assert "three views" in (runs / "G" / "report.html").read_text()
    says_each_thing_once((runs / "G" / "report.html").read_text())


def test_a_squeeze3d_run_reports_bytes_and_ratio_and_decodes_without_its_parts(runs, tmp_path, capsys):
    alone = tmp_path / "S"
    shutil.copytree(runs / "S", alone)  # without runs/G and runs/E beside it: E and G are in its own weights
    capsys.readouterr()
    assert main(["eval", str(alone), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["bits"] == 8 and e["bytes_per_shape"] == 1 and e["ratio"] == 128 * 3 * 4  # raw float32 / 1 byte
    assert e["shapes"] == 200 and e["chamfer"] > 0 and "chamfer_generator_own" in e
    # the baselines at the same 8 bits: 2 points of coordinates at 1 bit (3 x 1 bit each, 6 of the 8 bits) is the
    # only quantiser that fits besides 1 point at 2 bits; G's 4 latents at 2 bits each
    assert e["coordinates_points"] * 3 * e["coordinates_bits_per_coordinate"] <= 8
    assert e["latent_bits_per_coordinate"] == 2 and e["latent_quantised_chamfer"] > 0
    assert e["coordinates_over_squeeze3d"] == pytest.approx(e["coordinates_chamfer"] / e["chamfer"], rel=1e-6)
    assert main(["report", str(alone)]) == 0
    page = (alone / "report.html").read_text()
    says_each_thing_once(page)
    assert "times smaller than float32 coordinates" in page and "At equal bytes" in page
    assert main(["sample", str(alone)]) == 2
    assert "sample its generator run" in capsys.readouterr().err


def test_squeeze3d_takes_only_autoencoder_runs_and_bad_shapes_are_one_line(runs, tmp_path, capsys):
    capsys.readouterr()
    cases = [(["--model", "squeeze3d", "--generator", str(runs / "S"), "--encoder", str(runs / "E")],
              "is a squeeze3d run, not a pointcloud-ae"),
             (["--model", "squeeze3d", "--encoder", str(runs / "E")], "generator must be given"),
             (["--model", "squeeze3d", "--generator", str(runs / "G"), "--encoder", str(runs / "E"), "--bits", "9",
               "--code-dims", "2"], "bits must be a positive multiple of code_dims")]
    np.save(tmp_path / "flat.npy", np.zeros((5, 128, 2), np.float32))
    cases.append((["--model", "pointcloud-ae", "--data", str(tmp_path / "flat.npy"), "--points", "128"], "flat.npy"))
    for args, message in cases:
        assert main(["train", *args, "--out", str(tmp_path / "x"), "--quiet"]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
    assert not (tmp_path / "x").exists()


def test_compress_and_decompress_code_shapes_as_images_and_refuse_another_runs_file(runs, tmp_path, capsys):
    """The shared .vlc commands: a squeeze3d run's file decodes to the shapes its model decodes, the same on a second
    call; a file of another squeeze3d run, or of a codec run, is refused in one line."""
    import torch

    from varilab.families import registry

    f = tmp_path / "s.vlc"
    assert main(["compress", str(runs / "S"), "--out", str(f), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["shapes"] == 200 and r["bytes"] < 200 + 400  # 1 byte a shape, a header of a few hundred bytes
    for out in ("d1", "d2"):
        assert main(["decompress", str(runs / "S"), "--input", str(f), "--out", str(tmp_path / out), "--quiet"]) == 0
    a, b = np.load(tmp_path / "d1" / "points.npy"), np.load(tmp_path / "d2" / "points.npy")
    run = registry.load(runs / "S")
    x = run.data.x_test.reshape(200, 128, 3)
    assert a.shape == (200, 128, 3) and np.array_equal(a, b)
    np.testing.assert_allclose(a, run.model.decompress(run.model.compress(x)).numpy(), atol=1e-6)
    codes = np.load(tmp_path / "d1" / "codes.npy")
    assert codes.shape == (2, 200) and codes.max() < 16  # 2 code scalars of 4 bits
    assert torch.equal(torch.as_tensor(codes.T), run.model.compress(x))
    other = tmp_path / "S2"
    assert main(["train", "--model", "squeeze3d", "--generator", str(runs / "G"), "--encoder", str(runs / "E"),
                 "--bits", "8", "--code-dims", "2", "--samples", "200", "--epochs", "1", "--seed", "3", "--quiet",
                 "--out", str(other)]) == 0
    capsys.readouterr()
    assert main(["decompress", str(other), "--input", str(f), "--out", str(tmp_path / "d3")]) == 2
    assert "written by another model" in capsys.readouterr().err
    assert main(["compress", str(runs / "G"), "--out", str(tmp_path / "g.vlc")]) == 2
    assert "take a squeeze3d run" in capsys.readouterr().err
