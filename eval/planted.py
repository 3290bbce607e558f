"""Planted neurons: do the explainer and simulator recover a concept we wrote into the subject model?

1. The default subject model (the first of the config) is edited so that chosen neurons of one layer fire on
   known concepts (eval/planting.py: a linear probe fitted on the corpus text AFTER the pipeline's token
   budget, so the text the pipeline records is held out). Six concepts are word lists (digits, months,
   water, family, weekdays, number words); two are patterns no word list captures: capitalised words inside
   a sentence (form and context) and the word right after a comma (context only). The edit is measured:
   precision and recall of "activation > threshold" against the concept's tokens, on the held-out text.
2. The edited model is saved with save_pretrained and run through the pipeline's own stages (excerpts,
   recording) and the config's explainer, simulator and scoring, from a config that points at it, with the
   planted neurons and a few unedited neurons of the same layer (the baseline) selected by
   `neurons: {select: list}`.
3. Per neuron: the explanation, whether it names the concept (keywords), its scores; and the scores of the
   hand-written "true rule" (the ceiling the simulator allows) and of another concept's rule (a floor).

    nice -n 10 .venv/bin/python eval/planted.py [--config FILE] [--layer 2] [--concepts digits,months,...]
        [--baselines 2] [--llm MODEL] [--tokens N] [--fit-excerpts 4000]

Writes eval/results/planted.json and prints Markdown tables for the README.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from autointerp.config import Choice, Config, NeuronSelection  # noqa: E402
from autointerp.corpus import EXCERPT_TOKENS, iter_documents, iter_excerpts, resolve_corpus_paths  # noqa: E402
from autointerp.errors import CorpusError, ModelLoadError  # noqa: E402
from autointerp.judge.rules import SENTENCE_END, inside, nth_word_of_sentence, numbers  # noqa: E402
from autointerp.explain.top_tokens import TopTokens, TopTokensOptions  # noqa: E402
from autointerp.explain import ExplainerInput, Explanation  # noqa: E402
from autointerp.llm import llm_name  # noqa: E402
from autointerp.record.records import NeuronRecord  # noqa: E402
from autointerp.score.scoring import NeuronScores, score_neuron  # noqa: E402
from autointerp.stages import Stages  # noqa: E402
from autointerp.store import Store, queries  # noqa: E402
from autointerp.subject import Subject, load_model, resolve_source  # noqa: E402
from eval.common import (RESULTS, config_of, explain_records, explanation_scores, local_llm,  # noqa: E402
                         record_neurons, with_llm)
from eval.common import parser as make_parser  # noqa: E402
from eval.planting import PlantedNeuron, mlp_inputs, neuron_activations, plant, precision_recall  # noqa: E402


@dataclass(frozen=True)
class Concept:
    """A planted concept: which tokens of an excerpt belong to it, a hand-written "true rule" explaining it, and
    the words by which an explanation names it."""

    name: str
    rule: str  # the "true rule" explanation, written by hand
    keywords: tuple[str, ...]  # an explanation names the concept if it has one of these words (or its plural)

    def names(self, explanation: str) -> bool:
        pattern = r"\b(?:" + "|".join(map(re.escape, self.keywords)) + r")(?:s|es)?\b"
        return re.search(pattern, explanation, flags=re.IGNORECASE) is not None

    def labels(self, tokens: Sequence[str]) -> list[bool]:
        """For each token of an excerpt (its text), whether it belongs to the concept."""
        raise NotImplementedError


@dataclass(frozen=True)
class WordList(Concept):
    words: frozenset[str] = frozenset()  # a token belongs if its text, stripped (lower-cased unless
    case_sensitive: bool = False  # case_sensitive), is one

    def contains(self, token: str) -> bool:
        return (token.strip() if self.case_sensitive else token.strip().lower()) in self.words

    def labels(self, tokens: Sequence[str]) -> list[bool]:
        return [self.contains(t) for t in tokens]


@dataclass(frozen=True)
class Pattern(Concept):
    """Not a word list: a token belongs by its form and what comes before (or around) it."""

    kind: str = ""  # one of Pattern.KINDS

    KINDS = ("capitalized", "after_comma", "after_of", "in_parentheses", "in_quotes", "year", "count",
             "second_word")

    def labels(self, tokens: Sequence[str]) -> list[bool]:
        previous = ["\n", *tokens[:-1]]
        if self.kind == "capitalized":
            return [bool(re.match(r"^ [A-Z][a-z]", t)) and not SENTENCE_END.search(p) for t, p in zip(tokens, previous)]
        if self.kind == "after_comma":
            return [p.strip() == "," and bool(t.strip()) for t, p in zip(tokens, previous)]
        if self.kind == "after_of":
            return [p.strip().lower() == "of" and bool(t.strip()) for t, p in zip(tokens, previous)]
        if self.kind == "in_parentheses":
            return inside(tokens, "(", ")")
        if self.kind == "in_quotes":
            return inside(tokens, '"', '"')
        if self.kind in ("year", "count"):
            return numbers(tokens, years=self.kind == "year")
        if self.kind == "second_word":  # the second word-starting token after a sentence boundary
            return nth_word_of_sentence(tokens, 2)
        raise ValueError(f"unknown pattern {self.kind}")


def token_labels(concept: Concept, token_ids: np.ndarray, decoded: Sequence[str]) -> np.ndarray:
    """(excerpts, tokens) bool: the concept's labels for token ids, `decoded[i]` being token i's text."""
    return np.array([concept.labels([decoded[i] for i in row]) for row in token_ids.tolist()], dtype=bool)


MONTHS = ("January February March April May June July August September October November December").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
NUMBER_WORDS = ("one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred "
                "hundreds thousand thousands million millions billion billions").split()
# Chosen for their frequency in the default corpus (news + Wikipedia): in its first 100k tokens, digits are
# 3.7% of tokens (745 of 1562 excerpts), months 0.14% (116), water words 0.12% (88), family words 0.22% (152).
CONCEPTS: dict[str, Concept] = {
    "digits": WordList("digits", "digits (0-9) in numbers, years and dates",
                       ("digit", "number", "numeral", "numeric", "numerical", "year"), frozenset("0123456789"), True),
    "months": WordList("months", "names of months, such as January, March or September", ("month", *MONTHS),
                       frozenset(MONTHS), True),
    "water": WordList("water", "water and bodies of water, such as sea, ocean, river, lake and coast",
                      ("water", "sea", "ocean", "river", "lake", "coast", "coastal", "marine", "maritime", "aquatic"),
                      frozenset(("water waters sea seas ocean oceans river rivers lake lakes coast coasts coastal creek "
                                 "creeks waterway waterways").split())),
    "family": WordList("family", "family members and family words, such as mother, father, son, daughter, wife, "
                       "husband and children",
                       ("family", "families", "kin", "kinship", "relative", "mother", "father", "parent", "child",
                        "children", "son", "daughter", "wife", "wives", "husband", "sibling", "brother", "sister",
                        "spouse"),
                       frozenset(("mother mothers father fathers parent parents son sons daughter daughters wife "
                                  "wives husband husbands brother brothers sister sisters sibling siblings family "
                                  "families child children").split())),
    "weekdays": WordList("weekdays", "days of the week, such as Monday, Tuesday or Friday",
                         ("day", "weekday", "week", *WEEKDAYS), frozenset(WEEKDAYS), True),
    "number_words": WordList("number_words", "numbers written as words, such as one, two, ten, hundred or million",
                             ("number", "numeral", "quantity", "quantities", "count", "counting", *NUMBER_WORDS[:10]),
                             frozenset(NUMBER_WORDS)),
    "capitalized": Pattern("capitalized", "capitalised words inside a sentence, such as names of people, places "
                           "and organisations", ("capital", "capitalized", "capitalised", "proper", "name", "uppercase",
                                                 "upper-case"), kind="capitalized"),
    "after_comma": Pattern("after_comma", "the word right after a comma", ("comma",), kind="after_comma"),
    "after_of": Pattern("after_of", 'the word right after "of"', ("of",), kind="after_of"),
    "in_parentheses": Pattern("in_parentheses", "words inside parentheses", ("parenthes", "bracket"),
                              kind="in_parentheses"),
    "in_quotes": Pattern("in_quotes", "words inside quotation marks", ("quot",), kind="in_quotes"),
    "year": Pattern("year", "numbers that are years, such as 1998 or 2004", ("year", "date"), kind="year"),
    "count": Pattern("count", "numbers that count or measure things, not years", ("count", "quantit", "amount"),
                     kind="count"),
    "second_word": Pattern("second_word", "the second word of a sentence", ("second",), kind="second_word"),
}
# Patterns that no list of words captures (the rest are word lists).
CONTEXTUAL = tuple(name for name, c in CONCEPTS.items() if isinstance(c, Pattern))


def corpus_excerpts(config: Config, tokenizer: Any, budget: int, fit: int) -> np.ndarray:
    """The `fit` excerpts that follow the pipeline's first `budget` excerpts of the corpus: (fit, 64) token ids."""
    paths = resolve_corpus_paths(config.corpus.paths, config.base_dir)

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    rows = [e.token_ids for e in iter_excerpts(iter_documents(paths, config.corpus.text_field), tokenize,
                                               EXCERPT_TOKENS, (budget + fit) * EXCERPT_TOKENS)][budget:]
    if len(rows) < fit:
        raise CorpusError(f"the corpus has {budget + len(rows)} excerpts; fitting the planted neurons on {fit} "
                          f"excerpts held out from the pipeline's {budget} needs {budget + fit} "
                          "(lower --fit-excerpts or --tokens)")
    return np.asarray(rows, dtype=np.int64)


