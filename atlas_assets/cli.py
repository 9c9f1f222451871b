"""The ``atlas`` command: add data, build maps through Dagster, list the store, run the demo."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from atlas_assets.store import RESOURCES, atlas_home, dagster_home, list_datasets, resource_info
from atlas_assets.store.layout import EXPLORER_PORT
from atlas_assets.store.remote import is_url

DEMO_DATASET = "arxiv-demo"


def _sample_file() -> Path:
    return Path(__file__).resolve().parents[1] / "data" / "arxiv_2007_sample.csv.gz"


def cmd_add(args: argparse.Namespace) -> int:
    from atlas_assets.lib.sources import read_table_file
    from atlas_assets.reader import AtlasDataset

    ds = AtlasDataset(args.dataset, unique_id_field=args.id_field)
    frame = read_table_file(args.file, ds.id_field if args.id_field else None)
    if args.limit:
        frame = frame.head(args.limit)
    ds.add_data(frame)
    print(f"added {len(frame)} rows to {ds.identifier} ({ds.total_datums} in all)")
    return 0


def _index_options(args: argparse.Namespace) -> dict:
    projection = {
        k: v
        for k, v in {"n_neighbors": args.n_neighbors, "seed": args.seed}.items()
        if v is not None
    }
    duplicates = (
        False
        if args.no_duplicates
        else (
            {"duplicate_cutoff": args.duplicate_cutoff}
            if args.duplicate_cutoff is not None
            else True
        )
    )
    embedding = {
        k: v for k, v in {"model": args.model, "mode": args.embed_mode}.items() if v is not None
    }
    return {
        "indexed_field": args.field,
        "embedding_model": embedding or None,
        "projection": projection or None,
        "topic_model": not args.no_topics,
        "duplicate_detection": duplicates,
    }


@contextlib.contextmanager
def _interrupt_seen() -> Iterator[Callable[[], bool]]:
    """Yield a function telling whether Ctrl-C (SIGINT or SIGTERM) arrived during the body.

    Dagster defers a Ctrl-C that arrives between steps and forgets it when the run ends, so the
    build would finish as if nothing happened. The signal wake-up fd records every signal
    whatever handler is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False  # signals reach the main thread only
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    seen: set[int] = set()

    def interrupted() -> bool:
        with contextlib.suppress(BlockingIOError):
            seen.update(os.read(read_fd, 4096))
        return bool(seen & {signal.SIGINT, signal.SIGTERM})

    try:
        yield interrupted
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)


def cmd_index(args: argparse.Namespace) -> int:
    from atlas_assets.reader import AtlasDataset

    ds = AtlasDataset(args.dataset)  # writes nothing: a dataset without data has no map
    with _interrupt_seen() as interrupted:
        try:
            atlas_map = ds.create_index(**_index_options(args))
        except Exception:
            if interrupted():
                raise KeyboardInterrupt from None
            raise
        if interrupted():
            raise KeyboardInterrupt
    print(f"built map {atlas_map.name!r} of {ds.identifier}: {atlas_map.data.tb.num_rows} datums")
    print(f"  store: {ds._paths.root}")
    return 0


def cmd_rm_batch(args: argparse.Namespace) -> int:
    from atlas_assets.store import dataset_paths
    from atlas_assets.store.datasets import count_rows, remove_last_batches

    paths = dataset_paths(args.dataset)
    for name, rows in remove_last_batches(paths, args.count):
        print(f"removed batch {name} ({rows} rows) from {paths.identifier}")
    print(
        f"{paths.identifier} now has {count_rows(paths)} rows; "
        f"`atlas index {paths.identifier}` rebuilds its map"
    )
    return 0


def _state(paths, name: str, version: str | None) -> str:
    info = resource_info(paths.resource(name))
    if info is None:
        return "missing"
    return "ok" if info.get("dataset_version") == version else "stale"


