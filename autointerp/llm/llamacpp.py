"""Sampling chat completions with llama.cpp in-process (`llama-cpp-python`), from the GGUF file itself.

The local backend's generator where the CPU has no native bf16 (docs/method.md s.9, README Cost): there
transformers computes a GGUF model in float32 (435 explanations/hour for Qwen2.5-Coder-1.5B on 2 cores, 12 per
batch), while llama.cpp reads the 4-bit weights directly (705/hour, one at a time; bench/generation.py). It generates one prompt at a time (its Python
API has no batched sampling), but keeps the KV cache of the last prompt and reuses the part the next one
shares with it: the few-shot prefix is computed once. Same interface as `batched.BatchedGenerator`: rows of
token ids in, (completion ids, prompt tokens) out; the tokenizer is the one transformers builds from the same
GGUF, so the ids agree.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

from autointerp.errors import ModelLoadError
from autointerp.llm.batched import Row, Timings, stop_tokens


class LlamaCppGenerator:
    def __init__(self, gguf: Path, tokenizer: Any, n_ctx: int = 4096):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelLoadError("engine llama.cpp needs llama-cpp-python (./scripts/setup.sh installs it)") from e
        self.lm = Llama(str(gguf), n_ctx=n_ctx, n_threads=os.cpu_count() or 1, verbose=False)
        self.stop_ids, self.newline_ids = stop_tokens(tokenizer)
        self.stop_ids.add(self.lm.token_eos())
        self.timings = Timings()

    def generate(self, rows: Sequence[Row]) -> list[tuple[list[int], int]]:
        results = []
        for row in rows:
            reused = self._shared(row.ids)  # KV positions kept from the last prompt that this one starts with
            started = prefilled = time.monotonic()
            self.lm.set_seed(row.seed % 2**32)
            out: list[int] = []
            # top_k 0 and min_p 0: plain temperature / nucleus sampling, as the transformers generator does.
            for token in self.lm.generate(row.ids, temp=row.temperature, top_p=row.top_p, top_k=0, min_p=0.0):
                if not out:  # the prompt has been read when the first token comes out
                    prefilled = time.monotonic()
                if token in self.stop_ids or token in self.newline_ids:
                    break
                out.append(token)
                if len(out) >= row.max_tokens:
                    break
            done = time.monotonic()
            self.timings.prefill_s += prefilled - started
            self.timings.decode_s += done - prefilled
            self.timings.prompt_tokens += len(row.ids) - reused
            self.timings.generated_tokens += len(out)
            self.timings.batches += 1
            results.append((out, len(row.ids)))
        return results

    def last_log_softmax(self, rows: Sequence[Sequence[int]]) -> Any:
        """(rows, vocabulary) log-softmax of the next token after each row: prefill only. Each row evaluates only
        what it does not share with the tokens already in the KV cache (`n_tokens` is rewound to the shared
        part, which drops the rest), so the judge prompts of one explanation compute their prefix once."""
        import numpy as np

        out = []
        for ids in rows:
            started = time.monotonic()
            shared = min(self._shared(ids), len(ids) - 1)  # at least one token evaluated: its logits are read
            self.lm.n_tokens = shared
            self.lm.eval(list(ids[shared:]))
            # Without logits_all, llama.cpp keeps the last evaluated position's logits only: exactly these.
            logits = np.ctypeslib.as_array(self.lm._ctx.get_logits(), shape=(self.lm.n_vocab(),)).astype(np.float64)
            logits -= logits.max()
            out.append(logits - np.log(np.exp(logits).sum()))
            self.timings.prefill_s += time.monotonic() - started
            self.timings.prompt_tokens += len(ids) - shared
            self.timings.batches += 1
        return out

    def _shared(self, ids: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self.lm._input_ids, ids):
            if a != b:
                break
            n += 1
        return n