def batches(tokens: np.ndarray, size: int = 32) -> Iterator[np.ndarray]:
    return (tokens[i:i + size] for i in range(0, len(tokens), size))


def planted_config(config: Config, model_dir: Path, name: str, neurons: list[int], tokens: int,
                   llm: str | None) -> Config:
    """A config for the edited model (its only model): the same corpus (`tokens` of it), records, seed,
    explainer and simulator as `config`, their LLM replaced by the local model `llm` if given; `neurons`
    selected in every layer. Relative paths still resolve next to `config`'s file."""
    subject = replace(config.models[0], name=name, source=str(model_dir), dtype="float32")
    roles = {}
    if llm:
        for role in ("explainer", "simulator"):
            choice = getattr(config, role)
            roles[role] = with_llm(choice, local_llm(llm, like=getattr(choice.options, "llm", None)))
    return replace(config, models=(subject,), corpus=replace(config.corpus, max_tokens=tokens),
                   neurons=NeuronSelection(select="list", ids=tuple(neurons)), **roles)


def save_dense(model: Any, tokenizer: Any, directory: Path) -> None:
    """save_pretrained refuses a model loaded from GGUF. Without GGUF kernels transformers dequantizes it to
    dense float tensors at load time (that is what we edited), so dropping the quantizer leaves a plain checkpoint."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        if not all(p.is_floating_point() for p in model.parameters()):
            raise ModelLoadError("the subject model kept packed GGUF weights: planting needs dense ones")
        quantizer.remove_quantization_config(model)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def score_dict(scores: NeuronScores) -> dict[str, float | None]:
    return {"top_and_random": scores.score_top_and_random, "random_only": scores.score_random_only}


def plant_concepts(model: Any, layer: int, concepts: list[Concept], neurons: list[int], fit_tokens: np.ndarray,
                   decoded: Sequence[str]) -> dict[int, PlantedNeuron]:
    """Neuron i learns concept i from the fit text."""
    x = mlp_inputs(model, layer, batches(fit_tokens))
    planted = {}
    for concept, neuron in zip(concepts, neurons):
        is_concept = torch.from_numpy(token_labels(concept, fit_tokens, decoded).reshape(-1))
        planted[neuron] = plant(model, layer, neuron, x, is_concept)
        print(f"planted '{concept.name}' into layer {layer} neuron {neuron}: {int(is_concept.sum())} concept tokens in "
              f"the fit text, precision {planted[neuron].fit_precision:.3f} recall {planted[neuron].fit_recall:.3f}",
              flush=True)
    return planted


def held_out_firing(model_dir: Path, held: np.ndarray, layer: int, concepts: list[Concept],
                    planted: dict[int, PlantedNeuron], decoded: Sequence[str],
                    by_key: dict[tuple[int, int], NeuronRecord]) -> dict[int, dict[str, float]]:
    """How the saved model's planted neurons fire on the text the pipeline recorded (none of it was fitted on)."""
    neurons = list(planted)
    acts = neuron_activations(load_model(resolve_source(str(model_dir)), "float32"), layer, neurons, batches(held))
    out = {}
    for j, (concept, neuron) in enumerate(zip(concepts, neurons)):
        in_concept = token_labels(concept, held, decoded)
        precision, recall = precision_recall(acts[:, j] > planted[neuron].threshold,
                                             torch.from_numpy(in_concept.reshape(-1)))
        peaks = [concept.labels(r.tokens)[int(np.argmax(r.activations))] for r in by_key[(layer, neuron)].top]
        out[neuron] = {"precision": precision, "recall": recall, "concept_tokens": int(in_concept.sum()),
                       "concept_excerpts": int(in_concept.any(axis=1).sum()),
                       "top_peaks_in_concept": float(np.mean(peaks))}  # recorded top excerpts peaking on the concept
        print(f"held out ({held.size:,} tokens): '{concept.name}' neuron {neuron} precision {precision:.3f} "
              f"recall {recall:.3f}", flush=True)
    return out


