"""Reading the YAML configuration: every key checked, every problem one `ConfigError` naming file and key.

The file lives at `$AUTOINTERP_CONFIG`, else `autointerp.yaml` at the repository root. The explainer,
simulator, LLM backends and unit types are registered implementations (`autointerp/plugins.py`): their
section's `kind` (or an LLM's `backend`) names one, and its other keys are that implementation's options.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from autointerp.config.schema import (JudgeTrainSpec, DEFAULT_CONFIG_PATH, Choice, Config, CorpusSpec, ExecutorSpec,
                                      LLMChoice, ModelSpec, NeuronSelection, RecordSpec, SAETrainSpec, ScoringSpec,
                                      SearchSpec, StoreSpec, UnitsChoice, ViewerSpec,
                                      WatchSpec)
from autointerp.errors import ConfigError
from autointerp.names import check_model_name

MAX_SEED = 2**31 - 1  # seeds are mixed into torch, random and API seeds: keep them a plain int32


def config_path() -> Path:
    return Path(os.environ.get("AUTOINTERP_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: str | Path | None = None) -> Config:
    from autointerp.subject.added import read_registry

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


def configured_store(path: str | Path | None = None) -> StoreSpec:
    """The `store:` section alone: commands that only read the store (status, view, export) need no model to
    load, and a config file that is absent means the embedded default."""
    path = Path(path) if path is not None else config_path()
    if not path.is_file():
        return StoreSpec()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise ConfigError(f"{path}: not valid YAML (run any command that loads the whole config for where)") from None
    return store_section(raw.get("store", {}) if isinstance(raw, dict) else {}, path)


def store_section(raw: Any, path: Path) -> StoreSpec:
    where = f"{path}: store"
    spec = build(StoreSpec, raw, where)
    if spec.kind == "duckdb":
        if spec.catalog or spec.data_path:
            raise ConfigError(f"{where}: catalog and data_path are for kind: ducklake (the DuckDB file lives in "
                              "$AUTOINTERP_HOME)")
        return spec
    if spec.kind != "ducklake":
        raise ConfigError(f"{where}.kind: '{spec.kind}' is not a store; expected duckdb or ducklake")
    if not spec.catalog or not spec.data_path:
        raise ConfigError(f"{where}: kind ducklake needs catalog (e.g. 'postgres:dbname=autointerp host=10.0.0.5 "
                          "user=autointerp') and data_path (a directory every worker reaches)")
    if "password" in spec.catalog.lower():
        raise ConfigError(f"{where}.catalog: no password in the config file; set PGPASSWORD in the environment")
    data_path = Path(spec.data_path).expanduser()
    data_path = data_path if data_path.is_absolute() else path.resolve().parent / data_path
    return dataclasses.replace(spec, data_path=str(data_path))


def parse_config(raw: Any, path: Path, registered: list[dict] | None = None) -> Config:
    """`registered`: models added at run time (autointerp.subject.added), appended to the configured ones."""
    from autointerp.subject.added import registry_path

    registered = registered or []
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    models_raw = raw.pop("models", None)
    if not isinstance(models_raw, list) or not (models_raw or registered):
        raise ConfigError(f"{path}: 'models' must be a non-empty list of {{name, source}} entries")
    models = tuple(build(ModelSpec, m, f"{path}: models[{i}]") for i, m in enumerate(models_raw))
    models += tuple(build(ModelSpec, m, f"{registry_path()}: [{i}]") for i, m in enumerate(registered))
    names = [check_model_name(m.name, f"{path}: models") for m in models]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ConfigError(f"{path}: model names must be unique (configured and registered with `autointerp models "
                          f"add`); repeated: {', '.join(duplicated)}")
    judge_raw = raw.pop("judge_training", {}) or {}
    sections = {
        "corpus": build(CorpusSpec, raw.pop("corpus", {}), f"{path}: corpus"),
        "records": build(RecordSpec, raw.pop("records", {}), f"{path}: records"),
        "explainer": build_choice("explainer", raw.pop("explainer", {}), f"{path}: explainer"),
        "simulator": build_choice("simulator", raw.pop("simulator", {}), f"{path}: simulator"),
        "neurons": build(NeuronSelection, raw.pop("neurons", {}), f"{path}: neurons"),
        "watch": build(WatchSpec, raw.pop("watch", {}), f"{path}: watch"),
        "viewer": build(ViewerSpec, raw.pop("viewer", {}), f"{path}: viewer"),
        "search": build(SearchSpec, raw.pop("search", {}), f"{path}: search"),
        "sae_training": build(SAETrainSpec, raw.pop("sae_training", {}), f"{path}: sae_training"),
        "scoring": _scoring(raw.pop("scoring", {}), f"{path}: scoring"),
        "executor": _executor(raw.pop("executor", {}), f"{path}: executor"),
        "store": store_section(raw.pop("store", {}), path),
        "judge_training": build(JudgeTrainSpec, judge_raw, f"{path}: judge_training"),
    }
    top = build(_TopLevel, raw, f"{path}")
    explainer_llm = getattr(sections["explainer"].options, "llm", None) or build_choice("llm", {}, f"{path}: scoring")
    if sections["scoring"].llm is None:  # the judge is the explainer's LLM unless the config names one
        sections["scoring"] = dataclasses.replace(sections["scoring"], llm=explainer_llm)
    if not (isinstance(judge_raw, dict) and judge_raw.get("llm")):  # the paraphrases' writer too
        sections["judge_training"] = dataclasses.replace(sections["judge_training"], llm=explainer_llm)
    config = Config(models=models, seed=top.seed, path=path.resolve(), **sections)
    _check_values(config)
    return config


@dataclasses.dataclass(frozen=True)
class _TopLevel:
    seed: int = 0


# role -> (the registry's module, the YAML key that names the implementation, the default implementation)
_ROLES = {
    "explainer": ("autointerp.explain", "kind", "llm"),
    "simulator": ("autointerp.simulate", "kind", "all_at_once"),
    "llm": ("autointerp.llm", "backend", "local"),
    "units": ("autointerp.units", "kind", "mlp"),
}
_CHOICE_TYPES = {LLMChoice: "llm", UnitsChoice: "units"}


def build_choice(role: str, raw: Any, where: str) -> Choice:
    """`{kind: NAME, ...options}` -> Choice(NAME, that implementation's options dataclass)."""
    import importlib

    module, key, default = _ROLES[role]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    raw = dict(raw)
    kind = raw.pop(key, default)
    if not isinstance(kind, str):
        raise ConfigError(f"{where}.{key}: must be a string, got {kind!r}")
    entry = importlib.import_module(module).REGISTRY.get(kind, f"{where}.{key}")
    options = build(entry.options, raw, where)
    check = getattr(options, "check", None)
    if check is not None:
        check(where)
    cls = next((c for c, r in _CHOICE_TYPES.items() if r == role), Choice)
    return cls(kind, options)


def build(cls: type, raw: Any, where: str) -> Any:
    """Instantiate a config dataclass from a mapping, rejecting unknown keys and wrong types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in raw.items()}
    for name, hint in hints.items():  # nested choices left out take their defaults
        if name in fields and name not in values and hint in _CHOICE_TYPES:
            values[name] = build_choice(_CHOICE_TYPES[hint], {}, f"{where}.{name}")
    missing = [n for n, f in fields.items() if n not in values and _is_required(f)]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}")
    return cls(**values)


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING  # type: ignore[misc]


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if hint in _CHOICE_TYPES:
        return build_choice(_CHOICE_TYPES[hint], value, where)
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
        if not math.isfinite(value):  # .nan passes every `<=` check that follows, and .inf is no setting either
            raise ConfigError(f"{where}: must be a finite number, got {value!r}")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: must be a string, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _check_values(config: Config) -> None:
    where = config.path
    if not 0 <= config.seed <= MAX_SEED:
        raise ConfigError(f"{where}: seed must be an integer from 0 to {MAX_SEED}, got {config.seed}")
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
    selection = config.neurons
    if selection.select not in ("all", "first", "random", "list"):
        raise ConfigError(f"{where}: neurons.select must be all, first, random or list, got '{selection.select}'")
    if selection.select == "list" and not selection.ids:
        raise ConfigError(f"{where}: neurons.select is list, so neurons.ids must list neuron numbers")
    if selection.count < 1 or any(i < 0 for i in (*selection.ids, *selection.layers)):
        raise ConfigError(f"{where}: neurons.count must be positive, neurons.ids and neurons.layers non-negative")
    if config.viewer.url and not config.viewer.url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}: viewer.url must be an http(s) URL, got '{config.viewer.url}'")
    if len(config.watch.cron.split()) != 5 or config.watch.sensor_interval_s < 1:
        raise ConfigError(f"{where}: watch.cron must be a 5-field cron string and watch.sensor_interval_s positive")
    sae = config.sae_training
    if sae.model and sae.model not in [m.name for m in config.models]:
        raise ConfigError(f"{where}: sae_training.model '{sae.model}' is not a configured model")
    if min(sae.latents, sae.k, sae.tokens, sae.epochs, sae.batch_size) < 1 or sae.k > sae.latents or sae.lr <= 0:
        raise ConfigError(f"{where}: sae_training: latents, k, tokens, epochs, batch_size and lr must be positive, "
                          "and k at most latents")
    from autointerp.devices import check_device_spec
    from autointerp.units.sae import SITES

    check_device_spec(sae.device, f"{where}: sae_training.device")

    if sae.site not in SITES or any(layer < 0 for layer in sae.layers) or not sae.layers:
        raise ConfigError(f"{where}: sae_training.site must be one of {', '.join(SITES)}, and layers non-empty, "
                          "non-negative")
    _check_scoring(config.scoring, f"{where}: scoring")
    judge = config.judge_training
    if judge.model and judge.model not in [m.name for m in config.models]:
        raise ConfigError(f"{where}: judge_training.model '{judge.model}' is not a configured model")
    if min(judge.window, judge.examples_per_rule, judge.epochs, judge.batch_size) < 1 or judge.lr <= 0 \
            or judge.max_minutes <= 0 or not 0 <= judge.paraphrases <= 4:
        raise ConfigError(f"{where}: judge_training: window, examples_per_rule, epochs, batch_size, lr and "
                          "max_minutes must be positive, paraphrases 0 to 4")
    for m in config.models:
        if m.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"{where}: model '{m.name}': dtype must be float32, bfloat16 or float16")
        if not m.source.strip():
            raise ConfigError(f"{where}: model '{m.name}': source is empty")
        check_device_spec(m.device, f"{where}: model '{m.name}': device")


def _scoring(raw: Any, where: str) -> ScoringSpec:
    """`scoring:` with its `llm` left None where the YAML names none (parse_config fills in the explainer's)."""
    spec = build(ScoringSpec, raw, where)
    return spec if isinstance(raw, dict) and "llm" in raw else dataclasses.replace(spec, llm=None)


def _check_scoring(s: ScoringSpec, where: str) -> None:
    from autointerp.score import REGISTRY

    for i, name in enumerate(s.judges):
        REGISTRY.get(name, f"{where}.judges[{i}]")
        if name == "simulation":
            raise ConfigError(f"{where}.judges: simulation is the simulate and score stages, not a judge")
    if not s.rank_by:
        raise ConfigError(f"{where}.rank_by must name at least one scorer")
    for i, name in enumerate(s.rank_by):
        if name != "simulation" and name not in s.judges:
            raise ConfigError(f"{where}.rank_by[{i}]: '{name}' is not run: rank by simulation or one of judges "
                              f"({', '.join(s.judges) or 'none'})")
    if s.window < 0 or s.per_class < 1:
        raise ConfigError(f"{where}: window must be >= 0 and per_class positive")
    if not (0 < s.silent_below <= s.active_from <= 1 and 0 < s.mark_from <= 1):
        raise ConfigError(f"{where}: need 0 < silent_below <= active_from <= 1 and 0 < mark_from <= 1")
    if s.intruder_trials < 0 or s.intruder_shown < 2:
        raise ConfigError(f"{where}: intruder_trials must be >= 0 (0: no intruder score) and intruder_shown >= 2")
    if s.intruder_judge not in ("embedding", "llm"):
        raise ConfigError(f"{where}.intruder_judge must be embedding or llm, not {s.intruder_judge!r}")


EXECUTOR_KINDS = ("in_process", "celery")
BROKER_SCHEMES = ("redis://", "rediss://", "amqp://", "pyamqp://")


def _executor(raw: Any, where: str) -> ExecutorSpec:
    from urllib.parse import urlsplit

    spec = build(ExecutorSpec, raw, where)
    if spec.kind not in EXECUTOR_KINDS:
        raise ConfigError(f"{where}.kind: '{spec.kind}' is not one of {', '.join(EXECUTOR_KINDS)}")
    if spec.kind == "celery" and not spec.broker.startswith(BROKER_SCHEMES):
        raise ConfigError(f"{where}.broker: the celery executor needs a broker URL starting with "
                          f"{' or '.join(BROKER_SCHEMES)}, got {spec.broker!r}")
    if spec.broker and urlsplit(spec.broker).password:  # the config file is no place for a secret
        raise ConfigError(f"{where}.broker: leave the password out of the URL; set AUTOINTERP_BROKER_PASSWORD")
    if spec.visibility_timeout_s < 1 or spec.layers_per_run < 1 or spec.max_runs < 1 or spec.record_layers_per_run < 0:
        raise ConfigError(f"{where}: visibility_timeout_s, layers_per_run and max_runs must be positive, "
                          "record_layers_per_run 0 or more")
    return spec
