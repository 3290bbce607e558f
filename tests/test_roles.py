"""The role interfaces: explainers, simulators and LLM backends are registered implementations picked by name,
with the scripted stand-in LLM (tests/scripted_llm.py) so each runs in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pytest

from autointerp.config import LLMChoice, load_config
from autointerp.explain import ExplainerInput, Explanation
from autointerp.explain.best_of_n import choose
from autointerp.score.simulation import SimulationScorer
from autointerp.explain.llm import LLMExplainer, LLMExplainerOptions
from autointerp.llm import LoadedLLMs
from autointerp.record.records import ActivationRecord, NeuronRecord
from autointerp.simulate import REGISTRY as SIMULATORS
from autointerp.simulate import SimulationJob, Simulator
from autointerp.simulate.all_at_once import AllAtOnce, AllAtOnceOptions
from autointerp.stages import Stages
from autointerp.store import Store
from tests.scripted_llm import ScriptedLLM, ScriptedOptions

SCRIPTED = LLMChoice("scripted", ScriptedOptions())
WORDS = ["the", "cat", "sat", "on", "a", "mat", "by", "the", "sea"]


def record(active: str, activation: float = 4.0, excerpt_id: int = 0) -> ActivationRecord:
    """An excerpt of WORDS where the neuron fires on `active` only."""
    return ActivationRecord(tuple(f" {w}" for w in WORDS), tuple(activation if w == active else 0.0 for w in WORDS),
                            excerpt_id)


def test_neurons_with_the_same_index_in_two_layers_get_their_own_explanations(tmp_path):
    """Results were keyed by (neuron, sample): layer 2's neuron 0 got layer 1's neuron 0's explanation."""
    explainer = LLMExplainer(LLMExplainerOptions(llm=SCRIPTED), None, Store(tmp_path / "s.duckdb"), LoadedLLMs())
    inputs = [ExplainerInput(1, 0, (record("cat"),)), ExplainerInput(2, 0, (record("sea"),))]
    explained = explainer.explain(inputs, seed=0)
    assert [(e.layer, e.neuron, e.explanation) for e in explained] == [
        (1, 0, 'words like "cat"'), (2, 0, 'words like "sea"')]


def test_the_explainer_sees_only_the_train_split():
    top = [record("cat", 10.0 - i, i) for i in range(8)]
    neuron = NeuronRecord("m", "r", 0, 0, top, [])
    assert [r.excerpt_id for r in ExplainerInput.of(neuron).records] == [0, 4]  # records 0 and 4 of 8: train


def test_best_of_n_keeps_the_candidate_that_simulates_best_on_the_valid_split(tmp_path):
    # Top records fire on "cat"; random records are silent. Valid split: top 2 and 6, random 1, 4.
    neuron = NeuronRecord("m", "r", 3, 7, [record("cat", 9.0 - i, i) for i in range(8)],
                          [record("none", 0.0, 100 + i) for i in range(6)])
    candidates = [Explanation(3, 7, 0, 'words like "sea"', ""), Explanation(3, 7, 1, 'words like "cat"', ""),
                  Explanation(3, 7, 2, "", "")]  # an unusable candidate is never chosen
    simulator = AllAtOnce(AllAtOnceOptions(llm=SCRIPTED), None, Store(tmp_path / "s.duckdb"), LoadedLLMs())
    ScriptedLLM.calls.clear()
    chosen = choose(candidates, {(3, 7): neuron}, {"simulation": SimulationScorer(simulator)})
    assert [c.chosen for c in chosen] == [False, True, False]
    valid = neuron.scored("valid")
    assert [r.excerpt_id for _, r in valid] == [2, 6, 101, 104]
    real = np.concatenate([r.activations for _, r in valid])
    for candidate, word in ((chosen[0], " sea"), (chosen[1], " cat")):
        rule = np.concatenate([[10.0 if t == word else 0.0 for t in r.tokens] for _, r in valid])
        assert candidate.valid_score == pytest.approx(np.corrcoef(real, rule)[0, 1])
    assert chosen[1].valid_score > 0.5 > chosen[0].valid_score
    assert chosen[2].valid_score is None
    # two usable candidates x (2 valid top + 2 valid random) excerpts, but every excerpt here has the same
    # tokens: one request per candidate, asked once (the cache never asks the same request twice in a batch)
    assert len(ScriptedLLM.calls) == 2 * len({r.tokens for _, r in valid}) == 2


