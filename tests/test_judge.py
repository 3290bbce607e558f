"""The trained judge: rule units whose truth is checked by hand, a judge trained from a tiny BERT saved to disk
(the real `from_pretrained` path), its files hash-checked on load, registered as the `trained` simulator, and
trained through its Dagster asset."""

from __future__ import annotations

import json
import random
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from autointerp.errors import ModelLoadError
from autointerp.judge.evaluate import by_correlation, pooled_correlation, rank_rules
from autointerp.judge.model import judge_revision, load_judge, new_judge, predict
from autointerp.judge.rules import HELD_OUT_FAMILIES, PLANTED_RULES, all_rules, split_rules
from autointerp.judge.train import Example, TrainOptions, fit, make_examples, train_judge
from conftest import WORDS

TEXT = [" The", " cat", " of", " the", " house", ",", " said", " John", " Smith", " in", " 1998", ".", " Three",
        " dogs", " (", " big", " )", " ran", " quickly", " to", " the", " house", "."]


def test_rules_fire_where_a_hand_reading_says():
    rules = all_rules()
    fired = {name: [TEXT[i] for i, hit in enumerate(rules[name].labels(TEXT)) if hit] for name in (
        "after_word/of", "before_word/of", "word_is/the", "context/after_comma", "shape/capitalised", "shape/years",
        "context/in_parentheses", "position/first_word", "position/second_word", "suffix/ly", "context/repeated",
        "context/name_continuation", "word_list/number_words", "position/last_word")}
    assert fired == {
        "after_word/of": [" the"], "before_word/of": [" cat"], "word_is/the": [" The", " the", " the"],
        "context/after_comma": [" said"], "shape/capitalised": [" John", " Smith"], "shape/years": [" 1998"],
        "context/in_parentheses": [" big"], "position/first_word": [" The", " Three"],
        "position/second_word": [" cat", " dogs"], "suffix/ly": [" quickly"], "context/repeated": [" the", " the", " house"],
        "context/name_continuation": [" Smith"], "word_list/number_words": [" Three"],
        "position/last_word": [" 1998", " house"]}


def test_held_out_families_and_planted_rules_never_reach_training():
    every = all_rules()
    train, held_out = split_rules(every)
    assert len(every) >= 200 and len({r.family for r in every.values()}) >= 8
    assert not {r.family for r in train} & set(HELD_OUT_FAMILIES)
    assert {r.family for r in held_out} == set(HELD_OUT_FAMILIES)
    assert not {r.name for r in train} & set(PLANTED_RULES)
    # Each example's target is the truth of the rule its explanation describes, on that excerpt.
    pool = [tuple(random.Random(i).choice(TEXT) for _ in range(16)) for i in range(200)]
    examples = make_examples(train[:30], every, pool, 8, random.Random(0))
    assert len(examples) == 30 * 8
    for e in examples:
        assert e.explanation in every[e.rule].phrasings and list(e.target) == every[e.rule].labels(e.tokens)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer BERT with a word-level vocabulary, saved with save_pretrained (random weights)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "|", ",", ".", "(", ")", '"', "-", "1998", *sorted(
        {w.lower() for w in (*WORDS, *"word right after before the of said john smith house quickly".split())})]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(directory)
    config = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=256, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # no dropout: the few steps here then learn it surely
    BertModel(config).save_pretrained(directory)
    return directory


