"""Subject models: where their files are, their revision, and loading them from the Hub, a directory or a GGUF
file. Which of their tensors are the units is the unit source's business (`autointerp/units/`)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from autointerp.errors import ModelLoadError

# Files whose bytes define a local model's behaviour, tokenizer included (it decides the excerpts).
_REVISION_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.gguf", "config.json", "tokenizer*.json", "*.model",
                   "vocab*", "merges.txt", "special_tokens_map.json")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are. `kind` is 'hub', 'directory' or 'gguf'."""

    kind: str
    location: str  # Hub repo id, or a local directory
    gguf_file: str | None = None
    hub_revision: str | None = None  # requested branch/tag/sha for Hub models

    def pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.gguf_file:
            kwargs["gguf_file"] = self.gguf_file
        if self.kind == "hub" and self.hub_revision:
            kwargs["revision"] = self.hub_revision
        return kwargs


@dataclass(frozen=True)
class ModelInfo:
    architecture: str  # the transformers model_type
    n_layers: int
    n_neurons: int  # units per layer (MLP neurons, or the latents of the model's dictionary)
    units: str  # the unit source's label
    layers: tuple[int, ...] = ()  # the layers that have units (an SAE may cover only some); empty: all of them

    @property
    def unit_layers(self) -> list[int]:
        return list(self.layers) if self.layers else list(range(self.n_layers))


def resolve_source(source: str, base_dir: Path | None = None) -> ModelSource:
    """Parse a source string; local files must exist. Hub ids are checked when resolved."""
    if source.startswith("embedded:"):
        from autointerp.subject.embedded import embedded_model_path

        return _local_source(embedded_model_path(source.removeprefix("embedded:")))
    if source.startswith("package:"):
        package, _, file_name = source[len("package:"):].partition("/")
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"model source '{source}': Python package '{package}' is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / file_name
        if not path.is_file():
            raise ModelLoadError(f"model source '{source}': package '{package}' has no file '{file_name}'")
        return _local_source(path)
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if path.exists():
        return _local_source(path)
    if source.endswith(".gguf") or source.startswith((".", "/", "~")):
        raise ModelLoadError(f"model source '{source}': no such file or directory")
    repo_id, _, revision = source.removeprefix("hf:").partition("@")
    return ModelSource(kind="hub", location=repo_id, hub_revision=revision or None)


def _local_source(path: Path) -> ModelSource:
    path = path.resolve()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model directory {path} has no config.json")
        return ModelSource(kind="directory", location=str(path))
    if path.suffix != ".gguf":
        raise ModelLoadError(f"model file {path}: expected a directory or a .gguf file")
    return ModelSource(kind="gguf", location=str(path.parent), gguf_file=path.name)


def model_revision(source: ModelSource, extra_files: Sequence[Path] = ()) -> str:
    """The Hub commit sha, or a content hash of the local files (weights, config, tokenizer); `extra_files`
    (e.g. a dictionary's weights, see UnitSource.files) join the hash."""
    if source.kind == "hub":
        revision = _hub_commit(source)
        return f"{revision}+{file_hash(extra_files)}" if extra_files else revision
    if source.gguf_file:
        files = [Path(source.location) / source.gguf_file]
    else:
        root = Path(source.location)
        files = sorted({p for pattern in _REVISION_GLOBS for p in root.glob(pattern) if p.is_file()})
    return file_hash([*files, *extra_files])


def file_hash(files: Sequence[Path]) -> str:
    """'sha256:' + 16 hex digits of the files' names and bytes (memoised on path, size and mtime)."""
    return _hash_files(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=64)
def _hash_files(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 of the files' names and bytes; memoised on (path, size, mtime) within a process."""
    digest = hashlib.sha256()
    for path, _size, _mtime in files:
        digest.update(Path(path).name.encode())
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def _hub_commit(source: ModelSource) -> str:
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(source.location, revision=source.hub_revision, allow_patterns=["config.json"])
    except Exception as exc:  # offline, unknown repo, bad revision: all end the same way for the user
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 and it is not in the local cache)" if offline else ""
        raise ModelLoadError(
            f"model source '{source.location}': not a local path, and the Hugging Face Hub could not "
            f"resolve it{hint}: {type(exc).__name__}: {exc}"
        ) from exc
    return Path(snapshot).name


def model_config(source: ModelSource) -> Any:
    """The transformers config, read without loading weights."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.location, **source.pretrained_kwargs())
    except Exception as exc:
        raise ModelLoadError(f"cannot read the config of '{_label(source)}': {exc}") from exc


def describe_model(source: ModelSource, units: Any = None) -> ModelInfo:
    """Architecture and sizes from the config alone; `units` (a UnitSource, default MLP neurons) checks the
    architecture and says how many units a layer has."""
    if units is None:
        from autointerp.units.mlp import MLPNeurons

        units = MLPNeurons()
    config = model_config(source)
    units.check_architecture(config)
    return ModelInfo(config.model_type, units.n_layers(config), units.width(config), units.label,
                     tuple(units.layers(config)))


def load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.location, **source.pretrained_kwargs())
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer of '{_label(source)}': {exc}") from exc


def load_model(source: ModelSource, dtype: str = "float32", device: Any = "cpu") -> Any:
    """The model in `dtype` on `device` (a torch.device already resolved, autointerp/devices.py)."""
    import torch
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source.location, dtype=getattr(torch, dtype), **source.pretrained_kwargs()
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load the weights of '{_label(source)}': {exc}") from exc
    # Loaded on the host, then moved: GGUF files are dequantized on the CPU in any case.
    return model.to(device).eval()


def _label(source: ModelSource) -> str:
    return str(Path(source.location) / source.gguf_file) if source.gguf_file else source.location
