from resources.llm import LLMResource
from resources.settings import AutointerpSettings
from resources.store import DuckDBStore

__all__ = ["AutointerpSettings", "DuckDBStore", "LLMResource"]
