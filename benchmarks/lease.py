"""What a writer's lease costs on S3 (moto's server on 127.0.0.1): a writer operation with the
lease against the same operation with its machine's flock only, in the same process.

    python -m benchmarks.lease [--n N]

Times N ``add_data`` calls of a 100-row batch to a dataset on ``s3://bench/store``, each taking
the dataset's lock, with the lease (as shipped) and without it (the lock's lease path disabled:
the store before leases), alternately in blocks of 5; then N empty ``with locked(...)`` sections
each way, the bare cost of taking and releasing a lease. Medians.
Last line: ``lease: add_data <ms> ms ratio=<with lease / without> target=<=1.2 quality=...``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import result_line
from benchmarks.shared_store import moto_bucket, use_store

BLOCK = 5


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="operations each way (default 40)")
    args = parser.parse_args(argv)
    with moto_bucket(), tempfile.TemporaryDirectory() as tmp:
        from atlas_assets import AtlasDataset
        from atlas_assets.store import dataset_paths, files

        real = files.lease_path
        use_store("s3://bench/store", Path(tmp))
        ds = AtlasDataset("lease-bench", unique_id_field="id")
        lock = dataset_paths("lease-bench").lock
        rows = iter(range(10**9))
        times: dict[str, dict[str, list[float]]] = {
            "add_data": {"lease": [], "flock": []},
            "lock": {"lease": [], "flock": []},
        }

        def add() -> None:
            ds.add_data(pd.DataFrame({"id": [f"r{next(rows)}" for _ in range(100)]}))

        def lock_only() -> None:
            with files.locked(lock):
                pass

        add()  # the dataset exists and every connection is open before timing
        try:
            for _ in range(0, args.n, BLOCK):
                for kind in ("lease", "flock"):
                    files.lease_path = real if kind == "lease" else (lambda _lock: None)
                    for what, op in (("add_data", add), ("lock", lock_only)):
                        for _ in range(BLOCK):
                            start = time.perf_counter()
                            op()
                            times[what][kind].append(time.perf_counter() - start)
        finally:
            files.lease_path = real  # the store as shipped, whatever happened
    med = {w: {k: statistics.median(v) * 1000 for k, v in d.items()} for w, d in times.items()}
    for what, by in med.items():
        print(f"{what:9s} with lease {by['lease']:7.1f} ms   flock only {by['flock']:7.1f} ms")
    ratio = med["add_data"]["lease"] / med["add_data"]["flock"]
    return result_line(
        "lease",
        f"add_data {med['add_data']['lease']:.1f} ms",
        ratio,
        "<=1.2",
        f"lock_ms={med['lock']['lease']:.1f}(flock_only={med['lock']['flock']:.1f})",
    )


if __name__ == "__main__":
    main()
