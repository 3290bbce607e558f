"""An LLM run in-process with `transformers`: any causal LM from a Hub id, a directory or a GGUF file.

Simulation reads every slot of an excerpt in ONE forward pass, on top of the few-shot prefix's KV
cache (computed once, reused for every excerpt and neuron), with excerpts batched. Where the
tokenizer splits "10" into "1" "0", one extra query token "1" per slot, which attends only to the
text before its slot (a 4D attention mask), gives p("0" | "1") in that same pass, hence p(10).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from autointerp.config import DEFAULT_LLM
from autointerp.devices import (batch_size_for, check_device_spec, free_memory, native_bf16_flags,  # noqa: F401
                                pick_dtype, resolve_device)  # native_bf16_flags: bench/explain.py reads it from here
from autointerp.errors import ConfigError
from autointerp.llm import REGISTRY
from autointerp.llm.base import (LLM, VALUE_STRINGS, ChatRequest, JudgeRequest, SlotRequest, Unsupported,
                                 answer_logprobs, answer_token_ids)
from autointerp.llm.batched import BatchedGenerator, Row
from autointerp.llm.llamacpp import LlamaCppGenerator
from autointerp.llm.cache import CallResult
from autointerp.subject.sources import ModelSource, load_tokenizer, model_revision, resolve_source


@dataclass(frozen=True)
class LocalOptions:
    model: str = DEFAULT_LLM  # a model source like a subject's: Hub id, directory, .gguf, package:, embedded:
    dtype: str = "auto"  # auto = bfloat16 where the device computes it natively (CUDA: else float16), else float32
    engine: str = "auto"  # what generates chat completions: transformers, llama.cpp (GGUF sources), auto (below)
    batch_size: int = 4  # excerpts per simulator forward pass (on the CPU)
    judge_batch: int = 20  # judge prompts prefilled together after their shared prefix (on the CPU)
    chat_batch: int = 8  # completions sampled together on the CPU (decoding costs little more for 8 than for 1)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (autointerp/devices.py); auto = CUDA where torch sees it
    device_batch: int = 128  # on CUDA: completions / excerpts per forward, at most (fewer if free memory says so)

    def check(self, where: str) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"{where}.dtype must be auto, float32, bfloat16 or float16, got '{self.dtype}'")
        if self.engine not in ENGINES:
            raise ConfigError(f"{where}.engine must be one of {', '.join(ENGINES)}, got '{self.engine}'")
        if min(self.batch_size, self.chat_batch, self.judge_batch, self.device_batch) < 1:
            raise ConfigError(f"{where}: batch_size, chat_batch, judge_batch and device_batch must be positive "
                              "integers")
        check_device_spec(self.device, f"{where}.device")

    def resolved_device(self) -> Any:
        """The torch.device `device` names on this machine (a ConfigError naming the key where it is absent)."""
        return resolve_device(self.device, DEVICE_KEY)

    def rows_per_call(self) -> int:
        """Requests worth handing the engine at once: `device_batch` on CUDA (batches of 64-256 keep a GPU busy),
        `chat_batch` on the CPU."""
        return self.device_batch if self.resolved_device().type == "cuda" else self.chat_batch


DEVICE_KEY = "llm.device (local backend)"


ENGINES = ("auto", "transformers", "llama.cpp")


def native_bf16() -> bool:
    return bool(native_bf16_flags())


def chat_engine(options: LocalOptions, source: ModelSource) -> str:
    """`auto`: transformers in bfloat16 where the CPU computes it natively, else llama.cpp where the model is a
    GGUF file, else transformers in float32. Measured on Qwen2.5-Coder-1.5B Q4_K_M, 2 cores (bench/generation.py):
    transformers bf16 888 explanations/hour, llama.cpp 705, transformers float32 435 (12 per batch)."""
    if options.engine != "auto":
        if options.engine == "llama.cpp" and not source.gguf_file:
            raise ConfigError(f"engine llama.cpp reads GGUF files; '{options.model}' is not one")
        return options.engine
    if options.resolved_device().type == "cuda":  # the llama.cpp build here is CPU-only; transformers runs on CUDA
        return "transformers"
    if source.gguf_file and not native_bf16() and options.dtype in ("auto", "float32"):
        return "llama.cpp"
    return "transformers"


def fast_dtype(requested: str = "auto") -> Any:
    """bfloat16 where the CPU computes it natively (avx512_bf16/AMX), else float32.

    Measured here (Qwen2.5-Coder-0.5B from its GGUF, one forward over 1000 tokens): bf16 3.1 s, fp32 6.8 s,
    although transformers warns that GGUF checkpoints are fastest in float32.
    """
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    return torch.bfloat16 if native_bf16() else torch.float32


def row_bytes(config: Any, tokens: int, dtype_bytes: int) -> int:
    """Device memory one row of a batch needs for a sequence of `tokens` tokens (an estimate that errs high): its KV
    cache (keys and values of every layer), one layer's activations during prefill (about 8 hidden-state-sized and
    3 MLP-sized tensors, and the attention weights where the kernel materialises them), and the last position's
    logits in float32 with their softmax and sort copies."""
    text = getattr(config, "text_config", None) or config
    hidden = int(text.hidden_size)
    heads = int(text.num_attention_heads)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    layers = int(text.num_hidden_layers)
    intermediate = int(getattr(text, "intermediate_size", None) or 4 * hidden)
    kv = 2 * layers * kv_heads * head_dim * tokens * dtype_bytes
    prefill = tokens * (8 * hidden + 3 * intermediate) * dtype_bytes + heads * tokens * tokens * dtype_bytes
    logits = int(text.vocab_size) * 4 * 4
    return kv + prefill + logits


@REGISTRY.register("local", LocalOptions)
class LocalLLM(LLM):
    backend = "local"

    @classmethod
    def name_for(cls, options: LocalOptions, base_dir: Path | None = None) -> str:
        source = resolve_source(options.model, base_dir)
        # The engine samples differently: its completions are cached and credited under their own name.
        engine = "+llama.cpp" if chat_engine(options, source) == "llama.cpp" else ""
        return f"{cls.backend}:{cls._model_label(options.model, source)}{engine}"

    @staticmethod
    def _model_label(source: str, resolved: ModelSource) -> str:
        return f"{source}@{model_revision(resolved)}"

    def __init__(self, options: LocalOptions, base_dir: Path | None = None, reuse_prefix: bool = True):
        resolved: ModelSource = resolve_source(options.model, base_dir)
        self._setup(options, self._model_label(options.model, resolved), load_tokenizer(resolved), None, resolved,
                    reuse_prefix)

    @classmethod
    def in_memory(cls, lm: Any, tokenizer: Any, options: LocalOptions | None = None, label: str = "in-memory",
                  reuse_prefix: bool = True) -> "LocalLLM":
        """A LocalLLM over a model already built (bench/gpu.py builds models from configs with random weights, since
        no weights can travel to the GPU machine); moved to `options.device` in `options.dtype`."""
        options = options or LocalOptions(engine="transformers")
        llm = cls.__new__(cls)
        llm._setup(options, label, tokenizer, lm, None, reuse_prefix)
        return llm

    def _setup(self, options: LocalOptions, label: str, tokenizer: Any, lm: Any, source: ModelSource | None,
               reuse_prefix: bool) -> None:
        self.model = label
        self.device: Any = options.resolved_device()
        self.on_cuda = self.device.type == "cuda"
        self.dtype: Any = pick_dtype(options.dtype, self.device) if self.on_cuda else fast_dtype(options.dtype)
        self.batch_size = options.batch_size
        self.device_batch = options.device_batch
        self.reuse_prefix = reuse_prefix  # False only to measure what the prefix cache saves (bench/)
        self.tokenizer = tokenizer
        self.engine = chat_engine(options, source) if source is not None else "transformers"
        self._source = source
        self._lm: Any = None if lm is None else lm.to(device=self.device, dtype=self.dtype).eval()
        self._prefix: tuple[str, list[int], Any] | None = None  # (text, ids, KV cache) of the last prefix
        self.chat_batch = options.chat_batch
        self.judge_batch = options.judge_batch
        self.generator: BatchedGenerator | LlamaCppGenerator
        if self.engine == "llama.cpp" and source is not None:
            self.generator = LlamaCppGenerator(Path(source.location) / str(source.gguf_file), self.tokenizer)
        else:
            self.generator = BatchedGenerator(self.lm, self.tokenizer, reuse_prefix, self.device)
        self._digits = [self._single_token(v) for v in VALUE_STRINGS[:10]]
        self._ten = self._single_token("10", required=False)

    @property
    def lm(self) -> Any:
        """The transformers model: loaded at once for that engine, on the first slots call for llama.cpp's
        (the slot simulator reads logprobs at chosen positions, which llama.cpp's API does not give in one pass)."""
        if self._lm is None:
            from transformers import AutoModelForCausalLM

            self._lm = AutoModelForCausalLM.from_pretrained(self._source.location, dtype=self.dtype,
                                                            **self._source.pretrained_kwargs()).to(self.device).eval()
        return self._lm

    def rows_per_batch(self, tokens_per_row: int) -> int:
        """Rows (completions, or excerpts for slots) per forward: the configured sizes on the CPU; on CUDA as many
        as free memory holds for rows of `tokens_per_row` tokens, at most `device_batch`."""
        free = free_memory(self.device)
        if free is None:
            return self.chat_batch
        per_row = row_bytes(self.lm.config, tokens_per_row, self.dtype.itemsize)
        return batch_size_for(free, per_row, low=1, high=self.device_batch, multiple=8)

    # --- chat -----------------------------------------------------------------------------------

    def chat(self, requests: Sequence[ChatRequest]) -> list[CallResult]:
        """Every request's `n` samples, generated `chat_batch` rows at a time (llm/batched.py)."""
        if any(r.get("top_logprobs") for r in requests):
            raise Unsupported("the local backend does not return chat logprobs: use a simulator that reads "
                              "slots (all_at_once) with it")
        rows, owners = [], []
        for i, request in enumerate(requests):
            ids = self._prompt_ids(request["messages"])
            for sample in range(request.get("n", 1)):
                rows.append(Row(ids, request.get("seed", 0) + sample, request.get("temperature", 1.0),
                                request.get("top_p", 1.0), request.get("max_tokens", 60)))
                owners.append(i)
        # Similar prompts side by side: less padding in a batch.
        order = sorted(range(len(rows)), key=lambda k: len(rows[k].ids))
        generated: list[tuple[list[int], int]] = [([], 0)] * len(rows)
        per_batch = self.chat_batch
        if self.on_cuda and self.engine == "transformers" and rows:
            per_batch = self.rows_per_batch(max(len(r.ids) + r.max_tokens for r in rows))
        for lo in range(0, len(order), per_batch):
            chunk = order[lo:lo + per_batch]
            for k, result in zip(chunk, self.generator.generate([rows[k] for k in chunk])):
                generated[k] = result
        results = [CallResult([], 0, 0) for _ in requests]
        for k, (tokens, prompt_tokens) in enumerate(generated):
            result = results[owners[k]]
            result.response.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
            result.prompt_tokens = prompt_tokens
            result.completion_tokens += len(tokens)
        return results

    def _prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        prefill = messages[-1]["role"] == "assistant"  # continue the primed answer
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=not prefill,
                                                  continue_final_message=prefill)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- judge ----------------------------------------------------------------------------------

    def judge(self, requests: Sequence[JudgeRequest]) -> list[CallResult]:
        """The log-probability of each answer as the reply's first token, from the prompt's prefill alone. Prompts
        are taken in order (a scorer sends one explanation's excerpts together), `judge_batch` at a time: their
        shared part (instructions, examples, the explanation) is computed once by the engine."""
        results: list[CallResult] = []
        answer_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}
        prompts = [self._prompt_ids(r["messages"]) for r in requests]
        # judge_batch on the CPU; on CUDA what free memory holds (llama.cpp reads one prompt at a time anyway)
        per_batch = self.judge_batch if self.engine == "llama.cpp" or free_memory(self.device) is None else \
            self.rows_per_batch(max(len(p) for p in prompts))
        for lo in range(0, len(requests), per_batch):
            chunk = requests[lo:lo + per_batch]
            rows = prompts[lo:lo + per_batch]
            logprobs = self.generator.last_log_softmax(rows)
            for request, row, lp in zip(chunk, rows, logprobs):
                answers = tuple(request["answers"])
                ids = answer_ids.setdefault(answers, answer_token_ids(self.tokenizer, answers))
                results.append(CallResult(answer_logprobs(lp, ids), prompt_tokens=len(row)))
        return results

    # --- slots ----------------------------------------------------------------------------------

    def slots(self, requests: Sequence[SlotRequest]) -> list[CallResult]:
        results: list[CallResult | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: (requests[i]["prefix"], len(requests[i]["body"])))
        per_batch = self.batch_size
        if self.on_cuda and requests:
            # A row holds a copy of its prefix's cache and its excerpt (whose characters bound its tokens from
            # above) plus one query token per slot where "10" is two tokens.
            prefix_tokens = max(len(self.tokenizer(p)["input_ids"]) for p in {r["prefix"] for r in requests})
            per_batch = self.rows_per_batch(prefix_tokens + max(len(r["body"]) + len(r["slots"]) for r in requests))
        for start in range(0, len(order), per_batch):
            chunk = order[start:start + per_batch]
            for i, result in zip(chunk, self._slots_batch([requests[i] for i in chunk])):
                results[i] = result
        return results  # type: ignore[return-value]

    def _slots_batch(self, requests: Sequence[SlotRequest]) -> list[CallResult]:
        import torch

        prefix = requests[0]["prefix"]
        assert all(r["prefix"] == prefix for r in requests)
        prefix_ids, prefix_cache = self._prefix_cache(prefix)
        n_prefix = len(prefix_ids)
        rows = [self._body_tokens(r["body"], r["slots"]) for r in requests]
        branch = self._ten is None
        lengths = [len(ids) + (len(slots) if branch else 0) for ids, slots in rows]
        width = max(lengths)
        batch = len(rows)
        one = self._digits[1]
        # Built on the host (per-row Python writes), moved once.
        input_ids = torch.full((batch, width), one, dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        mask = torch.zeros((batch, 1, width, n_prefix + width), dtype=torch.bool)
        mask[:, :, :, :n_prefix] = True  # everything sees the few-shot prefix (padding too: no empty rows)
        for b, (ids, slots) in enumerate(rows):
            n = len(ids)
            input_ids[b, :n] = torch.tensor(ids)
            positions[b, :n] = torch.arange(n_prefix, n_prefix + n)
            mask[b, 0, :n, n_prefix:n_prefix + n] = torch.tril(torch.ones(n, n, dtype=torch.bool))
            if branch:  # query k: the token "1" written at slot k, seeing only the text before it
                for k, pos in enumerate(slots):
                    q = n + k
                    positions[b, q] = n_prefix + pos + 1
                    mask[b, 0, q, n_prefix:n_prefix + pos + 1] = True
                    mask[b, 0, q, n_prefix + q] = True
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(batch)
        device = self.device
        input_ids, positions, mask = input_ids.to(device), positions.to(device), mask.to(device)
        with torch.inference_mode():
            hidden = self.lm.get_decoder()(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                                          past_key_values=cache, use_cache=True).last_hidden_state
            dists = []  # per row: (slots, 11) probabilities of 0..10
            for b, (ids, slots) in enumerate(rows):
                at = torch.tensor(slots, device=device)
                probs = torch.softmax(self.lm.get_output_embeddings()(hidden[b, at]).float(), dim=-1)
                digits = probs[:, self._digits]  # (S, 10)
                if branch:
                    after_one = torch.softmax(
                        self.lm.get_output_embeddings()(hidden[b, len(ids) + torch.arange(len(slots), device=device)]
                                                        ).float(), -1)
                    zero_after_one = after_one[:, self._digits[0]]
                    ten = digits[:, 1] * zero_after_one
                    digits = digits.clone()
                    digits[:, 1] = digits[:, 1] * (1 - zero_after_one)
                else:
                    ten = probs[:, self._ten]
                dists.append(torch.cat([digits, ten[:, None]], dim=1))
            # One device-to-host copy for the batch (a copy per row would wait on the GPU once per excerpt).
            values = torch.cat(dists).tolist() if dists else []
        answers, start = [], 0
        for ids, slots in rows:
            answers.append(CallResult([dict(zip(VALUE_STRINGS, row)) for row in values[start:start + len(slots)]],
                                      prompt_tokens=len(ids) + n_prefix))
            start += len(slots)
        return answers

    def _prefix_cache(self, prefix: str) -> tuple[list[int], Any]:
        import torch

        if self._prefix is None or self._prefix[0] != prefix or not self.reuse_prefix:
            from transformers import DynamicCache

            ids = self.tokenizer(prefix, add_special_tokens=True)["input_ids"]
            cache = DynamicCache()
            with torch.inference_mode():
                self.lm(input_ids=torch.tensor([ids], device=self.device), past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
            self._prefix = (prefix, ids, cache)
        return self._prefix[1], self._prefix[2]

    def _body_tokens(self, body: str, slots: Sequence[int]) -> tuple[list[int], list[int]]:
        """Token ids of `body`, cut at every slot so a token boundary falls exactly there.

        Returns the ids and, per slot, the index of the last token before it: the position whose
        next-token distribution is the value written at the slot.
        """
        ids: list[int] = []
        positions: list[int] = []
        cuts = [0, *slots, len(body)]
        for lo, hi in zip(cuts, cuts[1:]):
            if lo > 0:
                positions.append(len(ids) - 1)
            ids += self.tokenizer(body[lo:hi], add_special_tokens=False)["input_ids"]
        return ids, positions

    def _single_token(self, text: str, required: bool = True) -> int | None:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return ids[0]
        if required:
            raise ValueError(f"the simulator's tokenizer splits '{text}' into {len(ids)} tokens")
        return None
