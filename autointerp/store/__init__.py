"""Where every stage's rows live: one schema per table, one module for reads, quality suites on every write."""

from autointerp.store.database import Replacement, Store, default_home, where_clause

__all__ = ["Replacement", "Store", "default_home", "where_clause"]
