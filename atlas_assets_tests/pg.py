"""A real PostgreSQL server for the tests: Debian's binaries, ``initdb`` and ``pg_ctl`` in a
temporary folder, listening on a free loopback port (its unix socket inside that folder too).

PostgreSQL refuses to run as root, which is how CI runs the tests: then the folder is given to
the ``postgres`` user (created by Debian's package) and the server runs as that user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

USER = "atlas"
PASSWORD = "atlas-test-secret"


def find_bin(name: str) -> str | None:
    """``initdb`` / ``pg_ctl`` on PATH, else in Debian's versioned folder (not on PATH there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running server; ``url(db)`` is a connection URL with the test user's password."""

    folder: Path
    port: int
    pg_ctl: str
    as_user: list[str]

    def url(self, db: str = "postgres", *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """A fresh database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, self.pg_ctl, "stop", "-D", str(self.folder / "data"), "-m", "fast"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> Server:
    """Start a server (raises ``RuntimeError`` saying why when it cannot)."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if not (initdb and pg_ctl):
        raise RuntimeError(
            "PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql; "
            "`make test` does it as root)"
        )
    # Not pytest's tmp_path: its parents are private to root, and the server may run as postgres.
    folder = Path(tempfile.mkdtemp(prefix="atlas-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise RuntimeError("running as root and there is no 'postgres' user") from exc
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile = folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    port = free_port()
    server = Server(folder=folder, port=port, pg_ctl=pg_ctl, as_user=as_user)
    try:
        # Passwords checked (scram) even on loopback, so a wrong password is a real failure.
        subprocess.run(
            [
                *as_user,
                initdb,
                "-D",
                str(folder / "data"),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} "
            "-c fsync=off -c max_connections=100"
        )
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "start",
                "-D",
                str(folder / "data"),
                "-w",
                "-t",
                "60",
                "-l",
                str(folder / "log"),
                "-o",
                options,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        server.stop()
        raise RuntimeError(
            f"could not start PostgreSQL: {exc.stderr or exc.stdout}{log[-2000:]}"
        ) from exc
    return server
