"""LLM clients: one interface (`base.LLM`), a local transformers backend and an OpenAI-compatible one."""

from __future__ import annotations

from pathlib import Path

from autointerp.config import LLMSpec
from autointerp.llm.base import LLM


def llm_name(spec: LLMSpec, base_dir: Path | None = None) -> str:
    """How results name the LLM that produced them: backend, model, and a local model's file hash."""
    if spec.backend == "openai":
        return f"openai:{spec.model}"
    from autointerp.subject import model_revision, resolve_source

    return f"local:{spec.model}@{model_revision(resolve_source(spec.model, base_dir))}"


def build_llm(spec: LLMSpec, base_dir: Path | None = None) -> LLM:
    if spec.backend == "local":
        from autointerp.llm.local import LocalLLM

        return LocalLLM(spec.model, base_dir, spec.dtype, spec.batch_size)
    from autointerp.llm.openai_backend import OpenAILLM

    return OpenAILLM(spec)
