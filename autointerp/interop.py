"""Move records and explanations to and from OpenAI's `neuron_explainer` files; copy every table to Parquet.

The formats are those of openai/automated-interpretability, package `neuron_explainer`:
`activations/activations.py` (ActivationRecord, NeuronId, NeuronRecord) and `explanations/explanations.py`
(SequenceSimulation, ScoredSequenceSimulation, ScoredSimulation, ScoredExplanation, NeuronSimulationResults),
serialized by `fast_dataclasses`: each object is a JSON object of its dataclass's fields plus "dataclass_name"
(orjson writes NaN as null). Their `loads` rebuilds the dataclass named by "dataclass_name" with `cls(**fields)`,
so an unknown key breaks it: we write exactly the dataclass's fields. Their published GPT-2 XL data lays files
out as `collated-activations/{layer}/{neuron}.json` (one NeuronRecord) and `explanations/{layer}/{neuron}.jsonl`
(one line: a NeuronSimulationResults); export writes the same layout and import reads it (or any single file).

NeuronRecord <-> activation_records + excerpts + neuron_stats
    neuron_id {layer_index, neuron_index}      layer, neuron
    most_positive_activation_records          kind 'top', in rank order (rank 0 = highest max activation)
    random_sample                             kind 'random', in rank order
    random_sample_by_quantile[b]              kind 'quantile', band b (0 = lowest), in rank order
    quantile_boundaries                       neuron_stats.quantile_boundaries (ours: the bands + 1 edges)
    mean, variance, skewness, kurtosis        neuron_stats (ours: kurtosis is the excess kurtosis)
  Not in their format: neuron_stats.count and frac_positive (NULL on import; max is recomputed from the
  records), excerpt token ids, doc ids and positions (NULL on import; excerpt ids are synthesized: the
  distinct token sequences of the imported files, sorted, numbered from 0). Activations are stored as
  FLOAT, so float64 activations from their files are rounded to float32.

NeuronSimulationResults <-> explanations + simulations + scores
    ScoredExplanation.explanation             explanations.explanation; one ScoredExplanation per
                                              (explainer, sample, simulator), in that order
    ScoredSimulation.ev_correlation_score     scores.score_top_and_random
    ScoredSimulation.rsquared_score           scores.rsquared
    ScoredSimulation.absolute_dev_explained_score   scores.absolute_dev_explained
    ScoredSequenceSimulation                  one per simulated test excerpt, top then random (as their viewer
                                              reads them: the first five are top), each in rank order
      simulation.tokens / expected_activations      excerpts.tokens / simulations.simulated
      simulation.activation_scale             "simulated_normalized_activations" (our 0-10 expected values)
      true_activations                        activation_records.activations
      ev_correlation_score etc.               computed per excerpt with autointerp.scoring (null if undefined)
  Not in their format: scores.score_random_only, the explainer and simulator names, the completion, and the
  simulator's distributions (we keep only the expected value; distribution_values/probabilities are written
  as one empty list per token). On import, the explainer and simulator are "imported:<source>"; simulations
  land only where every sequence's tokens match one of the neuron's top/random records in the store, and
  then score_random_only is computed from the random ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, Sequence

import pyarrow as pa

from autointerp.errors import AutointerpError, ImportFormatError, StoreError
from autointerp.scoring import absolute_dev_explained_result, correlation_result, rsquared_result
from autointerp.store import Replacement, Store

NORMALIZED_SCALE = "simulated_normalized_activations"  # ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
MOMENTS = ("mean", "variance", "skewness", "kurtosis")

# Arrow types of the rows an import writes (the store's column types, so nothing is cast on insert).
_KEY = [("model", pa.string()), ("revision", pa.string())]
_NEURON = [*_KEY, ("layer", pa.int32()), ("neuron", pa.int32())]
MODELS_SCHEMA = pa.schema([*_KEY, ("source", pa.string()), ("architecture", pa.string()), ("n_layers", pa.int32()),
                           ("n_neurons", pa.int32()), ("dtype", pa.string()), ("corpus_fingerprint", pa.string()),
                           ("n_excerpts", pa.int32()), ("registered_at", pa.timestamp("us"))])
EXCERPTS_SCHEMA = pa.schema([*_KEY, ("excerpt_id", pa.int32()), ("doc_id", pa.int32()), ("position", pa.int32()),
                             ("token_ids", pa.list_(pa.int32())), ("tokens", pa.list_(pa.string()))])
RECORDS_SCHEMA = pa.schema([*_NEURON, ("kind", pa.string()), ("band", pa.int16()), ("rank", pa.int16()),
                            ("excerpt_id", pa.int32()), ("max_activation", pa.float32()),
                            ("activations", pa.list_(pa.float32()))])
STATS_SCHEMA = pa.schema([*_NEURON, ("count", pa.int64()), *[(m, pa.float64()) for m in MOMENTS],
                          ("max", pa.float64()), ("frac_positive", pa.float64()),
                          ("quantile_boundaries", pa.list_(pa.float32()))])
EXPLANATIONS_SCHEMA = pa.schema([*_NEURON, ("explainer", pa.string()), ("sample", pa.int16()),
                                 ("explanation", pa.string()), ("completion", pa.string()),
                                 ("created_at", pa.timestamp("us"))])
SIMULATIONS_SCHEMA = pa.schema([*_NEURON, ("explainer", pa.string()), ("simulator", pa.string()),
                                ("sample", pa.int16()), ("excerpt_id", pa.int32()), ("kind", pa.string()),
                                ("simulated", pa.list_(pa.float32()))])
SCORES_SCHEMA = pa.schema([*_NEURON, ("explainer", pa.string()), ("simulator", pa.string()), ("sample", pa.int16()),
                           ("explanation", pa.string()), ("score_top_and_random", pa.float64()),
                           ("score_random_only", pa.float64()), ("rsquared", pa.float64()),
                           ("absolute_dev_explained", pa.float64()), ("n_tokens", pa.int32()),
                           ("reason", pa.string())])


# --- writing their JSON ----------------------------------------------------------------------------

def _fast(dataclass_name: str, **fields: Any) -> dict[str, Any]:
    """One fast_dataclasses object (key order carries no meaning for their loader)."""
    return {"dataclass_name": dataclass_name, **fields}


def _number(value: Any) -> float | None:
    """NaN and NULL both become null, as orjson writes NaN."""
    return None if value is None or not math.isfinite(value) else float(value)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _activation_record(tokens: Sequence[str], activations: Sequence[float]) -> dict[str, Any]:
    return _fast("ActivationRecord", tokens=list(tokens), activations=[float(a) for a in activations])


def _neuron_id(layer: int, neuron: int) -> dict[str, Any]:
    return _fast("NeuronId", layer_index=int(layer), neuron_index=int(neuron))


def resolve_revision(store: Store, model: str, revision: str | None) -> str:
    revision = revision or store.latest_revision(model)
    if revision is None or store.model_row(model, revision) is None:
        known = store.query("SELECT DISTINCT model FROM models ORDER BY model").model.tolist()
        what = f"revision '{revision}' of model '{model}'" if revision else f"model '{model}'"
        raise StoreError(f"{what} is not in the store {store.path} (it has: {', '.join(known) or 'no models'})")
    return revision


def _layer_filter(layers: Sequence[int] | None, column: str = "layer") -> str:
    return "" if layers is None else f" AND {column} IN ({', '.join(str(int(x)) for x in layers) or 'NULL'})"


def export_neuron_records(store: Store, model: str, out_dir: str | Path, revision: str | None = None,
                          layers: Sequence[int] | None = None) -> list[Path]:
    """Write `<out_dir>/collated-activations/<layer>/<neuron>.json`, one NeuronRecord per recorded neuron."""
    revision = resolve_revision(store, model, revision)
    recorded = store.query(f"""SELECT DISTINCT layer FROM neuron_stats WHERE model = ? AND revision = ?
                               {_layer_filter(layers)} ORDER BY layer""", [model, revision]).layer.tolist()
    written = []
    for layer in recorded:  # a layer at a time bounds memory: a whole model's records may not fit
        written += _export_layer_records(store, model, revision, int(layer), Path(out_dir))
    return written


def _export_layer_records(store: Store, model: str, revision: str, layer: int, out_dir: Path) -> list[Path]:
    key = [model, revision, layer]
    with store.connect() as con:
        rows = con.execute(
            """SELECT r.neuron, r.kind, r.band, r.rank, r.excerpt_id, e.tokens, r.activations
               FROM (SELECT * FROM activation_records WHERE model = ? AND revision = ? AND layer = ?) r
               LEFT JOIN excerpts e ON e.model = r.model AND e.revision = r.revision AND e.excerpt_id = r.excerpt_id
               ORDER BY r.neuron, r.kind, r.band, r.rank""", key).fetchall()
        stats = con.execute(f"""SELECT neuron, {', '.join(MOMENTS)}, quantile_boundaries FROM neuron_stats
                                WHERE model = ? AND revision = ? AND layer = ? ORDER BY neuron""", key).fetchall()
    records: dict[int, dict[str, Any]] = defaultdict(lambda: {"top": [], "random": [], "quantile": defaultdict(list)})
    for neuron, kind, band, rank, excerpt_id, tokens, activations in rows:
        if tokens is None:
            raise StoreError(f"{model}@{revision} layer {layer} neuron {neuron} {kind} rank {rank}: "
                             f"excerpt {excerpt_id} is not in the excerpts table")
        found = records[neuron]
        (found["quantile"][band] if kind == "quantile" else found[kind]).append(_activation_record(tokens, activations))
    written = []
    for neuron, *moments, boundaries in stats:
        found = records[neuron]
        n_bands = max(len(boundaries) - 1 if boundaries else 0, max(found["quantile"], default=-1) + 1)
        record = _fast(
            "NeuronRecord",
            neuron_id=_neuron_id(layer, neuron),
            random_sample=found["random"],
            random_sample_by_quantile=[found["quantile"].get(b, []) for b in range(n_bands)] if n_bands else None,
            quantile_boundaries=[float(b) for b in boundaries] if boundaries is not None else None,
            **{name: _number(value) for name, value in zip(MOMENTS, moments)},
            most_positive_activation_records=found["top"],
        )
        path = out_dir / "collated-activations" / str(layer) / f"{neuron}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dumps(record), encoding="utf-8")
        written.append(path)
    return written


def _sequence_scores(real: Sequence[float], simulated: Sequence[float]) -> dict[str, float | None]:
    return {"ev_correlation_score": correlation_result([real], [simulated]).value,
            "rsquared_score": rsquared_result([real], [simulated]).value,
            "absolute_dev_explained_score": absolute_dev_explained_result([real], [simulated]).value}


def export_explanations(store: Store, model: str, out_dir: str | Path, revision: str | None = None,
                        layers: Sequence[int] | None = None, explainer: str | None = None,
                        simulator: str | None = None) -> list[Path]:
    """Write `<out_dir>/explanations/<layer>/<neuron>.jsonl`, one NeuronSimulationResults line per explained
    neuron (see the module docstring for what maps to what)."""
    revision = resolve_revision(store, model, revision)
    scope, params = f"model = ? AND revision = ?{_layer_filter(layers)}", [model, revision]
    if explainer is not None:
        scope, params = scope + " AND explainer = ?", params + [explainer]
    roles, role_params = (scope + " AND simulator = ?", params + [simulator]) if simulator is not None else (scope, params)
    with store.connect() as con:
        explained = con.execute(f"""SELECT layer, neuron, explainer, sample, explanation FROM explanations
                                    WHERE {scope} ORDER BY layer, neuron, explainer, sample""", params).fetchall()
        sims = con.execute(
            f"""SELECT s.layer, s.neuron, s.explainer, s.sample, s.simulator, s.excerpt_id, e.tokens,
                       s.simulated, r.activations
                FROM (SELECT * FROM simulations WHERE {roles}) s
                LEFT JOIN activation_records r ON r.model = s.model AND r.revision = s.revision AND r.layer = s.layer
                     AND r.neuron = s.neuron AND r.kind = s.kind AND r.excerpt_id = s.excerpt_id
                LEFT JOIN excerpts e ON e.model = s.model AND e.revision = s.revision AND e.excerpt_id = s.excerpt_id
                ORDER BY s.layer, s.neuron, s.explainer, s.sample, s.simulator, s.kind = 'random', r.rank""",
            role_params).fetchall()
        scored = con.execute(
            f"""SELECT layer, neuron, explainer, sample, simulator, score_top_and_random, rsquared,
                       absolute_dev_explained FROM scores WHERE {roles}""", role_params).fetchall()
    sequences: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for layer, neuron, expl, sample, sim, excerpt_id, tokens, simulated, real in sims:
        if tokens is None or real is None:
            raise StoreError(f"{model}@{revision} layer {layer} neuron {neuron}: simulated excerpt {excerpt_id} "
                             "has no matching activation record or excerpt")
        sequences[(layer, neuron, expl, sample, sim)].append(_fast(
            "ScoredSequenceSimulation",
            simulation=_fast("SequenceSimulation", tokens=list(tokens), expected_activations=[float(x) for x in simulated],
                             activation_scale=NORMALIZED_SCALE, distribution_values=[[] for _ in tokens],
                             distribution_probabilities=[[] for _ in tokens], uncalibrated_simulation=None),
            true_activations=[float(x) for x in real],
            **{k: _number(v) for k, v in _sequence_scores(real, simulated).items()}))
    scores = {tuple(row[:5]): row[5:] for row in scored}
    simulators: dict[tuple, set[str]] = defaultdict(set)  # (layer, neuron, explainer, sample) -> simulators
    for key in [*sequences, *scores]:
        simulators[key[:4]].add(key[4])
    per_neuron: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for layer, neuron, expl, sample, text in explained:
        # An explanation not simulated yet is still exported, with no sequences and no scores.
        for sim in sorted(simulators.get((layer, neuron, expl, sample), ())) or [None]:
            key = (layer, neuron, expl, sample, sim)
            values = scores.get(key, (None, None, None))
            per_neuron[(layer, neuron)].append(_fast("ScoredExplanation", explanation=text, scored_simulation=_fast(
                "ScoredSimulation", scored_sequence_simulations=sequences.get(key, []),
                ev_correlation_score=_number(values[0]), rsquared_score=_number(values[1]),
                absolute_dev_explained_score=_number(values[2]))))
    written = []
    for (layer, neuron), scored_explanations in sorted(per_neuron.items()):
        path = Path(out_dir) / "explanations" / str(layer) / f"{neuron}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        results = _fast("NeuronSimulationResults", neuron_id=_neuron_id(layer, neuron),
                        scored_explanations=scored_explanations)
        path.write_text(_dumps(results) + "\n", encoding="utf-8")
        written.append(path)
    return written


# --- reading their JSON ----------------------------------------------------------------------------

class _Reader:
    """Checks one file's JSON against the dataclasses, naming the file and the JSON path in every error."""

    def __init__(self, path: Path, line: int | None = None):
        self.where_file = f"{path}" + (f" line {line}" if line is not None else "")

    def fail(self, where: str, problem: str) -> NoReturn:
        raise ImportFormatError(f"{self.where_file}: {where + ': ' if where else ''}{problem}")

    def obj(self, value: Any, where: str, dataclass_name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"expected a {dataclass_name} object, found {_json_kind(value)}")
        name = value.get("dataclass_name", dataclass_name)
        if name != dataclass_name:
            self.fail(where, f"is a {name}, expected a {dataclass_name}")
        return value

    def key(self, obj: dict[str, Any], key: str, where: str, dataclass_name: str) -> Any:
        if key not in obj:
            self.fail(where, f"missing key '{key}' (a {dataclass_name} needs it)")
        return obj[key]

    def list(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            self.fail(where, f"expected a list, found {_json_kind(value)}")
        return value

    def index(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where, f"expected a non-negative integer, found {_describe(value)}")
        return value

    def number(self, value: Any, where: str, optional: bool = False) -> float | None:
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, found {_describe(value)}")
        if not math.isfinite(value):
            if optional:
                return None
            self.fail(where, f"{value} is not a finite number")
        return float(value)

    def numbers(self, value: Any, where: str) -> list[float]:
        return [self.number(x, f"{where}[{i}]") for i, x in enumerate(self.list(value, where))]  # type: ignore[misc]

    def strings(self, value: Any, where: str) -> list[str]:
        items = self.list(value, where)
        for i, x in enumerate(items):
            if not isinstance(x, str):
                self.fail(f"{where}[{i}]", f"expected a token string, found {_describe(x)}")
        return items

    def neuron_id(self, obj: dict[str, Any], owner: str) -> tuple[int, int]:
        nid = self.obj(self.key(obj, "neuron_id", "", owner), "neuron_id", "NeuronId")
        return (self.index(self.key(nid, "layer_index", "neuron_id", "NeuronId"), "neuron_id.layer_index"),
                self.index(self.key(nid, "neuron_index", "neuron_id", "NeuronId"), "neuron_id.neuron_index"))

    def activation_record(self, value: Any, where: str) -> tuple[tuple[str, ...], list[float]]:
        obj = self.obj(value, where, "ActivationRecord")
        tokens = self.strings(self.key(obj, "tokens", where, "ActivationRecord"), f"{where}.tokens")
        activations = self.numbers(self.key(obj, "activations", where, "ActivationRecord"), f"{where}.activations")
        if len(tokens) != len(activations):
            self.fail(where, f"{len(tokens)} tokens but {len(activations)} activations")
        if not tokens:
            self.fail(where, "has no tokens")
        return tuple(tokens), activations


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _describe(value: Any) -> str:
    """'null', or the JSON kind and a short repr: "a string '0.3'"."""
    if value is None or isinstance(value, (dict, list)):
        return _json_kind(value)
    text = repr(value)
    return f"{_json_kind(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def _natural(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ImportFormatError(f"{path}: no such file or directory")
    files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes), key=_natural)
    if not files:
        raise ImportFormatError(f"{path}: no {' or '.join(suffixes)} files under this directory")
    return files


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _parse_json(text: str, path: Path, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path}" + (f" line {line}" if line is not None else f" line {exc.lineno}")
        raise ImportFormatError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None


