"""How an LLM explainer shows a neuron's records: one prompt format per module, registered by name.

A format turns the records into chat messages (few-shot examples included) and reads the explanation out
of the completion. The `llm` explainer's `formats` option lists the ones it draws candidates from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

from autointerp.plugins import Registry
from autointerp.record.records import ActivationRecord


class PromptFormat(ABC):
    @abstractmethod
    def messages(self, records: Sequence[ActivationRecord], writes: Sequence[str] = ()) -> list[dict[str, str]]:
        """Chat messages; a final assistant turn is a prefill the answer continues. `writes`: the tokens the
        unit's output promotes most (`unit_logits`), for the formats that show them (`writes`)."""

    @abstractmethod
    def parse(self, completion: str) -> str:
        """The explanation in a completion ("" when there is none)."""


REGISTRY: Registry[PromptFormat] = Registry("explainer prompt format", __name__)
