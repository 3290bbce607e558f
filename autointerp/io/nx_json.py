"""OpenAI's `neuron_explainer` JSON: the objects we write and the checked reader for the ones we import.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Sequence

from autointerp.errors import ImportFormatError

# What the store's columns hold: layer and neuron are INTEGER, a record's rank SMALLINT, activations FLOAT.
MAX_INDEX = 2**31 - 1
MAX_RECORDS = 2**15 - 1
MAX_FLOAT32 = 3.4028234663852886e38
NORMALIZED_SCALE = "simulated_normalized_activations"  # ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS
MOMENTS = ("mean", "variance", "skewness", "kurtosis")


# --- writing their JSON ----------------------------------------------------------------------------

def fast(dataclass_name: str, **fields: Any) -> dict[str, Any]:
    """One fast_dataclasses object (key order carries no meaning for their loader)."""
    return {"dataclass_name": dataclass_name, **fields}


def number(value: Any) -> float | None:
    """NaN and NULL both become null, as orjson writes NaN."""
    return None if value is None or not math.isfinite(value) else float(value)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def activation_record(tokens: Sequence[str], activations: Sequence[float]) -> dict[str, Any]:
    return fast("ActivationRecord", tokens=list(tokens), activations=[float(a) for a in activations])


def neuron_id(layer: int, neuron: int) -> dict[str, Any]:
    return fast("NeuronId", layer_index=int(layer), neuron_index=int(neuron))


# --- reading their JSON ----------------------------------------------------------------------------

class JsonReader:
    """Checks one file's JSON against the dataclasses, naming the file and the JSON path in every error."""

    def __init__(self, path: Path, line: int | None = None):
        self.where_file = f"{path}" + (f" line {line}" if line is not None else "")

    def fail(self, where: str, problem: str) -> NoReturn:
        raise ImportFormatError(f"{self.where_file}: {where + ': ' if where else ''}{problem}")

    def obj(self, value: Any, where: str, dataclass_name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(where, f"expected a {dataclass_name} object, found {json_kind(value)}")
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
            self.fail(where, f"expected a list, found {json_kind(value)}")
        return value

    def records(self, value: Any, where: str) -> list[Any]:
        """A list of records, which the store ranks with a 16-bit integer."""
        items = self.list(value, where)
        if len(items) > MAX_RECORDS:
            self.fail(where, f"{len(items):,} records; at most {MAX_RECORDS:,} per list can be stored")
        return items

    def index(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(where, f"expected a non-negative integer, found {describe(value)}")
        if value > MAX_INDEX:
            self.fail(where, f"{value} is too large: layer and neuron indexes go up to {MAX_INDEX:,}")
        return value

    def number(self, value: Any, where: str, optional: bool = False) -> float | None:
        if optional and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(where, f"expected a number, found {describe(value)}")
        if not math.isfinite(value):
            if optional:
                return None
            self.fail(where, f"{value} is not a finite number")
        return float(value)

    def numbers(self, value: Any, where: str, float32: bool = False) -> list[float]:
        """`float32`: values stored as FLOAT, whose largest magnitude is ~3.4e38 (beyond it they would be inf)."""
        numbers = [self.number(x, f"{where}[{i}]") for i, x in enumerate(self.list(value, where))]
        if float32:
            for i, x in enumerate(numbers):
                if abs(x) > MAX_FLOAT32:  # type: ignore[operator]
                    self.fail(f"{where}[{i}]", f"{x:g} is too large for a 32-bit float (largest: {MAX_FLOAT32:.4g})")
        return numbers  # type: ignore[return-value]

    def strings(self, value: Any, where: str) -> list[str]:
        items = self.list(value, where)
        for i, x in enumerate(items):
            if not isinstance(x, str):
                self.fail(f"{where}[{i}]", f"expected a token string, found {describe(x)}")
        return items

    def neuron_id(self, obj: dict[str, Any], owner: str) -> tuple[int, int]:
        nid = self.obj(self.key(obj, "neuron_id", "", owner), "neuron_id", "NeuronId")
        return (self.index(self.key(nid, "layer_index", "neuron_id", "NeuronId"), "neuron_id.layer_index"),
                self.index(self.key(nid, "neuron_index", "neuron_id", "NeuronId"), "neuron_id.neuron_index"))

    def activation_record(self, value: Any, where: str) -> tuple[tuple[str, ...], list[float]]:
        obj = self.obj(value, where, "ActivationRecord")
        tokens = self.strings(self.key(obj, "tokens", where, "ActivationRecord"), f"{where}.tokens")
        activations = self.numbers(self.key(obj, "activations", where, "ActivationRecord"), f"{where}.activations",
                                   float32=True)
        if len(tokens) != len(activations):
            self.fail(where, f"{len(tokens)} tokens but {len(activations)} activations")
        if not tokens:
            self.fail(where, "has no tokens")
        return tuple(tokens), activations


def json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def describe(value: Any) -> str:
    """'null', or the JSON kind and a short repr: "a string '0.3'"."""
    if value is None or isinstance(value, (dict, list)):
        return json_kind(value)
    text = repr(value)
    return f"{json_kind(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def natural(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def files(path: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ImportFormatError(f"{path}: no such file or directory")
    files = sorted((p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes), key=natural)
    if not files:
        raise ImportFormatError(f"{path}: no {' or '.join(suffixes)} files under this directory")
    return files


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_json(text: str, path: Path, line: int | None = None) -> Any:
    where = f"{path}" + (f" line {line}" if line is not None else "")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path}" + (f" line {line}" if line is not None else f" line {exc.lineno}")
        raise ImportFormatError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise ImportFormatError(f"{where}: JSON nested too deeply to be a neuron_explainer file") from None


def check_path_matches(reader: JsonReader, path: Path, layer: int, neuron: int) -> None:
    """In their layout the path is <layer>/<neuron>.json(l); a file saying otherwise is misplaced or wrong."""
    if path.parent.name.isdigit() and path.stem.isdigit() and (int(path.parent.name), int(path.stem)) != (layer, neuron):
        reader.fail("neuron_id", f"says layer {layer} neuron {neuron}, but the file's path says layer "
                                 f"{path.parent.name} neuron {path.stem}")


def content_revision(files: Sequence[Path]) -> str:
    """'import:sha256:' + a hash of the files' contents (not their names): the same data gets the same revision."""
    digests = sorted(hashlib.sha256(f.read_bytes()).hexdigest() for f in files)
    return "import:sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def no_duplicates(seen: dict[tuple[int, int], Path], layer: int, neuron: int, path: Path) -> None:
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


def parse_neuron_record(data: Any, reader: JsonReader) -> ParsedNeuron:
    """Check one NeuronRecord object; every problem raises ImportFormatError naming the file and the key."""
    obj = reader.obj(data, "", "NeuronRecord")
    layer, neuron = reader.neuron_id(obj, "NeuronRecord")
    records: list[tuple[str, int | None, int, tuple[str, ...], list[float]]] = []
    for key, kind in (("most_positive_activation_records", "top"), ("random_sample", "random")):
        for rank, value in enumerate(reader.records(reader.key(obj, key, "", "NeuronRecord"), key)):
            records.append((kind, None, rank, *reader.activation_record(value, f"{key}[{rank}]")))
    bands = obj.get("random_sample_by_quantile")
    for band, members in enumerate(reader.records(bands, "random_sample_by_quantile") if bands is not None else []):
        for rank, value in enumerate(reader.records(members, f"random_sample_by_quantile[{band}]")):
            records.append(("quantile", band, rank,
                            *reader.activation_record(value, f"random_sample_by_quantile[{band}][{rank}]")))
    boundaries = obj.get("quantile_boundaries")
    return ParsedNeuron(
        layer, neuron, records,
        {name: reader.number(obj.get(name), name, optional=True) for name in MOMENTS},
        reader.numbers(boundaries, "quantile_boundaries", float32=True) if boundaries is not None else None)


@dataclass
class ParsedExplanation:
    explanation: str
    scored: bool  # the file has a scored_simulation for it
    scores: dict[str, float | None]  # ev_correlation_score, rsquared_score, absolute_dev_explained_score
    sequences: list[tuple[tuple[str, ...], list[float], list[float], str | None]]  # tokens, expected, true, scale


SIM_SCORES = ("ev_correlation_score", "rsquared_score", "absolute_dev_explained_score")


def parse_simulation_results(data: Any, reader: JsonReader) -> tuple[int, int, list[ParsedExplanation]]:
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
            reader.fail(f"{at}.explanation", f"expected a non-empty string, found {describe(text)}")
        simulation = reader.key(expl, "scored_simulation", at, "ScoredExplanation")
        if simulation is None:
            parsed.append(ParsedExplanation(text, False, dict.fromkeys(SIM_SCORES), []))
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
        scores = {name: reader.number(sim.get(name), f"{at}.{name}", optional=True) for name in SIM_SCORES}
        parsed.append(ParsedExplanation(text, True, scores, sequences))
    return layer, neuron, parsed
