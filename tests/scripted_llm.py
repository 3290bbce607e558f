"""A scripted stand-in LLM (registered as the `scripted` backend), so the explain/simulate/score plumbing, the
cache and the Dagster wiring are tested in seconds. It follows a rule a test can predict; tests that need
what only a real model shows (prompt formats, KV reuse, endpoint behaviour) use SmolLM2 or llama.cpp instead.

- chat: reads the records in the last user message (`token<TAB>value` lines, or `<<marked>>` tokens) and
  answers with the (up to 3) tokens whose value is at least 5 most often, e.g. ` words like "cat", "dog"`;
  with `vary`, sample i of a request quotes 1 + (seed + i) % 3 of them; `delay_s` and `log` make a run slow
  enough to kill and let another process count the requests answered;
- slots: for each slot, 10 where the slot's token (the text before its tab) is quoted in the explanation
  line of the prompt's last neuron, else 0;
- judge: a word-list judge. With marks (fuzzing): yes if every marked token is quoted in the explanation;
  without (detection): yes if a quoted token is a word of the text. "yes" gets log-probability -0.1 and "no" -3
  (or the reverse), so the log-odds are +-2.9. Asked for a number (intruder trials: numbered excerpts), it names
  the excerpt whose marked tokens are the rarest among all the excerpts' marks (-0.1; the others -3; the first
  such excerpt on a tie).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from autointerp.llm import REGISTRY
from autointerp.llm.base import LLM
from autointerp.llm.cache import CallResult

_LISTED = re.compile(r"^(.*)\t(\d+)$")
_MARKED = re.compile(r"<<(.+?)>>")
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass(frozen=True)
class ScriptedOptions:
    model: str = "rule"
    fail_chat: bool = False  # raise on every chat call: proves a stage answered from the cache alone
    vary: bool = False  # quote 1, 2 or 3 tokens by the request's seed: best-of-n candidates that differ
    delay_s: float = 0.0  # per chat request: a run slow enough to be killed in the middle
    log: str = ""  # a file that gets one line per chat request answered (other processes can count them)


@REGISTRY.register("scripted", ScriptedOptions)
class ScriptedLLM(LLM):
    backend = "scripted"
    calls: list[str] = []  # every call kind made, across instances (tests reset it)

    @classmethod
    def name_for(cls, options: ScriptedOptions, base_dir: Path | None = None) -> str:
        return f"{cls.backend}:{options.model}"

    def __init__(self, options: ScriptedOptions, base_dir: Path | None = None):
        self.model, self.options = options.model, options

    def chat(self, requests: Sequence[dict[str, Any]]) -> list[CallResult]:
        ScriptedLLM.calls += ["chat"] * len(requests)
        if self.options.fail_chat:
            raise AssertionError("the scripted LLM was asked to chat")
        time.sleep(self.options.delay_s * len(requests))
        if self.options.log:
            with open(self.options.log, "a") as log:
                log.write("chat\n" * len(requests))
        return [CallResult([self._answer(r, r.get("seed", 0) + i) for i in range(r.get("n", 1))]) for r in requests]

    def _answer(self, request: dict[str, Any], seed: int) -> str:
        prompt = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")
        active: Counter[str] = Counter()
        for line in prompt.splitlines():
            listed = _LISTED.match(line)
            if listed and int(listed.group(2)) >= 5:
                active[listed.group(1).strip()] += 1
            active.update(t.strip() for t in _MARKED.findall(line))
        words = [w for w, _ in active.most_common(1 + seed % 3 if self.options.vary else 3) if w]
        return " words like " + ", ".join(f'"{w}"' for w in words) if words else " nothing in particular"

    def judge(self, requests: Sequence[dict[str, Any]]) -> list[CallResult]:
        ScriptedLLM.calls += ["judge"] * len(requests)
        results = []
        for request in requests:
            prompt = request["messages"][-1]["content"]
            if request["answers"] != ["yes", "no"]:
                results.append(CallResult(_intruder(prompt, request["answers"])))
                continue
            explanation, _, text = prompt.partition("\nText: ")
            quoted = {q.strip() for q in _QUOTED.findall(explanation)}
            marked = [t.strip() for t in _MARKED.findall(text)]
            yes = all(t in quoted for t in marked) if marked else bool(quoted & set(text.split()))
            results.append(CallResult({"yes": -0.1, "no": -3.0} if yes else {"yes": -3.0, "no": -0.1}))
        return results

    def slots(self, requests: Sequence[dict[str, Any]]) -> list[CallResult]:
        ScriptedLLM.calls += ["slots"] * len(requests)
        results = []
        for request in requests:
            body = request["body"]
            explanation = body.split("\n", 2)[1] if body.count("\n") >= 2 else ""
            quoted = {q.strip() for q in _QUOTED.findall(explanation)}
            values = []
            for slot in request["slots"]:
                token = body[body.rfind("\n", 0, slot) + 1: slot].rstrip("\t").strip()
                values.append({"10": 1.0} if token in quoted else {"0": 1.0})
            results.append(CallResult(values))
        return results


def _intruder(prompt: str, answers: Sequence[str]) -> dict[str, float]:
    lines = [line.split(". ", 1)[1] for line in prompt.splitlines() if re.match(r"^\d+\. ", line)]
    marks = [[t.strip() for t in _MARKED.findall(line)] for line in lines]
    seen = Counter(t for m in marks for t in m)
    commonness = [sum(seen[t] for t in m) / max(len(m), 1) for m in marks]
    named = min(range(len(lines)), key=lambda i: (commonness[i], i))
    return {a: -0.1 if i == named else -3.0 for i, a in enumerate(answers)}