def _check_path_matches(reader: _Reader, path: Path, layer: int, neuron: int) -> None:
    """In their layout the path is <layer>/<neuron>.json(l); a file saying otherwise is misplaced or wrong."""
    if path.parent.name.isdigit() and path.stem.isdigit() and (int(path.parent.name), int(path.stem)) != (layer, neuron):
        reader.fail("neuron_id", f"says layer {layer} neuron {neuron}, but the file's path says layer "
                                 f"{path.parent.name} neuron {path.stem}")


def _content_revision(files: Sequence[Path]) -> str:
    """'import:sha256:' + a hash of the files' contents (not their names): the same data gets the same revision."""
    digests = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    return "import:sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def _no_duplicates(seen: dict[tuple[int, int], Path], layer: int, neuron: int, path: Path) -> None:
    if (layer, neuron) in seen:
        raise ImportFormatError(f"{path}: layer {layer} neuron {neuron} is also in {seen[(layer, neuron)]}")
    seen[(layer, neuron)] = path


@dataclass
class ParsedNeuron:
    layer: int
    neuron: int
    records: list[tuple[str, int | None, int, tuple[str, ...], list[float]]]  # kind, band, rank, tokens, acts
    moments: dict[str, float | None]
    quantile_boundaries: list[float] | None


def parse_neuron_record(data: Any, reader: _Reader) -> ParsedNeuron:
    """Check one NeuronRecord object; every problem raises ImportFormatError naming the file and the key."""
    obj = reader.obj(data, "", "NeuronRecord")
    layer, neuron = reader.neuron_id(obj, "NeuronRecord")
    records: list[tuple[str, int | None, int, tuple[str, ...], list[float]]] = []
    for key, kind in (("most_positive_activation_records", "top"), ("random_sample", "random")):
        for rank, value in enumerate(reader.list(reader.key(obj, key, "", "NeuronRecord"), key)):
            records.append((kind, None, rank, *reader.activation_record(value, f"{key}[{rank}]")))
    bands = obj.get("random_sample_by_quantile")
    for band, members in enumerate(reader.list(bands, "random_sample_by_quantile") if bands is not None else []):
        for rank, value in enumerate(reader.list(members, f"random_sample_by_quantile[{band}]")):
            records.append(("quantile", band, rank,
                            *reader.activation_record(value, f"random_sample_by_quantile[{band}][{rank}]")))
    boundaries = obj.get("quantile_boundaries")
    return ParsedNeuron(
        layer, neuron, records,
        {name: reader.number(obj.get(name), name, optional=True) for name in MOMENTS},
        reader.numbers(boundaries, "quantile_boundaries") if boundaries is not None else None)


