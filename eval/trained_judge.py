"""The trained judge against the shipped simulator and the LLM judge: does the true explanation outscore its
near-misses and the top-token baseline's, on rule families the judge never trained on and on the planted concepts?

Text: corpus excerpts after the first `--skip` (default 4,000; the pipeline and the judge's training read the
first ~1,600), so no excerpt here was seen in training. Per rule or planted concept, 10 excerpts where it fires
and 10 where it does not (drawn per rule, so every scorer sees the same ones); candidates: the true explanation,
its near-misses (held-out rules: the rules they are confused with; planted concepts: eval/scorers.py's near-miss
and another concept's rule), and the top-token baseline's explanation (the tokens the rule fires on most, quoted:
what the top_tokens explainer writes for such a unit; called the token list). A simulator's score for a candidate
is the pooled correlation of its simulation with the truth (the paper's score); an LLM judge's is its detection
AUROC on the same excerpts (the pipeline's detection scorer, its windows and at most `per_class` of each class).
Fractions carry a 95% bootstrap interval over rules.

With `--llm-judge`, the LLM judge (default: the explainer's model, the embedded Qwen2.5-Coder-1.5B; the main
job's judge is the 0.5B) scores `--llm-rules` held-out rules drawn at random (set "held-out sample", where the
simulators score the same rules too) and the planted concepts.

    .venv/bin/python eval/trained_judge.py [--judge data/judge] [--skip 4000] [--excerpts 1500]
        [--llm-judge] [--llm MODEL] [--engine ENGINE] [--llm-rules 12] [--llm-sets "planted contextual,..."]

Writes eval/results/trained_judge.json and prints Markdown tables (README, Evaluation).
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from autointerp.config import build_choice  # noqa: E402
from autointerp.judge.evaluate import Rankings, Score, by_correlation, near_miss_rules, rank_rules  # noqa: E402
from autointerp.judge.rules import Rule, all_rules, split_rules  # noqa: E402
from autointerp.llm import LoadedLLMs  # noqa: E402
from autointerp.record.records import ActivationRecord  # noqa: E402
from autointerp.score import ScoringItem, build_scorer, score_items  # noqa: E402
from autointerp.simulate import SimulationJob, build_simulator  # noqa: E402
from autointerp.store import Store  # noqa: E402
from autointerp.subject import Subject  # noqa: E402
from eval.common import RESULTS, config_of, judged_by  # noqa: E402
from eval.common import parser as make_parser  # noqa: E402
from eval.planted import CONCEPTS, CONTEXTUAL, corpus_excerpts  # noqa: E402
from eval.scorers import NEAR_MISSES  # noqa: E402


def planted_rules() -> tuple[list[Rule], Callable[[Rule], dict[str, str]]]:
    names = list(CONCEPTS)
    rules = [Rule("planted_contextual" if n in CONTEXTUAL else "planted_word_list", n, (c.rule,), c.labels)
             for n, c in CONCEPTS.items()]
    return rules, lambda rule: {"near-miss": NEAR_MISSES[rule.name],
                                "other": CONCEPTS[names[(names.index(rule.name) + 1) % len(names)]].rule}


def simulator_scores(config: Any, kind: str, options: dict[str, Any], store: Store, llms: LoadedLLMs) -> Score:
    simulator = build_simulator(build_choice("simulator", {"kind": kind, **options}, kind), config.base_dir, store,
                                llms)

    def simulate(explanations: Sequence[str], excerpts: Sequence[Sequence[str]]) -> list[np.ndarray]:
        jobs = [SimulationJob(e, tuple(t)) for e, t in zip(explanations, excerpts)]
        return [np.asarray(v) / 10.0 for v in simulator.simulate(jobs)]

    return by_correlation(simulate)


def judge_scores(config: Any, store: Store, llms: LoadedLLMs) -> Score:
    """Detection by the config's LLM judge (the pipeline's scorer, its windows and lookalikes): its AUROC over the
    excerpts where the rule fires and where it does not."""
    scorer = build_scorer("detection", config, store, llms)

    def score(explanation: str, excerpts: Sequence[Sequence[str]], truth: Sequence[Sequence[bool]]) -> float:
        records = tuple(("top", ActivationRecord(tuple(t), tuple(6.0 if x else 0.0 for x in labels), i))
                        for i, (t, labels) in enumerate(zip(excerpts, truth)))
        [scored] = score_items(scorer, [ScoringItem(explanation, records)])
        return scored.value if scored.value is not None else 0.5

    return score


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--judge", default="data/judge", help="the trained judge's directory, or several to compare: "
                        "LABEL=DIR,LABEL=DIR (e.g. judges trained with and without paraphrases)")
    parser.add_argument("--skip", type=int, default=4000, help="corpus excerpts left out (seen in training)")
    parser.add_argument("--excerpts", type=int, default=1500)
    parser.add_argument("--llm-judge", action="store_true", help="also an LLM judge (detection)")
    parser.add_argument("--llm", help="the LLM judge's local model (default: the explainer's, the 1.5B)")
    parser.add_argument("--engine", help="the LLM judge's local engine")
    parser.add_argument("--llm-rules", type=int, default=12, help="held-out rules the LLM judge scores (slow)")
    parser.add_argument("--llm-sets", default=",".join(PLANTED_SETS), help="planted sets the LLM judge scores")
    parser.add_argument("--store", type=Path, default=Path("data/eval/trained_judge.duckdb"))
    parser.add_argument("--out", type=Path, default=RESULTS / "trained_judge.json")
    args = parser.parse_args()
    config = config_of(args)
    tokenizer = Subject.of(config.models[0], config.base_dir).tokenizer()
    cache: dict[int, str] = {}
    texts = [tuple(cache.setdefault(i, tokenizer.decode([i])) for i in row)
             for row in corpus_excerpts(config, tokenizer, args.skip, args.excerpts).tolist()]
    args.store.parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.store)
    every = all_rules()
    _, held_out = split_rules(every)
    planted, planted_near = planted_rules()
    llms = LoadedLLMs()
    judges = _judges(args.judge)
    scorers = {name: simulator_scores(config, "trained", {"path": str(path.resolve())}, store, llms)
               for name, path in judges.items()}
    scorers["combined"] = simulator_scores(config, "combined", {}, store, llms)
    llm_name = None
    if args.llm_judge:
        judged = judged_by(config, args.llm or _explainer_model(config), args.engine)
        llm_name = f"detection ({getattr(judged.scoring.llm.options, 'model', '?')})"
        scorers[llm_name] = judge_scores(judged, store, llms)
    results: dict[str, Any] = {"skip": args.skip, "excerpts": len(texts), "judge": args.judge,
                               "judge_revision": {name: _revision(path) for name, path in judges.items()}, "sets": {}}
    sets = {"held-out families": (held_out, near_miss_rules(every)),
            PLANTED_SETS[0]: ([r for r in planted if r.family == "planted_contextual"], planted_near),
            PLANTED_SETS[1]: ([r for r in planted if r.family == "planted_word_list"], planted_near)}
    if llm_name:
        sample = random.Random(0).sample(held_out, min(args.llm_rules, len(held_out)))
        sets = {"held-out families": sets.pop("held-out families"), "held-out sample": (sample, near_miss_rules(every)),
                **sets}
    for set_name, (rules, near) in sets.items():
        results["sets"][set_name] = {}
        for name, score in scorers.items():
            if name == llm_name and set_name not in ("held-out sample", *args.llm_sets.split(",")):
                continue
            started = time.monotonic()
            ranked: Rankings = rank_rules(score, rules, near, texts, random.Random(config.seed))
            results["sets"][set_name][name] = {"summary": ranked.summary(), "seconds": round(time.monotonic() - started, 1),
                                               "families": by_family(ranked),
                                               "rules": [r.__dict__ for r in ranked.rules]}
            print(set_name, name, json.dumps(ranked.summary()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print("\n" + markdown(results))


PLANTED_SETS = ("planted contextual", "planted word lists")


def _judges(spec: str) -> dict[str, Path]:
    """--judge DIR -> {"trained": DIR}; --judge a=DIR,b=DIR -> {"trained a": DIR, "trained b": DIR}."""
    if "=" not in spec:
        return {"trained": Path(spec)}
    pairs = [item.split("=", 1) for item in spec.split(",")]
    return {f"trained {label}": Path(path) for label, path in pairs}


def by_family(ranked: Rankings) -> dict[str, dict[str, Any]]:
    """The summary per rule family (the part of a rule's name before the slash)."""
    families: dict[str, list] = {}
    for rule in ranked.rules:
        families.setdefault(rule.rule.split("/")[0], []).append(rule)
    return {family: Rankings(rules).summary() for family, rules in sorted(families.items())}


def _explainer_model(config: Any) -> str:
    llm = getattr(config.explainer.options, "llm", None)
    if llm is None or llm.kind != "local":
        raise SystemExit("--llm-judge: the config's explainer runs no local LLM; name one with --llm")
    return llm.options.model


def _revision(directory: Path) -> str | None:
    from autointerp.judge.model import judge_revision

    return judge_revision(directory) if (directory / "manifest.json").is_file() else None


def markdown(results: dict[str, Any]) -> str:
    out = ["| rules | scorer | n | true's score | top-token baseline's score | true > near-miss (pairs) "
           "| true > every near-miss | true > top-token baseline | seconds per rule |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for set_name, by_scorer in results["sets"].items():
        for name, r in by_scorer.items():
            s = r["summary"]
            baseline = np.mean([x["token_list"] for x in r["rules"]]) if r["rules"] else float("nan")
            out.append(f"| {set_name} | {name} | {s['rules']} | {s['mean_true_correlation']:.3f} | {baseline:.3f} "
                       f"| {s['above_near_misses']:.0%} {_ci(s['above_near_misses_ci'])} "
                       f"| {s['above_all_near_misses']:.0%} | {s['above_token_list']:.0%} "
                       f"{_ci(s['above_token_list_ci'])} | {r['seconds'] / max(1, s['rules']):.1f} |")
    return "\n".join(out)


def _ci(interval: Sequence[float]) -> str:
    return f"[{interval[0]:.0%}, {interval[1]:.0%}]"


if __name__ == "__main__":
    main()
