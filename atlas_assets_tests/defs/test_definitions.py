"""Loading the Dagster definitions stays light: the UI reloads them and every sensor tick runs
in a process that loads them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "numba",
    "scipy",
    "torch",
    "faiss",
    "sentence_transformers",
    "umap",
    "hdbscan",
    "igraph",
    "sklearn",
    "matplotlib",
    "distributed",
)


def test_loading_the_definitions_imports_no_heavy_library() -> None:
    code = (
        "import json, sys\n"
        "from atlas_assets.definitions import defs\n"
        "loaded = defs()\n"
        "loaded.resolve_job_def('build_map')\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