@dataclass
class ImportResult:
    model: str
    revision: str
    files: int
    neurons: int
    rows: dict[str, int]  # table -> rows written


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def import_neuron_records(store: Store, model: str, path: str | Path) -> ImportResult:
    """Land their NeuronRecord JSON (one file, or every .json under a directory) as a model named `model`.

    Everything is checked before anything is written, and all rows land in ONE transaction: the `models`
    row (architecture "imported", revision "import:sha256:<hash of the files>"), excerpts, activation
    records and neuron stats. Importing the same files again replaces those rows.
    """
    root = Path(path)
    files = _files(root, (".json",))
    neurons: list[ParsedNeuron] = []
    seen: dict[tuple[int, int], Path] = {}
    for file in files:
        reader = _Reader(file)
        parsed = parse_neuron_record(_parse_json(_read_text(file), file), reader)
        _check_path_matches(reader, file, parsed.layer, parsed.neuron)
        _no_duplicates(seen, parsed.layer, parsed.neuron, file)
        neurons.append(parsed)
    revision = _content_revision(files)
    excerpt_ids = {tokens: i for i, tokens in enumerate(sorted({r[3] for n in neurons for r in n.records}))}
    key = {"model": model, "revision": revision}
    records = [{**key, "layer": n.layer, "neuron": n.neuron, "kind": kind, "band": band, "rank": rank,
                "excerpt_id": excerpt_ids[tokens], "max_activation": max(acts), "activations": acts}
               for n in neurons for kind, band, rank, tokens, acts in n.records]
    stats = [{**key, "layer": n.layer, "neuron": n.neuron, "count": None, **n.moments,
              "max": max((max(r[4]) for r in n.records if r[0] == "top"), default=None), "frac_positive": None,
              "quantile_boundaries": n.quantile_boundaries} for n in neurons]
    excerpts = [{**key, "excerpt_id": i, "doc_id": None, "position": None, "token_ids": None, "tokens": list(tokens)}
                for tokens, i in excerpt_ids.items()]
    models = [{**key, "source": str(root.resolve()), "architecture": "imported",
               "n_layers": max(n.layer for n in neurons) + 1, "n_neurons": max(n.neuron for n in neurons) + 1,
               "dtype": None, "corpus_fingerprint": None, "n_excerpts": len(excerpts), "registered_at": _utcnow()}]
    tables = {"models": pa.Table.from_pylist(models, MODELS_SCHEMA),
              "excerpts": pa.Table.from_pylist(excerpts, EXCERPTS_SCHEMA),
              "activation_records": pa.Table.from_pylist(records, RECORDS_SCHEMA),
              "neuron_stats": pa.Table.from_pylist(stats, STATS_SCHEMA)}
    store.replace([Replacement(table, key, data) for table, data in tables.items()])
    return ImportResult(model, revision, len(files), len(neurons), {t: d.num_rows for t, d in tables.items()})