def rule_applied_exactly(concept: Concept, record: NeuronRecord) -> NeuronScores:
    """The true rule's score with a simulator that follows it perfectly (10 on concept tokens, 0 elsewhere),
    on the same test excerpts: the ceiling the LLM simulator's "true rule" score is measured against."""
    parts: dict[str, tuple[list, list]] = {"top": ([], []), "random": ([], [])}
    for kind, r in record.scored("test"):
        parts[kind][0].append(r.activations)
        parts[kind][1].append(tuple(10.0 if label else 0.0 for label in concept.labels(r.tokens)))
    return score_neuron(*parts["top"], *parts["random"])


def role_name(choice: Choice, role: Any, base_dir: Path) -> str:
    """What the results name an explainer or simulator by: its LLM (the role's own name if it runs none)."""
    llm = getattr(choice.options, "llm", None)
    return llm_name(llm, base_dir) if llm is not None else role.name


def explain_and_score(stages: Stages, by_key: dict[tuple[int, int], NeuronRecord], layer: int,
                      concepts: list[Concept], planted: list[int], baselines: list[int]) -> dict[str, Any]:
    """Own explanations of every neuron; for the planted ones also the true rule and another concept's rule."""
    config = stages.config
    started = time.monotonic()
    own = explain_records(stages, [by_key[(layer, n)] for n in planted + baselines])
    print(f"explained {len(own)} neurons in {time.monotonic() - started:.0f}s", flush=True)
    floor = TopTokens(TopTokensOptions()).explain([ExplainerInput.of(by_key[(layer, n)]) for n in planted], config.seed)
    sets = {"own": own,
            "floor": floor,  # the no-LLM top-token baseline, through the same simulator
            "true": [Explanation(layer, n, 0, c.rule, "") for c, n in zip(concepts, planted)],
            "wrong": [Explanation(layer, n, 0, concepts[(i + 1) % len(concepts)].rule, "")
                      for i, n in enumerate(planted)] if len(concepts) > 1 else []}
    # one simulation call per set, each explanation scored on its neuron's test split
    scores = {name: dict(zip((e.neuron for e in explained), explanation_scores(stages.simulator, explained, by_key)))
              for name, explained in sets.items()}
    return {"sets": sets, "scores": scores, "seconds": time.monotonic() - started,
            "explainer": role_name(config.explainer, stages.explainer, config.base_dir),
            "simulator": role_name(config.simulator, stages.simulator, config.base_dir)}


