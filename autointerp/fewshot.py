"""Few-shot neurons shown to the explainer and the simulator before the target neuron (docs/method.md s.5-6).

These are made-up neurons written for this project (not the reference's examples). Activations are raw,
GELU-like values: mostly zero or slightly negative, with peaks on the concept; prompts normalise them
per neuron, as they do for the target. Explanations are written as the completion of
"the main thing this neuron does is find", like the explanations the explainer is asked for.
"""

from __future__ import annotations

from typing import Sequence

from autointerp.record.records import ActivationRecord, FewShotNeuron


def _record(pairs: Sequence[tuple[str, float]]) -> ActivationRecord:
    return ActivationRecord(tuple(t for t, _ in pairs), tuple(a for _, a in pairs))


def _neuron(explanation: str, *excerpts: Sequence[tuple[str, float]]) -> FewShotNeuron:
    return FewShotNeuron(explanation, tuple(_record(pairs) for pairs in excerpts))


YEARS_AND_DATES = _neuron(
    "years and dates",
    [("The", 0.0), (" bridge", -0.02), (" was", 0.0), (" completed", 0.0), (" in", 0.1), (" 18", 2.1),
     ("83", 3.4), (" and", 0.0), (" reopened", -0.05), (" on", 0.0), (" March", 0.9), (" 4", 1.2),
     (",", 0.0), (" 1952", 3.6), (".", 0.0)],
    [("She", 0.0), (" was", 0.0), (" born", 0.0), (" on", 0.05), (" 12", 1.5), (" July", 1.1),
     (" 1990", 3.8), (" in", 0.0), (" a", 0.0), (" small", -0.03), (" town", 0.0), (" near", 0.0),
     (" Leeds", 0.0), (".", 0.0)],
)

WATER_AND_LIQUIDS = _neuron(
    "words for water and other liquids",
    [("Pour", 0.7), (" the", 0.0), (" milk", 2.6), (" into", 0.0), (" a", 0.0), (" bowl", 0.2),
     (" and", 0.0), (" add", 0.0), (" two", 0.0), (" cups", 0.3), (" of", 0.0), (" water", 3.1), (".", 0.0)],
    [("The", 0.0), (" river", 1.8), (" flooded", 1.0), (" after", 0.0), (" heavy", 0.0), (" rain", 2.2),
     (",", 0.0), (" and", 0.0), (" the", 0.0), (" streets", -0.04), (" filled", 0.1), (" with", 0.0),
     (" mud", 0.6), (".", 0.0)],
)

CLOSING_BRACKETS = _neuron(
    "closing brackets and parentheses in code",
    [("if", 0.0), (" (", 0.0), ("x", 0.0), (" >", 0.0), (" max", 0.0), ("(", 0.1), ("a", 0.0), (",", 0.0),
     (" b", 0.0), ("))", 3.0), (" {", 0.4), ("\n", 0.0), ("    ", 0.0), ("return", 0.0), (" x", 0.0),
     (";", 0.0), ("\n", 0.0), ("}", 2.2)],
    [("print", 0.0), ("(", 0.0), ("len", 0.0), ("(", 0.0), ("items", 0.0), ("[", 0.0), ("0", 0.0),
     ("]", 2.5), ("))", 3.2), ("\n", -0.06)],
)

NEGATIONS = _neuron(
    "negations such as \"not\" and \"never\"",
    [("I", 0.0), (" did", 0.2), (" not", 3.3), (" expect", 0.0), (" the", 0.0), (" test", 0.0), (" to", 0.0),
     (" be", 0.0), (" so", 0.0), (" easy", -0.03), (".", 0.0)],
    [("He", 0.0), (" never", 2.9), (" said", 0.0), (" he", 0.0), (" wouldn", 0.8), ("'t", 2.4),
     (" come", 0.0), (" back", 0.0), (".", 0.0)],
)

CITY_NAMES = _neuron(
    "names of cities",
    [("We", 0.0), (" flew", 0.0), (" from", 0.2), (" Paris", 2.7), (" to", 0.0), (" Tokyo", 3.1),
     (" via", 0.0), (" Dubai", 2.5), (" last", 0.0), (" week", 0.0), (".", 0.0)],
    [("The", 0.0), (" conference", 0.0), (" moved", 0.0), (" to", 0.1), (" Chicago", 2.9), (" after", 0.0),
     (" the", 0.0), (" hotel", 0.0), (" in", 0.0), (" Boston", 2.6), (" closed", -0.02), (".", 0.0)],
)

UNITS_AFTER_NUMBERS = _neuron(
    "units of measurement after numbers",
    [("The", 0.0), (" box", 0.0), (" weighs", 0.3), (" 12", 0.0), (" kg", 3.0), (" and", 0.0), (" is", 0.0),
     (" 40", 0.0), (" cm", 2.8), (" wide", 0.1), (".", 0.0)],
    [("Drive", 0.0), (" 5", 0.0), (" miles", 2.6), (" north", 0.0), (",", 0.0), (" then", 0.0),
     (" turn", 0.0), (" left", 0.0), (" after", 0.0), (" 300", 0.0), (" meters", 2.9), (".", 0.0)],
)

EXPLAINER_EXAMPLES: tuple[FewShotNeuron, ...] = (YEARS_AND_DATES, WATER_AND_LIQUIDS, CLOSING_BRACKETS)
SIMULATOR_EXAMPLES: tuple[FewShotNeuron, ...] = (NEGATIONS, CITY_NAMES, UNITS_AFTER_NUMBERS)
