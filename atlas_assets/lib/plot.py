"""A picture of the map, for asset metadata."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def map_png(
    coords: np.ndarray,
    *,
    title: str = "",
    colors: np.ndarray | None = None,
    labels: Sequence[tuple[float, float, str]] = (),
) -> bytes:
    """A small PNG scatter plot of ``(N, 2)`` coordinates, optionally coloured by integer class
    and annotated with ``(x, y, text)`` labels (e.g. topic names at their centroids)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6), dpi=80)
    size = float(np.clip(4000 / max(len(coords), 1), 0.5, 12))
    style = {"c": colors, "cmap": "tab20"} if colors is not None else {"color": "#3b6ea8"}
    ax.scatter(coords[:, 0], coords[:, 1], s=size, linewidths=0, **style)
    for x, y, text in labels:
        ax.annotate(
            text,
            (x, y),
            ha="center",
            va="center",
            fontsize=8,
            weight="bold",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7, "lw": 0},
        )
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
