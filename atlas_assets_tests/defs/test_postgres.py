"""The Dagster instance and the live tags on PostgreSQL (a real server, the ``postgres`` fixture).

With ``ATLAS_DAGSTER_PG_URL`` and ``ATLAS_TAGS_URL`` set, a build from Python, the inbox
sensor's run request, the publishing sensor and the refresh schedule all run against one
PostgreSQL database, and nothing is kept in SQLite: first ticked and run in this process, then
by the real webserver and daemon (``dagster dev``) with a run launched through the webserver as
the UI launches one. Bad settings fail first, with one error naming the setting.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from atlas_assets import AtlasDataset
from atlas_assets.cli import main
from atlas_assets.definitions import defs
from atlas_assets.defs.publishing import process_tags, publish_maps
from atlas_assets.defs.resources import AtlasStore
from atlas_assets.defs.schedules import refresh_sources
from atlas_assets.lib.pg import DatabaseUnavailable
from atlas_assets.store.layout import ensure_dagster_home
from atlas_assets_tests.defs.test_sensors import run_sensor

_databases = itertools.count()


@pytest.fixture
def database(postgres) -> str:
    """A fresh database on the session's server; its URL."""
    return postgres.create_database(f"instance_{next(_databases)}")


def for_dagster(url: str) -> str:
    """The URL with the psycopg2 driver named, as ATLAS_DAGSTER_PG_URL needs."""
    return url.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def on_postgres(store, database, monkeypatch) -> str:
    """A store whose Dagster instance and tags both live in one fresh PostgreSQL database (one
    URL serves both settings)."""
    monkeypatch.setenv("ATLAS_DAGSTER_PG_URL", for_dagster(database))
    monkeypatch.setenv("ATLAS_TAGS_URL", for_dagster(database))
    return database


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as con:
        return con.execute(sql).fetchall()


def test_builds_sensors_and_schedule_run_on_postgres(on_postgres, store, arxiv, tmp_path):
    url = on_postgres
    # A build from Python: create_index writes dagster.yaml and runs build_map on the instance.
    ds = AtlasDataset("pg papers", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(12))
    atlas_map = ds.create_index(indexed_field="title")
    config = (store / ".dagster" / "dagster.yaml").read_text()
    assert "env: ATLAS_DAGSTER_PG_URL" in config and url not in config  # no secret on disk
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["dagster/partition"] == (
            "pg-papers"
        )
    # ... recorded in PostgreSQL itself, and the map's tags too.
    assert rows(url, "SELECT status FROM runs") == [("SUCCESS",)]
    assert ("pg-papers",) in rows(url, "SELECT partition FROM dynamic_partitions")
    atlas_map.tags.add(["0704.0003"], "keep")
    assert rows(url, "SELECT dataset, name FROM atlas_tags") == [("pg-papers", "keep")]
    assert not ds._paths.tag_db.exists()
    # No SQLite storage anywhere in the instance folder.
    assert not [p.name for p in (store / ".dagster").rglob("*.db")]

    # The inbox sensor on the same instance: a partition and a run request, which is then
    # run (in this process, on the same instance) and published by the publishing sensor.
    inbox = store / "inbox" / "dropped"
    inbox.mkdir(parents=True)
    (inbox / "atlas.json").write_text(
        json.dumps({"unique_id_field": "arxiv_id", "indexed_field": "title"})
    )
    arxiv.iloc[20:30].to_csv(inbox / "batch.csv", index=False)
    with dg.DagsterInstance.get() as instance:
        result = run_sensor(store, instance)
        assert [r.partition_key for r in result.run_requests] == ["dropped"]
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        launched = (
            defs()
            .resolve_job_def("build_map")
            .execute_in_process(instance=instance, partition_key="dropped", tags=process_tags())
        )
        assert launched.success
        context = dg.build_sensor_context(instance=instance, resources={"store": AtlasStore()})
        assert "published: 1" in publish_maps(context).skip_message
        # The refresh schedule ticks against the same instance.
        source = tmp_path / "bound.csv"
        arxiv.iloc[40:44].to_csv(source, index=False)
        AtlasDataset("bound", unique_id_field="arxiv_id").bind_source(str(source))
        schedule = dg.build_schedule_context(
            instance=instance, resources={"store": AtlasStore(root=str(store))}
        )
        assert [r.partition_key for r in refresh_sources(schedule)] == ["bound"]
    assert AtlasDataset("dropped").maps[0].data.tb.num_rows == 10
    assert sorted(rows(url, "SELECT partition FROM dynamic_partitions")) == [
        ("bound",),
        ("dropped",),
        ("pg-papers",),
    ]
    assert rows(url, "SELECT count(*) FROM runs WHERE status = 'SUCCESS'") == [(2,)]


