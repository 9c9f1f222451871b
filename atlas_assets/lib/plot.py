"""Small PNG pictures for asset metadata: the map, and histograms (e.g. neighbour distances)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np


@contextmanager
def _figure(width: float, height: float, out: io.BytesIO) -> Iterator:
    """A matplotlib axis on an off-screen figure, saved as PNG into ``out`` and closed after."""
    import matplotlib  # imported here: plotting is needed only while materializing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=80)
    try:
        yield ax
        fig.savefig(out, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)


def map_png(
    coords: np.ndarray,
    *,
    title: str = "",
    colors: np.ndarray | None = None,
    labels: Sequence[tuple[float, float, str]] = (),
) -> bytes:
    """A small PNG scatter plot of ``(N, 2)`` coordinates, optionally coloured by integer class
    and annotated with ``(x, y, text)`` labels (e.g. topic names at their centroids)."""
    out = io.BytesIO()
    with _figure(6, 6, out) as ax:
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
    return out.getvalue()


def histogram_png(values: np.ndarray, *, marker: float | None = None, title: str = "") -> bytes:
    """A small PNG histogram of ``values`` with an optional vertical marker line."""
    out = io.BytesIO()
    with _figure(5, 3, out) as ax:
        ax.hist(values[np.isfinite(values)], bins=60, color="#3b6ea8")
        if marker is not None:
            ax.axvline(marker, color="#c0392b", linestyle="--", label=f"cutoff {marker:g}")
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
    return out.getvalue()
