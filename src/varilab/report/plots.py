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


def training_curves(metrics: list[dict]) -> bytes:
    """Loss, reconstruction log-likelihood and KL per epoch, train and test."""
    epochs = [m["epoch"] for m in metrics]
    panels = [("loss", "loss (negative ELBO, nats)"), ("recon", "reconstruction log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")]
    panels = [(k, t) for k, t in panels if k in metrics[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        ax.plot(epochs, [m[key] for m in metrics], label="train", color="#1f5fa8")
        if f"test_{key}" in metrics[0]:
            ax.plot(epochs, [m[f"test_{key}"] for m in metrics], label="test", color="#d9730d")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    return png(fig)


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