def test_switching_a_local_instance_to_postgres_says_so(store, database, monkeypatch):
    monkeypatch.delenv("ATLAS_DAGSTER_PG_URL", raising=False)
    config = ensure_dagster_home() / "dagster.yaml"
    assert "postgres" not in config.read_text()  # SQLite, the default
    monkeypatch.setenv("ATLAS_DAGSTER_PG_URL", for_dagster(database))
    with pytest.warns(UserWarning, match="now stores its runs in PostgreSQL"):
        ensure_dagster_home()
    assert "postgres_url" in config.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure_dagster_home()  # unchanged: no second warning
    monkeypatch.delenv("ATLAS_DAGSTER_PG_URL")
    with pytest.warns(UserWarning, match="SQLite"):
        ensure_dagster_home()
    assert "postgres" not in config.read_text()
    # A file the user wrote is theirs: kept, but not silently used against the setting.
    config.write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("ATLAS_DAGSTER_PG_URL", for_dagster(database))
    with pytest.raises(ValueError, match=r"ATLAS_DAGSTER_PG_URL is set but .* \(not written by"):
        ensure_dagster_home()
    assert config.read_text() == "telemetry:\n  enabled: false\n"


def bad_urls(postgres) -> dict[str, tuple[str, type, str]]:
    """Setting value -> (the error's type, what its message must say)."""
    return {
        "malformed": ("postgres//no-scheme", ValueError, "must start with postgresql"),
        "no database": (f"postgresql://atlas@127.0.0.1:{postgres.port}", ValueError, "database"),
        "wrong password": (
            postgres.url(password="not-the-password"),
            DatabaseUnavailable,
            'password authentication failed for user "atlas"',
        ),
        "unreachable": (
            "postgresql://atlas:secret@127.0.0.1:1/atlas",
            DatabaseUnavailable,
            "Connection refused",
        ),
    }


CASES = ["malformed", "no database", "wrong password", "unreachable"]


# The tag store reads plain postgresql:// URLs (psycopg 3): "no driver" is Dagster's alone.
@pytest.mark.parametrize(
    ("setting", "case"),
    [(s, c) for s in ("ATLAS_DAGSTER_PG_URL", "ATLAS_TAGS_URL") for c in CASES]
    + [("ATLAS_DAGSTER_PG_URL", "no driver")],
)
def test_a_bad_setting_is_one_clear_error_before_anything_is_written(
    store, postgres, arxiv, monkeypatch, setting, case
):
    if case == "no driver":
        # A working URL, but SQLAlchemy 2.1 would read it as psycopg 3, which Dagster's
        # PostgreSQL storage fails with at the first run event.
        value, error, says = postgres.url(), ValueError, "must name the psycopg2 driver"
    else:
        value, error, says = bad_urls(postgres)[case]
        if setting == "ATLAS_DAGSTER_PG_URL" and case != "malformed":
            value = for_dagster(value)
    ds = AtlasDataset("bad settings", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(5))
    meta_before = ds._paths.meta.read_text()
    monkeypatch.setenv(setting, value)
    with pytest.raises(error, match=setting) as caught:
        ds.create_index(indexed_field="title")
    message = str(caught.value)
    assert says in message
    assert "not-the-password" not in message and "secret" not in message
    # One error: no driver exception chained under it.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    # Nothing written: not the options, not a build, not the instance's configuration.
    assert ds._paths.meta.read_text() == meta_before
    assert not ds._paths.resources.exists()
    assert not (store / ".dagster" / "dagster.yaml").exists()


