"""deploy/: what can be checked without a cluster. The YAML parses; every setting it and the
Dockerfile name is one the project reads; the Dockerfile installs the extras a shared setup
needs; and the chart's way of reaching PostgreSQL, with the scheme these values give it, runs a
Dagster job on a real server (nothing here runs Kubernetes, Helm or Docker)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SETTING = re.compile(r"\bATLAS_[A-Z0-9_]+\b")


def project_settings() -> set[str]:
    """Every ATLAS_* environment setting the package's code names."""
    return {
        name
        for path in (ROOT / "atlas_assets").rglob("*.py")
        for name in SETTING.findall(path.read_text())
    }


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


@pytest.fixture(scope="module")
def secrets() -> list[dict]:
    return list(yaml.safe_load_all((DEPLOY / "secret.example.yaml").read_text()))


def deployment(values: dict) -> dict:
    (only,) = values["dagster-user-deployments"]["deployments"]
    return only


def test_every_setting_named_in_deploy_is_one_the_project_reads():
    known = project_settings()
    for path in sorted(DEPLOY.iterdir()):
        named = set(SETTING.findall(path.read_text()))
        assert named <= known, f"{path.name} names settings the code never reads: {named - known}"


def test_the_code_location_gets_the_store_the_tags_and_dask(values, secrets):
    user = deployment(values)
    env = {e["name"]: e["value"] for e in user["env"]}
    assert env["ATLAS_HOME"].startswith("s3://")  # the shared store, not a pod's disk
    assert "ATLAS_DASK_ADDRESS" in env
    settings = next(s for s in secrets if "ATLAS_TAGS_URL" in s["stringData"])
    # Credentials only in the Secret, never as plain env values.
    assert not {"ATLAS_TAGS_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)
    name = settings["metadata"]["name"]
    assert user["envSecrets"] == [{"name": name}]
    assert user["includeConfigInLaunchedRuns"] == {"enabled": True}
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert {"name": name} in launcher["config"]["k8sRunLauncher"]["envSecrets"]
    # The instance's password Secret is the one the chart is told to read, under its key.
    instance = next(s for s in secrets if s["metadata"]["name"] != name)
    assert instance["metadata"]["name"] == values["global"]["postgresqlSecretName"]
    assert set(instance["stringData"]) == {"postgresql-password"}
    assert values["generatePostgresqlPasswordSecret"] is False
    from atlas_assets.lib.pg import check_url

    check_url(settings["stringData"]["ATLAS_TAGS_URL"], "ATLAS_TAGS_URL")


def test_no_dask_executor_anywhere():
    for path in DEPLOY.iterdir():
        text = path.read_text()
        assert "dask_executor" not in text and "dagster_dask" not in text, path.name


def test_the_dockerfile_installs_the_project_with_its_shared_setup_extras(values):
    docker = (DEPLOY / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    defined = set(pyproject["project"]["optional-dependencies"])
    (extras,) = re.findall(r"pip install '\.\[([a-z0-9,]+)\]'", docker)
    named = set(extras.split(","))
    assert {"dask", "postgres"} <= named and named <= defined
    assert "test" not in named  # no test tools in the image
    # CPU torch from PyTorch's CPU index, the Makefile's pin, before the project.
    torch = re.search(r"pip install (torch==\S+) --index-url (\S+)", docker)
    assert torch and torch[2] == "https://download.pytorch.org/whl/cpu"
    assert torch[1] in (ROOT / "Makefile").read_text()
    assert docker.index(torch[0]) < docker.index("pip install '.[")
    assert "dagster-k8s" in docker
    # It serves the module the workspace and the chart name, and copies what exists.
    module = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"][
        "module_name"
    ]
    assert deployment(values)["dagsterApiGrpcArgs"] == ["-m", module]
    assert f'"-m", "{module}"' in docker
    assert str(deployment(values)["port"]) in docker
    for line in docker.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def chart_instance(postgresql: dict, server, database: str) -> str:
    """The storage block the chart's template (``_postgresql.tpl``) writes from these
    ``postgresql`` values, pointed at the test server and ``database``."""
    from atlas_assets_tests import pg

    server.create_database(database)
    block = {
        "username": pg.USER,
        "password": pg.PASSWORD,
        "hostname": "127.0.0.1",
        "db_name": database,
        "port": server.port,
        "params": postgresql["postgresqlParams"],
    }
    if postgresql.get("postgresqlScheme"):
        block["scheme"] = postgresql["postgresqlScheme"]
    config = {"storage": {"postgres": {"postgres_db": block}}, "telemetry": {"enabled": False}}
    return yaml.safe_dump(config)


@pytest.mark.parametrize("scheme", ["as in values.yaml", "left out"])
def test_the_chart_instance_needs_the_scheme_these_values_give(values, postgres, tmp_path, scheme):
    """With the values' scheme a run is recorded on PostgreSQL; without it (SQLAlchemy 2.1 then
    picks psycopg 3) dagster-postgres fails at the run's first event: why the values set it."""
    import dagster as dg

    @dg.op
    def hello() -> int:
        return 1

    job = dg.GraphDefinition("hello", node_defs=[hello]).to_job()
    postgresql = dict(values["postgresql"])
    if scheme == "left out":
        postgresql.pop("postgresqlScheme")
    (tmp_path / "dagster.yaml").write_text(
        chart_instance(postgresql, postgres, f"chart_{scheme.split()[0]}")
    )
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        if scheme == "left out":
            with pytest.raises(Exception, match="NOTIFY"):
                job.execute_in_process(instance=instance)
        else:
            assert job.execute_in_process(instance=instance).success
            assert [r.status for r in instance.get_runs()] == [dg.DagsterRunStatus.SUCCESS]