@dataclass
class ParsedExplanation:
    explanation: str
    scored: bool  # the file has a scored_simulation for it
    scores: dict[str, float | None]  # ev_correlation_score, rsquared_score, absolute_dev_explained_score
    sequences: list[tuple[tuple[str, ...], list[float], list[float], str | None]]  # tokens, expected, true, scale


_SIM_SCORES = ("ev_correlation_score", "rsquared_score", "absolute_dev_explained_score")


def parse_simulation_results(data: Any, reader: _Reader) -> tuple[int, int, list[ParsedExplanation]]:
    """Check one NeuronSimulationResults object; every problem raises ImportFormatError naming file and key."""
    obj = reader.obj(data, "", "NeuronSimulationResults")
    layer, neuron = reader.neuron_id(obj, "NeuronSimulationResults")
    parsed = []
    for i, item in enumerate(reader.list(reader.key(obj, "scored_explanations", "", "NeuronSimulationResults"),
                                         "scored_explanations")):
        at = f"scored_explanations[{i}]"
        expl = reader.obj(item, at, "ScoredExplanation")
        text = reader.key(expl, "explanation", at, "ScoredExplanation")
        if not isinstance(text, str) or not text.strip():
            reader.fail(f"{at}.explanation", f"expected a non-empty string, found {_describe(text)}")
        simulation = reader.key(expl, "scored_simulation", at, "ScoredExplanation")
        if simulation is None:
            parsed.append(ParsedExplanation(text, False, dict.fromkeys(_SIM_SCORES), []))
            continue
        at = f"{at}.scored_simulation"
        sim = reader.obj(simulation, at, "ScoredSimulation")
        sequences = []
        for j, value in enumerate(reader.list(reader.key(sim, "scored_sequence_simulations", at, "ScoredSimulation"),
                                              f"{at}.scored_sequence_simulations")):
            here = f"{at}.scored_sequence_simulations[{j}]"
            seq = reader.obj(value, here, "ScoredSequenceSimulation")
            inner = reader.obj(reader.key(seq, "simulation", here, "ScoredSequenceSimulation"), f"{here}.simulation",
                               "SequenceSimulation")
            tokens = reader.strings(reader.key(inner, "tokens", f"{here}.simulation", "SequenceSimulation"),
                                    f"{here}.simulation.tokens")
            expected = reader.numbers(reader.key(inner, "expected_activations", f"{here}.simulation",
                                                 "SequenceSimulation"), f"{here}.simulation.expected_activations")
            true = reader.numbers(reader.key(seq, "true_activations", here, "ScoredSequenceSimulation"),
                                  f"{here}.true_activations")
            if not len(tokens) == len(expected) == len(true):
                reader.fail(here, f"{len(tokens)} tokens, {len(expected)} expected_activations and "
                                  f"{len(true)} true_activations: they must be equally long")
            sequences.append((tuple(tokens), expected, true, inner.get("activation_scale")))
        scores = {name: reader.number(sim.get(name), f"{at}.{name}", optional=True) for name in _SIM_SCORES}
        parsed.append(ParsedExplanation(text, True, scores, sequences))
    return layer, neuron, parsed


