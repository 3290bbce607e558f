"""Training data made here, and the training: rule units over the pipeline's excerpts (rules.py), each example an
explanation paired with an excerpt crop and the per-token truth of the rule that explanation describes.

Half of a rule's examples show it where it fires; the rest show its explanation on excerpts where a near-miss
rule fires or on random ones, where the truth is mostly 0: the judge has to read the explanation, not just spot
salient tokens. Excerpts are split by id (train 8/10, valid 1/10, test 1/10) and rule families by
`rules.HELD_OUT_FAMILIES`, so test numbers come from text and kinds of rule training never saw.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from autointerp.errors import StoreError
from autointerp.progress import Progress
from autointerp.judge.rules import Rule, all_rules, split_rules

Excerpt = tuple[str, ...]


@dataclass(frozen=True)
class Example:
    rule: str  # whose truth the target is
    explanation: str
    tokens: Excerpt
    target: tuple[bool, ...]


@dataclass(frozen=True)
class TrainOptions:
    window: int = 32  # tokens per training crop (the judge reads whole 64-token excerpts at use)
    examples_per_rule: int = 32
    epochs: int = 2
    batch_size: int = 32
    lr: float = 5e-5  # the encoder's; the new head learns 20x faster
    seed: int = 0
    max_minutes: float = 30.0  # training stops here, whatever is left (README, Cost)
    threads: int = 0  # torch threads; 0: torch's default


@dataclass
class TrainResult:
    revision: str
    directory: Path
    examples: int
    steps: int
    seconds: float
    train_loss: float
    valid: dict[str, float]
    held_out: dict[str, Any]
    history: list[float] = field(default_factory=list)
    paraphrases: int = 0  # LLM-written phrasings among the training rules'


def crops(excerpts: Sequence[Excerpt], window: int) -> list[Excerpt]:
    """Non-overlapping windows of each excerpt."""
    return [tuple(e[lo:lo + window]) for e in excerpts for lo in range(0, max(1, len(e) - window + 1), window)]


def split_excerpts(excerpts: Sequence[tuple[int, Excerpt]]) -> dict[str, list[Excerpt]]:
    """By excerpt id: 8 of 10 train, 1 valid, 1 test."""
    parts: dict[str, list[Excerpt]] = {"train": [], "valid": [], "test": []}
    for excerpt_id, tokens in excerpts:
        parts["train" if excerpt_id % 10 < 8 else "valid" if excerpt_id % 10 == 8 else "test"].append(tokens)
    return parts


def make_examples(rules: Sequence[Rule], every: dict[str, Rule], pool: Sequence[Excerpt], per_rule: int,
                  rng: random.Random, phrasing: Callable[[Rule, random.Random], str] | None = None) -> list[Example]:
    """For each rule, `per_rule` examples: half where it fires, a quarter where a near-miss fires, a quarter at
    random; the target is always the rule's own truth."""
    phrasing = phrasing or (lambda rule, r: r.choice(rule.phrasings))
    examples = []
    for rule in rules:
        candidates = rng.sample(list(pool), min(len(pool), per_rule * 12))
        labels = [rule.labels(tokens) for tokens in candidates]
        firing = [i for i, l in enumerate(labels) if any(l)]
        confusers = [every[name] for name in rule.near_misses]
        near = [i for i in range(len(candidates)) if not any(labels[i])
                and any(any(c.labels(candidates[i])) for c in confusers)]
        chosen = firing[:per_rule // 2] + near[:per_rule // 4]
        rest = [i for i in range(len(candidates)) if i not in set(chosen)]
        chosen += rest[:per_rule - len(chosen)]
        examples += [Example(rule.name, phrasing(rule, rng), candidates[i], tuple(labels[i])) for i in chosen]
    rng.shuffle(examples)
    return examples


def token_list_decoy(rule: Rule, pool: Sequence[Excerpt], n: int = 4) -> str:
    """The simplest explanation: the tokens the rule fires on most, quoted (what top_tokens would write)."""
    counts: Counter[str] = Counter()
    for tokens in pool:
        counts.update(t.strip() for t, fire in zip(tokens, rule.labels(tokens)) if fire and t.strip())
    words = [w for w, _ in counts.most_common(n)]
    return "words like " + ", ".join(f'"{w}"' for w in words) if words else "nothing in particular"


def train_judge(excerpts: Sequence[tuple[int, Excerpt]], encoder_dir: str | Path, out: Path,
                options: TrainOptions = TrainOptions(), log: Callable[[str], None] = print,
                paraphrases: dict[str, tuple[str, ...]] | None = None) -> TrainResult:
    """Train on the training families' rules over the training excerpts; validate on the valid excerpts; measure
    the held-out families on the test excerpts; save to `out`. `paraphrases` (paraphrase.py, by rule name) join
    the training rules' phrasings."""
    import torch

    from autointerp.judge.evaluate import by_correlation, near_miss_rules, pooled_correlation, rank_rules
    from autointerp.judge.paraphrase import with_paraphrases
    from autointerp.judge.model import new_judge, predict, save_judge

    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    started = time.monotonic()
    every = all_rules()
    train_rules, held_out = split_rules(every)
    train_rules = with_paraphrases(train_rules, paraphrases or {})
    parts = split_excerpts(excerpts)
    pools = {name: crops(part, options.window) for name, part in parts.items()}
    if min(len(p) for p in pools.values()) < 4:
        raise StoreError(f"too few excerpts to train a judge ({len(excerpts)}): record more of the corpus")
    examples = make_examples(train_rules, every, pools["train"], options.examples_per_rule, rng)
    valid = make_examples(train_rules, every, pools["valid"], 4, rng)
    log(f"trained judge: {len(train_rules)} training rules ({len(held_out)} held out), {len(examples):,} examples "
        f"from {len(parts['train']):,} excerpts")

    model, pairs = new_judge(encoder_dir)
    history = fit(model, pairs, examples, options, rng, log)
    step = len(history)
    predicted = predict(model, pairs, [e.explanation for e in valid], [e.tokens for e in valid])
    valid_metrics = {"correlation": pooled_correlation(predicted, [e.target for e in valid]),
                     "examples": len(valid)}
    held = rank_rules(by_correlation(lambda xs, ts: predict(model, pairs, xs, ts)), held_out, near_miss_rules(every),
                      crops(parts["test"], 64), rng)
    seconds = time.monotonic() - started
    info = {"rules": {"train": [r.name for r in train_rules], "held_out": [r.name for r in held_out]},
            "options": options.__dict__, "paraphrases": sum(len(v) for v in (paraphrases or {}).values()),
            "paraphrased": {name: list(kept) for name, kept in sorted((paraphrases or {}).items())},
            "examples": len(examples), "steps": step, "seconds": round(seconds, 1),
            "train_loss": float(np.mean(history[-50:])), "valid": valid_metrics, "held_out": held.summary()}
    revision = save_judge(out, model, pairs, info)
    log(f"trained judge {revision}: valid correlation {valid_metrics['correlation']:.3f}; held-out families: "
        f"true above near-misses {held.summary()['above_near_misses']:.0%}, above the token list "
        f"{held.summary()['above_token_list']:.0%}; {seconds / 60:.1f} min")
    return TrainResult(revision, out, len(examples), step, seconds, info["train_loss"], valid_metrics,
                       held.summary(), history, info["paraphrases"])


def fit(model: Any, pairs: Any, examples: Sequence[Example], options: TrainOptions, rng: random.Random,
        log: Callable[[str], None] = print) -> list[float]:
    """Fine-tune `model` on `examples` (per-token BCE, positives weighted 3x: most tokens are silent); returns the
    loss of every step. Stops at `options.max_minutes`."""
    import torch

    model.train()
    head = list(model.head.parameters())
    optimizer = torch.optim.AdamW([{"params": model.encoder.parameters(), "lr": options.lr},
                                   {"params": head, "lr": options.lr * 20}], weight_decay=0.01)
    steps = options.epochs * math.ceil(len(examples) / options.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.05, 1 - s / steps))
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=torch.tensor(3.0))
    started, history, step = time.monotonic(), [], 0
    deadline = started + options.max_minutes * 60
    progress = Progress("training the judge", steps, "steps", log, every_s=60.0)
    for epoch in range(options.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for lo in range(0, len(order), options.batch_size):
            batch = [examples[i] for i in order[lo:lo + options.batch_size]]
            tensors = pairs.batch([e.explanation for e in batch], [e.tokens for e in batch])
            mask = tensors.pop("mask")
            target = torch.zeros(mask.shape)
            for i, e in enumerate(batch):
                target[i, :len(e.target)] = torch.tensor(e.target, dtype=torch.float32)
            logits = model(**tensors)
            loss = (loss_fn(logits, target) * mask).sum() / mask.sum().clamp(min=1)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            history.append(float(loss.detach()))
            step += 1
            progress.label = f"training the judge (epoch {epoch + 1}, loss {np.mean(history[-25:]):.3f})"
            progress.advance(1)
            if time.monotonic() > deadline:
                log(f"trained judge: stopped at the {options.max_minutes:g}-minute bound after {step} steps")
                break
        else:
            continue
        break
    model.eval()
    return history


def train_configured_judge(config: Any, store: Any, log: Callable[[str], None] = print) -> TrainResult:
    """`judge_training` of a config, over the recorded excerpts of its model's latest revision."""
    from autointerp.simulate.embedding import locate_encoder
    from autointerp.store import queries

    spec = config.judge_training
    name = spec.model or config.models[0].name
    revision = queries.latest_revision(store, name)
    if revision is None:
        raise StoreError(f"model '{name}' has no excerpts in {store}: run `autointerp run --model {name} "
                         "--until record` first")
    rows = store.query("SELECT excerpt_id, tokens FROM excerpts WHERE model = $model AND revision = $revision "
                       "ORDER BY excerpt_id", {"model": name, "revision": revision})
    options = TrainOptions(spec.window, spec.examples_per_rule, spec.epochs, spec.batch_size, spec.lr, spec.seed,
                           spec.max_minutes)
    return train_judge([(int(i), tuple(t)) for i, t in zip(rows.excerpt_id, rows.tokens)],
                       locate_encoder(spec.encoder, config.base_dir), (config.base_dir / spec.out).resolve(), options, log,
                       configured_paraphrases(config, store, log))


def configured_paraphrases(config: Any, store: Any, log: Callable[[str], None] = print) -> dict[str, tuple[str, ...]]:
    """`judge_training.paraphrases` per phrasing of every training rule, from `judge_training.llm` (default: the
    explainer's) through the store's LLM cache; none when 0."""
    from autointerp.judge.paraphrase import paraphrase_rules
    from autointerp.llm import LoadedLLMs, cached_llm

    spec = config.judge_training
    if not spec.paraphrases:
        return {}
    train_rules, _ = split_rules(all_rules())
    llms = LoadedLLMs()
    try:
        llm = cached_llm(spec.llm, config.base_dir, store, llms)
        started = time.monotonic()
        found = paraphrase_rules(train_rules, llm, spec.paraphrases, spec.seed, log)
    finally:
        llms.close()
    asked = spec.paraphrases * sum(len(r.phrasings) for r in train_rules)
    log(f"trained judge: {sum(map(len, found.values())):,} of {asked:,} paraphrases kept ({llm.name}, "
        f"{time.monotonic() - started:.0f} s)")
    return found