@dataclass(frozen=True)
class ConstantOptions:
    value: float = 3.0


class Constant(Simulator):
    """A whole new simulator in a few lines: registered here, picked by the YAML, run by the stages."""

    def __init__(self, options: ConstantOptions):
        self.value = options.value

    @property
    def name(self) -> str:
        return f"constant:{self.value}"

    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        return [[self.value if i == 0 else 0.0 for i, _ in enumerate(job.tokens)] for job in jobs]


SIMULATORS.register("constant", ConstantOptions)(lambda options, base_dir, store, llms: Constant(options))


def test_a_simulator_added_in_one_module_is_picked_by_name_and_run_by_the_stages(project, home):
    project.write_text(_with_simulator(project.read_text(), "{kind: constant, value: 7.0}"))
    config = load_config()
    assert config.simulator.kind == "constant" and config.simulator.options == ConstantOptions(7.0)
    stages = Stages(config, Store.from_home(), lambda _: None)
    stages.excerpts("tiny-gpt2")
    stages.record("tiny-gpt2", [0])
    stages.explain("tiny-gpt2", 0)
    simulated = stages.simulate("tiny-gpt2", 0)
    assert simulated.role == "constant:7.0" and {tuple(r["simulated"][:2]) for r in simulated.rows} == {(7.0, 0.0)}
    scored = stages.score("tiny-gpt2", 0)
    assert len(scored.rows) == 2 and all(r["simulator"] == "constant:7.0" for r in scored.rows)


def _with_simulator(text: str, section: str) -> str:
    import yaml

    raw = yaml.safe_load(text)
    raw["simulator"] = yaml.safe_load(section)
    return yaml.safe_dump(raw)


def test_an_llm_backend_added_outside_the_package_is_named_in_autointerp_plugins(project):
    # tests/scripted_llm.py is such a backend: conftest names it in $AUTOINTERP_PLUGINS.
    import os
    import subprocess
    import sys

    config = load_config()
    assert config.explainer.options.llm.kind == "scripted"
    probe = ("from autointerp.llm import REGISTRY\ntry:\n    print(REGISTRY.get('scripted').factory.__module__)\n"
             "except Exception as exc:\n    print(exc)")
    env = dict(os.environ)
    named = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert named.stdout.strip() == "tests.scripted_llm"
    del env["AUTOINTERP_PLUGINS"]
    unnamed = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert "unknown LLM backend 'scripted'" in unnamed.stdout  # the package alone does not know it


def test_the_pattern_format_shows_the_records_as_marked_does_and_asks_for_no_token_list():
    from autointerp.explain.formats import REGISTRY as FORMATS

    records = [record("cat", 5.0, i) for i in range(2)]
    marked, pattern = FORMATS.get("marked").factory(), FORMATS.get("pattern").factory()
    a, b = marked.messages(records), pattern.messages(records)
    assert [m["role"] for m in a] == [m["role"] for m in b]
    assert a[-2] == b[-2] and a[-1] == b[-1]  # the target neuron is shown the same way
    assert "quotes the tokens" in a[0]["content"] and "without listing tokens" in b[0]["content"]
    shots = [m["content"] for m in b[1:-2] if m["role"] == "assistant"]
    assert len(shots) == 3 and not any('"' in s for s in shots)  # the examples name patterns, quote nothing
    assert pattern.parse(" words about cats.\n") == marked.parse(" words about cats.\n") == "words about cats"