def _record_index(store: Store, model: str, revision: str, neurons: Sequence[tuple[int, int]]
                  ) -> dict[tuple[int, int], dict[tuple[str, ...], list[tuple[str, int]]]]:
    """Per neuron: token sequence -> its top/random records as (kind, excerpt id), top first, in rank order."""
    layers = sorted({layer for layer, _ in neurons})
    with store.connect() as con:
        rows = con.execute(
            f"""SELECT r.layer, r.neuron, r.kind, r.excerpt_id, e.tokens
                FROM activation_records r JOIN excerpts e
                  ON e.model = r.model AND e.revision = r.revision AND e.excerpt_id = r.excerpt_id
                WHERE r.model = ? AND r.revision = ? AND r.kind IN ('top', 'random'){_layer_filter(layers, 'r.layer')}
                ORDER BY r.layer, r.neuron, r.kind = 'random', r.rank""", [model, revision]).fetchall()
    wanted = set(neurons)
    index: dict[tuple[int, int], dict[tuple[str, ...], list[tuple[str, int]]]] = defaultdict(lambda: defaultdict(list))
    for layer, neuron, kind, excerpt_id, tokens in rows:
        if (layer, neuron) in wanted:
            index[(layer, neuron)][tuple(tokens)].append((kind, excerpt_id))
    return index


