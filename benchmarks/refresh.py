"""First build of a map versus a refresh after adding 1% new rows, through Dagster.

    python -m benchmarks.refresh [--quick] [--n N]

Both builds run ``create_index`` (a real Dagster run) in a fresh store; the refresh embeds only
the new rows (embedding cache) and recomputes the rest. Last line:
``refresh: <seconds> ratio=<refresh/first> target=<=0.5 quality=<rows embedded>``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "arxiv_2007_sample.csv.gz"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 rows instead of 1,500")
    parser.add_argument("--n", type=int, help="rows in the first build")
    args = parser.parse_args(argv)
    n = args.n or (300 if args.quick else 1500)
    extra = max(1, n // 100)
    frame = pd.read_csv(SAMPLE, dtype={"arxiv_id": str}).head(n + extra)

    with tempfile.TemporaryDirectory() as home:
        os.environ["ATLAS_HOME"] = home
        os.environ["DAGSTER_HOME"] = str(Path(home) / ".dagster")
        from atlas_assets import AtlasDataset

        ds = AtlasDataset("refresh-bench", unique_id_field="arxiv_id")
        ds.add_data(frame.head(n))
        start = time.perf_counter()
        ds.create_index(indexed_field="abstract")
        first = time.perf_counter() - start

        ds.add_data(frame.iloc[n:])
        start = time.perf_counter()
        atlas_map = ds.create_index()
        refresh = time.perf_counter() - start
        assert atlas_map.data.tb.num_rows == n + extra

    ratio = refresh / first
    print(f"{'build':<10}{'rows':>8}{'seconds':>10}")
    print(f"{'first':<10}{n:>8}{first:>10.1f}")
    print(f"{'refresh':<10}{n + extra:>8}{refresh:>10.1f}   (+{extra} new rows)")
    line = (
        f"refresh: {refresh:.1f}s ratio={ratio:.2f} target=<=0.5 "
        f"quality=first {first:.1f}s, {extra} new rows embedded"
    )
    print(line)
    return line


if __name__ == "__main__":
    main()
