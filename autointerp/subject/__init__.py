"""The subject model: a configured model's files, its revision, its units, and loading it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from autointerp.config import ModelSpec
from autointerp.subject.sources import (ModelInfo, ModelSource, describe_model, file_hash, load_model, load_tokenizer,
                                        model_config, model_revision, resolve_source)
from autointerp.units import UnitSource, build_units

__all__ = ["ModelInfo", "ModelSource", "Subject", "describe_model", "file_hash", "load_model", "load_tokenizer",
           "model_config", "model_revision", "resolve_source"]


@dataclass
class Subject:
    """A configured model, resolved: where its files are and what its units are."""

    spec: ModelSpec
    source: ModelSource
    units: UnitSource

    @classmethod
    def of(cls, spec: ModelSpec, base_dir: Path | None = None) -> "Subject":
        return cls(spec, resolve_source(spec.source, base_dir), build_units(spec.units, base_dir))

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def info(self) -> ModelInfo:
        return describe_model(self.source, self.units)

    @cached_property
    def revision(self) -> str:
        return model_revision(self.source, self.units.files())

    @property
    def device_key(self) -> str:
        return f"model '{self.name}': device"

    def device(self) -> Any:
        """The torch.device this model's `device` key names here (a ConfigError naming the key if absent)."""
        from autointerp.devices import resolve_device

        return resolve_device(self.spec.device, self.device_key)

    def load(self) -> Any:
        return load_model(self.source, self.spec.dtype, self.device())

    def tokenizer(self) -> Any:
        return load_tokenizer(self.source)
