"""The metadata pictures are PNGs and leave no matplotlib figure open."""

from __future__ import annotations

import numpy as np

from atlas_assets.lib.plot import histogram_png, map_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pictures_are_pngs_and_close_their_figures() -> None:
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    coords = rng.normal(size=(200, 2)).astype(np.float32)
    pictures = [
        map_png(coords, title="t", colors=np.arange(200) % 3, labels=[(0.0, 0.0, "topic")]),
        histogram_png(np.append(rng.random(100), np.inf), marker=0.1, title="distances"),
    ]
    for png in pictures:
        assert png.startswith(PNG_MAGIC) and len(png) > 1000
    assert plt.get_fignums() == []
