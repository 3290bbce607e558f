import dagster as dg

from autointerp.store import Store


class DuckDBStore(dg.ConfigurableResource):
    """The DuckDB file at `$AUTOINTERP_HOME/autointerp.duckdb` (default ./data) unless `home` is set."""

    home: str = ""
    lock_timeout_s: float = 120.0

    def store(self) -> Store:
        return Store.from_home(self.home or None, lock_timeout_s=self.lock_timeout_s)
