import dagster as dg
from pydantic import PrivateAttr

from autointerp.llm import LoadedLLMs


class LLMResource(dg.ConfigurableResource):
    """The LLMs a run's explain, simulate and score stages (and the judges) ask: the config's choices
    (`explainer.llm`, `simulator.llm`, `scoring.llm`), each loaded on the first request the `llm_calls` cache
    misses, shared by every step of the run (the CLI runs them in one process) and released when the run ends."""

    _llms: LoadedLLMs = PrivateAttr(default_factory=LoadedLLMs)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._llms = LoadedLLMs()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._llms.close()

    @classmethod
    def held_by(cls, llms: LoadedLLMs) -> dg.ResourceDefinition:
        """The resource over LLMs an owner loads and releases: `autointerp run` launches a run per model and layer
        range, and one command should load a model once, not once per run (the owner closes them at its end)."""
        resource = cls()
        resource._llms = llms
        return dg.ResourceDefinition.hardcoded_resource(resource, "the LLMs the launching command holds")

    @property
    def llms(self) -> LoadedLLMs:
        return self._llms
