"""The trained judge: a small encoder reads `explanation [SEP] excerpt` and predicts, for every token of the
excerpt, whether the unit the explanation describes fires there (one forward pass per excerpt, a per-token head;
the idea of Transluce's finetuned simulator, at MiniLM size so that it trains on 2 CPU cores).

Each excerpt token (the subject's token text) becomes the encoder's word pieces of that text; the head reads the
first piece. Saved as a directory: the encoder (`save_pretrained`), `head.safetensors`, `judge.json` (what it
was trained on and how well it did) and `manifest.json` (sha256 of every file): the directory's revision is the
hash of its manifest, checked on every load, so a simulator's name changes when the judge is retrained.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from autointerp.errors import ModelLoadError

MAX_PIECES = 256  # explanation + excerpt word pieces; a 64-token excerpt takes ~90
_BLANK = "|"  # what a whitespace-only token reads as (the encoder's tokenizer drops whitespace)


class TokenJudge(torch.nn.Module):
    def __init__(self, encoder: Any):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
        """(batch, excerpt tokens) logits; `positions` indexes each token's first piece (0 where padded)."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        picked = torch.gather(states, 1, positions.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        return self.head(picked).squeeze(-1)


class PairEncoder:
    """Explanations and excerpts as the encoder's input, with each excerpt token's first piece located."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._pieces: dict[str, list[int]] = {}

    def pieces(self, text: str) -> list[int]:
        if text not in self._pieces:
            ids = self.tokenizer(text.strip() or _BLANK, add_special_tokens=False)["input_ids"]
            self._pieces[text] = ids or self.tokenizer(_BLANK, add_special_tokens=False)["input_ids"]
        return self._pieces[text]

    def batch(self, explanations: Sequence[str], excerpts: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
        """Tensors for the model, plus `mask` (batch, tokens): which excerpt tokens fit in MAX_PIECES."""
        t = self.tokenizer
        rows, types, positions = [], [], []
        for explanation, tokens in zip(explanations, excerpts):
            ids = [t.cls_token_id, *self.pieces(explanation)[:48], t.sep_token_id]
            first = len(ids)
            where = []
            for token in tokens:
                piece = self.pieces(token)
                if len(ids) + len(piece) + 1 > MAX_PIECES:
                    where.append(-1)
                    continue
                where.append(len(ids))
                ids += piece
            ids.append(t.sep_token_id)
            rows.append(ids)
            types.append([0] * first + [1] * (len(ids) - first))
            positions.append(where)
        width = max(map(len, rows))
        length = max(map(len, positions)) if positions else 0
        input_ids = torch.full((len(rows), width), t.pad_token_id, dtype=torch.long)
        token_types = torch.zeros((len(rows), width), dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        index = torch.zeros((len(rows), length), dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, (ids, kinds, where) in enumerate(zip(rows, types, positions)):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            token_types[i, :len(ids)] = torch.tensor(kinds)
            attention[i, :len(ids)] = 1
            for j, p in enumerate(where):
                if p >= 0:
                    index[i, j], mask[i, j] = p, True
        return {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": token_types,
                "positions": index, "mask": mask}


def new_judge(encoder_dir: str | Path) -> tuple[TokenJudge, PairEncoder]:
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        encoder = AutoModel.from_pretrained(str(encoder_dir))
    except Exception as exc:
        raise ModelLoadError(f"cannot load the judge's encoder {encoder_dir}: {exc}") from exc
    return TokenJudge(encoder), PairEncoder(tokenizer)


def save_judge(directory: Path, model: TokenJudge, pairs: PairEncoder, info: dict[str, Any]) -> str:
    """Write the judge; returns its revision (the manifest's hash)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(directory / "encoder")
    pairs.tokenizer.save_pretrained(directory / "encoder")
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(directory / "head.safetensors"))
    (directory / "judge.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {str(p.relative_to(directory)): _sha256(p) for p in files}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return judge_revision(directory)


def judge_revision(directory: Path) -> str:
    return "sha256:" + _sha256(directory / "manifest.json")[:16]


_loaded: dict[tuple[str, str], tuple[TokenJudge, PairEncoder, str]] = {}
_lock = threading.Lock()


def load_judge(directory: str | Path, device: Any = "cpu") -> tuple[TokenJudge, PairEncoder, str]:
    """(model, pair encoder, revision), every file checked against the manifest; loaded once per process."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    directory = Path(directory)
    key = (str(directory.resolve()), str(device))
    with _lock:
        if key in _loaded:
            return _loaded[key]
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise ModelLoadError(f"no trained judge at {directory} (manifest.json missing): run `autointerp "
                                 "train-judge` first")
        for name, expected in json.loads(manifest_path.read_text()).items():
            path = directory / name
            if not path.is_file() or _sha256(path) != expected:
                raise ModelLoadError(f"the trained judge at {directory}: {name} is missing or changed since it was "
                                     "saved (sha256 differs); retrain it with `autointerp train-judge`")
        tokenizer = AutoTokenizer.from_pretrained(str(directory / "encoder"))
        model = TokenJudge(AutoModel.from_pretrained(str(directory / "encoder")))
        model.head.load_state_dict(load_file(str(directory / "head.safetensors")))
        model.to(device).eval()
        _loaded[key] = (model, PairEncoder(tokenizer), judge_revision(directory))
        return _loaded[key]


def predict(model: TokenJudge, pairs: PairEncoder, explanations: Sequence[str], excerpts: Sequence[Sequence[str]],
            batch_size: int = 32) -> list[np.ndarray]:
    """Per excerpt, the probability (0-1) that each token fires for its explanation (0 where cut off)."""
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for lo in range(0, len(excerpts), batch_size):
            batch = pairs.batch(explanations[lo:lo + batch_size], excerpts[lo:lo + batch_size])
            mask = batch.pop("mask")
            probs = torch.sigmoid(model(**{k: v.to(device) for k, v in batch.items()}).float()).cpu() * mask
            out += [probs[i, :len(tokens)].numpy() for i, tokens in enumerate(excerpts[lo:lo + batch_size])]
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
