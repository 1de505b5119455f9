"""The HTML report of a run."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import atomic_write
from ..run import REPORT, load_run


def write_report(run_dir: str | Path, out: str | Path | None = None, force: bool = False, data: str | None = None) -> Path:
    """Write the run's report page (default `run_dir/report.html`); refuses to overwrite unless `force`."""
    from ..sae_run import is_sae_run

    path = Path(out) if out else Path(run_dir) / REPORT
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    from ..diffusion_run import is_diffusion_run

    if is_diffusion_run(run_dir):
        from .diffusion_page import render as render_diffusion

        atomic_write(path, render_diffusion(run_dir))
        return path
    if is_sae_run(run_dir):
        from .sae_page import render as render_sae

        atomic_write(path, render_sae(run_dir))
        return path
    from .html import render

    atomic_write(path, render(load_run(run_dir, data)))
    return path