def _match_sequences(parsed: ParsedExplanation, records: dict[tuple[str, ...], list[tuple[str, int]]]
                     ) -> list[tuple[str, int]] | None:
    """(kind, excerpt id) per simulated sequence, or None unless every one is one of the neuron's records
    and holds 0-10 simulated values (a calibrated simulation is in activation units instead)."""
    if not parsed.sequences or any(scale not in (None, NORMALIZED_SCALE) or not all(0 <= v <= 10 for v in expected)
                                   for _, expected, _, scale in parsed.sequences):
        return None
    used: set[tuple[str, int]] = set()
    matched = []
    for tokens, *_ in parsed.sequences:
        free = [record for record in records.get(tokens, []) if record not in used]
        if not free:
            return None
        used.add(free[0])
        matched.append(free[0])
    return matched


def import_explanations(store: Store, model: str, path: str | Path, revision: str | None = None,
                        source: str = "neuron-explainer") -> ImportResult:
    """Land their NeuronSimulationResults (.jsonl; a file or a directory) for `model` (its latest revision).

    Rows: explanations (explainer "imported:<source>", sample = position in scored_explanations), scores
    where the file has a scored_simulation (simulator "imported:<source>"), and simulations where every
    simulated sequence matches one of the neuron's stored top/random records (see the module docstring).
    Checked first, landed in ONE transaction; importing again replaces the rows of the same neurons.
    """
    revision = resolve_revision(store, model, revision)
    label = f"imported:{source}"
    files = _files(Path(path), (".jsonl",))
    results: list[tuple[int, int, list[ParsedExplanation]]] = []
    seen: dict[tuple[int, int], Path] = {}
    for file in files:
        lines = [(i, line) for i, line in enumerate(_read_text(file).splitlines(), 1) if line.strip()]
        if not lines:
            raise ImportFormatError(f"{file}: empty file (expected one NeuronSimulationResults per line)")
        for number, line in lines:
            reader = _Reader(file, number)
            layer, neuron, parsed = parse_simulation_results(_parse_json(line, file, number), reader)
            _check_path_matches(reader, file, layer, neuron)
            _no_duplicates(seen, layer, neuron, file)
            results.append((layer, neuron, parsed))
    index = _record_index(store, model, revision, list(seen))
    key = {"model": model, "revision": revision}
    now = _utcnow()
    explanations, simulations, scores = [], [], []
    for layer, neuron, parsed in results:
        for sample, item in enumerate(parsed):
            row = {**key, "layer": layer, "neuron": neuron, "explainer": label, "sample": sample}
            explanations.append({**row, "explanation": item.explanation, "completion": None, "created_at": now})
            if not item.scored:
                continue
            row["simulator"] = label
            matched = _match_sequences(item, index.get((layer, neuron), {}))
            if matched is None:
                random_only = None, ("not in the neuron_explainer format (its sequences do not all match this "
                                     "model's top/random records)")
            else:
                simulations += [{**row, "excerpt_id": excerpt_id, "kind": kind, "simulated": expected}
                                for (kind, excerpt_id), (_, expected, _, _) in zip(matched, item.sequences)]
                randoms = [seq for (kind, _), seq in zip(matched, item.sequences) if kind == "random"]
                result = correlation_result([s[2] for s in randoms], [s[1] for s in randoms])
                random_only = result.value, result.reason
            values = {"score_top_and_random": item.scores["ev_correlation_score"], "score_random_only": random_only[0],
                      "rsquared": item.scores["rsquared_score"],
                      "absolute_dev_explained": item.scores["absolute_dev_explained_score"]}
            reasons = [f"{name}: " + (random_only[1] if name == "score_random_only" else
                                      "missing or undefined in the imported file")
                       for name, value in values.items() if value is None]
            scores.append({**row, "explanation": item.explanation, **values,
                           "n_tokens": sum(len(s[0]) for s in item.sequences) or None,
                           "reason": "; ".join(reasons) or None})
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, neuron in seen:
        by_layer[layer].append(neuron)
    replacements = []
    for table, rows, schema, roles in (
            ("explanations", explanations, EXPLANATIONS_SCHEMA, {"explainer": label}),
            ("simulations", simulations, SIMULATIONS_SCHEMA, {"explainer": label, "simulator": label}),
            ("scores", scores, SCORES_SCHEMA, {"explainer": label, "simulator": label})):
        for layer, layer_neurons in sorted(by_layer.items()):
            where = {**key, **roles, "layer": layer, "neuron": sorted(layer_neurons)}
            data = [r for r in rows if r["layer"] == layer]
            replacements.append(Replacement(table, where, pa.Table.from_pylist(data, schema) if data else None))
    store.replace(replacements)
    return ImportResult(model, revision, len(files), len(seen),
                        {"explanations": len(explanations), "simulations": len(simulations), "scores": len(scores)})


