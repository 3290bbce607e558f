"""Homes that are full, read-only, or hold someone else's DuckDB file: one `error:` line, nothing altered.

Full and read-only file systems are real: a small tmpfs mounted in a private mount namespace of the command
(`unshare --map-root-user --mount`), so nothing outside the test sees it and no root is needed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from orchestration.cli import main

AUTOINTERP = str(Path(sys.executable).parent / "autointerp")


def in_namespace(mount: Path, setup: str, *args: str, size: str = "20m", readonly: bool = False,
                 seed: Path | None = None) -> subprocess.CompletedProcess:
    """Run `autointerp ARGS` with a fresh tmpfs of `size` on `mount` (a copy of `seed` in it; read-only if asked),
    AUTOINTERP_HOME and DAGSTER_HOME inside it. `setup`: shell run first, inside the namespace."""
    mount.mkdir(parents=True, exist_ok=True)
    steps = [f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))}"]
    if seed is not None:
        steps.append(f"cp -a {shlex.quote(str(seed))}/. {shlex.quote(str(mount))}/")
    if setup:
        steps.append(setup)
    if readonly:
        steps.append(f"mount -o remount,ro {shlex.quote(str(mount))}")
    steps.append(f"exec {shlex.quote(AUTOINTERP)} {' '.join(shlex.quote(a) for a in args)}")
    env = {**os.environ, "AUTOINTERP_HOME": str(mount / "data"), "DAGSTER_HOME": str(mount / "dagster")}
    return subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", " && ".join(steps)],
                          capture_output=True, text=True, env=env, timeout=600)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize("size", [
    "3m",  # room for the excerpts and Dagster's own records, not for the activation records of three layers
    "600k",  # not even for Dagster's records of the first run
])
def test_a_full_disk_is_one_line_naming_the_file(project, home, size):
    mount = home / "small"
    result = in_namespace(mount, f"mkdir -p {mount}/dagster", "run", "--model", "tiny-gpt2", "--until", "record",
                          size=size)
    line = one_error_line(result)
    assert "out of disk space" in line or "No space left" in line, line
    assert str(mount) in line, line


def test_status_and_readers_work_on_a_store_on_read_only_media(project, home):
    assert main(["run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record"]) == 0
    seed = home / "seed"
    (seed / "data").mkdir(parents=True)
    shutil.copy(home / "data" / "autointerp.duckdb", seed / "data" / "autointerp.duckdb")
    mount = home / "ro"
    status = in_namespace(mount, "", "status", "--json", readonly=True, seed=seed)
    assert status.returncode == 0, status.stderr[-3000:]
    found = json.loads(status.stdout)
    [model] = [m for m in found["models"] if m["model"] == "tiny-gpt2"]
    assert [layer["layer"] for layer in model["layers"]] == [1]
    parquet = in_namespace(mount, "", "export", "--format", "parquet", "--out", str(home / "parquet"),
                           readonly=True, seed=seed)
    assert parquet.returncode == 0 and "wrote" in parquet.stdout, parquet.stderr[-3000:]
    site = in_namespace(mount, "", "view", "--no-serve", "--all-neurons", readonly=True, seed=seed)  # writes the site: cannot
    assert "Read-only file system" in one_error_line(site)
    run = in_namespace(mount, "", "run", "--model", "tiny-gpt2", "--until", "record", readonly=True, seed=seed)
    line = one_error_line(run)
    assert "Read-only file system" in line and str(mount) in line, line


def test_status_never_alters_a_store_of_another_schema(home, project, capsys):
    (home / "data").mkdir()
    path = home / "data" / "autointerp.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE models(name VARCHAR, foo INTEGER)")
        con.execute("INSERT INTO models VALUES (NULL, 1), ('x', 2)")
    for command in (["status", "--json"], ["status"], ["export", "--format", "parquet", "--out", str(home / "o")],
                    ["run", "--model", "tiny-gpt2", "--until", "record"]):
        assert main(command) == 2, command
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and "table models is not autointerp's" in error and "\n" not in error, error
    with duckdb.connect(str(path), read_only=True) as con:
        assert [c[0] for c in con.execute("DESCRIBE models").fetchall()] == ["name", "foo"]
        assert [t[0] for t in con.execute("SHOW TABLES").fetchall()] == ["models"]
