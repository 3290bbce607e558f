"""The method core (records, splits, prompts, answer parsing, scores) against hand-computed values."""

from __future__ import annotations

import math

import pytest

from autointerp.errors import StoreError
from autointerp.explain.formats.reference import (EXPLAINER_SYSTEM, ZEROS_FILTERED_HEADER, build_explainer_messages,
                                                   build_explainer_prompt, parse_explanation)
from autointerp.prompting import UNKNOWN, escape_token, explanation_prefix, format_record, normalize
from autointerp.fewshot import EXPLAINER_EXAMPLES, SIMULATOR_EXAMPLES, FewShotNeuron
from autointerp.llm.base import value_distribution
from autointerp.record.records import ActivationRecord, NeuronRecord, load_neuron_records, split_random, split_top
from autointerp.simulate.prompts import build_simulator_prompt, expected_value
from autointerp.score.scoring import (
    absolute_dev_explained, absolute_dev_explained_result, correlation, correlation_result, rsquared,
    rsquared_result, score_neuron,
)
from autointerp.store import Store

R = ActivationRecord


# --- records -----------------------------------------------------------------------------------------------

def test_activation_record_rejects_unequal_lengths_naming_both():
    with pytest.raises(ValueError, match=r"3 tokens but 2 activations"):
        R(("a", "b", "c"), (1.0, 2.0))


def test_activation_record_stores_tuples_of_floats():
    record = R(["a", "b"], [1, 2], excerpt_id=7)
    assert record.tokens == ("a", "b") and record.activations == (1.0, 2.0) and record.excerpt_id == 7
    assert isinstance(record.activations[0], float)
    hash(record)  # frozen and made of tuples


def test_splits_deal_top_by_i_mod_4_and_random_by_i_mod_3():
    top = list(range(20))
    random = list(range(100, 120))
    assert split_top(top) == {
        "train": [0, 4, 8, 12, 16], "calibration": [1, 5, 9, 13, 17],
        "valid": [2, 6, 10, 14, 18], "test": [3, 7, 11, 15, 19],
    }
    assert split_random(random) == {
        "calibration": [100, 103, 106, 109, 112, 115, 118],
        "valid": [101, 104, 107, 110, 113, 116, 119],
        "test": [102, 105, 108, 111, 114, 117],
    }


def test_neuron_record_split_helpers():
    top = [R(["t"], [float(20 - i)], excerpt_id=i) for i in range(20)]
    random = [R(["r"], [0.0], excerpt_id=100 + i) for i in range(20)]
    neuron = NeuronRecord("m", "rev", 0, 3, top, random)
    ids = lambda records: [r.excerpt_id for r in records]  # noqa: E731
    assert ids(neuron.train_top()) == [0, 4, 8, 12, 16]
    assert ids(neuron.calibration_top()) == [1, 5, 9, 13, 17]
    assert ids(neuron.valid_top()) == [2, 6, 10, 14, 18]
    assert ids(neuron.test_top()) == [3, 7, 11, 15, 19]
    assert ids(neuron.calibration_random()) == [100, 103, 106, 109, 112, 115, 118]
    assert ids(neuron.valid_random()) == [101, 104, 107, 110, 113, 116, 119]
    assert ids(neuron.test_random()) == [102, 105, 108, 111, 114, 117]


def _fill_store(con) -> None:
    excerpts = [(0, ["The", " cat"]), (1, [" sat", " down"]), (2, ["x", "y"]), (3, ["p", "q"])]
    for excerpt_id, tokens in excerpts:
        con.execute("INSERT INTO excerpts VALUES ('m', 'r1', ?, 0, ?, ?, ?)",
                    [excerpt_id, excerpt_id * 2, [1, 2], tokens])
    con.execute("INSERT INTO excerpts VALUES ('m', 'r2', 0, 0, 0, [1, 2], ['OTHER', 'REV'])")
    rows = [  # (layer, neuron, kind, band, rank, excerpt_id, activations), deliberately out of order
        (1, 5, "random", None, 1, 2, [0.0, 0.25]),
        (1, 5, "top", None, 1, 0, [0.5, 1.5]),
        (1, 5, "top", None, 0, 1, [2.0, 0.0]),
        (1, 5, "random", None, 0, 3, [0.0, 0.0]),
        (1, 5, "quantile", 0, 0, 2, [9.0, 9.0]),
        (1, 2, "top", None, 0, 2, [1.0, 0.0]),
        (1, 7, "top", None, 0, 3, [3.0, 0.0]),
        (0, 5, "top", None, 0, 1, [4.0, 0.0]),
    ]
    for layer, neuron, kind, band, rank, excerpt_id, acts in rows:
        con.execute("INSERT INTO activation_records VALUES ('m', 'r1', ?, ?, ?, ?, ?, ?, ?, ?)",
                    [layer, neuron, kind, band, rank, excerpt_id, max(acts), acts])
    con.execute("INSERT INTO activation_records VALUES ('m', 'r2', 1, 5, 'top', NULL, 0, 0, 8.0, [8.0, 0.0])")


