"""The one rule for model names, checked wherever a name enters: the config, `models add`, `import`, the store.

A model name becomes a Dagster partition key, a DuckDB value and a directory of the viewer
(`$AUTOINTERP_HOME/viewer/<model>`), so it must never be a path: no separators, no `.` or `..`.
"""

from __future__ import annotations

import re

from autointerp.errors import ConfigError

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)


def check_model_name(name: object, where: str = "model name") -> str:
    """`name` if it is a valid model name, else a ConfigError naming `where` and the rule."""
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise ConfigError(f"{where}: {name!r} is not a valid model name: use 1-64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return name
