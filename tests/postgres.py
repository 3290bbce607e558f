"""A throwaway PostgreSQL server on 127.0.0.1 for the tests that need one (the Dagster instance, the DuckLake
catalog, the workers): Debian's `postgresql`, initdb into a temporary directory, started on a free port, stopped
at the end. As root, initdb and postgres run as the `postgres` OS user: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest

from servers import LOOPBACK, free_port, tail

USER, PASSWORD = "dagster", "autointerp-test-password"


def postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("Debian's postgresql is not installed: run ./scripts/setup.sh (apt-get install postgresql)")
    return Path(found[-1]).parent


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class Postgres:
    port: int

    def connect(self, db_name: str = "postgres"):
        return psycopg2.connect(host=LOOPBACK, port=self.port, user=USER, password=PASSWORD, dbname=db_name)

    def query(self, db_name: str, sql: str, params: tuple | None = None) -> list[tuple]:
        with contextlib.closing(self.connect(db_name)) as con, con.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def create_database(self, name: str) -> str:
        con = self.connect()
        con.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with con.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        con.close()
        return name


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A server for the duration of the block (also usable from scripts outside pytest)."""
    bin_dir = postgres_bin()
    # Not pytest's tmp_path: the postgres user must be able to reach the directory (pytest's are 0700 root).
    root = Path(tempfile.mkdtemp(prefix="autointerp-pg-"))
    data, log, pwfile = root / "data", root / "server.log", root / "password"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        for path in (root, pwfile):
            shutil.chown(path, "postgres", "postgres")
    run = lambda *args: subprocess.run(_as_server_user([str(bin_dir / args[0]), *args[1:]]), capture_output=True,
                                       text=True, timeout=120)
    started = False
    try:
        # Password (scram) over TCP, as a real deployment; the unix socket stays in the private directory.
        done = run("initdb", "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth-host=scram-sha-256",
                   "--auth-local=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        for _ in range(3):  # a free port can be taken before the server binds it
            port = free_port()
            done = run("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "start", "-o",
                       f"-c listen_addresses={LOOPBACK} -p {port} -k {root} -c fsync=off")
            if done.returncode == 0:
                started = True
                break
        assert started, f"PostgreSQL did not start:\n{done.stderr}\n{tail(log)}"
        yield Postgres(port)
    finally:
        if started:
            stopped = run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
            assert stopped.returncode == 0, f"pg_ctl stop failed: {stopped.stderr}"
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server
