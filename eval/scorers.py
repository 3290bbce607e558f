"""Can a score tell a true explanation from a near-miss and from a token list? Rule neurons, every scorer.

For each concept of eval/planted.py (word lists, and patterns no word list captures: the word after a comma or
after "of", a capitalised word inside a sentence, words inside parentheses or quotes, a number that is a year
vs one that counts, the second word of a sentence), a neuron is made from the exact rule: activation 6 on the
concept's tokens, 0 elsewhere, over corpus excerpts the pipeline never records (the subject's tokenizer). Its
records are the pipeline's: the 20 excerpts with the most concept tokens as top records, 20 random ones, dealt
into splits the same way. Every scorer then scores, on the TEST split, four explanations:

    true       the hand-written rule (right by construction)
    near-miss  a plausible wrong rule (e.g. 'the word "of"' for "the word right after of")
    tokens     the top_tokens baseline: the neuron's most active train-split tokens, quoted
    other      another concept's rule

A score that reads context must put `true` above the other three. Targets (issue 18): detection and fuzzing AUROC
of the true rule >= 0.80 on average, and above the token-list decoy for >= 80% of the contextual concepts.

    .venv/bin/python eval/scorers.py [--config FILE] [--concepts ...] [--scorers simulation,detection,fuzzing]
        [--llm MODEL] [--engine auto|transformers|llama.cpp] [--window N]

Writes eval/results/scorers.json and prints Markdown tables (README, Evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from autointerp.explain import ExplainerInput  # noqa: E402
from autointerp.explain.top_tokens import TopTokens, TopTokensOptions  # noqa: E402
from autointerp.llm import LoadedLLMs  # noqa: E402
from autointerp.record.records import ActivationRecord, NeuronRecord  # noqa: E402
from autointerp.score import build_scorer, item_of, score_items  # noqa: E402
from autointerp.store import Store  # noqa: E402
from autointerp.subject import Subject  # noqa: E402
from eval.common import RESULTS, config_of, judged_by  # noqa: E402
from eval.common import parser as make_parser  # noqa: E402
from eval.planted import CONCEPTS, CONTEXTUAL, corpus_excerpts  # noqa: E402

NEAR_MISSES = {
    "capitalized": "the first word of each sentence",
    "after_comma": "commas",
    "after_of": 'the word "of"',
    "in_parentheses": "parentheses",
    "in_quotes": "quotation marks",
    "year": "digits in any number",
    "count": "digits in any number",
    "second_word": "the first word of a sentence",
    "digits": "numbers written as words",
    "months": "days of the week",
    "water": "weather words such as rain and snow",
    "family": "people and their jobs",
    "weekdays": "names of months",
    "number_words": "digits in numbers",
}
EXPLANATIONS = ("true", "near-miss", "tokens", "other")
GAIN = 6.0


def rule_neuron(name: str, texts: list[list[str]], rng: random.Random) -> NeuronRecord:
    """The concept's exact-rule neuron with the pipeline's record layout (20 top by concept count, 20 random)."""
    concept = CONCEPTS[name]
    acts = [[GAIN if label else 0.0 for label in concept.labels(t)] for t in texts]
    counts = [sum(a > 0 for a in row) for row in acts]
    hits = [i for i, c in enumerate(counts) if c]
    top = sorted(hits, key=lambda i: (-counts[i], rng.random()))[:20]
    rest = [i for i in range(len(texts)) if i not in set(top)]
    random_ids = rng.sample(rest, 20)
    make = lambda i: ActivationRecord(tuple(texts[i]), tuple(acts[i]), i)  # noqa: E731
    return NeuronRecord("rules", "-", 0, list(CONCEPTS).index(name), [make(i) for i in top],
                        [make(i) for i in random_ids])


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--concepts", default=",".join(CONCEPTS))
    parser.add_argument("--scorers", default="simulation,detection,fuzzing")
    parser.add_argument("--llm", help="the judges' local model (default: the config's scoring.llm)")
    parser.add_argument("--engine", help="the judges' local engine")
    parser.add_argument("--window", type=int, help="scoring.window")
    parser.add_argument("--store", type=Path, default=Path("data/eval/scorers.duckdb"),
                        help="keeps the LLM call cache between runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "scorers.json")
    args = parser.parse_args()
    names = args.concepts.split(",")
    unknown = sorted(set(names) - set(CONCEPTS))
    if unknown:
        parser.error(f"--concepts: unknown {', '.join(unknown)}; known: {', '.join(CONCEPTS)}")
    config = judged_by(config_of(args), args.llm, args.engine)
    scoring = config.scoring
    if args.window is not None:
        scoring = dataclasses.replace(scoring, window=args.window)
    config = dataclasses.replace(config, scoring=scoring)
    tokenizer = Subject.of(config.models[0], config.base_dir).tokenizer()
    texts = [[tokenizer.decode([i]) for i in row] for row in corpus_excerpts(config, tokenizer, 0, 1500)]
    args.store.parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.store)
    llms = LoadedLLMs()  # the judges ask one LLM
    scorers = {kind: build_scorer(kind, config, store, llms) for kind in args.scorers.split(",")}
    baseline = TopTokens(TopTokensOptions())
    rng = random.Random(config.seed)
    rows = []
    for n, name in enumerate(names):
        record = rule_neuron(name, texts, rng)
        explanations = {"true": CONCEPTS[name].rule, "near-miss": NEAR_MISSES[name],
                        "tokens": baseline.explain([ExplainerInput.of(record)], config.seed)[0].explanation,
                        "other": CONCEPTS[names[(n + 1) % len(names)]].rule}
        row: dict[str, Any] = {"concept": name, "contextual": name in CONTEXTUAL, "explanations": explanations}
        for kind, scorer in scorers.items():
            started = time.monotonic()
            results = score_items(scorer, [item_of(scorer, e, record, "test") for e in explanations.values()])
            row[kind] = {which: r.value for which, r in zip(explanations, results)}
            row[f"{kind}_balanced_accuracy"] = {which: r.details.get("balanced_accuracy")
                                                for which, r in zip(explanations, results)}
            row[f"{kind}_seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scorers": {k: s.name for k, s in scorers.items()}, "window": scoring.window,
                                    "rows": rows}, indent=1))
    print("\n" + markdown(rows, list(scorers)))


def _wins(rows: list[dict[str, Any]], kind: str, others: Sequence[str]) -> str:
    """How often the true rule scores above every one of `others`, among the concepts where all are defined."""
    defined = [r for r in rows if all(r[kind][w] is not None for w in ("true", *others))]
    wins = [r for r in defined if all(r[kind]["true"] > r[kind][w] for w in others)]
    return f"{len(wins)}/{len(defined)}"


def markdown(rows: list[dict[str, Any]], kinds: list[str]) -> str:
    """Per scorer: mean value of each explanation (over the concepts where it is defined), and how often the true
    rule beats each wrong one."""
    out = []
    for title, subset in (("contextual concepts", [r for r in rows if r["contextual"]]),
                          ("word-list concepts", [r for r in rows if not r["contextual"]])):
        if not subset:
            continue
        out += [f"**{title}** ({len(subset)})", "",
                "| scorer | true | near-miss | tokens (top_tokens) | other | true > near-miss | true > tokens "
                "| true > all three | seconds per explanation |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for kind in kinds:
            means = [np.nanmean([np.nan if r[kind][w] is None else r[kind][w] for r in subset]) for w in EXPLANATIONS]
            seconds = np.mean([r[f"{kind}_seconds"] for r in subset]) / len(EXPLANATIONS)
            out.append(f"| {kind} | " + " | ".join(f"{m:.3f}" for m in means)
                       + f" | {_wins(subset, kind, ['near-miss'])} | {_wins(subset, kind, ['tokens'])} "
                       f"| {_wins(subset, kind, EXPLANATIONS[1:])} | {seconds:.1f} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