def test_fitting_teaches_the_judge_to_read_the_explanation(tiny_encoder):
    """Two rules on the same excerpts: 'the word "the"' and 'the word "cat"'. Only the explanation says which tokens
    fire, so a judge that ends up right on both, and wrong when the explanations are swapped, has read it."""
    import torch

    torch.manual_seed(0)
    rules = all_rules()
    rng = random.Random(0)
    pool = [tuple(rng.choice([" the", " cat", " dog", " house", " of", " river"]) for _ in range(12)) for _ in range(200)]
    pick = ("word_is/the", "word_is/cat")
    cat = rules["word_is/the"].__class__("word_is", "word_is/cat", ('the word "cat"',),
                                         lambda tokens: [t.strip() == "cat" for t in tokens])
    rules = {**rules, "word_is/cat": cat}
    examples = [Example(name, rules[name].phrasings[0], t, tuple(rules[name].labels(t))) for t in pool for name in pick]
    model, pairs = new_judge(tiny_encoder)

    def fits(explained: str, truth: str) -> float:
        return pooled_correlation(predict(model, pairs, [rules[explained].phrasings[0]] * 50, pool[:50]),
                                  [rules[truth].labels(t) for t in pool[:50]])

    before = {name: fits(name, name) for name in pick}
    history = fit(model, pairs, examples, TrainOptions(epochs=6, batch_size=16, lr=2e-3), rng, log=lambda _: None)
    after = {name: fits(name, name) for name in pick}
    assert np.mean(history[-10:]) < np.mean(history[:10]) / 2
    assert all(after[name] > 0.9 > 0.5 > before[name] for name in pick), (before, after)
    # Swapped, the explanations fit not at all: the prediction follows the words, not the excerpt alone.
    assert fits("word_is/cat", "word_is/the") < 0 and fits("word_is/the", "word_is/cat") < 0


