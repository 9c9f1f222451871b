"""A histogram picture for asset metadata (e.g. nearest-neighbour distances with a cutoff)."""

from __future__ import annotations

import io

import numpy as np


def histogram_png(values: np.ndarray, *, marker: float | None = None, title: str = "") -> bytes:
    """A small PNG histogram of ``values`` with an optional vertical marker line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    finite = values[np.isfinite(values)]
    ax.hist(finite, bins=60, color="#3b6ea8")
    if marker is not None:
        ax.axvline(marker, color="#c0392b", linestyle="--", label=f"cutoff {marker:g}")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
