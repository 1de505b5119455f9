"""The report's figures, each returned as PNG bytes (matplotlib, Agg backend, no display needed)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_rows(rows: list[tuple[str, np.ndarray]], image_shape: tuple[int, int]) -> bytes:
    """Labelled rows of images, e.g. inputs above their reconstructions."""
    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(0.95 * n + 1.0, 1.0 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.imshow(images[c].reshape(image_shape), cmap="gray_r", vmin=0, vmax=max(1.0, float(images.max())),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return png(fig)


def vector_rows(rows: list[tuple[str, np.ndarray]]) -> bytes:
    """For non-image data: each input vector and its reconstruction as lines, one panel per example."""
    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.0), squeeze=False, sharey=True)
    for c in range(n):
        for (label, vecs), style in zip(rows, ("-", "--")):
            axes[0][c].plot(vecs[c], style, label=label, lw=1.2)
        axes[0][c].set_xlabel("feature")
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def scatter_pairs(data: np.ndarray, samples: np.ndarray) -> bytes:
    """For non-image data: the first two coordinates of test data and of model samples."""
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.scatter(data[:, 0], data[:, 1], s=4, alpha=0.4, label="test data", color="#1f5fa8")
    ax.scatter(samples[:, 0], samples[:, 1], s=4, alpha=0.4, label="samples", color="#d9730d")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.legend(frameon=False)
    fig.tight_layout()
    return png(fig)


COLORS = {"sharp": "#1f5fa8", "mixed": "#d9a40d", "passive": "#b8bfca"}  # variables by posterior variance


def kl_bars(kl: np.ndarray, activity: np.ndarray, kinds: list[str], threshold: float) -> bytes:
    """KL per latent dimension and activity Cov_x(E[z_i|x]), coloured by sharp / mixed / passive variable."""
    d = len(kl)
    x = np.arange(d)
    colors = [COLORS[k] for k in kinds]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.5, 0.28 * d + 4), 2.8))
    axes[0].bar(x, kl, color=colors)
    axes[0].set_title("KL(q(z_i|x) || p(z_i)) per dimension (nats)")
    axes[1].bar(x, activity, color=colors)
    axes[1].axhline(threshold, color="#c0392b", lw=1, ls="--")
    axes[1].set_yscale("log")
    axes[1].set_title(f"activity Cov_x(E[z_i|x]); dashed: active-unit threshold {threshold:g}", fontsize=8.5)
    for ax in axes:
        ax.set_xlabel("latent dimension")
        ax.set_xticks(x if d <= 32 else x[:: max(1, d // 16)])
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()]
    axes[0].legend(handles, list(COLORS), frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def kl_channels(kl_per_channel: np.ndarray, active: np.ndarray, coords: int) -> bytes:
    """A structured latent [C, ...]: KL summed over each channel's coordinates (nats), and how many of its
    `coords` coordinates are active units."""
    c = len(kl_per_channel)
    x = np.arange(c)
    fig, axes = plt.subplots(1, 2, figsize=(max(7.5, 0.35 * c + 4), 2.8))
    axes[0].bar(x, kl_per_channel, color=COLORS["sharp"])
    axes[0].set_title("KL per channel (nats, summed over positions)")
    axes[1].bar(x, active, color=COLORS["sharp"])
    axes[1].set_ylim(0, coords)
    axes[1].set_title(f"active units per channel (of {coords:,})")
    for ax in axes:
        ax.set_xlabel("channel")
        ax.set_xticks(x if c <= 32 else x[:: max(1, c // 16)])
    fig.tight_layout()
    return png(fig)


def kl_maps(kl: np.ndarray, most: int = 8) -> bytes:
    """A structured latent's KL per position: summed over channels, then channel by channel (the first `most`),
    as heat maps for [C, H, W] and as lines for [C, L]; one colour scale for the channels."""
    c = kl.shape[0]
    shown = min(c, most)
    fig, axes = plt.subplots(1, shown + 1, figsize=(2.4 * (shown + 1), 2.5), squeeze=False)
    axes = axes[0]
    panels = [("all channels", kl.sum(0))] + [(f"channel {i}", kl[i]) for i in range(shown)]
    top = float(kl[:shown].max()) if kl.size else 1.0
    for k, (ax, (title, m)) in enumerate(zip(axes, panels)):
        if m.ndim == 2:
            im = ax.imshow(m, cmap="viridis", vmin=0, vmax=None if k == 0 else max(top, 1e-9), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k in (0, shown):
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.plot(m.reshape(-1), color=COLORS["sharp"], lw=1)
            ax.set_xlabel("position")
        ax.set_title(title, fontsize=8.5)
    fig.suptitle("KL per position (nats)" + (f"; channels 0-{shown - 1} of {c}" if shown < c else ""), fontsize=9)
    fig.tight_layout()
    return png(fig)


def activity_over_epochs(metrics: list[dict], threshold: float) -> bytes:
    """Active-unit count and each dimension's activity through training."""
    rows = [m for m in metrics if "activity" in m]
    epochs = [m["epoch"] for m in rows]
    act = np.array([m["activity"] for m in rows])  # [epochs, d]
    fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.8))
    axes[0].plot(epochs, [m["active_units"] for m in rows], color="#1f5fa8", marker="o", ms=2)
    axes[0].set_title("active units")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(epochs, np.maximum(act, 1e-6), lw=0.9, alpha=0.8)
    axes[1].axhline(threshold, color="#c0392b", lw=1, ls="--")
    axes[1].set_yscale("log")
    axes[1].set_title("activity per dimension")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def mean_vs_sampled(examples: list[tuple[str, str, np.ndarray, np.ndarray]]) -> bytes:
    """Histograms of the mean representation mu_i(x) and the sampled one mu_i + sigma_i eps, per chosen coordinate
    (kind, name such as z_3, mean values, sampled values)."""
    fig, axes = plt.subplots(1, len(examples), figsize=(3.6 * len(examples), 2.7), squeeze=False)
    for ax, (kind, i, mean, sampled) in zip(axes[0], examples):
        lo, hi = np.percentile(np.concatenate([mean, sampled]), [0.5, 99.5])
        bins = np.linspace(min(lo, -3), max(hi, 3), 50)
        ax.hist(sampled, bins=bins, alpha=0.55, color="#d9730d", label=f"sampled (var {sampled.var():.2f})", density=True)
        ax.hist(mean, bins=bins, alpha=0.55, color="#1f5fa8", label=f"mean (var {mean.var():.2f})", density=True)
        ax.set_title(f"{i} ({kind})")
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def traversal_grid(rows: list[tuple[str, np.ndarray]], image_shape: tuple[int, int] | None, span: float) -> bytes:
    """Decoder means along single latent axes: images in a grid, or lines for vector data."""
    if image_shape is not None:
        return image_rows(rows, image_shape)
    fig, axes = plt.subplots(1, len(rows), figsize=(2.6 * len(rows), 2.2), squeeze=False)
    for ax, (label, outs) in zip(axes[0], rows):
        cmap = plt.get_cmap("coolwarm")
        for j, o in enumerate(outs):
            ax.plot(o, color=cmap(j / max(1, len(outs) - 1)), lw=1)
        ax.set_title(f"{label}, z from -{span:g} to {span:g}", fontsize=8)
    fig.tight_layout()
    return png(fig)


