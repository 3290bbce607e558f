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


_LAST_LOADED: dict[str, Any] = {}  # the subject model Subject.load gave last in this process, and its key

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
        """The model, loaded once per process for its revision, dtype and device: a record run's steps (recording,
        then unit_logits) each ask for it, and loading a GGUF subject dequantizes it again (44 s for SmolLM2-135M
        on 2 cores). One model is kept, the last asked for, so memory holds at most one subject beyond what runs."""
        device = self.device()
        key = (self.source.location, self.source.gguf_file, self.revision, self.spec.dtype, str(device))
        if _LAST_LOADED.get("key") != key:
            _LAST_LOADED.clear()  # the previous model goes before the next loads
            _LAST_LOADED.update(key=key, model=load_model(self.source, self.spec.dtype, device))
        return _LAST_LOADED["model"]

    def tokenizer(self) -> Any:
        return load_tokenizer(self.source)
