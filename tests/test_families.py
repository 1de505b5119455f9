"""The family house: a family defined outside src/ runs through every command, options are spelled once,
old run folders still load, and every command answers on every family."""
import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from pages import says_each_thing_once
from varilab import commands
from varilab.cli import main
from varilab.families import folder, options, registry
from varilab.families.options import TrainOptions, option, positive_int
from varilab.families.protocol import VERBS, Command, Family, Run

ROOT = Path(__file__).resolve().parents[1]
LEGACY = Path(__file__).parent / "fixtures" / "legacy"


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


# --- a toy family, entirely in this file: a diagonal Gaussian fit by maximum likelihood -------------------

class GaussianFit(nn.Module):
    """x ~ N(mu, diag sigma^2); `encode` gives the posterior of nothing, so diagnose reports its scales."""

    def __init__(self, d: int):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(d))
        self.log_sigma = nn.Parameter(torch.zeros(d))

    def density(self):
        return Independent(Normal(self.mu, self.log_sigma.exp()), 1)


@dataclass
class ToyOptions(TrainOptions):
    DEFAULTS = {"epochs": 5, "lr": 0.1, "batch_size": 50}
    model: str = option("gauss", "the model", choices=("gauss",))
    dim: int = option(3, "data dimension", check=positive_int)
    n: int = option(400, "data points", check=positive_int)


