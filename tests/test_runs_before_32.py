"""Run folders of all seven families written by varilab at commit b182c05 (tests/fixtures/before32), the commit
before the refactor of varilab.families and varilab.cli: later code must still load them and print the same
numbers through the command line (`varilab eval`, `varilab diagnose`, `varilab report`). Only the CLI entry
`varilab.cli.main` is used, so that these tests hold whatever the Python API becomes."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from varilab.cli import main

BEFORE = Path(__file__).parent / "fixtures" / "before32"
EXPECTED = json.loads((BEFORE / "expected.json").read_text())
FAMILIES = {"vae": "vae", "sae": "topk", "diffusion": "diffusevae", "codec": "vq-codec", "sde": "latent-sde",
            "sequence": "pvrnn", "robust": "purifier"}  # run folder (named after its family) -> its model
STAGES = {"diffusion": ["diffusion/vae"]}  # run folders inside a run: DiffuseVAE's first stage is a VAE run


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def before(tmp_path, monkeypatch):
    """A copy of the folders, as the working directory (the SAE run names its activations relative to it).
    The numbers were recorded on a CPU: the run is kept there on a machine with a GPU. One thread: these tiny
    models run several times faster on one than on two busy cores, and every recorded number came out
    bit-identical with 1, 2 and 4 threads."""
    shutil.copytree(BEFORE, tmp_path / "before32")
    monkeypatch.chdir(tmp_path / "before32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield EXPECTED
    torch.set_num_threads(threads)


def same(actual, expected, where: str) -> None:
    """Every key of `expected` is in `actual` (new keys may appear), numbers to rel 1e-4, the rest equal. (CPUs with
    other vector units sum in another order: measured differences of up to 5e-6 between two machines.)"""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            assert key in actual, f"{where}: {key!r} is missing"
            same(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            same(a, e, f"{where}[{i}]")
    elif isinstance(expected, (bool, str)) or expected is None:
        assert actual == expected and type(actual) is type(expected), f"{where}: {actual!r} != {expected!r}"
    else:
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), f"{where}: {actual!r} != {expected!r}"
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-9), where


def check_eval_and_diagnose(capsys, run: str, expected: dict) -> None:
    rc, out, err = cli(capsys, "eval", run, "--json")
    assert rc == 0, err
    same(json.loads(out), expected["eval"], f"{run} eval")
    rc, out, err = cli(capsys, "diagnose", run, "--json")
    if "diagnose_exit" in expected:  # the family refuses diagnose, in one line
        assert rc == expected["diagnose_exit"] == 2, (rc, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and not out.strip(), err
    else:
        assert rc == 0, err
        same(json.loads(out), expected["diagnose"], f"{run} diagnose")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_run_written_before_the_refactor_evaluates_diagnoses_and_reports_as_it_did(before, name, capsys):
    assert json.loads(Path(name, "config.json").read_text())["model"] == FAMILIES[name]
    for run in [name] + STAGES.get(name, []):
        check_eval_and_diagnose(capsys, run, before[run])
    rc, out, err = cli(capsys, "report", name)
    assert rc == 0, err
    assert Path(name, "report.html").stat().st_size > 10_000
    if name == "sae":  # health.json is a cache: measured again from the weights and acts.npy, the same numbers
        Path("sae", "health.json").unlink()
        rc, out, err = cli(capsys, "eval", "sae", "--json")
        assert rc == 0, err
        same(json.loads(out), before["sae"]["eval"], "sae eval (health.json measured again)")
