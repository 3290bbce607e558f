"""Where every stage's rows live: one schema per table, one module for reads, quality suites on every write."""

from __future__ import annotations

from typing import Any

__all__ = ["Replacement", "Store", "default_home", "where_clause"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that importing a submodule (the quality suites' patterns, the table schemas) does not
    # import DuckDB: the GPU device check (bench/gpu.py) runs where only torch and transformers are installed.
    if name in __all__:
        from autointerp.store import database

        return getattr(database, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
