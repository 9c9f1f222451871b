"""Run-to-run differences of a resource: what a rebuild changed, for the asset's metadata."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def id_changes(before: Sequence[str] | None, after: Sequence[str]) -> dict[str, int]:
    """How many ids a rebuild added and removed (everything is new on a first build)."""
    old = set(before or ())
    new = set(after)
    return {"added": len(new - old), "removed": len(old - new)}


def label_changes(
    before_ids: Sequence[str], before: Sequence, after_ids: Sequence[str], after: Sequence
) -> dict[str, object]:
    """For datums present in both builds: how many changed label; which labels came and went."""
    old = pd.Series(np.asarray(before, dtype=object), index=pd.Index(before_ids))
    new = pd.Series(np.asarray(after, dtype=object), index=pd.Index(after_ids))
    common = old.index.intersection(new.index)
    changed = int((old[common].astype(str) != new[common].astype(str)).sum())
    old_labels, new_labels = set(old.dropna()), set(new.dropna())
    return {
        "changed": changed,
        "appeared": sorted(map(str, new_labels - old_labels)),
        "vanished": sorted(map(str, old_labels - new_labels)),
    }
