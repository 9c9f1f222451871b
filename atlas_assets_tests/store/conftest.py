"""A real S3 server for the shared-store tests: moto's, on 127.0.0.1, with credentials enforced."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atlas_assets_tests.conftest import environment

_BUCKETS = itertools.count()


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str

    def options(self, **changes) -> dict:
        """Storage options (s3fs) for this server and its user."""
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret, **changes}

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(**self.options(), use_listings_cache=False)

    def new_bucket(self) -> str:
        name = f"atlas-test-{os.getpid()}-{next(_BUCKETS)}"
        self.fs().mkdir(name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server in a thread on 127.0.0.1 (a free port), stopped after the session.

    Requests are authenticated as on AWS: an IAM user with S3 rights is created first, then
    moto is told to check every request's signature, so wrong credentials are refused.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boot = {"aws_access_key_id": "boot", "aws_secret_access_key": "boot"}
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", **boot)
        iam.create_user(UserName="atlas")
        iam.put_user_policy(
            UserName="atlas",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        created = iam.create_access_key(UserName="atlas")["AccessKey"]
        # From now on every request must be signed by a known key.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            b"0",
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).close()
        yield S3Server(endpoint, created["AccessKeyId"], created["SecretAccessKey"])
    finally:
        server.stop()


def without_lease(monkeypatch, paths) -> None:
    """Machine ``paths``'s writers take no lease, as one whose lease lapsed while it stalled
    (``test_lease.py``): then only the conditional writes guard the store, as tested here."""
    from atlas_assets.store import files

    real = files.lease_path
    monkeypatch.setattr(
        files, "lease_path", lambda lock: None if paths.root in lock.parents else real(lock)
    )


@contextlib.contextmanager
def s3_env(server: S3Server, bucket: str, cache: Path, dagster: Path | None = None):
    """Point the store at ``s3://bucket/store`` (read cache and mirror in ``cache``)."""
    with environment(
        ATLAS_HOME=f"s3://{bucket}/store",
        ATLAS_STORAGE_OPTIONS=json.dumps(server.options()),
        ATLAS_CACHE_DIR=str(cache),
        DAGSTER_HOME=None if dagster is None else str(dagster),
    ):
        yield f"s3://{bucket}/store"


@pytest.fixture
def s3_store(s3_server: S3Server, tmp_path: Path) -> Iterator[str]:
    """An empty store on a new bucket of the S3 server; this process's mirror and read cache
    in ``tmp_path/cache``, its Dagster instance in ``tmp_path/dagster``. Yields the URL."""
    bucket = s3_server.new_bucket()
    with s3_env(s3_server, bucket, tmp_path / "cache", tmp_path / "dagster") as url:
        yield url
