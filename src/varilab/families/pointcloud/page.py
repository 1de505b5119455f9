"""A point-cloud run's page: test shapes beside their reconstructions from three views (the same axes for every
shape), and the metrics: Chamfer distance, and for squeeze3d the code's bytes and the ratio."""
from __future__ import annotations

SHOWN = 4  # test shapes in the figure
VIEWS = ((20, -60), (20, 30), (85, -90))  # (elevation, azimuth) of the three views


def views(rows: list[tuple[str, "np.ndarray"]]) -> bytes:
    """A grid: a row per (label, clouds [k, N, 3]) and, for each shape, its three views, all on the box [-1, 1]^3."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...report.plots import png

    k = len(rows[0][1])
    fig = plt.figure(figsize=(1.6 * k * len(VIEWS), 1.7 * len(rows)))
    for r, (label, shapes) in enumerate(rows):
        for i, cloud in enumerate(shapes):
            for v, (elev, azim) in enumerate(VIEWS):
                ax = fig.add_subplot(len(rows), k * len(VIEWS), r * k * len(VIEWS) + i * len(VIEWS) + v + 1,
                                     projection="3d")
                ax.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], s=0.6, c=cloud[:, 2], cmap="viridis")
                ax.view_init(elev, azim)
                ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1), xticks=[], yticks=[], zticks=[])
                if i == 0 and v == 0:
                    ax.set_title(label, fontsize=8, loc="left")
    return png(fig)


def page(run, e: dict, x, decoded):
    from ...report import Page, Section, img, metrics_table, table

    shown = x[:SHOWN]
    rows = [("original", shown.cpu().numpy()), (run.options.model, decoded(run, shown).cpu().numpy())]
    if run.options.model == "squeeze3d":
        verdict = (f"{e['bits']}-bit codes ({e['bytes_per_shape']:g} bytes a shape, {e['ratio']:,.0f} times smaller "
                   f"than float32 coordinates) decode {e['shapes']} {run.data.name} to a mean Chamfer distance of "
                   f"{e['chamfer']:.4f} (90th percentile {e['chamfer_p90']:.4f})"
                   + (f"; the generator through its own encoder reaches {e['chamfer_generator_own']:.4f}"
                      if "chamfer_generator_own" in e else "")
                   + (f". At the same bits, the best coordinate quantiser's distance is "
                      f"{e['coordinates_over_squeeze3d']:.1f} times larger." if "coordinates_over_squeeze3d" in e
                      else "."))
        curves = ["loss", "latent"]
    else:
        verdict = (f"Mean Chamfer distance {e['chamfer']:.4f} (90th percentile {e['chamfer_p90']:.4f}) between "
                   f"{e['shapes']} test shapes of {run.data.name} and their reconstructions G(mean of q(l|x)).")
        curves = ["loss", "chamfer", "kl"]
    sections = [Section("Test shapes and their reconstructions", img(views(rows), "shapes from three views"),
                        "each shape from three views, on the box [-1, 1] in every direction")]
    if run.options.model == "squeeze3d":
        sections.append(Section("At equal bytes", table(methods(e), ["method", "bytes a shape", "Chamfer"]),
                                "Coordinates: the best of k points at b bits a coordinate within the same bits (no "
                                "header counted). G's latent: its own encoder's mean, quantised directly. Draco cannot "
                                f"go below {e.get('draco_smallest_bytes', float('nan')):.0f} bytes a shape (one point "
                                "at one bit); its row is at 8 bits a coordinate, every point kept."))
    sections.append(Section("Final metrics", metrics_table(e, run.settings, {"shapes": "test shapes"})))
    return Page(f"{run.options.model} on {run.data.name}", verdict, sections, curves)


def methods(e: dict) -> list[tuple]:
    """(method, bytes a shape, mean Chamfer distance) of squeeze3d and its baselines."""
    rows = [("squeeze3d", e["bytes_per_shape"], e["chamfer"])]
    if "coordinates_chamfer" in e:
        rows.append((f"coordinates ({e['coordinates_points']} points x {e['coordinates_bits_per_coordinate']} bits)",
                     e["bytes_per_shape"], e["coordinates_chamfer"]))
    if "latent_quantised_chamfer" in e:
        rows.append((f"G's latent, {e['latent_bits_per_coordinate']} bits a coordinate", e["bytes_per_shape"],
                     e["latent_quantised_chamfer"]))
    if "draco_bytes_at_8_bits" in e:
        rows.append(("Draco, 8 bits a coordinate", e["draco_bytes_at_8_bits"], e["draco_chamfer_at_8_bits"]))
    if "chamfer_generator_own" in e:
        rows.append(("G through its own encoder (no code)", "-", e["chamfer_generator_own"]))
    return rows
