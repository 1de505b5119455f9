"""The README's Python examples run as written."""
import re
from pathlib import Path

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

    from varilab.families import parse_train

    lines = [line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
             for line in block.splitlines() if line.startswith("varilab train")]
    lines = [line for line in lines if "--resume" not in line and "--help" not in line]
    assert len(lines) >= 8
    for line in lines:
        family, opts, *_ = parse_train(shlex.split(line)[2:])
        assert opts.model in family.models, line


def test_readme_solve_commands_parse():
    """Every `varilab solve` line of the README names options its method has (parsed, not run)."""
    import shlex

    from varilab.families import SOLVE_ARGS, options
    from varilab.families._solve import SolveOptions

    lines = [line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
             for line in block.splitlines() if line.startswith("varilab solve") and "--help" not in line]
    assert len(lines) >= 3
    for line in lines:
        words = shlex.split(line)[2:]
        method = words[words.index("--method") + 1] if "--method" in words else "red-diff"
        rest = [w for i, w in enumerate(words) if w != "--method" and (i == 0 or words[i - 1] != "--method")]
        opts, ns = options.parse(SolveOptions, method, rest, prog="varilab solve", extra=SOLVE_ARGS)
        assert opts.method == method and opts.task is not None and ns.out, line
