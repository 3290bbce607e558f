"""The YAML configuration: what to record, from which models, on which text, explained and simulated how."""

from autointerp.config.parse import build, build_choice, config_path, configured_store, load_config, parse_config
from autointerp.config.schema import (DEFAULT_CONFIG_PATH, DEFAULT_LLM, REPO_ROOT, Choice, Config, CorpusSpec,
                                      JudgeTrainSpec, LLMChoice,
                                      ModelSpec, NeuronSelection, RecordSpec, SAETrainSpec, ScoringSpec, StoreSpec, UnitsChoice,
                                      ViewerSpec, WatchSpec)

__all__ = ["DEFAULT_CONFIG_PATH", "DEFAULT_LLM", "REPO_ROOT", "Choice", "Config", "CorpusSpec", "JudgeTrainSpec", "LLMChoice", "ModelSpec",
           "NeuronSelection", "RecordSpec", "SAETrainSpec", "ScoringSpec", "StoreSpec", "UnitsChoice", "ViewerSpec", "WatchSpec", "build", "build_choice", "config_path", "configured_store",
           "load_config", "parse_config"]
