"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_diagnose_example_runs(capsys):
    code = next(b for b in blocks() if "diagnose(" in b)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"latents? (is|are) active", out)


def test_readme_adapter_example_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = next(b for b in blocks() if "pythae_style" in b)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(eval(out[0])) == 4 and re.search(r"latents? (is|are) active", out[1])
    page = (tmp_path / "latents.html").read_text()
    assert 'alt="KL per channel"' in page and 'alt="KL map"' in page


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = next(b for b in blocks() if "fit(" in b).replace("epochs=50", "epochs=2")
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert len(scope["history"]) == 2 and (tmp_path / "runs/quick/model.safetensors").exists()


def test_readme_train_commands_parse():
    """Every `varilab train` line of the README names options its model has (parsed, not run)."""
    import shlex

    from varilab.commands import parse_train

    lines = [line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
             for line in block.splitlines() if line.startswith("varilab train")]
    lines = [line for line in lines if "--resume" not in line and "--help" not in line]
    assert len(lines) >= 8
    for line in lines:
        family, opts, *_ = parse_train(shlex.split(line)[2:])
        assert opts.model in family.models, line


@pytest.mark.parametrize("command", ["solve", "attack", "robustness"])
def test_readme_command_lines_parse(command):
    """Every `varilab solve`, `attack` and `robustness` line of the README names options its method, direction
    or attack has (parsed, not run)."""
    import shlex

    from varilab.families import folder_args, parse_command
    from varilab.families.attack import DIRECTIONS, AttackOptions
    from varilab.families.diffusion.solve import METHODS, SolveOptions
    from varilab.families.robust import RobustnessOptions
    from varilab.models.robust.robustness import ATTACKS

    cls, choices = {"solve": (SolveOptions, METHODS), "attack": (AttackOptions, DIRECTIONS),
                    "robustness": (RobustnessOptions, ATTACKS)}[command]
    extra = folder_args("run", "files") if command != "robustness" else [("run", {}), ("--json", {"action": "store_true"})]
    lines = [line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
             for line in block.splitlines() if line.startswith(f"varilab {command} ") and "--help" not in line]
    assert len(lines) >= 2
    for line in lines:
        opts, ns = parse_command(shlex.split(line)[2:], cls, choices, f"varilab {command}", extra)
        assert ns.run, line
        if command == "solve":
            assert opts.task is not None and ns.out, line