def cmd_ls(args: argparse.Namespace) -> int:
    from atlas_assets.store.datasets import count_rows

    found = list_datasets()
    if not found:
        print(f"no datasets in {atlas_home()}: add one with `atlas add DATASET FILE`")
        return 0
    for paths in found:
        info = resource_info(paths.resource("dataset"))
        version = info["dataset_version"] if info else None
        states = "  ".join(f"{r}={_state(paths, r, version)}" for r in RESOURCES)
        print(f"{paths.identifier}  rows={count_rows(paths)}  {states}")
    return 0


def _read_ids(source: str) -> list[str]:
    """One id a line, exactly as written: ``" r1"`` is refused, never taken for ``r1``."""
    from atlas_assets.lib.validate import check_id_text

    text = sys.stdin.read() if source == "-" else Path(source).read_text()
    lines = text.split("\n")
    lines = [line.removesuffix("\r") for line in (lines[:-1] if lines[-1] == "" else lines)]
    check_id_text(lines, "the id list", "lines", first=1)
    return [line for line in lines if line]


def cmd_tag(args: argparse.Namespace) -> int:
    from atlas_assets.reader.tags import open_tag_store
    from atlas_assets.store import dataset_paths
    from atlas_assets.store.datasets import load_meta

    paths = dataset_paths(args.dataset)
    if load_meta(paths) is None:
        raise LookupError(f"dataset {paths.identifier!r} does not exist")
    tags = open_tag_store(paths)
    ids = _read_ids(args.ids_from)
    if args.remove:
        changed = tags.remove(ids, args.tag)
        print(f"removed {changed} datums from tag {args.tag!r}")
    else:
        changed = tags.add(ids, args.tag)
        print(f"tagged {changed} more datums {args.tag!r} ({len(ids)} ids given)")
    return 0


