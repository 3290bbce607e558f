"""Paraphrases of the rules' phrasings, written by the configured LLM (issue 22): the templates in rules.py word
every rule of a family alike, so a judge trained on them alone may learn the templates' wording rather than
what an explanation says. An LLM rewrites each phrasing in other words; what it writes is checked before use,
and every call goes through the store's LLM cache, so a re-run of the training pays nothing for them.

The check is strict because a kept paraphrase is trained on with the ORIGINAL rule's truth: a rewrite that says
something else ("the letter a is used as a starting point for many words" for `the word "a"`) would teach the
judge to ignore what explanations say. So a paraphrase must be one line of bounded length, in new words, quote
exactly the original's quoted words, name the rule's subject (its parameter: "of", "months", "comma", ...),
and state the same relations (after / before / start / end / inside): losing a good rewrite costs little,
keeping a wrong one costs the judge's reading.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

from autointerp.judge.rules import Rule
from autointerp.progress import Progress

MAX_CHARS = 160  # a phrasing is 10-70 characters; a longer answer is commentary, not a paraphrase
CALLS_PER_CHUNK = 64  # requests per LLM call: progress, and the cache keeps what is done if a run stops
_QUOTED = re.compile(r'"([^"]+)"')
_LABEL = re.compile(r"^(?:paraphrase|rewritten(?: description)?|description|answer)\s*:\s*", re.IGNORECASE)
_SYSTEM = ("You rewrite short descriptions of where a neuron in a language model fires. Keep the exact meaning: "
           "the same quoted words, the same relation (before, after, inside, first, ending in, ...). Answer with "
           "the rewritten description only, on one line.")
# Two worked rewrites (of rules in the training families): a small model copies their shape.
_SHOTS = (('words that follow "in"', 'any word that comes directly after "in"'),
          ("names of months", "the months of the year, such as March or October"))
# Which relation a phrase states, tried in order; a matched phrase is blanked so that "followed by" (the word
# BEFORE something) is not also read as "follow" (after).
_RELATIONS = (("after", r"\bpreceded by\b"), ("before", r"\bfollowed by\b"),
              ("after", r"\bafter\b|\bfollow\w*|\bnext\b|\bsucceed\w*"),
              ("before", r"\bbefore\b|\bpreced\w*|\bahead\b|\bprior\b"),
              ("start", r"\bstart\w*|\bbegin\w*|\bfirst\b|\binitial\w*|\bprefix\w*|\bopening\b"),
              ("end", r"\bend\b|\bends\b|\bending\b|\blast\b|\bfinal\w*|\bsuffix\w*"),
              ("inside", r"\binside\b|\bwithin\b|\bbetween\b|\bcontents?\b|\benclosed\b"))
_GENERIC = {"word", "words", "is"}  # parameter parts that name no subject


def paraphrase_request(phrasing: str, n: int, seed: int) -> dict[str, Any]:
    shots = [m for original, rewrite in _SHOTS for m in (
        {"role": "user", "content": f"Description: {original}\nRewrite it in other words."},
        {"role": "assistant", "content": rewrite})]
    return {"messages": [{"role": "system", "content": _SYSTEM}, *shots,
                         {"role": "user", "content": f"Description: {phrasing}\nRewrite it in other words."}],
            "n": n, "max_tokens": 40, "temperature": 0.9, "top_p": 0.95, "seed": seed}


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def relations(text: str) -> frozenset[str]:
    """The relations a phrase states: after, before, start, end, inside (quoted words are what the rule is
    about, not a relation: `the word "after"`)."""
    text, found = _QUOTED.sub(" ", text.lower()), set()
    for name, pattern in _RELATIONS:
        if re.search(pattern, text):
            found.add(name)
            text = re.sub(pattern, " ", text)
    return frozenset(found)


def subject_words(rule: Rule) -> tuple[str, ...]:
    """What the rule is about, from its name's parameter: after_word/of -> ("of",), word_list/months ->
    ("months",), context/after_comma -> ("after", "comma")."""
    parameter = rule.name.partition("/")[2]
    return tuple(w for w in parameter.split("_") if w and w not in _GENERIC)


def clean_paraphrase(original: str, answer: str, subject: Sequence[str] = ()) -> str | None:
    """The paraphrase in `answer`, or None where it cannot stand for `original`: empty, several lines, the same
    words, too long, quoting words other than the original's (or dropping one), naming none of the `subject`
    words the original names (a word counts where one starts with its first five letters: "capit" in
    "capital"), or stating other relations than the original: a changed word changes the rule (the truth stays
    the original's)."""
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
    named = [w for w in subject if _names(original, w)]
    if named and not any(_names(line, w) for w in named):
        return None
    return line if relations(line) == relations(original) else None


def _names(text: str, subject_word: str) -> bool:
    return _says(text, subject_word[:5], stem=len(subject_word) > 5)


def _says(text: str, word: str, stem: bool = False) -> bool:
    """`word` occurs in `text` as a word (quoted or not): "of" is in 'after of' but not in 'offer'; with `stem`,
    as the start of a word."""
    tail = r"" if stem else r"(?!\w)"
    return re.search(rf"(?<!\w){re.escape(word.strip())}{tail}", text, re.IGNORECASE) is not None


def paraphrase_rules(rules: Sequence[Rule], llm: Any, per_phrasing: int, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> dict[str, tuple[str, ...]]:
    """Up to `per_phrasing` checked paraphrases of each phrasing of each rule, by rule name (duplicates dropped).
    `llm`: a CachedLLM (autointerp.llm.cached_llm), asked once per phrasing for `per_phrasing` samples, in
    chunks of CALLS_PER_CHUNK (each cached as it is done)."""
    if per_phrasing < 1:
        return {}
    asked = [(rule, p) for rule in rules for p in rule.phrasings]
    requests = [paraphrase_request(p, per_phrasing, seed * 1_000_003 + i) for i, (_, p) in enumerate(asked)]
    progress = Progress("paraphrasing the rules", len(requests), "phrasings", log or (lambda line: None), every_s=60)
    answers: list[list[Any]] = []
    for lo in range(0, len(requests), CALLS_PER_CHUNK):
        answers += llm.chat(requests[lo:lo + CALLS_PER_CHUNK])
        progress.advance(len(requests[lo:lo + CALLS_PER_CHUNK]))
    found: dict[str, list[str]] = {rule.name: [] for rule in rules}
    for (rule, phrasing), completions in zip(asked, answers):
        for completion in completions:
            text = completion["text"] if isinstance(completion, dict) else completion
            kept = clean_paraphrase(phrasing, text, subject_words(rule))
            if kept and _normal(kept) not in {_normal(x) for x in (*rule.phrasings, *found[rule.name])}:
                found[rule.name].append(kept)
    return {name: tuple(kept) for name, kept in found.items() if kept}


def with_paraphrases(rules: Sequence[Rule], paraphrases: dict[str, tuple[str, ...]]) -> list[Rule]:
    """The rules with their paraphrases after their templates: phrasings[0], the one evaluations use as the true
    explanation, stays the template's."""
    return [dataclasses.replace(r, phrasings=r.phrasings + paraphrases.get(r.name, ())) for r in rules]