# --- Parquet -----------------------------------------------------------------------------------------

_SECRET_COLUMN = re.compile(r"api_?key|secret|password|credential|authorization", re.IGNORECASE)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export_parquet(store: Store, out_dir: str | Path) -> dict[str, int]:
    """One `<table>.parquet` per table of the store (DuckDB's COPY ... (FORMAT parquet)), all read from one
    snapshot; returns table -> rows. No table holds secrets (llm_calls keys its cache by a hash of backend,
    model, kind and request; API keys are read from the environment only); a column named like one refuses."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with store.connect() as con:
        con.execute("BEGIN TRANSACTION")  # one consistent snapshot of every table; nothing is written
        try:
            tables = [row[0] for row in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND NOT temporary ORDER BY table_name").fetchall()]
            for table in tables:
                columns = [row[0] for row in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
                    "AND schema_name = 'main' AND table_name = ?", [table]).fetchall()]
                secret = [c for c in columns if _SECRET_COLUMN.search(c)]
                if secret:
                    raise AutointerpError(f"table {table} has a column that may hold a secret ({secret[0]}): "
                                          "not exporting it")
                partial = out / f"{table}.parquet.partial"
                con.execute(f'COPY (SELECT * FROM "{table}") TO {_sql_string(str(partial))} (FORMAT parquet)')
                counts[table] = int(con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        except BaseException:
            for partial in out.glob("*.parquet.partial"):
                partial.unlink()
            raise
        finally:
            con.execute("ROLLBACK")
    for table in counts:  # only a complete export replaces earlier files
        (out / f"{table}.parquet.partial").replace(out / f"{table}.parquet")
    return counts