def test_a_trained_judge_is_saved_hash_checked_and_simulates(tiny_encoder, tmp_path):
    from autointerp.config import build_choice
    from autointerp.llm import LoadedLLMs
    from autointerp.simulate import SimulationJob, build_simulator

    rng = random.Random(1)
    excerpts = [(i, tuple(rng.choice(TEXT) for _ in range(64))) for i in range(300)]
    out = tmp_path / "judge"
    paraphrased = {"word_is/the": ("every the in the text",)}
    result = train_judge(excerpts, tiny_encoder, out, TrainOptions(examples_per_rule=2, epochs=1, batch_size=32),
                         log=lambda _: None, paraphrases=paraphrased)
    assert result.revision == judge_revision(out) and result.steps >= 1
    # What it was trained on is kept with it: the paraphrases too.
    info = json.loads((out / "judge.json").read_text())
    assert result.paraphrases == info["paraphrases"] == 1
    assert info["paraphrased"] == {"word_is/the": ["every the in the text"]}
    assert 0 <= result.held_out["above_near_misses"] <= 1 and result.held_out["rules"] > 0
    choice = build_choice("simulator", {"kind": "trained", "path": str(out)}, "simulator")
    simulator = build_simulator(choice, None, None, LoadedLLMs())
    assert simulator.name == f"trained:{result.revision}"
    jobs = [SimulationJob('the word right after "of"', tuple(TEXT)), SimulationJob("commas", tuple(TEXT[:5]))]
    values = simulator.simulate(jobs)
    assert [len(v) for v in values] == [len(TEXT), 5] and all(0 <= x <= 10 for v in values for x in v)
    # The same as predicting with the saved files by hand.
    model, pairs, _ = load_judge(out)
    direct = predict(model, pairs, [j.explanation for j in jobs], [j.tokens for j in jobs])
    assert np.allclose(np.asarray(values[0]), 10 * direct[0], atol=1e-5)

    (out / "head.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelLoadError, match="head.safetensors is missing or changed"):
        load_judge(out, device="cpu:0")  # a new key: not the copy loaded above
    with pytest.raises(ModelLoadError, match="train-judge"):
        load_judge(tmp_path / "nowhere")
    assert build_simulator(build_choice("simulator", {"kind": "trained", "path": str(tmp_path / "x")}, "s"),
                           None, None, LoadedLLMs()).name == "trained:untrained"


def test_ranking_counts_the_true_explanation_above_its_near_misses():
    every = all_rules()
    rule = every["after_word/of"]
    pool = [tuple(TEXT)] * 5 + [tuple(t for t in TEXT if t.strip() != "of")] * 15
    # A scorer that knows the truth puts the true explanation first; one that scores at random, sometimes not.
    oracle = by_correlation(lambda xs, ts: [np.asarray(every[_rule_of(x, every)].labels(t), float) for x, t in zip(xs, ts)])
    ranked = rank_rules(oracle, [rule], lambda r: {"word_is/of": every["word_is/of"].phrasings[0]}, pool,
                        random.Random(0))
    [only] = ranked.rules
    assert only.true == pytest.approx(1.0) and only.near_misses["word_is/of"] < 0.5
    assert ranked.summary()["above_near_misses"] == 1.0


def _rule_of(explanation: str, every: dict) -> str:
    return next((name for name, r in every.items() if explanation in r.phrasings), "word_is/of")


def test_the_judge_asset_trains_from_the_recorded_excerpts(project, tiny_encoder, capsys):
    from orchestration.cli import main
    from orchestration.cli.run import dagster_instance

    project.write_text(project.read_text() + f"judge_training: {{encoder: '{tiny_encoder}', examples_per_rule: 2, "
                                             "epochs: 1, out: judge}\n")
    assert main(["run", "--model", "tiny-gpt2", "--layers", "0", "--until", "record"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["train-judge"]) == 0, capsys.readouterr().err  # the command a user runs: the judge_job
    out = capsys.readouterr().out
    assert f"trained judge in {project.parent / 'judge'}" in out and "use it: simulator: {kind: trained" in out, out
    event = dagster_instance().get_latest_materialization_event(dg.AssetKey("trained_judge"))
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert metadata["revision"] == judge_revision(project.parent / "judge")
    assert metadata["examples"] > 0 and 0 <= metadata["held_out_above_near_misses"] <= 1


def test_a_rule_gets_the_same_excerpts_whichever_rules_are_ranked_with_it():
    # A slow scorer ranks a sample of the rules; its numbers compare with the others' only on the same excerpts.
    every = all_rules()
    rules = [every["after_word/of"], every["word_is/the"]]
    pool = [tuple(random.Random(i).choice(TEXT) for _ in range(16)) for i in range(200)]
    seen: dict[str, list] = {}

    def recording(rule_name: str):
        def score(explanation, excerpts, truth):
            seen.setdefault(rule_name, []).append(list(excerpts))
            return 0.0
        return score

    rank_rules(recording("both"), rules, lambda r: {}, pool, random.Random(3))
    rank_rules(recording("alone"), rules[1:], lambda r: {}, pool, random.Random(3))
    # each rule is scored twice (true, token list); the second rule's excerpts are the same in both runs
    assert seen["both"][2] == seen["alone"][0] and seen["both"][0] != seen["alone"][0]


def test_a_paraphrase_is_kept_only_where_it_can_stand_for_the_phrasing():
    from autointerp.judge.paraphrase import clean_paraphrase, relations, subject_words

    original = 'the word right after "of"'
    assert clean_paraphrase(original, ' Paraphrase: "any word that follows of"') == "any word that follows of"
    assert clean_paraphrase(original, "the word after offer") is None  # "of" only inside another word
    assert clean_paraphrase(original, "whichever word comes just after \"of\".\n") == 'whichever word comes just after "of"'
    assert clean_paraphrase(original, "'the token following \"of\"'") == 'the token following "of"'
    assert clean_paraphrase(original, "The word right after \"of\"!") is None  # the same words
    assert clean_paraphrase(original, "") is None and clean_paraphrase(original, "   \n ") is None
    assert clean_paraphrase(original, 'Sure! Here it is:\nthe word following "of"') is None  # two lines
    assert clean_paraphrase(original, 'the word following "in"') is None  # another rule's word
    assert clean_paraphrase(original, "the word following a preposition") is None  # drops the quoted word
    assert clean_paraphrase(original, "the word following \"of\" " + "and so on " * 20) is None  # too long
    assert clean_paraphrase("the token with", 'the word "with" wherever it occurs') == 'the word "with" wherever it occurs'
    # The same relation: "preceded by X" is after X, "followed by X" before it; a quoted "after" is no relation.
    assert relations('whatever word is preceded by "of"') == {"after"} == relations('words that follow "of"')
    assert relations('whatever word is followed by "of"') == {"before"} == relations('the token just ahead of of')
    assert relations('the word "after"') == set() and relations("the last word of a sentence, before the full stop") \
        == {"end", "before"}
    preceded = 'whatever word is preceded by "of"'
    assert clean_paraphrase(preceded, 'any word that follows "of"') == 'any word that follows "of"'
    assert clean_paraphrase(preceded, 'any word that comes directly before "of"') is None  # the relation flipped
    assert clean_paraphrase('the word "after"', 'anything that follows "after"') is None  # a relation added
    # The rule's subject, where the original names it (its first five letters: "capit" in "capitals").
    subject = subject_words(all_rules()["after_word/of"])
    assert subject == ("of",)
    assert clean_paraphrase("the token that comes after the word of", "the token right after the word", subject) is None
    assert clean_paraphrase("the token that comes after the word of", "the token following the word of", subject)
    capitalised = subject_words(all_rules()["shape/capitalised"])
    assert clean_paraphrase("capitalised words inside a sentence", "words with capitals, inside a sentence",
                            capitalised) == "words with capitals, inside a sentence"
    assert clean_paraphrase("capitalised words inside a sentence", "proper nouns inside a sentence", capitalised) is None
    assert clean_paraphrase("names of people, places and organisations in the middle of a sentence",
                            "people, places and organisations named mid-sentence", capitalised)  # names no subject


def test_training_examples_include_the_paraphrases_and_evaluation_keeps_the_template():
    from autointerp.judge.paraphrase import with_paraphrases

    every = all_rules()
    train, _ = split_rules(every)
    rules = with_paraphrases(train[:5], {train[0].name: ("PARAPHRASE ONE",), train[1].name: ("PARAPHRASE TWO",)})
    assert rules[0].phrasings[0] == train[0].phrasings[0] and rules[0].phrasings[-1] == "PARAPHRASE ONE"
    assert rules[2].phrasings == train[2].phrasings
    pool = [tuple(random.Random(i).choice(TEXT) for _ in range(16)) for i in range(200)]
    examples = make_examples(rules, every, pool, 40, random.Random(0))
    used = {(e.rule, e.explanation) for e in examples}
    assert (train[0].name, "PARAPHRASE ONE") in used and (train[1].name, "PARAPHRASE TWO") in used


@pytest.mark.slow  # a real (small) chat model: SmolLM2-135M from its package
def test_a_local_llm_writes_checked_paraphrases_once(tmp_path):
    from autointerp.judge.paraphrase import MAX_CHARS, paraphrase_rules
    from autointerp.llm.base import CachedLLM
    from autointerp.llm.cache import LLMCache
    from autointerp.llm.local import LocalLLM, LocalOptions
    from autointerp.store import Store
    from conftest import SMOLLM2

    every = all_rules()
    rules = [every["after_word/of"], every["word_list/family"], every["suffix/able"]]
    llm = LocalLLM(LocalOptions(model=SMOLLM2, dtype="float32"))
    found = paraphrase_rules(rules, CachedLLM.of(llm, LLMCache(Store(tmp_path / "c.duckdb"))), 2)
    assert found, "SmolLM2 wrote no usable paraphrase of 12 phrasings x 2 samples"
    for name, kept in found.items():
        assert all("\n" not in k and 0 < len(k) <= MAX_CHARS for k in kept)
        assert not set(kept) & set(every[name].phrasings) and len(set(kept)) == len(kept)

    def unloadable() -> LocalLLM:
        raise AssertionError("the model was loaded although every request was cached")

    again = paraphrase_rules(rules, CachedLLM("local", llm.model, unloadable, LLMCache(Store(tmp_path / "c.duckdb"))), 2)
    assert again == found


def test_paraphrases_are_off_by_default_written_by_the_explainers_llm_and_bounded(tmp_path):
    from autointerp.config.parse import parse_config
    from autointerp.errors import ConfigError

    raw = {"models": [{"name": "m", "source": "gpt2"}],
           "explainer": {"kind": "llm", "llm": {"backend": "local", "model": "embedded:qwen2.5-coder-0.5b-instruct"}}}
    spec = parse_config(raw, tmp_path / "c.yaml").judge_training
    assert spec.paraphrases == 0 and spec.llm.options.model == "embedded:qwen2.5-coder-0.5b-instruct"
    named = parse_config({**raw, "judge_training": {"paraphrases": 2, "llm": {"backend": "local", "model": "x.gguf"}}},
                         tmp_path / "c.yaml").judge_training
    assert named.paraphrases == 2 and named.llm.options.model == "x.gguf"
    with pytest.raises(ConfigError, match="paraphrases 0 to 4"):
        parse_config({**raw, "judge_training": {"paraphrases": 9}}, tmp_path / "c.yaml")
