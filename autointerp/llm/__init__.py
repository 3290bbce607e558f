"""LLM clients: one interface (`base.LLM`), a local transformers backend and an OpenAI-compatible one."""