def test_the_cli_says_which_setting_is_wrong_without_a_traceback(store, postgres, arxiv, tmp_path):
    ds = AtlasDataset("cli", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(3))
    ids = tmp_path / "ids.txt"
    ids.write_text("0704.0001\n")
    env_url = postgres.url(password="wrong")
    code = (
        "import sys; from atlas_assets.cli import main; "
        f"sys.exit(main(['tag', 'cli', 'keep', '--ids-from', {str(ids)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ATLAS_TAGS_URL": env_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"atlas tag: error: ATLAS_TAGS_URL: cannot connect to PostgreSQL at "
        f"postgresql://atlas:***@127.0.0.1:{postgres.port}/postgres: password authentication "
        'failed for user "atlas"'
    ]
    assert main(["tags", "cli"]) == 0  # the default store was not touched


# What the UI's job page sends for "Materialize all" on one partition of an asset job (Dagster
# 1.13's ui-core: LaunchAssetExecutionButton.tsx, ConfigFetch.tsx, LaunchAssetChoosePartitions
# Dialog.tsx), trimmed to the fields the launch reads.
UI_ASSET_NODES = """
query LaunchAssetLoaderJobQuery($job: PipelineSelector!) {
  assetNodes(pipeline: $job) {
    id
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name jobNames } } }
  }
}"""
UI_PARTITION_CONFIG = """
query ConfigPartitionForAssetJobQuery($repositoryName: String!, $repositoryLocationName: String!,
    $jobName: String!, $partitionName: String!, $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName,
      repositoryLocationName: $repositoryLocationName}) {
    ... on Pipeline {
      partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) {
        runConfigOrError { ... on PartitionRunConfig { yaml } ... on PythonError { message } }
        tagsOrError {
          ... on PartitionTags { results { key value } }
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}"""
UI_LAUNCH = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id pipelineName } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}"""
UI_RUN = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { ... on Run { status tags { key value } } }
}"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    """One request to the webserver's GraphQL endpoint, as the UI makes it; its ``data``."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.load(response)
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


