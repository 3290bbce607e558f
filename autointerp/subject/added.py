"""Models registered at run time (`autointerp models add NAME SOURCE`), next to the store.

They live in `$AUTOINTERP_HOME/models.yaml`, a list of {name, source, dtype} like the config's `models:`,
and `load_config` adds them to the configured ones: the pipeline treats both the same way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from autointerp.errors import ConfigError
from autointerp.names import check_model_name
from autointerp.store.database import default_home


def registry_path(home: str | Path | None = None) -> Path:
    return Path(home or default_home()) / "models.yaml"


def read_registry(home: str | Path | None = None) -> list[dict]:
    path = registry_path(home)
    if not path.is_file():
        return []
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: must be a list of {{name, source}} entries")
    return entries


def _write(entries: list[dict], home: str | Path | None) -> None:
    path = registry_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a crash never leaves a half-written registry.
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        yaml.safe_dump(entries, handle, sort_keys=False)
    os.replace(handle.name, path)


def add_model(name: str, source: str, dtype: str = "float32", home: str | Path | None = None) -> None:
    check_model_name(name, "autointerp models add")
    entries = [e for e in read_registry(home) if e.get("name") != name]
    _write([*entries, {"name": name, "source": source, "dtype": dtype}], home)


def remove_model(name: str, home: str | Path | None = None) -> bool:
    entries = read_registry(home)
    kept = [e for e in entries if e.get("name") != name]
    if len(kept) != len(entries):
        _write(kept, home)
    return len(kept) != len(entries)
