"""Any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's server) through the `openai` client.

The transport only sends requests: chat completions (with top logprobs per generated token when asked),
and slot requests answered from prompt logprobs (a completions call with echo=True and logprobs scores the
prompt itself; the top logprobs of the token at each slot are the distribution there). Which simulation
uses which is the simulators' business (`autointerp/simulate/`). Retries with backoff and timeouts are the
client's own; requests run with bounded concurrency.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from autointerp.errors import ConfigError
from autointerp.llm import REGISTRY
from autointerp.llm.base import (LLM, LOGPROB_FLOOR, ChatRequest, JudgeRequest, LLMEndpointError, SlotRequest,
                                 Unsupported, answers_from_text, value_distribution)
from autointerp.llm.cache import CallResult

# Counting 1..16 is predictable enough for any LM: it tells how an endpoint aligns echoed logprobs.
_ALIGNMENT_PROBE = ", ".join(str(i) for i in range(1, 17))
# What a completion of max_tokens tokens may hold at most: tokens of real vocabularies are far shorter.
MAX_CHARS_PER_TOKEN = 32
T = TypeVar("T")


@dataclass(frozen=True)
class OpenAIOptions:
    """The API key is read from OPENAI_API_KEY only."""

    model: str = "gpt-4o-mini"  # the endpoint's model name
    base_url: str = ""  # vLLM, llama.cpp, ...; empty: the OpenAI API
    top_logprobs: int = 15  # alternatives read per position (the reference reads 15)
    concurrency: int = 4  # requests in flight
    timeout_s: float = 120.0
    max_retries: int = 3  # the openai client's own retries with backoff

    def check(self, where: str) -> None:
        if self.top_logprobs < 1 or self.concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0:
            raise ConfigError(f"{where}: top_logprobs and concurrency must be positive, max_retries >= 0, "
                              "timeout_s > 0")


@REGISTRY.register("openai", OpenAIOptions)
class OpenAILLM(LLM):
    backend = "openai"

    @classmethod
    def name_for(cls, options: OpenAIOptions, base_dir: Path | None = None) -> str:
        return f"{cls.backend}:{options.model}"

    def __init__(self, options: OpenAIOptions, base_dir: Path | None = None):
        import openai

        key = os.environ.get("OPENAI_API_KEY")
        if not key and not options.base_url:
            raise LLMEndpointError("the OpenAI API needs a key: set OPENAI_API_KEY (it is read from the environment only)")
        self.model = options.model
        self.options = options
        self.where = options.base_url or "the OpenAI API"
        # Local servers (llama.cpp, vLLM) usually accept any key; the client insists on having one.
        self.client = openai.OpenAI(api_key=key or "no-key", base_url=options.base_url or None,
                                    timeout=options.timeout_s, max_retries=options.max_retries)
        self._echo_shift: int | None = None

    def close(self) -> None:
        self.client.close()

    # --- plumbing ---------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        import openai

        try:
            return fn()
        except openai.APIConnectionError as exc:
            raise LLMEndpointError(f"cannot reach the LLM endpoint at {self.where}: {exc}") from exc
        except openai.AuthenticationError as exc:
            raise LLMEndpointError(f"{self.where} refused the API key (OPENAI_API_KEY): {_shorten(exc.message)}") from exc
        except openai.NotFoundError as exc:
            raise LLMEndpointError(f"{self.where} does not serve model '{self.model}': {_shorten(exc.message)}") from exc
        except openai.APIStatusError as exc:
            raise LLMEndpointError(f"{self.where} answered HTTP {exc.status_code}: {_shorten(exc.message)}") from exc
        except (openai.APIResponseValidationError, ValueError) as exc:  # ValueError: a body that is not JSON
            raise LLMEndpointError(f"{self.where} answered something that is not an OpenAI API response: "
                                   f"{_shorten(str(exc))}") from exc

    def _read(self, what: str, read: Callable[[], T]) -> T:
        """Read a parsed response: a body of the wrong shape (HTML, no choices, bad fields) is the endpoint's
        fault, said with its address instead of the AttributeError or IndexError it would raise here."""
        try:
            return read()
        except LLMEndpointError:
            raise
        except (AttributeError, IndexError, KeyError, TypeError, ValueError, StopIteration) as exc:
            raise LLMEndpointError(f"{self.where} answered something that is not {what}: "
                                   f"{type(exc).__name__}: {_shorten(str(exc))}") from exc

    def _tokens(self, value: Any, field: str) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
            raise LLMEndpointError(f"{self.where} reported usage.{field} = {_shorten(repr(value))}, "
                                   "which is not a token count")
        return value

    def _map(self, fn: Callable[[Any], CallResult], items: Sequence[Any]) -> list[CallResult]:
        with ThreadPoolExecutor(max_workers=self.options.concurrency) as pool:
            return list(pool.map(fn, items))

    # --- chat -------------------------------------------------------------------------------------

    def chat(self, requests: Sequence[ChatRequest]) -> list[CallResult]:
        return self._map(self._chat_one, requests)

    def _chat_one(self, request: ChatRequest) -> CallResult:
        messages = request["messages"]
        if messages[-1]["role"] == "assistant":
            # The API cannot continue a prefilled answer; the system prompt asks for that line instead.
            messages = messages[:-1]
        top = request.get("top_logprobs")
        extra = {"logprobs": True, "top_logprobs": min(int(top), 20)} if top else {}
        max_tokens = int(request.get("max_tokens", 60))
        completions: list[Any] = []
        prompt_tokens = completion_tokens = 0
        for _ in range(request.get("n", 1)):  # one sample per call: not every server honours n > 1
            response = self._call(lambda: self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens,
                temperature=request.get("temperature", 1.0), top_p=request.get("top_p", 1.0),
                seed=request.get("seed", 0) + len(completions), **extra))
            usage = self._read("an OpenAI chat completion", lambda: response.usage)
            used = (self._tokens(getattr(usage, "prompt_tokens", None), "prompt_tokens"),
                    self._tokens(getattr(usage, "completion_tokens", None), "completion_tokens")) if usage else (0, 0)
            completions.append(self._read("an OpenAI chat completion",
                                          lambda: _completion(response, max_tokens, used[1], bool(top))))
            prompt_tokens += used[0]
            completion_tokens += used[1]
        return CallResult(completions, prompt_tokens, completion_tokens)

    # --- judge: the first token's logprobs, else the parsed answer --------------------------------

    def judge(self, requests: Sequence[JudgeRequest]) -> list[CallResult]:
        return self._map(self._judge_one, requests)

    def _judge_one(self, request: JudgeRequest) -> CallResult:
        import openai

        answers = list(request["answers"])
        ask = lambda logprobs: self._call(lambda: self.client.chat.completions.create(  # noqa: E731
            model=self.model, messages=request["messages"], max_tokens=1, temperature=0, seed=0,
            **({"logprobs": True, "top_logprobs": min(self.options.top_logprobs, 20)} if logprobs else {})))
        try:
            response = ask(True)
        except LLMEndpointError as exc:  # an endpoint without chat logprobs may refuse the parameter
            if not isinstance(exc.__cause__, openai.BadRequestError):
                raise
            response = ask(False)
        if not response.choices:
            raise LLMEndpointError(f"{self.where} answered a judge request with no choices")
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs else None
        text = choice.message.content or ""
        if content and content[0].top_logprobs:
            judged = {a: LOGPROB_FLOOR for a in answers}
            for alt in content[0].top_logprobs:
                said = answers_from_text(alt.token, answers)
                for a in answers:
                    if said[a] == 0.0:  # this alternative starts with answer a
                        judged[a] = _logaddexp(judged[a], alt.logprob)
        else:
            judged = answers_from_text(text, answers)
        usage = response.usage
        return CallResult(judged, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)

    # --- slots: prompt logprobs (echo) ------------------------------------------------------------

    def slots(self, requests: Sequence[SlotRequest]) -> list[CallResult]:
        return self._map(self._slots_one, requests)

    def _echo(self, prompt: str) -> Any:
        import openai

        try:
            return self._call(lambda: self.client.completions.create(
                model=self.model, prompt=prompt, echo=True, logprobs=self.options.top_logprobs, max_tokens=1,
                temperature=0))
        except LLMEndpointError as exc:
            if isinstance(exc.__cause__, (openai.BadRequestError, openai.NotFoundError)):
                raise Unsupported(f"{self.where} gives no prompt logprobs (completions with echo and logprobs): "
                                  f"{exc}; use the chat or parse simulator with it") from exc
            raise

    def _echo_alignment(self) -> int:
        """0 if echoed entry i is p(token i | tokens < i) as at OpenAI; 1 if it is p(token i+1 | tokens <= i).

        llama.cpp's server does the latter when the prompt does not start with the model's BOS token.
        """
        if self._echo_shift is None:
            probe = self._echo(_ALIGNMENT_PROBE)
            logprobs = self._read("an OpenAI completion", lambda: probe.choices[0].logprobs)
            if logprobs is None or not logprobs.top_logprobs:
                raise Unsupported(f"{self.where} echoes no prompt logprobs; use the chat or parse simulator with it")
            tokens, tops = list(logprobs.tokens), list(logprobs.top_logprobs)
            aligned = shifted = 0
            for i in range(1, len(tops)):
                if tops[i]:
                    best = max(tops[i], key=tops[i].get)
                    aligned += best == tokens[i]
                    shifted += i + 1 < len(tokens) and best == tokens[i + 1]
            self._echo_shift = 0 if aligned >= shifted else 1
        return self._echo_shift

    def _slots_one(self, request: SlotRequest) -> CallResult:
        shift = self._echo_alignment()
        response = self._echo(request["prefix"] + request["body"])
        distributions = self._read("an OpenAI completion with prompt logprobs",
                                   lambda: _slot_distributions(request, response.choices[0].logprobs, shift))
        usage = self._read("an OpenAI completion", lambda: response.usage)
        return CallResult(distributions, self._tokens(getattr(usage, "prompt_tokens", None), "prompt_tokens"))


def _slot_distributions(request: SlotRequest, logprobs: Any, shift: int) -> list[dict[str, float]]:
    offsets = list(logprobs.text_offset)
    distributions = []
    for slot in request["slots"]:
        at = len(request["prefix"]) + slot
        # the token that starts at the slot (the placeholder): the distribution over what is written there
        index = next(i for i, offset in enumerate(offsets) if offset >= at)
        distributions.append(value_distribution(logprobs.top_logprobs[index - shift] or {}))
    return distributions


def _shorten(text: str, limit: int = 300) -> str:
    """An endpoint's own words, bounded: an error must stay one readable line, whatever it answered."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _completion(response: Any, max_tokens: int, reported_tokens: int, logprobs: bool) -> Any:
    """The first choice's text (with logprobs when asked), at most `max_tokens` long: a server that ignores
    max_tokens must not fill the cache, the store and error lines with what we never asked for."""
    choice = response.choices[0]
    content = choice.message.content
    if content is not None and not isinstance(content, str):
        raise TypeError(f"message.content is {type(content).__name__}, not a string")
    text = content or ""  # null content: no answer, which the explainer draws again and never caches
    if logprobs:
        return _with_logprobs(choice, text, max_tokens)
    limit = max_tokens * MAX_CHARS_PER_TOKEN
    if reported_tokens > max_tokens:
        limit = min(limit, len(text) * max_tokens // reported_tokens)
    return text[:limit]


def _with_logprobs(choice: Any, text: str, max_tokens: int) -> dict[str, Any]:
    content = choice.logprobs.content if choice.logprobs else None
    if not content:
        raise Unsupported("the endpoint returned no chat logprobs; use the parse simulator with it")
    tokens = [t.token for t in content]
    if len(tokens) > max_tokens:
        content, tokens = content[:max_tokens], tokens[:max_tokens]
        text = "".join(tokens)
    return {"text": text, "tokens": tokens,
            "top_logprobs": [{alt.token: alt.logprob for alt in t.top_logprobs} for t in content]}


def _logaddexp(a: float, b: float) -> float:
    import math

    if a <= LOGPROB_FLOOR:
        return max(b, LOGPROB_FLOOR)
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))