def cmd_tags(args: argparse.Namespace) -> int:
    from atlas_assets.reader.tags import open_tag_store
    from atlas_assets.store import dataset_paths

    paths = dataset_paths(args.dataset)
    tags = open_tag_store(paths)
    counts = tags.counts() if tags.exists() else {}
    if not counts:
        print(f"{paths.identifier} has no tags")
    for name, count in counts.items():
        print(f"{count:>8}  {name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from atlas_assets.lib.sources import read_table_file
    from atlas_assets.reader import AtlasDataset

    ds = AtlasDataset(
        DEMO_DATASET, description="arXiv abstracts, April 2007 (CC0)", unique_id_field="arxiv_id"
    )
    if ds.total_datums == 0:
        frame = read_table_file(args.file, "arxiv_id")
        ds.add_data(frame.head(args.rows) if args.rows else frame)
    print(f"building the map of {ds.total_datums} arXiv abstracts through Dagster...")
    atlas_map = ds.create_index(indexed_field="abstract")
    print()
    print(f"Map built: {ds.identifier} ({atlas_map.data.tb.num_rows} datums)")
    print(f"  store:   {ds._paths.root}")
    print(f"  dagster: {dagster_home()}  (runs, logs, lineage)")
    print(
        f"  UI:      make dev   (= DAGSTER_HOME={dagster_home()} .venv/bin/dg dev -w "
        "workspace.yaml)"
    )
    print(f"  map:     .venv/bin/atlas serve {DEMO_DATASET}   (the map in a browser)")
    print("  Python:  from atlas_assets import AtlasDataset")
    print(f"           atlas_map = AtlasDataset({DEMO_DATASET!r}).maps[0]")
    print()
    print(atlas_map.embeddings.projected.head(3).to_string(index=False))
    print()
    print("Depth-1 topics:")
    for group in atlas_map.topics.group_by_topic(1):
        print(f"  {len(group['datum_ids']):>6}  {group['topic_short_description']}")
    print(f"Duplicates: {atlas_map.duplicates!r}")
    return 0


def cmd_bind(args: argparse.Namespace) -> int:
    from atlas_assets.reader import AtlasDataset

    ds = AtlasDataset(args.dataset, unique_id_field=args.id_field)
    ds.bind_source(args.pattern)
    print(
        f"{ds.identifier} is bound to {args.pattern}: the hourly refresh schedule appends "
        "rows with new ids and rebuilds the map"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from atlas_assets.explorer.server import serve

    return serve(
        args.dataset, host=args.host, port=args.port, token=args.token, allow_hosts=args.allow_host
    )


def _store_location() -> str:
    """The store as the user named it (a URL is not contacted just to print help)."""
    home = os.environ.get("ATLAS_HOME", "")
    return home if is_url(home) else str(atlas_home())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atlas",
        description="Local data maps of text collections, built as Dagster assets. "
        f"Store: $ATLAS_HOME (now {_store_location()}).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    add = sub.add_parser("add", help="add a CSV, Parquet or JSONL file to a dataset")
    add.add_argument("dataset", help="dataset identifier, e.g. my-data or org/my-data")
    add.add_argument("file", type=Path, help="a .csv, .csv.gz, .parquet or .jsonl file")
    add.add_argument("--id-field", help="column of unique ids (default: generate an id_ column)")
    add.add_argument("--limit", type=int, help="add only the first N rows")
    add.set_defaults(func=cmd_add)

    index = sub.add_parser("index", help="build (or rebuild) a dataset's map through Dagster")
    index.add_argument("dataset")
    index.add_argument("--field", help="text column to embed (default: the map's current one)")
    index.add_argument("--model", help="sentence-transformers model name or path")
    index.add_argument(
        "--embed-mode",
        choices=("transformer", "static"),
        help="'static': the fast path, a static table distilled from the model (blurrier topics)",
    )
    index.add_argument("--n-neighbors", type=int, help="UMAP neighbours (default 15)")
    index.add_argument("--seed", type=int, help="random seed (default 0)")
    index.add_argument("--no-topics", action="store_true", help="skip the topic model")
    index.add_argument("--no-duplicates", action="store_true", help="skip duplicate detection")
    index.add_argument("--duplicate-cutoff", type=float, help="cosine distance (default 0.1)")
    index.set_defaults(func=cmd_index)

    ls = sub.add_parser("ls", help="list datasets and the state of each map resource")
    ls.set_defaults(func=cmd_ls)

    tag = sub.add_parser("tag", help="tag (or untag) datums listed in a file, one id a line")
    tag.add_argument("dataset")
    tag.add_argument("tag", help="tag name")
    tag.add_argument("--ids-from", required=True, help="file of ids, one a line ('-': stdin)")
    tag.add_argument("--remove", action="store_true", help="remove the tag from these ids")
    tag.set_defaults(func=cmd_tag)

    rm_batch = sub.add_parser(
        "rm-batch", help="remove a dataset's last batch(es): the way out of a bad upload"
    )
    rm_batch.add_argument("dataset")
    rm_batch.add_argument("--count", type=int, default=1, help="batches to remove (default 1)")
    rm_batch.set_defaults(func=cmd_rm_batch)

    tags = sub.add_parser("tags", help="list a dataset's tags with their counts")
    tags.add_argument("dataset")
    tags.set_defaults(func=cmd_tags)

    bind = sub.add_parser("bind", help="bind a dataset to a file or glob the schedule re-reads")
    bind.add_argument("dataset")
    bind.add_argument("pattern", help="a file or glob of .csv/.parquet/.jsonl files")
    bind.add_argument("--id-field", help="column of unique ids (required for a new dataset)")
    bind.set_defaults(func=cmd_bind)

    demo = sub.add_parser("demo", help="build the map of the bundled arXiv sample")
    demo.add_argument("--file", type=Path, default=_sample_file(), help=argparse.SUPPRESS)
    demo.add_argument("--rows", type=int, help="use only the first N abstracts")
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="open a dataset's map in the browser (prints the URL)")
    serve.add_argument("dataset")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=int,
        default=EXPLORER_PORT,
        help=f"port (default {EXPLORER_PORT}, the maps' map_link; a free one if taken; 0: any)",
    )
    serve.add_argument(
        "--token",
        action="store_true",
        help="require a token (printed in the URL) even on loopback; always on beyond loopback",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (a DNS name the machine is reached by); "
        "repeatable",
    )
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, LookupError, RuntimeError) as err:
        print(f"atlas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"atlas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