def launch_as_the_ui(port: int, job: str, partition: str) -> str:
    """Launch ``job`` for one partition as the UI's "Materialize all" does; the run id.

    Waits for the webserver to serve the code location first."""
    selector = {
        "repositoryLocationName": "atlas_assets",
        "repositoryName": "__repository__",
        "pipelineName": job,
    }
    deadline = time.monotonic() + 300
    while True:
        try:
            nodes = graphql(port, UI_ASSET_NODES, {"job": selector})["assetNodes"]
            if nodes:
                break
        except (OSError, AssertionError):  # not listening yet, or the location still loading
            pass
        assert time.monotonic() < deadline, "the webserver never served the code location"
        time.sleep(1)
    assets = [{"path": n["assetKey"]["path"]} for n in nodes]
    checks = [
        {"name": c["name"], "assetKey": {"path": n["assetKey"]["path"]}}
        for n in nodes
        for c in (n["assetChecksOrError"] or {}).get("checks", [])
        if not c["jobNames"] or job in c["jobNames"]
    ]
    config = graphql(
        port,
        UI_PARTITION_CONFIG,
        {
            "repositoryName": selector["repositoryName"],
            "repositoryLocationName": selector["repositoryLocationName"],
            "jobName": job,
            "partitionName": partition,
            "assetKeys": assets,
        },
    )["pipelineOrError"]["partition"]
    tags = config["tagsOrError"]["results"] + [{"key": "dagster/from_ui", "value": "true"}]
    params = {
        "mode": "default",
        "executionMetadata": {"tags": tags},
        "runConfigData": config["runConfigOrError"]["yaml"],
        "selector": {**selector, "assetSelection": assets, "assetCheckSelection": checks},
    }
    launched = graphql(port, UI_LAUNCH, {"executionParams": params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["id"]


def test_the_ui_and_the_daemon_run_builds_on_postgres(on_postgres, store, arxiv, static_model):
    """The real thing, in processes of its own, as ``make dev`` runs it (``dagster dev``: the real
    dagster-webserver and dagster-daemon sharing one code server): a build launched through the
    webserver's GraphQL endpoint as the UI's "Materialize" launches it, and a file dropped in the
    inbox; the run is queued in PostgreSQL, the daemon dequeues and launches it, ticks the inbox
    sensor and launches its run, and the publishing sensor publishes both maps. Small and on
    the static embedding path (no topics, no duplicates): the processes are what is tested."""
    from atlas_assets.defs.partitions import atlas_datasets
    from atlas_assets.inbox import SETTLE_SECONDS
    from atlas_assets.lib import static_embed
    from atlas_assets.store import dataset_paths, published
    from atlas_assets_tests.pg import free_port

    root = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent
    # As if distilled on this machine before (distilling the whole table takes a minute).
    static_embed.save(static_model, static_embed.model_file(home=store), source="test")
    fast = {
        "embedding_model": {"mode": "static"},
        "topic_model": False,
        "duplicate_detection": False,
    }
    ds = AtlasDataset("launched", unique_id_field="arxiv_id")
    ds.add_data(arxiv.head(12))
    ds.configure_index(indexed_field="title", **fast)
    ensure_dagster_home()
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(atlas_datasets.name, ["launched"])
    inbox = store / "inbox" / "dropped"
    inbox.mkdir(parents=True)
    (inbox / "atlas.json").write_text(
        json.dumps({"unique_id_field": "arxiv_id", "indexed_field": "title", **fast})
    )
    arxiv.iloc[20:30].to_csv(inbox / "batch.csv", index=False)
    past = time.time() - SETTLE_SECONDS - 5
    for path in inbox.iterdir():
        os.utime(path, (past, past))

    port = free_port()
    log = store / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen(
            [str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml"]
            + ["-h", "127.0.0.1", "-p", str(port)],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own process group: its webserver, daemon and code server go with it.
            start_new_session=True,
        )
    try:
        run_id = launch_as_the_ui(port, "build_map", "launched")
        deadline = time.monotonic() + 600
        maps = {key: dataset_paths(key) for key in ("launched", "dropped")}
        while time.monotonic() < deadline:
            if all(published(p).resources for p in maps.values()):
                break
            assert dev.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
        # The UI sees the run it launched succeed, with the partition it asked for.
        run = graphql(port, UI_RUN, {"runId": run_id})["runOrError"]
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        time.sleep(2)  # the code server's own shutdown
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)
    assert all(published(p).resources for p in maps.values()), log.read_text()[-3000:]
    assert run["status"] == "SUCCESS"
    assert {"key": "dagster/partition", "value": "launched"} in run["tags"]
    assert {"key": "dagster/from_ui", "value": "true"} in run["tags"]
    by_partition = dict(rows(on_postgres, "SELECT partition, status FROM runs"))
    assert by_partition == {"launched": "SUCCESS", "dropped": "SUCCESS"}
    # Both maps read back through the public API, in a store nothing of which is in SQLite.
    assert AtlasDataset("launched").maps[0].data.tb.num_rows == 12
    assert AtlasDataset("dropped").maps[0].data.tb.num_rows == 10
    assert not [p.name for p in (store / ".dagster").rglob("*.db")]