UNITS = {"loss": "objective", "psnr": "PSNR (dB)", "bpp": "bits per pixel", "mse": "mean squared error",
         "kl": "KL (nats)", "recon": "reconstruction term", "elbo": "ELBO (nats)", "hurst": "Hurst index H",
         "accuracy": "accuracy", "obs_noise": "standard deviation", "bpp_side": "bits per pixel",
         "bpp_latent": "bits per pixel", "fvu": "fraction of variance unexplained", "l0": "active latents per token"}


def y_label(key: str) -> str:
    """The y axis of a logged quantity: its name with its unit where one is known (PSNR (dB), KL (nats))."""
    bare = key[5:] if key.startswith("test_") else key
    return UNITS.get(bare, bare.replace("_", " "))


def metric_curves(metrics: list[dict], panels: list[str | tuple[str, str]], width: float = 3.0,
                  steps: list[dict] | None = None) -> bytes:
    """One panel per logged quantity (a key, (key, title), (key, title, with_test) or (key, title, with_test,
    reference) or (..., reference, y label)): train and, where logged and with_test (the default), test per epoch on the same axes, and a dashed
    line at `reference` (e.g. the true value a generator used); a "test_" key drawn alone is the test series. With
    `steps` (lines logged every few steps, each with a fractional "epoch"), the train curve is drawn from
    them, so a run of one or two epochs still shows its course."""
    epochs = [m["epoch"] for m in metrics]
    panels = [(p, p, True, None, None) if isinstance(p, str) else (*p, True, None, None)[:5] if len(p) < 3
              else (*p, None, None)[:5] for p in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 2.7), squeeze=False)
    marked = []  # panels with a reference line: each gets its own legend
    for ax, (key, title, with_test, reference, unit) in zip(axes[0], panels):
        if reference is not None:
            ax.axhline(reference, color="#c0392b", lw=1, ls="--", label=f"truth {reference:g}")
            marked.append(ax)
        if key.startswith("test_"):
            ax.plot(epochs, [m[key] for m in metrics], label="test", color="#d9730d", marker="o", ms=3)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_ylabel(unit or y_label(key), fontsize=8)
            ax.grid(alpha=0.3)
            continue
        fine = [s for s in steps or [] if key in s]
        if fine:
            ax.plot([s["epoch"] for s in fine], [s[key] for s in fine], label="train", color="#1f5fa8", lw=1)
        else:
            ax.plot(epochs, [m[key] for m in metrics], label="train", color="#1f5fa8", marker="o", ms=3)
        if with_test and f"test_{key}" in metrics[0]:
            ax.plot(epochs, [m[f"test_{key}"] for m in metrics], label="test", color="#d9730d", marker="o", ms=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit or y_label(key), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend(frameon=False)
    for ax in marked:
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def density_histogram(log10_density: list[float], floor: float = -10.0) -> bytes:
    """Histogram of per-latent log10 firing density; never-firing latents counted at the floor."""
    d = np.asarray(log10_density, dtype=float)
    dead = int((d <= floor).sum())
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    live = d[d > floor]
    if len(live):
        ax.hist(live, bins=40, color="#1f5fa8")
    ax.set_xlabel("log10 feature density")
    ax.set_ylabel("latents")
    ax.set_title(f"{len(d):,} latents, {dead:,} never fired on the held-out tokens")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def lines(panels: list[tuple[str, str, dict[str, list[float]]]]) -> bytes:
    """One panel per (title, x label, {label: values over steps}), each line against its index."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.7), squeeze=False)
    for ax, (title, xlabel, series) in zip(axes[0], panels):
        for label, values in series.items():
            ax.plot(np.arange(1, len(values) + 1), values, lw=1, label=label)
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(next(iter(series)) if len(series) == 1 else title.split(":")[0], fontsize=8)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def trajectories(panels: list[tuple[str, np.ndarray]], shown: int = 3) -> bytes:
    """One panel per (title, sequences [n, T, D]): the first `shown` sequences as paths in the plane of their
    first two dimensions (or their first dimension over time when D = 1)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), squeeze=False)
    for ax, (title, seqs) in zip(axes[0], panels):
        for s in np.asarray(seqs)[:shown]:
            if s.shape[1] >= 2:
                ax.plot(s[:, 0], s[:, 1], lw=0.8, alpha=0.8)
            else:
                ax.plot(np.arange(1, len(s) + 1), s[:, 0], lw=0.8)
        ax.set_title(title, fontsize=8.5)
        if np.asarray(seqs).shape[2] >= 2:
            ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def over_time(panels: list[dict]) -> bytes:
    """One panel per dict: "title"; "lines" {label: (t, values)}; "points" {label: (t, values)} drawn as dots;
    "bands" {label: (t, mean, std)} drawn as the mean and mean +- 2 std; "split" a time marked by a dashed line."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8), squeeze=False)
    for ax, p in zip(axes[0], panels):
        for label, (t, mean, std) in p.get("bands", {}).items():
            line, = ax.plot(t, mean, lw=1.2, label=label)
            ax.fill_between(t, np.asarray(mean) - 2 * np.asarray(std), np.asarray(mean) + 2 * np.asarray(std),
                            color=line.get_color(), alpha=0.25, lw=0)
        for label, (t, v) in p.get("lines", {}).items():
            ax.plot(t, v, lw=0.8, label=label)
        for label, (t, v) in p.get("points", {}).items():
            ax.plot(t, v, ".", ms=3, color="black", label=label)
        if p.get("split") is not None:
            ax.axvline(p["split"], color="gray", ls="--", lw=0.8)
        ax.set_title(p["title"], fontsize=8.5)
        ax.set_xlabel("t")
        ax.grid(alpha=0.3)
        if p.get("legend", True) and ax.get_legend_handles_labels()[0]:
            ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def xy_curves(panels: list[tuple[str, str, str, dict[str, tuple[list[float], list[float]]]]]) -> bytes:
    """One panel per (title, x label, y label, {label: (xs, ys)}): lines with markers; a one-point series is a large
    marker (e.g. a run's operating point among other codecs' curves)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.0), squeeze=False)
    for ax, (title, xlabel, ylabel, series) in zip(axes[0], panels):
        for label, (xs, ys) in series.items():
            if len(xs) == 1:
                ax.plot(xs, ys, "*", ms=11, label=label, zorder=3)
            else:
                order = np.argsort(xs)
                ax.plot(np.asarray(xs)[order], np.asarray(ys)[order], "o-", ms=3, lw=1, label=label)
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)


def grouped_bars(panels: list[tuple[str, list[str], dict[str, list[float | None]], float | None]]) -> bytes:
    """One panel per (title, group names, {series: a value per group (None: no bar)}, a reference line or None):
    bars side by side within each group, each series one colour."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 2.9), squeeze=False)
    for ax, (title, groups, series, ref) in zip(axes[0], panels):
        width = 0.8 / max(len(series), 1)
        for i, (label, values) in enumerate(series.items()):
            xs = [g + (i - (len(series) - 1) / 2) * width for g, v in enumerate(values) if v is not None]
            ax.bar(xs, [v for v in values if v is not None], width, label=label)
        if ref is not None:
            ax.axhline(ref, color="0.3", lw=0.8, ls="--")
        ax.set_xticks(range(len(groups)), groups, rotation=20, fontsize=7.5)
        ax.set_title(title, fontsize=8.5)
        ax.grid(alpha=0.3, axis="y")
        if len(series) > 1:
            ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return png(fig)
