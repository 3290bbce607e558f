"""Paraphrases of the rules' phrasings, written by the configured LLM (issue 22): the templates in rules.py word
every rule of a family alike, so a judge trained on them alone may learn the templates' wording rather than
what an explanation says. An LLM rewrites each phrasing in other words; what it writes is checked before use
(one line, not the same words, bounded length, the same quoted words), and every call goes through the store's
LLM cache, so a re-run of the training pays nothing for them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from autointerp.judge.rules import Rule

MAX_CHARS = 160  # a phrasing is 10-70 characters; a longer answer is commentary, not a paraphrase
_QUOTED = re.compile(r'"([^"]+)"')
_LABEL = re.compile(r"^(?:paraphrase|rewritten(?: description)?|description|answer)\s*:\s*", re.IGNORECASE)
_SYSTEM = ("You rewrite short descriptions of where a neuron in a language model fires. Keep the exact meaning: "
           "the same quoted words, the same relation (before, after, inside, first, ending in, ...). Answer with "
           "the rewritten description only, on one line.")


def paraphrase_request(phrasing: str, n: int, seed: int) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": _SYSTEM},
                         {"role": "user", "content": f"Description: {phrasing}\nRewrite it in other words."}],
            "n": n, "max_tokens": 40, "temperature": 0.9, "top_p": 0.95, "seed": seed}


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def clean_paraphrase(original: str, answer: str) -> str | None:
    """The paraphrase in `answer`, or None where it cannot stand for `original`: empty, several lines, the same
    words, too long, or quoting words other than the original's (or dropping one): a changed word changes the
    rule (the truth stays the original's)."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if len(lines) != 1:
        return None
    line = _LABEL.sub("", lines[0]).strip()
    if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'" and line.count(line[0]) == 2:
        line = line[1:-1].strip()  # the whole answer in quotes
    line = line.rstrip(".").strip()
    if not line or len(line) > MAX_CHARS or _normal(line) == _normal(original):
        return None
    if not all(_says(line, q) for q in _QUOTED.findall(original)) or \
            not all(_says(original, q) for q in _QUOTED.findall(line)):
        return None
    return line


def _says(text: str, word: str) -> bool:
    """`word` occurs in `text` as a word (quoted or not): "of" is in 'after of' but not in 'offer'."""
    return re.search(rf"(?<!\w){re.escape(word.strip())}(?!\w)", text, re.IGNORECASE) is not None


def paraphrase_rules(rules: Sequence[Rule], llm: Any, per_phrasing: int, seed: int = 0) -> dict[str, tuple[str, ...]]:
    """Up to `per_phrasing` checked paraphrases of each phrasing of each rule, by rule name (duplicates dropped).
    `llm`: a CachedLLM (autointerp.llm.cached_llm), asked once per phrasing for `per_phrasing` samples."""
    if per_phrasing < 1:
        return {}
    asked = [(rule, p) for rule in rules for p in rule.phrasings]
    requests = [paraphrase_request(p, per_phrasing, seed * 1_000_003 + i) for i, (_, p) in enumerate(asked)]
    answers = llm.chat(requests)
    found: dict[str, list[str]] = {rule.name: [] for rule in rules}
    for (rule, phrasing), completions in zip(asked, answers):
        for completion in completions:
            text = completion["text"] if isinstance(completion, dict) else completion
            kept = clean_paraphrase(phrasing, text)
            if kept and _normal(kept) not in {_normal(x) for x in (*rule.phrasings, *found[rule.name])}:
                found[rule.name].append(kept)
    return {name: tuple(kept) for name, kept in found.items() if kept}


def with_paraphrases(rules: Sequence[Rule], paraphrases: dict[str, tuple[str, ...]]) -> list[Rule]:
    """The rules with their paraphrases after their templates: phrasings[0], the one evaluations use as the true
    explanation, stays the template's."""
    return [dataclasses.replace(r, phrasings=r.phrasings + paraphrases.get(r.name, ())) for r in rules]