def _toy_data(opts):
    from varilab.data import Dataset

    g = torch.Generator().manual_seed(opts.seed)
    x = 2.0 + 0.5 * torch.randn(opts.n, opts.dim, generator=g)
    return Dataset("toy", x[: opts.n * 3 // 4], x[opts.n * 3 // 4:])


def _nll(model, x, **_):
    return {"loss": -model.density().log_prob(x).mean()}  # -log N(x; mu, sigma^2)


def toy_train(opts, out, resume=False, quiet=False):
    from varilab.train import fit

    ds = _toy_data(opts)
    model = GaussianFit(opts.dim)
    folder.begin(out, TOY, opts, resume)
    return fit(model, ds, out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, objective=_nll, seed=opts.seed,
               resume=resume, quiet=quiet)


def toy_load(run_dir, opts, data=None, raw=None):
    from varilab.checkpoint import load_weights

    model = GaussianFit(opts.dim)
    load_weights(run_dir / "model.safetensors", model)
    return Run(run_dir, TOY, opts, model, _toy_data(opts))


def toy_evaluate(run):
    with torch.no_grad():
        return {"nll": float(_nll(run.model, run.data.x_test)["loss"]), "mu": run.model.mu.tolist()}


def toy_diagnose(run):
    sigma = run.model.log_sigma.exp().tolist()
    return {"sigma": sigma}, [f"sigma {', '.join(f'{s:.3f}' for s in sigma)}"]


def toy_report(run):
    from varilab.report import Page, Section, table

    return Page("toy Gaussian", "a fitted Gaussian", [Section("Fit", table([("mu[0]", float(run.model.mu[0].detach()))]))])


@dataclass
class EchoOptions:
    times: int = option(1, "how many lines", check=positive_int)
    word: str = option("gauss", "what each line says before the fitted mean")


def echo(run, opts):
    """`varilab echo RUN --times N`: the toy family's own command."""
    mu = float(run.model.mu[0].detach())
    return {"times": opts.times, "mu0": mu}, [f"{opts.word} {mu:.3f}"] * opts.times


TOY = Family("toy", {"gauss": "a diagonal Gaussian"}, ToyOptions, train=toy_train, load=toy_load,
             evaluate=toy_evaluate, diagnose=toy_diagnose, report=toy_report,
             commands={"echo": Command("print the fitted mean N times", EchoOptions, echo,
                                       about_run="a toy run (varilab train --model gauss)")})


@pytest.fixture
def toy():
    registry.register(TOY)
    yield TOY
    registry.FAMILIES.pop("toy")
    registry.MODELS.pop("gauss")


def test_a_family_defined_in_a_test_file_runs_through_every_command(toy, tmp_path, capsys):
    out = tmp_path / "toy"
    rc, stdout, err = cli(capsys, "train", "--model", "gauss", "--dim", "2", "--epochs", "30", "--out", out, "--quiet")
    assert rc == 0, err
    assert "trained gauss for 30 epochs" in stdout
    assert json.loads((out / "config.json").read_text()) == {
        "family": "toy", "format": folder.FORMAT, "model": "gauss", "dim": 2, "n": 400, "epochs": 30, "lr": 0.1,
        "seed": 0, "batch_size": 50, "data": None, "test_fraction": 0.2}  # the shared options, at the family's values
    rc, stdout, err = cli(capsys, "eval", out, "--json")
    assert rc == 0, err
    result = json.loads(stdout)
    assert result["mu"] == pytest.approx([2.0, 2.0], abs=0.1)  # the maximum-likelihood mean of N(2, 0.25)
    rc, stdout, err = cli(capsys, "diagnose", out, "--json")
    assert rc == 0 and json.loads(stdout)["sigma"] == pytest.approx([0.5, 0.5], abs=0.1)
    rc, stdout, err = cli(capsys, "report", out)
    assert rc == 0, err
    page = (out / "report.html").read_text()
    assert "toy Gaussian" in page and "Training curves" in page and "<th>dim</th>" in page
    rc, _, err = cli(capsys, "sample", out)
    assert rc == 2 and err.strip().startswith(f"varilab sample: `varilab sample` does not apply to toy runs ({out})")  # information, no "error:"
    assert "it applies to vae runs" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli(capsys, "train", "--model", "gauss", "--dim", "0", "--out", tmp_path / "bad")
    assert rc == 2 and "dim must be a positive integer, got 0" in err
    rc, _, err = cli(capsys, "train", "--out", out, "--resume", "--epochs", "31", "--quiet")
    assert rc == 0, err


def _parser_dests(cls, model):
    p = options.parser(cls, model, "test")
    p.parse_known_args([])  # simple-parsing adds a dataclass's arguments when it first parses
    group = [a for a in p._actions if a.dest.startswith("options.")]
    return {a.dest.removeprefix("options.") for a in group}, {s for a in group for s in a.option_strings}


def test_each_option_has_one_spelling_derived_from_its_dataclass(tmp_path):
    """For every model: the flags the parser accepts, the keys a config file accepts and the keys config.json
    records are exactly the dataclass fields that apply to the model."""
    for model, family in registry.builtin().items():
        keys = {f.name for f in dataclasses.fields(family.options) if options.applies(f, model)} - {"model"}
        dests, flags = _parser_dests(family.options, model)
        assert dests == keys, model
        bools = {f.name for f in dataclasses.fields(family.options) if f.type in (bool, "bool")} & keys
        expected = ({"--" + k.replace("_", "-") for k in keys} | {"-" + k for k in keys if len(k) == 1}
                    | {"--no" + k.replace("_", "-") for k in bools})  # dashes; a short -k; a negated switch
        assert flags == expected, model
        options.check_keys(keys | {"model"}, family.options, model, "config", {})  # every key is accepted
        others = {f.name for fam in registry.FAMILIES.values() for f in dataclasses.fields(fam.options)} - keys - {"model"}
        for key in others:
            with pytest.raises(ValueError, match="applies to|unknown config key"):
                options.check_keys([key], family.options, model, "config", registry.elsewhere(model))


def test_config_file_keys_are_the_options(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "vampprior"\npseudo-inputs = 7\nepochs = 1\nhidden = [8]\nlatent_dim = 2\n')
    rc, _, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "r", "--quiet")
    assert rc == 0, err
    saved = json.loads((tmp_path / "r/config.json").read_text())
    assert saved["pseudo_inputs"] == 7 and saved["model"] == "vampprior" and "beta2" not in saved
    cfg.write_text('model = "vae"\npseudo_inputs = 7\n')
    rc, _, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "r2")
    assert rc == 2 and "--pseudo-inputs applies to vampprior, not to vae" in err


def test_help_shows_only_the_options_of_the_model(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "vampprior", "--help"])
    text = capsys.readouterr().out
    assert "--pseudo-inputs" in text and "--latent-dim" in text and "--channels" not in text and "--beta2" not in text
    with pytest.raises(SystemExit):
        main(["train", "--model", "topk", "--help"])
    text = capsys.readouterr().out
    assert "--aux-coef" in text and "--kl-coef" not in text and "--latent-dim" not in text


