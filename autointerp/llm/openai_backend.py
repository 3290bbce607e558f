"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's server) through the `openai` client.

Explanations come from chat completions. Simulation reads the value distribution at every slot:
- echo:  a completions call with echo=True and logprobs scores the prompt itself; the top logprobs of
         the token at each slot are the simulator's distribution there (the reference's method);
- chat:  the model rewrites the excerpt as token<TAB>value lines, and the top_logprobs of each value
         token are read;
- parse: no logprobs at all: the values the model writes are parsed (the reference's logprob-free mode).
`auto` probes the endpoint once and takes the first mode it supports, in that order.
Retries with backoff and timeouts are the client's own; requests run with bounded concurrency.
"""

from __future__ import annotations

import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence, TypeVar

from autointerp.config import LLMSpec
from autointerp.errors import AutointerpError
from autointerp.llm.base import LLM, ChatRequest, SlotRequest
from autointerp.llm.cache import CallResult
from autointerp.prompts import UNKNOWN, VALUE_STRINGS

# Counting 1..16 is predictable enough for any LM: it tells how an endpoint aligns echoed logprobs.
_ALIGNMENT_PROBE = ", ".join(str(i) for i in range(1, 17))
REWRITE_INSTRUCTION = (
    "\n\nRewrite the last excerpt above, from <start> to <end>, one line per token, replacing each "
    f"'{UNKNOWN}' with your predicted activation (an integer from 0 to 10). Write nothing else."
)
_VALUE_LINE = re.compile(r"\t\s*(\d+)")
T = TypeVar("T")


class LLMEndpointError(AutointerpError):
    """The endpoint is unreachable, refuses the key, or answers in a way we cannot use."""


class OpenAILLM(LLM):
    backend = "openai"

    def __init__(self, spec: LLMSpec):
        import openai

        key = os.environ.get("OPENAI_API_KEY")
        if not key and not spec.base_url:
            raise LLMEndpointError("the OpenAI API needs a key: set OPENAI_API_KEY (it is read from the environment only)")
        self.model = spec.model
        self.spec = spec
        self.where = spec.base_url or "the OpenAI API"
        # Local servers (llama.cpp, vLLM) usually accept any key; the client insists on having one.
        self.client = openai.OpenAI(api_key=key or "no-key", base_url=spec.base_url or None,
                                    timeout=spec.timeout_s, max_retries=spec.max_retries)
        self._mode = None if spec.mode == "auto" else spec.mode
        self._echo_shift: int | None = None

    # --- plumbing ---------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        import openai

        try:
            return fn()
        except openai.APIConnectionError as exc:
            raise LLMEndpointError(f"cannot reach the LLM endpoint at {self.where}: {exc}") from exc
        except openai.AuthenticationError as exc:
            raise LLMEndpointError(f"{self.where} refused the API key (OPENAI_API_KEY): {exc.message}") from exc
        except openai.NotFoundError as exc:
            raise LLMEndpointError(f"{self.where} does not serve model '{self.model}': {exc.message}") from exc
        except openai.APIStatusError as exc:
            raise LLMEndpointError(f"{self.where} answered HTTP {exc.status_code}: {exc.message}") from exc

    def _map(self, fn: Callable[[Any], CallResult], items: Sequence[Any]) -> list[CallResult]:
        with ThreadPoolExecutor(max_workers=self.spec.concurrency) as pool:
            return list(pool.map(fn, items))

    # --- chat -------------------------------------------------------------------------------------

    def chat(self, requests: Sequence[ChatRequest]) -> list[CallResult]:
        return self._map(self._chat_one, requests)

    def _chat_one(self, request: ChatRequest) -> CallResult:
        messages = request["messages"]
        if messages[-1]["role"] == "assistant":
            # The API cannot continue a prefilled answer; the system prompt asks for that line instead.
            messages = messages[:-1]
        texts, prompt_tokens, completion_tokens = [], 0, 0
        for _ in range(request.get("n", 1)):  # one sample per call: not every server honours n > 1
            response = self._call(lambda: self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=request.get("max_tokens", 60),
                temperature=request.get("temperature", 1.0), top_p=request.get("top_p", 1.0),
                seed=request.get("seed", 0) + len(texts)))
            texts.append(response.choices[0].message.content or "")
            if response.usage:
                prompt_tokens += response.usage.prompt_tokens
                completion_tokens += response.usage.completion_tokens
        return CallResult(texts, prompt_tokens, completion_tokens)

    # --- simulation -------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        if self._mode is None:
            self._mode = self._probe_mode()
        return self._mode

    def _probe_mode(self) -> str:
        probe = {"prefix": "", "body": "a\tunknown\nb\tunknown\n", "slots": [2, 12]}
        for mode in ("echo", "chat"):
            try:
                distributions = getattr(self, f"_slots_{mode}")(probe).response
            except LLMEndpointError:
                raise
            except Exception:  # the endpoint does not support this mode
                continue
            if distributions and any(sum(d.values()) > 0 for d in distributions):
                return mode
        return "parse"

    def slots(self, requests: Sequence[SlotRequest]) -> list[CallResult]:
        runner = getattr(self, f"_slots_{self.mode}")
        return self._map(runner, requests)

    def _echo(self, prompt: str) -> Any:
        response = self._call(lambda: self.client.completions.create(
            model=self.model, prompt=prompt, echo=True, logprobs=self.spec.top_logprobs, max_tokens=1, temperature=0))
        return response

    def _echo_alignment(self) -> int:
        """0 if echoed entry i is p(token i | tokens < i) as at OpenAI; 1 if it is p(token i+1 | tokens <= i).

        llama.cpp's server does the latter when the prompt does not start with the model's BOS token.
        """
        if self._echo_shift is None:
            logprobs = self._echo(_ALIGNMENT_PROBE).choices[0].logprobs
            tokens, tops = list(logprobs.tokens), list(logprobs.top_logprobs)
            aligned = shifted = 0
            for i in range(1, len(tops)):
                if tops[i]:
                    best = max(tops[i], key=tops[i].get)
                    aligned += best == tokens[i]
                    shifted += i + 1 < len(tokens) and best == tokens[i + 1]
            self._echo_shift = 0 if aligned >= shifted else 1
        return self._echo_shift

    def _slots_echo(self, request: SlotRequest) -> CallResult:
        shift = self._echo_alignment()
        response = self._echo(request["prefix"] + request["body"])
        logprobs = response.choices[0].logprobs
        offsets = list(logprobs.text_offset)
        distributions = []
        for slot in request["slots"]:
            at = len(request["prefix"]) + slot
            # the token that starts at the slot ("unknown"): the distribution over what is written there
            index = next(i for i, offset in enumerate(offsets) if offset >= at)
            distributions.append(_value_distribution(logprobs.top_logprobs[index - shift] or {}))
        usage = response.usage
        return CallResult(distributions, usage.prompt_tokens if usage else 0)

    def _rewrite_messages(self, request: SlotRequest) -> list[dict[str, str]]:
        return [{"role": "user", "content": request["prefix"] + request["body"] + REWRITE_INSTRUCTION}]

    def _slots_chat(self, request: SlotRequest) -> CallResult:
        n_slots = len(request["slots"])
        response = self._call(lambda: self.client.chat.completions.create(
            model=self.model, messages=self._rewrite_messages(request), temperature=0,
            max_tokens=8 * n_slots + 16, logprobs=True, top_logprobs=min(self.spec.top_logprobs, 20)))
        content = response.choices[0].logprobs.content if response.choices[0].logprobs else None
        if not content:
            raise ValueError("no logprobs in the chat response")
        distributions = []
        text = ""
        for token in content:
            # a value token directly follows a tab on a line that is not <start>/<end>
            if text.endswith("\t") and token.token.strip().isdigit():
                distributions.append(_value_distribution({t.token: t.logprob for t in token.top_logprobs}))
            text += token.token
        return CallResult(_fit(distributions, n_slots), *_usage(response))

    def _slots_parse(self, request: SlotRequest) -> CallResult:
        n_slots = len(request["slots"])
        response = self._call(lambda: self.client.chat.completions.create(
            model=self.model, messages=self._rewrite_messages(request), temperature=0, max_tokens=8 * n_slots + 16))
        text = response.choices[0].message.content or ""
        values = [min(10, int(m.group(1))) for m in map(_VALUE_LINE.search, text.splitlines()) if m]
        return CallResult(_fit([{str(v): 1.0} for v in values], n_slots), *_usage(response))


def _value_distribution(top_logprobs: dict[str, float]) -> dict[str, float]:
    """Probabilities of "0".."10" among the top logprobs (tokens compared without surrounding spaces)."""
    distribution = {value: 0.0 for value in VALUE_STRINGS}
    for token, logprob in top_logprobs.items():
        value = token.strip()
        if value in distribution:
            distribution[value] += math.exp(logprob)
    return distribution


def _fit(distributions: list[dict[str, float]], n_slots: int) -> list[dict[str, float]]:
    """Garbage in, zeros out: a reply with too few lines predicts 0 for the tokens it skipped."""
    return (distributions + [{"0": 1.0}] * n_slots)[:n_slots]


def _usage(response: Any) -> tuple[int, int]:
    usage = response.usage
    return (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
