"""The HTML report of a run: given a loaded run and the page its family describes, write one
self-contained file. The report knows nothing of families; they hand it their sections as data."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import atomic_write
from ..run_files import REPORT
from .page import Page, Section, html_page, img, metrics_rows, metrics_table, number, render, table


def write_report(run, page: Page, out: str | Path | None = None, force: bool = False) -> Path:
    """Write the page of `run` (default `run.dir/report.html`); refuses to overwrite unless `force`."""
    path = Path(out) if out else Path(run.dir) / REPORT
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    atomic_write(path, render(run, page))
    return path


def diagnosis_report(diagnosis, out: str | Path, model=None, title: str = "Latent diagnostics",
                     force: bool = False) -> Path:
    """Write one self-contained HTML page of a `varilab.diagnostics.diagnose(...)` result for any model: KL per
    dimension (per channel and a KL map for image latents), mean vs sampled representations, information; with
    `model` (one with `decode`, a vector latent), traversals too. Refuses to overwrite unless `force`.

    >>> from varilab.diagnostics import diagnose                                  # doctest: +SKIP
    >>> diagnosis_report(diagnose(lambda x: vae.encode(x).latent_dist, x), "latents.html")  # doctest: +SKIP
    """
    from .latents import diagnosis_parts

    path = Path(out)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass force=True to overwrite it")
    post = diagnosis.posteriors
    shape = ", ".join(map(str, post.shape or (post.dim,)))
    parts = diagnosis_parts(diagnosis, model)
    page = Page(title, diagnosis.verdict(), [Section("Latent diagnostics", "".join(parts[1:]))])
    atomic_write(path, html_page(page, f"{len(post.mean):,} data points, latent shape [{shape}]", path.stem))
    return path


__all__ = ["Page", "Section", "diagnosis_report", "html_page", "img", "metrics_rows", "metrics_table", "number", "render", "table", "write_report",
           "REPORT"]
