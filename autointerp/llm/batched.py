"""Sampling several chat completions at once from an in-process causal LM (the local backend's `chat`).

CPU decoding is bound by memory bandwidth, so one forward step for 8 sequences costs little more than for
one. The prompts of an explainer share their system message and few-shot examples: that common prefix is
computed once and kept (its KV cache is reused while prompts keep starting with it), and each prompt's own
part is appended after it, padded in the middle so that every row ends at the same column. Each row
samples with its own seeded generator, so a completion depends on its request, not on what it was batched
with (up to float rounding). Only the last position's logits are computed (`logits_to_keep=1`): the
vocabulary projection of every prompt position would otherwise cost as much as several layers. A row stops at the end-of-turn token or at a line break (an explanation is one
line), and the batch stops when every row has.

On CUDA (`device`), batches are larger (64-256 rows, LocalLLM sizes them from free memory) and every tensor lives
on the device: each row's seeded generator is a device generator, and a step samples every row with batched
tensor ops (temperature, top-p over the sorted vocabulary) and one host copy of the chosen tokens, so the GPU
does not wait on a Python loop of per-row syncs. Prompts are left padded (after the shared prefix).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class Timings:
    """Where generation time goes (bench/explain.py prints it)."""

    prefix_s: float = 0.0  # the shared few-shot prefix, computed when it changes
    prefill_s: float = 0.0  # each prompt's own part
    decode_s: float = 0.0  # sampling token after token
    prompt_tokens: int = 0  # read in prefill (the prefix's not counted)
    generated_tokens: int = 0
    batches: int = 0


@dataclass(frozen=True)
class Row:
    ids: list[int]  # the prompt's token ids
    seed: int
    temperature: float
    top_p: float
    max_tokens: int


MIN_SHARED = 32  # tokens a prompt must share with the kept prefix to reuse it (else not worth a copy)


def _crop(cache: Any, length: int) -> None:
    """Keep the first `length` positions of a KV cache (transformers crops by a negative count)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def common_prefix(rows: Sequence[list[int]]) -> int:
    """Length of the longest prefix all rows share, leaving each at least one token of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def stop_tokens(tokenizer: Any) -> tuple[set[int], set[int]]:
    """(end-of-turn ids, ids of tokens holding a line break): where an explanation, one line, ends."""
    stop = {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
    newline = {i for t, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([t])}
    return stop, newline


class BatchedGenerator:
    def __init__(self, lm: Any, tokenizer: Any, reuse_prefix: bool = True, device: Any = "cpu"):
        import torch

        self.lm, self.tokenizer, self.reuse_prefix = lm, tokenizer, reuse_prefix
        self.device = torch.device(device)
        self._prefix: tuple[tuple[int, ...], Any] | None = None  # (ids, KV cache) of the last common prefix
        self.stop_ids, self.newline_ids = stop_tokens(tokenizer)
        self.timings = Timings()

    def prefix_cache(self, ids: Sequence[int]) -> tuple[int, Any]:
        """(n, a copy of the KV cache of ids[:n]): n is what `ids` shares with the kept prefix when that is worth
        reusing (prompts after the first compute only what differs), else all of `ids`, computed and kept."""
        import torch
        from transformers import DynamicCache

        if self.reuse_prefix and self._prefix is not None:
            kept, cache = self._prefix
            shared = common_prefix([list(kept) + [-1], list(ids) + [-2]])
            if shared >= MIN_SHARED:
                if shared < len(kept):  # keep only the part prompts share
                    _crop(cache, shared)
                    self._prefix = (kept[:shared], cache)
                return shared, copy.deepcopy(cache)
        cache = DynamicCache()
        started = time.monotonic()
        if ids:
            with torch.inference_mode():
                self.lm(input_ids=torch.tensor([list(ids)], device=self.device), past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
        self.timings.prefix_s += time.monotonic() - started
        self._prefix = (tuple(ids), cache)
        return len(ids), copy.deepcopy(cache)

    def generate(self, rows: Sequence[Row]) -> list[tuple[list[int], int]]:
        """(new token ids, prompt tokens) per row. Rows with the same prompt (several samples of one request)
        share its computation: each distinct prompt is read once, then its cache is copied to its rows."""
        import torch

        shared, cache = self.prefix_cache(rows[0].ids[:common_prefix([r.ids for r in rows])])
        distinct: dict[tuple[int, ...], int] = {}
        owner = [distinct.setdefault(tuple(r.ids[shared:]), len(distinct)) for r in rows]
        tails = [list(t) for t in distinct]
        cache.batch_repeat_interleave(len(tails))
        width = max(len(t) for t in tails)
        pad = next(iter(self.stop_ids), 0)
        device = self.device
        input_ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails], device=device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)
        positions = torch.tensor([[shared] * (width - len(t)) + list(range(shared, shared + len(t))) for t in tails],
                                 device=device)
        generators = [torch.Generator(device=device).manual_seed(int(r.seed) % 2**63) for r in rows]
        out: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        started = time.monotonic()
        with torch.inference_mode():
            logits = self.lm(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
            self.timings.prefill_s += time.monotonic() - started
            self.timings.prompt_tokens += sum(len(t) for t in tails)
            started = time.monotonic()
            if len(tails) < len(rows):
                index = torch.tensor(owner, device=device)
                cache.reorder_cache(index)
                logits, mask, positions = logits[index], mask[index], positions[index]
            for _ in range(max(r.max_tokens for r in rows)):
                chosen = self._sample_rows(logits, rows, generators, done, pad)
                for b, row in enumerate(rows):
                    if not done[b]:
                        token = chosen[b]
                        out[b].append(token)
                        done[b] = token in self.stop_ids or token in self.newline_ids or len(out[b]) >= row.max_tokens
                if all(done):
                    break
                mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], dim=1)
                positions = positions[:, -1:] + 1
                logits = self.lm(input_ids=torch.tensor(chosen, device=device).unsqueeze(1), attention_mask=mask,
                                 position_ids=positions, past_key_values=cache, use_cache=True,
                                 logits_to_keep=1).logits[:, -1].float()
        self.timings.decode_s += time.monotonic() - started
        self.timings.generated_tokens += sum(len(o) for o in out)
        self.timings.batches += 1
        return [(tokens, len(r.ids)) for tokens, r in zip(out, rows)]

    def last_log_softmax(self, rows: Sequence[Sequence[int]]) -> Any:
        """(rows, vocabulary) log-softmax of the next token after each row: prefill only, no decoding. The rows'
        common prefix is computed once (and kept for the next call that shares it); their own parts are read in
        one batch, padded on the right, which causal attention never lets a real token see."""
        import torch

        common = common_prefix([list(r) for r in rows])
        shared, cache = self.prefix_cache(list(rows[0][:common]))
        started = time.monotonic()
        if shared < common:  # the kept prefix is shorter than what these rows share (e.g. the explanation
            with torch.inference_mode():  # they all judge): compute the rest once for this batch, not per row
                self.lm(input_ids=torch.tensor([list(rows[0][shared:common])], device=self.device), past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
            self.timings.prompt_tokens += common - shared
            shared = common
        tails = [list(r[shared:]) for r in rows]
        cache.batch_repeat_interleave(len(tails))
        width = max(len(t) for t in tails)
        pad = next(iter(self.stop_ids), 0)
        input_ids = torch.tensor([t + [pad] * (width - len(t)) for t in tails], device=self.device)
        positions = torch.arange(shared, shared + width, device=self.device).unsqueeze(0).expand(len(tails), -1)
        with torch.inference_mode():
            hidden = self.lm.get_decoder()(input_ids=input_ids, position_ids=positions, past_key_values=cache,
                                           use_cache=True).last_hidden_state
            last = hidden[torch.arange(len(tails), device=self.device),
                          torch.tensor([len(t) - 1 for t in tails], device=self.device)]
            logits = self.lm.get_output_embeddings()(last).float()
        self.timings.prefill_s += time.monotonic() - started
        self.timings.prompt_tokens += sum(len(t) for t in tails)
        self.timings.batches += 1
        return torch.log_softmax(logits, dim=-1).cpu()  # one copy to the host for the whole batch

    @staticmethod
    def _sample_rows(logits: Any, rows: Sequence[Row], generators: Sequence[Any], done: Sequence[bool],
                     pad: int) -> list[int]:
        """One token per row: `pad` for a finished row (its generator is not advanced), the argmax for a row at
        temperature 0, else a draw from softmax(logits / temperature) cut to the top-p nucleus, with the row's own
        generator. Batched over rows; the tokens cross to the host once."""
        import torch

        live = [b for b in range(len(rows)) if not done[b]]
        chosen = [pad] * len(rows)
        if not live:
            return chosen
        device = logits.device
        sampled = [b for b in live if rows[b].temperature > 0]
        picks: dict[int, Any] = {}
        greedy = [b for b in live if rows[b].temperature <= 0]
        if greedy:
            picks.update(zip(greedy, logits[greedy].argmax(dim=-1)))
        if sampled:
            index = torch.tensor(sampled, device=device)
            temperature = torch.tensor([rows[b].temperature for b in sampled], device=device, dtype=logits.dtype)
            probs = torch.softmax(logits[index] / temperature[:, None], dim=-1)
            if any(rows[b].top_p < 1 for b in sampled):  # decided on the host: a device test would sync every step
                top_p = torch.tensor([rows[b].top_p for b in sampled], device=device, dtype=probs.dtype)
                ordered, order = probs.sort(dim=-1, descending=True)
                # the smallest set whose mass reaches top_p (rows at top_p >= 1 keep everything)
                keep = (ordered.cumsum(-1) - ordered < top_p[:, None]) | (top_p[:, None] >= 1)
                probs = torch.zeros_like(probs).scatter(-1, order, ordered * keep)
            for i, b in enumerate(sampled):
                picks[b] = torch.multinomial(probs[i], 1, generator=generators[b])[0]
        tokens = torch.stack([picks[b] for b in live]).tolist()  # one device-to-host copy per step
        for b, token in zip(live, tokens):
            chosen[b] = int(token)
        return chosen