def neuron_rows(layer: int, concepts: list[Concept], planted: dict[int, PlantedNeuron], held_out: dict[int, dict],
                scored: dict[str, Any], by_key: dict[tuple[int, int], NeuronRecord]) -> list[dict[str, Any]]:
    planted_ids = list(planted)
    sets, scores = scored["sets"], scored["scores"]
    rows = []
    for e in sets["own"]:
        concept = concepts[planted_ids.index(e.neuron)] if e.neuron in planted else None
        row: dict[str, Any] = {"layer": layer, "neuron": e.neuron, "kind": "planted" if concept else "baseline",
                               "concept": concept.name if concept else None, "explanation": e.explanation,
                               "names_concept": concept.names(e.explanation) if concept else None,
                               "own": score_dict(scores["own"][e.neuron])}
        if concept:
            wrong = next((w for w in sets["wrong"] if w.neuron == e.neuron), None)
            floor = next(f for f in sets["floor"] if f.neuron == e.neuron)
            row.update(true_rule=concept.rule, true=score_dict(scores["true"][e.neuron]),
                       floor_explanation=floor.explanation, floor_names_concept=concept.names(floor.explanation),
                       floor=score_dict(scores["floor"][e.neuron]),
                       exact=score_dict(rule_applied_exactly(concept, by_key[(layer, e.neuron)])),
                       wrong_rule=wrong.explanation if wrong else None,
                       wrong=score_dict(scores["wrong"][e.neuron]) if wrong else None,
                       threshold=planted[e.neuron].threshold,
                       fit={"precision": planted[e.neuron].fit_precision, "recall": planted[e.neuron].fit_recall},
                       held_out=held_out[e.neuron])
        rows.append(row)
    return rows


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--layer", type=int, default=2)
    parser.add_argument("--concepts", default=",".join(CONCEPTS))
    parser.add_argument("--baselines", type=int, default=2, help="unedited neurons of the layer, for comparison")
    parser.add_argument("--llm", help="explainer = simulator (a local model source); default: the config's")
    parser.add_argument("--tokens", type=int, help="tokens the pipeline records; default: the config's")
    parser.add_argument("--fit-excerpts", type=int, default=4000, help="excerpts the planting probes are fitted on")
    parser.add_argument("--out", type=Path, default=RESULTS / "planted.json")
    args = parser.parse_args()
    started = time.monotonic()
    config = config_of(args)
    unknown = sorted(set(args.concepts.split(",")) - set(CONCEPTS))
    if unknown:
        parser.error(f"--concepts: unknown {', '.join(unknown)}; known: {', '.join(CONCEPTS)}")
    concepts = [CONCEPTS[c] for c in args.concepts.split(",")]
    tokens = args.tokens or config.corpus.max_tokens
    subject = config.models[0]
    resolved = Subject.of(subject, config.base_dir)
    source, info = resolved.source, resolved.info
    layer = args.layer
    if not 0 <= layer < info.n_layers:
        parser.error(f"--layer {layer}: {subject.name} has layers 0-{info.n_layers - 1}")

    tokenizer = resolved.tokenizer()
    model = load_model(source, "float32")
    fit_tokens = corpus_excerpts(config, tokenizer, tokens // EXCERPT_TOKENS, args.fit_excerpts)
    print(f"fitting on {fit_tokens.size:,} tokens after the pipeline's first {tokens:,}", flush=True)
    rng = random.Random(f"{config.seed}/planted/{layer}")
    chosen = rng.sample(range(info.n_neurons), len(concepts) + args.baselines)
    planted_ids, baselines = chosen[:len(concepts)], sorted(chosen[len(concepts):])
    decoded = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    planted = plant_concepts(model, layer, concepts, planted_ids, fit_tokens, decoded)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "planted-model"
        save_dense(model, tokenizer, model_dir)
        del model
        config_planted = planted_config(config, model_dir, f"{subject.name}-planted", planted_ids + baselines,
                                        tokens, args.llm)
        store = Store(Path(tmp) / "eval.duckdb")
        stages, revision, records = record_neurons(config_planted, [layer], store)
        by_key = {(r.layer, r.neuron): r for r in records}
        held = np.concatenate([t for _, t in queries.iter_excerpt_batches(store, config_planted.models[0].name,
                                                                          revision, 256)])
        held_out = held_out_firing(model_dir, held, layer, concepts, planted, decoded, by_key)
        scored = explain_and_score(stages, by_key, layer, concepts, planted_ids, baselines)

    result = {"subject": subject.name, "source": subject.source, "layer": layer, "tokens": tokens,
              "fit_tokens": int(fit_tokens.size), "explainer": scored["explainer"], "simulator": scored["simulator"],
              "neurons": neuron_rows(layer, concepts, planted, held_out, scored, by_key),
              "llm_seconds": scored["seconds"], "seconds": time.monotonic() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown(result: dict[str, Any]) -> str:
    planted = [r for r in result["neurons"] if r["kind"] == "planted"]
    lines = [f"Subject {result['subject']}, layer {result['layer']}, {result['tokens']:,} tokens recorded; "
             f"explainer {result['explainer']}, simulator {result['simulator']}.", "",
             "| neuron | planted concept | held-out precision / recall | top excerpts peaking on it | explanation "
             "| names it | own: top-and-random | own: random-only | top tokens (no LLM) | true rule: top-and-random "
             "| true rule: random-only | another concept's rule: top-and-random | true rule applied exactly |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["neurons"]:
        if r["kind"] == "planted":
            h = r["held_out"]
            lines.append(f"| {r['neuron']} | {r['concept']} | {h['precision']:.2f} / {h['recall']:.2f} "
                         f"| {h['top_peaks_in_concept']:.0%} | {r['explanation']} "
                         f"| {'yes' if r['names_concept'] else 'no'} "
                         f"| {fmt(r['own']['top_and_random'])} | {fmt(r['own']['random_only'])} "
                         f"| {fmt(r['floor']['top_and_random'])} "
                         f"| {fmt(r['true']['top_and_random'])} | {fmt(r['true']['random_only'])} "
                         f"| {fmt(r['wrong']['top_and_random']) if r['wrong'] else 'n/a'} "
                         f"| {fmt(r['exact']['top_and_random'])} |")
        else:
            lines.append(f"| {r['neuron']} | (unedited) | | | {r['explanation']} | | {fmt(r['own']['top_and_random'])} "
                         f"| {fmt(r['own']['random_only'])} | | | | | |")

    def avg(rows: list[dict], *keys: str) -> str:
        values = [row[keys[0]][keys[1]] for row in rows if row.get(keys[0]) and row[keys[0]][keys[1]] is not None]
        return fmt(float(np.mean(values))) if values else "n/a"

    baseline = [r for r in result["neurons"] if r["kind"] == "baseline"]
    lines += ["", "| neurons | n | named the concept | own: top-and-random | top tokens (no LLM) | true rule "
              "| another concept's rule | true rule applied exactly |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |",
              f"| planted | {len(planted)} | {sum(bool(r['names_concept']) for r in planted)}/{len(planted)} "
              f"| {avg(planted, 'own', 'top_and_random')} | {avg(planted, 'floor', 'top_and_random')} "
              f"| {avg(planted, 'true', 'top_and_random')} "
              f"| {avg(planted, 'wrong', 'top_and_random')} | {avg(planted, 'exact', 'top_and_random')} |",
              f"| unedited (baseline) | {len(baseline)} | | {avg(baseline, 'own', 'top_and_random')} | | | | |",
              "", f"Time: {result['seconds'] / 60:.1f} min in all, {result['llm_seconds'] / 60:.1f} min explaining "
              "and simulating."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