def _help(capsys, *words) -> str:
    with pytest.raises(SystemExit):
        main([*words, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse's line breaks undone


def test_help_lists_the_models_and_writes_defaults_as_a_person_would(capsys):
    from varilab.families import registry
    from varilab.families.options import as_written

    text = _help(capsys, "train")
    for fam in registry.ordered():  # every model, by family, in train --help
        assert f"{fam.name}: {', '.join(fam.models)}" in text.replace("- ", "-")
    assert "--loss {eps,dsm,flow}" in _help(capsys, "train", "--model", "ddpm")  # no None among the choices
    assert "(default: 8/255)" in _help(capsys, "attack")
    assert [as_written(v) for v in (8 / 255, 1 / 3, 0.2, 2e-3, 1 / 32, 10_000)] == \
        ["8/255", "1/3", "0.2", "0.002", "0.03125", "10000"]


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    shutil.copytree(LEGACY, tmp_path / "legacy")
    monkeypatch.chdir(tmp_path / "legacy")  # the SAE folder names its activations relative to here
    return json.loads((LEGACY / "expected.json").read_text())


@pytest.mark.parametrize("name", ["vae", "sae", "ddpm"])
def test_run_folders_written_before_the_change_load_evaluate_diagnose_and_report(legacy, name, capsys):
    assert "family" not in json.loads(Path("vae/config.json").read_text())  # the VAE folder predates "family"
    rc, stdout, err = cli(capsys, "eval", name, "--json")
    assert rc == 0, err
    result = json.loads(stdout)
    for key, value in legacy[name].items():
        assert result[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-6)), key
    rc, stdout, err = cli(capsys, "diagnose", name, "--json")
    if name == "ddpm":
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "no learned posterior" in err
    else:
        assert rc == 0 and json.loads(stdout)
    rc, stdout, err = cli(capsys, "report", name)
    assert rc == 0, err
    assert Path(name, "report.html").stat().st_size > 10_000


def test_the_vae_report_shows_only_the_vae_options(tmp_path, capsys):
    out = tmp_path / "v"
    assert cli(capsys, "train", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--out", out, "--quiet")[0] == 0
    assert cli(capsys, "report", out)[0] == 0
    config = (out / "report.html").read_text().split("<h2>Configuration</h2>")[1]
    shown = set(re.findall(r"<tr><th>([a-z_0-9]+)</th>", config))
    assert {"latent_dim", "hidden", "likelihood", "beta", "epochs"} <= shown
    assert not shown & {"pseudo_inputs", "beta2", "categories", "latent_dim_2", "enc_var_1", "condition", "temperature",
                        "channels", "features", "kl_coef"}
    assert not shown & {"obs_var", "baseline"}  # a Bernoulli likelihood has no variance; no score estimator, no baseline
    assert "<tr><th>lr</th><td>0.001</td></tr>" in config  # reals as written, not 0.0010
    says_each_thing_once((out / "report.html").read_text())


def test_a_one_epoch_sae_run_draws_its_curve_from_many_points(tmp_path, capsys, monkeypatch):
    x = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "sae"
    assert cli(capsys, "train", "--model", "topk", "--data", tmp_path / "x.npy", "--features", "32", "--k", "4",
               "--epochs", "1", "--batch-size", "100", "--out", out, "--quiet")[0] == 0
    from varilab.report import plots

    drawn = {}
    real = plots.metric_curves
    monkeypatch.setattr(plots, "metric_curves", lambda m, k, **kw: drawn.update(kw) or real(m, k, **kw))
    assert cli(capsys, "report", out)[0] == 0
    points = [s for s in drawn["steps"] if "loss" in s]
    assert len(points) >= 20 and len({s["epoch"] for s in points}) == len(points)


def test_every_command_answers_on_every_family(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    runs = {"vae": ["--model", "vae", "--hidden", "16", "--latent-dim", "2"],
            "sae": ["--model", "relu", "--data", tmp_path / "x.npy", "--features", "16", "--batch-size", "100"],
            "diffusion": ["--model", "flow", "--channels", "8"]}
    for name, args in runs.items():
        out = tmp_path / name
        rc, _, err = cli(capsys, "train", *args, "--epochs", "1", "--out", out, "--quiet")
        assert rc == 0, err
        for command in (["eval", out, "--json"], ["diagnose", out, "--json"], ["report", out],
                        ["sample", out, "--n", "4", "--out", tmp_path / f"{name}.npy"]):
            rc, stdout, err = cli(capsys, *command)
            assert rc == 0 or (rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err), (command, err)
            if rc == 0 and command[0] in ("eval", "diagnose"):
                json.loads(stdout)
        assert (name in ("vae", "diffusion")) == (tmp_path / f"{name}.npy").exists()
    samples = np.load(tmp_path / "vae.npy")
    assert samples.shape == (4, 8, 8) and 0 <= samples.min() and samples.max() <= 1  # Bernoulli means of digits


def test_a_run_that_stops_while_improving_says_so(toy, tmp_path, capsys):
    falling = [{"epoch": e, "test_loss": 100.0 * 0.95 ** e} for e in range(1, 21)]
    flat = [{"epoch": e, "test_loss": 50.0 + 0.01 * (e % 2)} for e in range(1, 21)]
    assert "the test loss over the last 2 of its 20 epochs fell 9.8%" in commands.still_improving(falling)
    steps = [{"step": i, "loss": 10.0 - 0.01 * i} for i in range(1, 101)]  # a short run: its training loss decides
    assert "the training loss over the last 10% of its 100 steps fell" in commands.still_improving(falling[:2], steps)
    assert commands.still_improving(falling[:2], [{"step": i, "loss": 1.0} for i in range(1, 101)]) == ""
    assert commands.still_improving(flat) == ""
    # the toy family, for every family: 9 epochs of a slow fit are still improving, 150 have converged
    rc, stdout, _ = cli(capsys, "train", "--model", "gauss", "--epochs", "9", "--lr", "0.01", "--out", tmp_path / "a")
    assert rc == 0 and "more epochs would likely help" in stdout.strip().splitlines()[-1]
    assert cli(capsys, "report", tmp_path / "a")[0] == 0
    assert "This run stopped while still improving: the training loss" in (tmp_path / "a/report.html").read_text()
    rc, stdout, _ = cli(capsys, "train", "--model", "gauss", "--epochs", "150", "--out", tmp_path / "b", "--quiet")
    assert rc == 0 and "still improving" not in stdout
    assert cli(capsys, "report", tmp_path / "b")[0] == 0
    assert "still improving" not in (tmp_path / "b/report.html").read_text()


def test_the_command_line_module_stays_thin():
    text = (ROOT / "src/varilab/cli.py").read_text()
    assert len(text.splitlines()) < 200
    for family in ("vae", "sae", "diffusion", "ddpm", "topk"):
        assert not re.search(rf"[\"']{family}[\"']", text), family  # no family-specific branch


def test_a_family_in_a_test_file_brings_its_own_command(toy, tmp_path, capsys):
    """`echo` is the toy family's own command: on the CLI with its options in --help, JSON output, and refused on
    the runs of families without it, with no change under src/."""
    out = tmp_path / "toy"
    assert cli(capsys, "train", "--model", "gauss", "--dim", "2", "--epochs", "30", "--out", out, "--quiet")[0] == 0
    rc, stdout, err = cli(capsys, "echo", out, "--times", "3", "--word", "mu")
    assert rc == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r"mu [12]\.\d{3}", line) for line in lines), lines
    rc, stdout, err = cli(capsys, "echo", out, "--times", "2", "--json")
    assert rc == 0 and json.loads(stdout)["times"] == 2 and json.loads(stdout)["mu0"] == pytest.approx(2.0, abs=0.1)
    with pytest.raises(SystemExit) as done:
        main(["echo", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--times" in text and "how many lines" in text and "print the fitted mean N times" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert re.search(r"echo\s+print the fitted mean N times \(toy runs\)", capsys.readouterr().out)
    rc, _, err = cli(capsys, "echo", out, "--times", "0")
    assert rc == 2 and "times must be a positive integer, got 0" in err
    rc, _, err = cli(capsys, "echo", out, "--tims", "2")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    vae = tmp_path / "vae"
    assert cli(capsys, "train", "--hidden", "8", "--latent-dim", "2", "--epochs", "1", "--out", vae, "--quiet")[0] == 0
    rc, _, err = cli(capsys, "echo", vae, "--times", "2")
    assert rc == 2 and err.strip() == (f"varilab echo: `varilab echo` does not apply to vae runs ({vae}); it "
                                       "applies to toy runs (gauss)")
    rc, _, err = cli(capsys, "predict", out)  # a command of another family on a toy run
    assert rc == 2 and "does not apply to toy runs" in err
    assert "it applies to multimodal runs (mm-mae, mm-student), sequence runs (pvrnn)" in err  # each family's version


def test_without_the_family_its_command_is_unknown(capsys):
    rc, _, err = cli(capsys, "echo", "somewhere")
    assert rc == 2 and err.startswith("varilab: error: unknown command 'echo'; choose one of train, eval")


def test_a_verbs_own_flags_belong_to_the_families_that_declare_them():
    """No family takes a flag of a verb that it only refuses: each verb's keyword parameters are exactly the fields
    of the flags the family declares for it (sample also takes n and seed, every family's)."""
    import inspect

    common = {"evaluate": set(), "diagnose": set(), "report": set(), "sample": {"n", "seed"}}
    for family in registry.ordered():
        for verb in VERBS:
            fn = getattr(family, verb)
            if fn is None:
                assert verb not in family.flags, (family.name, verb)
                continue
            params = set(list(inspect.signature(fn).parameters)[1:])
            flags = {f.name for f in dataclasses.fields(family.flags[verb])} if verb in family.flags else set()
            optional = {p for p, v in inspect.signature(fn).parameters.items() if v.default is not inspect.Parameter.empty}
            assert flags | common[verb] <= params, (family.name, verb)
            extra = params - flags - common[verb]
            assert extra <= optional - {"nll_k", "threshold", "sae_lens_window", "steps", "sampler", "prior", "length"}, \
                (family.name, verb, extra)  # only internal keywords with defaults (seed, points, chain) remain


def test_every_family_extends_the_shared_options_and_declares_none_of_them_again():
    shared = {f.name for f in dataclasses.fields(TrainOptions)}
    assert shared == {"data", "epochs", "batch_size", "lr", "seed", "test_fraction"}
    for family in registry.ordered():
        assert issubclass(family.options, TrainOptions), family.name
        own = family.options.__dict__.get("__annotations__", {})
        assert not shared & set(own), (family.name, shared & set(own))
        for model in family.models:
            opts = family.options(model=model)
            assert opts.epochs is not None and opts.lr is not None and opts.test_fraction is not None, model


def test_per_model_defaults_are_data_and_shown_in_help(capsys):
    from varilab.families.codec import CodecOptions

    assert CodecOptions(model="recombiner").epochs == 1000 and CodecOptions(model="vq-codec").epochs == 30
    assert CodecOptions(model="recombiner").batch_size is None and CodecOptions(model="vq-codec").batch_size == 64
    assert CodecOptions(model="recombiner", epochs=7).epochs == 7
    for model, epochs, lr in (("recombiner", 1000, 0.01), ("vq-codec", 30, 0.002)):
        with pytest.raises(SystemExit):
            main(["train", "--model", model, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert re.search(rf"--epochs int .*?\(default: {epochs}\)", text), model
        assert re.search(rf"--lr float .*?\(default: {lr}\)", text), model


def test_every_commands_help_reads_like_trains(capsys):
    """Issue 33, item 16: --help of a command built from an options class showed the parser's internals ("Options
    ['options']: Options of pgd:"), "[int]" for an option that takes a value, and "(default: None)" on flags that
    have no default or must be given. Walks every command of every family, for each of its choices."""
    import dataclasses

    from varilab.commands import listing

    registry.builtin()
    words = [["train", "--model", m] for fam in registry.ordered() for m in fam.models]
    for fam in registry.ordered():
        for name, cmd in fam.commands.items():
            axis = options.axis(cmd.options)
            field = next((f for f in dataclasses.fields(cmd.options) if f.name == axis), None)
            choices = list(cmd.choices or (field.metadata["choices"] if field else None) or [None])
            words += [[name] + ([options.flag(axis), c] if c else []) for c in choices]
    words += [[name] for name in listing() if name != "data"]
    for argv in words:
        with pytest.raises(SystemExit):
            main(argv + ["--help"])
        text = capsys.readouterr().out
        assert "usage: varilab" in text, argv
        for internal in ("(default: None)", "[int]", "[float]", "[str]", "Options [", "(default: )"):
            assert internal not in text, (argv, internal)
    assert len(words) > 40


def test_text_output_aligns_its_keys_and_writes_numbers_as_json_does():
    from varilab.commands.printing import table_lines, value

    lines = table_lines({"psnr": 27.25861, "codes_round_trip": True, "tiny": 1.6e-05, "perplexity": [[14.4496, 13.5]],
                         "rows": [{"k": 1, "nll": 0.123456}, {"k": 10, "nll": 2e-06}]})
    assert lines[:4] == ["            psnr  27.2586", "codes_round_trip  True", "            tiny  1.6e-05",
                         "      perplexity  [[14.4496, 13.5000]]"]
    assert lines[4:] == ["", "rows", " k     nll", " 1  0.1235", "10   2e-06"]
    assert value(0.0) == "0.0000" and value(float("nan")) == "nan" and value(None) == "None"
    assert value({"rgb": 0.9013447165489197, "depth": 2e-06}) == "{rgb: 0.9013, depth: 2e-06}"


def test_page_tables_write_lists_of_numbers_as_numbers():
    from varilab.report.page import table

    html = table([("perplexity", [[14.449592590332031, 13.528477668762207]]), ("codes", [4.231181621479031, 2e-05]),
                  ("sizes", [1, 2000]), ("by subset", {"rgb": 0.9013447165489197, "depth": 3})])
    assert "<td>rgb: 0.9013, depth: 3</td>" in html
    assert "<td>[14.4496, 13.5285]</td>" in html and "<td>4.2312, 2e-05</td>" in html and "<td>1, 2000</td>" in html


def test_final_metrics_leave_out_what_the_configuration_shows():
    from varilab.report.page import metrics_rows

    config = [("data", "digits"), ("codes", "64"), ("lr", "0.001"), ("eps", "8/255"), ("scenes", "3000")]
    e = {"data": "digits", "codes": 64, "lr": 0.001, "eps": 8 / 255, "ms_ssim": None, "psnr": 27.2, "scenes": 600}
    assert metrics_rows(e, config, {"scenes": "test scenes"}) == [("psnr", 27.2), ("test scenes", 600)]
    assert metrics_rows({"data": "fou (H = 0.7)", "codes": 32}, config) == [("data (as loaded)", "fou (H = 0.7)"),
                                                                          ("codes", 32)]


def test_curves_label_their_y_axes_with_units(monkeypatch):
    from varilab.report import plots

    seen = []
    monkeypatch.setattr(plots, "png", lambda fig: seen.append([ax.get_ylabel() for ax in fig.axes]) or b"")
    metrics = [{"epoch": 1, "loss": 1.0, "test_loss": 1.1, "psnr": 20.0, "kl": 3.0},
               {"epoch": 2, "loss": 0.5, "test_loss": 0.6, "psnr": 22.0, "kl": 2.0}]
    plots.metric_curves(metrics, ["loss", ("psnr", "PSNR"), "kl", ("test_loss", "test loss"),
                                  ("test_loss", "running free", False, None, "squared error, summed")])
    plots.lines([("usage of codebook 1", "code", {"share": [0.5, 0.3, 0.2]})])
    assert seen == [["objective", "PSNR (dB)", "KL (nats)", "objective", "squared error, summed"], ["share"]]


def test_a_curve_with_a_reference_draws_the_truth(monkeypatch):
    from varilab.report import plots

    seen = []
    monkeypatch.setattr(plots, "png", lambda fig: seen.append(fig.axes[0].get_legend_handles_labels()[1]) or b"")
    plots.metric_curves([{"epoch": 1, "hurst": 0.5}, {"epoch": 2, "hurst": 0.6}], [("hurst", "H", True, 0.7)])
    assert seen == [["truth 0.7", "train"]]
