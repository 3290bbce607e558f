"""The store on DuckLake: the same tables, their rows as Parquet files under a shared directory, their catalog
(which files make which table at which snapshot) in PostgreSQL. Many processes on many machines write at once:
each commit is a new snapshot, a reader sees one snapshot whole (never part of a partition), and nobody waits
for a file lock. Two writers that touch the same rows at the same moment conflict; `Store.replace` retries.

The extensions come from the `duckdb-extension-ducklake` and `duckdb-extension-postgres` wheels (this machine
cannot download them), built for one DuckDB release: pyproject.toml pins that duckdb.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import duckdb

from autointerp.errors import StoreError
from autointerp.store.database import Store

_CATALOG = "lake"
_connections: dict[tuple, duckdb.DuckDBPyConnection] = {}
_connections_lock = threading.Lock()


class LakeStore(Store):
    """`catalog`: 'postgres:dbname=... host=... user=...' (password: $PGPASSWORD) or a DuckDB file path;
    `data_path`: where the Parquet files go; `home`: this machine's folder for the viewer's pages."""

    def __init__(self, catalog: str, data_path: str | Path, home: str | Path, lock_timeout_s: float = 120.0,
                 read_only: bool = False):
        super().__init__(Path(data_path), lock_timeout_s, read_only)
        self.catalog = catalog
        self._home = Path(home)

    def __str__(self) -> str:
        return f"ducklake:{self.catalog} (data in {self.path})"

    @property
    def home(self) -> Path:
        return self._home

    @property
    def lock_path(self) -> Path:
        return self.path / ".llm-lock"

    def reader(self) -> "LakeStore":
        return LakeStore(self.catalog, self.path, self._home, self.lock_timeout_s, read_only=True)

    def exists(self) -> bool:
        try:
            with self.connect() as con:
                return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_catalog = "
                                        "current_database()").fetchone()[0])
        except StoreError:
            return False

    def _open(self) -> duckdb.DuckDBPyConnection:
        # One attached lake per process, a cursor per use: attaching costs a round of catalog queries (~0.3 s),
        # and cursors of one database run side by side (the viewer's threads, a run's steps).
        key = (os.getpid(), self.catalog, str(self.path), self.read_only)
        with _connections_lock:
            if key not in _connections:
                _connections[key] = self._attach()
            cursor = _connections[key].cursor()
        cursor.execute(f"USE {_CATALOG}")
        return cursor

    def _attach(self) -> duckdb.DuckDBPyConnection:
        if not self.read_only:
            self.path.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        for path in extension_files(postgres=self.catalog.startswith("postgres:")):
            con.execute(f"LOAD '{path}'")
        options = f"DATA_PATH '{self.path}'" + (", READ_ONLY" if self.read_only else "")
        try:
            con.execute(f"ATTACH 'ducklake:{self.catalog}' AS {_CATALOG} ({options})")
        except duckdb.Error as exc:
            con.close()
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"cannot open the DuckLake store {self}: {first} (is the catalog's server up, and "
                             "PGPASSWORD set?)") from exc
        return con


def extension_files(postgres: bool) -> list[Path]:
    """The extensions' files, under the names DuckDB derives their entry points from (the postgres wheel ships
    `postgres.duckdb_extension`; DuckDB's extension is `postgres_scanner`): links in a per-user folder."""
    try:
        import duckdb_extension_ducklake
        import duckdb_extension_postgres
    except ImportError as exc:
        raise StoreError("the DuckLake store needs the packages duckdb-extension-ducklake and "
                         "duckdb-extension-postgres (./scripts/setup.sh installs them)") from exc
    wanted = {"ducklake": (duckdb_extension_ducklake, "ducklake")}
    if postgres:
        wanted["postgres_scanner"] = (duckdb_extension_postgres, "postgres")
    links = Path(tempfile.gettempdir()) / f"autointerp-duckdb-extensions-{os.getuid()}"
    links.mkdir(exist_ok=True)
    files = []
    for name, (package, shipped) in wanted.items():
        source = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{shipped}.duckdb_extension"
        if not source.is_file():
            raise StoreError(f"{package.__name__} has no build for duckdb {duckdb.__version__} ({source.parent.parent} "
                             "holds others): install the duckdb version pyproject.toml pins")
        link = links / f"{name}.duckdb_extension"
        if not link.exists() or link.resolve() != source.resolve():
            temporary = links / f".{name}.{os.getpid()}"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(source)
            os.replace(temporary, link)  # atomic: two processes linking at once both end with a whole link
        files.append(link)
    return files