def test_load_neuron_records_joins_tokens_filters_and_orders(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with store.connect() as con:
        _fill_store(con)
        neurons = load_neuron_records(con, "m", "r1", 1)
        only = load_neuron_records(con, "m", "r1", 1, neurons=[7, 5])
        none = load_neuron_records(con, "m", "r1", 1, neurons=[])
    assert [n.neuron for n in neurons] == [2, 5, 7]
    five = neurons[1]
    assert (five.model, five.revision, five.layer) == ("m", "r1", 1)
    # Rank order, which here is the reverse of excerpt order.
    assert five.top == [R((" sat", " down"), (2.0, 0.0), 1), R(("The", " cat"), (0.5, 1.5), 0)]
    assert five.random == [R(("p", "q"), (0.0, 0.0), 3), R(("x", "y"), (0.0, 0.25), 2)]  # quantile left out
    assert neurons[0].random == [] and neurons[0].top == [R(("x", "y"), (1.0, 0.0), 2)]
    assert [n.neuron for n in only] == [5, 7]
    assert none == []


def test_load_neuron_records_fails_clearly_on_a_missing_excerpt(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with store.connect() as con:
        con.execute("INSERT INTO activation_records VALUES ('m', 'r', 0, 1, 'top', NULL, 0, 42, 1.0, [1.0])")
        with pytest.raises(StoreError, match="excerpt 42"):
            load_neuron_records(con, "m", "r", 0)


def test_load_neuron_records_refuses_a_duplicated_excerpt(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    with store.connect() as con:
        for _ in range(2):
            con.execute("INSERT INTO excerpts VALUES ('m', 'r', 42, 0, 0, [1], ['a'])")
        con.execute("INSERT INTO activation_records VALUES ('m', 'r', 0, 1, 'top', NULL, 0, 42, 1.0, [1.0])")
        with pytest.raises(StoreError, match="more than once"):
            load_neuron_records(con, "m", "r", 0)


# --- normalisation and formatting --------------------------------------------------------------------------

def test_normalize_floors_relative_to_the_largest_shown_activation():
    records = [R("abc", (-1.0, 0.5, 1.0)), R("def", (0.99, 2.0, 0.2))]
    # m = 2.0: 10*a/2 = [-5 -> 0, 2.5, 5], [4.95, 10, 1.0]
    assert normalize(records) == [[0, 2, 5], [4, 10, 1]]


def test_normalize_clips_at_10_with_a_given_max_and_is_zero_when_max_not_positive():
    records = [R("ab", (2.0, 0.35))]
    assert normalize(records, max_activation=1.0) == [[10, 3]]
    assert normalize([R("ab", (-0.2, -0.1))]) == [[0, 0]]
    assert normalize(records, max_activation=0.0) == [[0, 0]]
    assert normalize(records, max_activation=-1.0) == [[0, 0]]
    assert normalize([]) == [] and normalize([R((), ())]) == [[]]


def test_format_record_exact():
    assert format_record([" The", " cat"], [0, 7]) == "<start>\n The\t0\n cat\t7\n<end>"
    assert format_record(["a"], [UNKNOWN]) == "<start>\na\tunknown\n<end>"
    with pytest.raises(ValueError):
        format_record(["a", "b"], [1])


def test_tokens_with_tabs_and_line_breaks_are_escaped():
    assert escape_token("a\tb") == "a\\tb"
    assert escape_token("\n") == "\\n"
    assert escape_token("x\r\n") == "x\\r\\n"
    assert escape_token("\u2028") == "\\u2028" and escape_token("\x0c") == "\\x0c"
    assert escape_token("a\\b") == "a\\b"  # backslashes are not touched
    text = format_record(["a\tb", "\n", "c"], [1, 2, 3])
    assert text.splitlines() == ["<start>", "a\\tb\t1", "\\n\t2", "c\t3", "<end>"]


# --- explainer ---------------------------------------------------------------------------------------------

PRIMING_4 = "Explanation of neuron 4 behavior: the main thing this neuron does is find"


def test_priming_text_is_exact():
    assert explanation_prefix("4") == PRIMING_4
    assert explanation_prefix(12) == "Explanation of neuron 12 behavior: the main thing this neuron does is find"


DENSE = [R([" a", " b", " c", " d", " e"], [0.0, 4.0, 0.0, 0.0, 0.0])]  # 1 of 5 non-zero: exactly 20%
SPARSE = [R([" a", " b", " c"], [0.0, 4.0, 0.0]), R([" d", " e", " f"], [0.0, 0.0, 0.3])]  # 0.3 -> 0: 1 of 6


def test_explainer_prompt_lists_records_in_the_exact_format_and_ends_with_the_priming():
    prompt = build_explainer_prompt(EXPLAINER_EXAMPLES, DENSE)
    target = ("Neuron 4\nActivations:\n<start>\n a\t0\n b\t10\n c\t0\n d\t0\n e\t0\n<end>\n" + PRIMING_4)
    assert prompt.endswith("\n\n" + target)
    assert prompt.startswith(EXPLAINER_SYSTEM + "\n\nNeuron 1\nActivations:\n<start>\nThe\t0\n")
    assert "Explanation of neuron 1 behavior: the main thing this neuron does is find years and dates.\n\nNeuron 2\n" in prompt


def test_zero_filtered_repeat_appears_only_below_20_percent_non_zero():
    dense = build_explainer_messages([], DENSE)[-2]["content"]
    assert ZEROS_FILTERED_HEADER not in dense  # exactly 20% is not "fewer than 20%"
    sparse = build_explainer_messages([], SPARSE)[-2]["content"]
    assert sparse == ("Neuron 1\nActivations:\n"
                      "<start>\n a\t0\n b\t10\n c\t0\n<end>\n<start>\n d\t0\n e\t0\n f\t0\n<end>\n"
                      "Same activations, but with all zeros filtered out:\n"
                      "<start>\n b\t10\n<end>\n<start>\n<end>")


def test_zero_filtered_rule_applies_to_few_shot_neurons():
    sparse_example = FewShotNeuron("sparse things", tuple(SPARSE))
    dense_example = FewShotNeuron("dense things", tuple(DENSE))
    messages = build_explainer_messages([sparse_example, dense_example], DENSE)
    assert ZEROS_FILTERED_HEADER in messages[1]["content"]
    assert ZEROS_FILTERED_HEADER not in messages[3]["content"]
    prompt = build_explainer_prompt([sparse_example, dense_example], DENSE)
    assert prompt.count(ZEROS_FILTERED_HEADER) == 1


def test_explainer_messages_alternate_and_end_primed():
    messages = build_explainer_messages(EXPLAINER_EXAMPLES, DENSE)
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 4
    assert messages[0]["content"] == EXPLAINER_SYSTEM
    assert messages[2]["content"] == "Explanation of neuron 1 behavior: the main thing this neuron does is find years and dates."
    assert messages[-2]["content"].startswith("Neuron 4\nActivations:\n<start>\n a\t0\n b\t10\n")
    assert messages[-1] == {"role": "assistant", "content": PRIMING_4}
    custom = build_explainer_messages(EXPLAINER_EXAMPLES, DENSE, label="L3N7")
    assert custom[-1]["content"] == "Explanation of neuron L3N7 behavior: the main thing this neuron does is find"
    assert custom[-2]["content"].startswith("Neuron L3N7\n")


def test_explainer_normalises_each_neuron_by_its_own_maximum():
    messages = build_explainer_messages([FewShotNeuron("x", (R([" q"], [100.0]),))], [R([" p", " r"], [1.0, 0.5])])
    assert "\n q\t10\n" in messages[1]["content"]
    assert "\n p\t10\n r\t5\n" in messages[-2]["content"]


def test_explainer_escapes_tokens():
    messages = build_explainer_messages([], [R(["a\tb", "\n"], [1.0, 0.0])])
    assert "\n<start>\na\\tb\t10\n\\n\t0\n<end>" in messages[-2]["content"]


@pytest.mark.parametrize("completion, prefix, expected", [
    (" years and dates.\nNeuron 5", None, "years and dates"),
    (" closing brackets in code. ", None, "closing brackets in code"),
    (PRIMING_4 + " words about water.", PRIMING_4, "words about water"),
    (PRIMING_4 + " words about water.", None, "words about water"),
    ("Explanation of neuron L3N7 behavior: the main thing this neuron does is find cities", None, "cities"),
    ("The main thing this neuron does is find the word 'not'.", None, "the word 'not'"),
    (" does is find units after numbers", None, "units after numbers"),
    (" findings about medicine", None, "findings about medicine"),  # a word that merely starts like the phrase
    (" find and replace commands", None, "find and replace commands"),  # a bare "find" may be the explanation's own
    (" is fine", None, "is fine"),
    ("", None, ""),
    ("\n years", None, ""),
    (" .", None, ""),
    (PRIMING_4, PRIMING_4, ""),
])
def test_parse_explanation(completion, prefix, expected):
    assert parse_explanation(completion, prefix) == expected


# --- simulator ---------------------------------------------------------------------------------------------

def test_simulator_prompt_shape_and_slots():
    tokens = [" The", " river", "\t", " rose\n"]
    prompt = build_simulator_prompt(SIMULATOR_EXAMPLES, "words about water", tokens)
    assert prompt.body == ("Neuron 4\n"
                           "Explanation of neuron 4 behavior: the main thing this neuron does is find words about water\n"
                           "Activations:\n<start>\n The\tunknown\n river\tunknown\n\\t\tunknown\n rose\\n\tunknown\n<end>")
    assert len(prompt.slots) == len(tokens)
    for slot in prompt.slots:
        assert prompt.body[slot:slot + len(UNKNOWN)] == UNKNOWN and prompt.body[slot - 1] == "\t"
    assert prompt.text == prompt.prefix + prompt.body
    assert [prompt.text[s:s + len(UNKNOWN)] for s in prompt.text_slots] == [UNKNOWN] * len(tokens)


def test_simulator_prompt_with_the_zero_placeholder():
    prompt = build_simulator_prompt(SIMULATOR_EXAMPLES, "words about water", [" The", " river"], placeholder="0")
    assert prompt.body.endswith("<start>\n The\t0\n river\t0\n<end>")
    assert [prompt.body[s - 1:s + 2] for s in prompt.slots] == ["\t0\n", "\t0\n"]


def test_simulator_prefix_is_identical_across_explanations_and_excerpts():
    a = build_simulator_prompt(SIMULATOR_EXAMPLES, "years", [" 1990"])
    b = build_simulator_prompt(SIMULATOR_EXAMPLES, "something else entirely", [" a", " b", " c"])
    assert a.prefix == b.prefix and a.body != b.body
    assert "unknown" not in a.prefix
    # The few-shot neurons reveal normalised activations: " not" is the maximum of neuron 1.
    assert "Neuron 1\nExplanation of neuron 1 behavior: the main thing this neuron does is find " in a.prefix
    assert "\n not\t10\n" in a.prefix


def test_simulator_explanation_stays_on_one_line():
    prompt = build_simulator_prompt([], "two\nlines.", ["x"])
    assert prompt.body.splitlines()[1] == "Explanation of neuron 1 behavior: the main thing this neuron does is find two lines"


def test_expected_value_hand_computed():
    # Only "0".."10" count; their mass is .5 + .25 + .25 = 1.0.
    assert expected_value({"0": .5, "10": .25, "3": .25, " x": .3}) == pytest.approx((0 * .5 + 10 * .25 + 3 * .25) / 1.0)
    # Renormalised: (2*.1 + 4*.3) / .4 = 3.5.
    assert expected_value({"2": .1, "4": .3, "unknown": .6}) == pytest.approx(3.5)
    assert expected_value({"hello": 1.0}) == 0.0
    assert expected_value({}) == 0.0
    with pytest.raises(ValueError):
        expected_value({"1": -0.1})


def test_value_distribution_from_logprobs_strips_whitespace_and_exponentiates():
    top = {" 3": math.log(0.2), "3": math.log(0.1), "7": math.log(0.1), "\t0": math.log(0.2), " the": math.log(0.4)}
    # p(3) = .3, p(7) = .1, p(0) = .2 -> (0.9 + 0.7) / 0.6
    assert value_distribution(top)["3"] == pytest.approx(0.3)
    assert expected_value(value_distribution(top)) == pytest.approx(1.6 / 0.6)
    assert expected_value(value_distribution({" 10": -0.5, "1": -0.5})) == pytest.approx(5.5)
    assert expected_value(value_distribution({" a": 0.0})) == 0.0


# --- scores ------------------------------------------------------------------------------------------------

def test_correlation_is_pooled_not_the_mean_of_per_excerpt_correlations():
    real = [[1, 2, 3], [4, 5, 6]]
    sim = [[1, 2, 3], [6, 5, 4]]
    # Per excerpt: +1 and -1, mean 0. Pooled: deviations from 3.5 are (-2.5,-1.5,-.5,.5,1.5,2.5) and
    # (-2.5,-1.5,-.5,2.5,1.5,.5): sum of products 13.5, sums of squares 17.5 each -> 27/35.
    assert correlation(real, sim) == pytest.approx(27 / 35)
    assert correlation(real, sim) != pytest.approx(0.0)


def test_scores_on_a_tiny_example():
    a, s = [[0, 2, 4]], [[1, 2, 2]]
    assert rsquared(a, s) == pytest.approx(0.75)  # 1 - (5/3) / (20/3)
    assert absolute_dev_explained(a, s) == pytest.approx(0.5)  # 1 - 1 / 2
    assert correlation(a, s) == pytest.approx(math.sqrt(3) / 2)  # 2 / sqrt(8 * 2/3)


def test_constant_sides_give_none_with_a_reason():
    assert correlation_result([[1, 1], [1]], [[0, 1], [2]]).reason == "real activations are constant"
    result = correlation_result([[0, 1], [2]], [[3, 3], [3]])
    assert result.value is None and result.reason == "simulated activations are constant"
    assert correlation([[0, 0]], [[1, 2]]) is None
    assert rsquared_result([[0, 0]], [[1, 2]]).value is None
    assert absolute_dev_explained_result([[0, 0]], [[1, 2]]).reason is not None
    assert correlation_result([], []).value is None


def test_shape_mismatch_names_the_excerpt():
    with pytest.raises(ValueError, match=r"excerpt 1: 2 real activations but 3 simulated"):
        correlation([[1, 2], [3, 4]], [[1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match=r"2 excerpts of real activations but 1 simulated"):
        rsquared([[1], [2]], [[1]])
    with pytest.raises(ValueError, match=r"random excerpt 0"):
        score_neuron([[1.0]], [[1.0]], [[1.0, 2.0]], [[1.0]])


def test_score_neuron_hand_computed():
    scores = score_neuron(top_real=[[0, 2, 4]], top_sim=[[1, 2, 2]], random_real=[[0, 0, 1]], random_sim=[[0, 1, 0]])
    # Random only: deviations (-1/3,-1/3,2/3) and (-1/3,2/3,-1/3): (-1/3) / (6/9) = -0.5.
    assert scores.score_random_only == pytest.approx(-0.5)
    # Pooled a = (0,2,4,0,0,1), s = (1,2,2,0,1,0): s - mean(s) = (0,1,1,-1,0,-1), sum a*(s - mean s) = 5,
    # sum (s - mean s)^2 = 4, sum (a - mean a)^2 = 21 - 6 * (7/6)^2 = 77/6.
    assert scores.score_top_and_random == pytest.approx(5 / math.sqrt(4 * 77 / 6))
    assert scores.rsquared == pytest.approx(1 - (7 / 6) / (21 / 6))
    assert scores.absolute_dev_explained == pytest.approx(1 - 5 / 7)
    assert scores.n_tokens == 6 and scores.reason is None


def test_score_neuron_reports_why_a_score_is_missing():
    scores = score_neuron([[0, 3]], [[0, 5]], [[0, 0]], [[0, 0]])  # pooled: (0,3,0,0) vs (0,5,0,0)
    assert scores.score_random_only is None and scores.score_top_and_random == pytest.approx(1.0)
    assert scores.reason == "random-only: real activations are constant"
