"""Implementations registered by name: the YAML picks an explainer, simulator, LLM backend or unit type by name.

Each role package (`explain/`, `simulate/`, `llm/`, `units/`) has one `Registry`. An implementation module
registers itself with a decorator, together with the dataclass of its options (the keys its YAML section
takes); the registry imports every module of its package the first time a name is looked up, so adding an
implementation is one new file. Implementations kept outside this package (your own backend, a test's
stand-in) are modules named in `$AUTOINTERP_PLUGINS` (comma-separated), imported at the same moment. Implementation modules keep heavy imports (torch, transformers) inside
their functions: the config is parsed often (every sensor tick) and must stay cheap.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from autointerp.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class NoOptions:
    """For implementations that take no options."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]  # called with the options (and whatever the role passes)
    options: type  # a frozen dataclass: the YAML keys and their defaults


class Registry(Generic[T]):
    def __init__(self, role: str, package: str):
        self.role, self.package = role, package
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def register(self, name: str, options: type = NoOptions) -> Callable[[Callable[..., T]], Callable[..., T]]:
        if not dataclasses.is_dataclass(options):
            raise TypeError(f"{self.role} '{name}': options must be a dataclass")

        def decorate(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"two {self.role}s are registered as '{name}'")
            self._entries[name] = Entry(name, factory, options)
            return factory

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self.package}.{module.name}")
        for name in filter(None, (n.strip() for n in os.environ.get("AUTOINTERP_PLUGINS", "").split(","))):
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ConfigError(f"AUTOINTERP_PLUGINS names '{name}', which cannot be imported: {exc}") from exc
        self._loaded = True

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str, where: str = "") -> Entry[T]:
        self._load()
        if name not in self._entries:
            raise ConfigError(f"{where + ': ' if where else ''}unknown {self.role} '{name}'; "
                              f"known: {', '.join(self.names())}")
        return self._entries[name]


def options_dict(options: Any) -> dict[str, Any]:
    """An options dataclass as plain data (nested dataclasses too), e.g. for run tags or metadata."""
    return dataclasses.asdict(options)
