"""SAE and transcoder files written to the documented on-disk layouts, without SAELens or sparsify installed
(neither installs on this offline machine), and an encoder written from those documents, in float64.

- SAELens (`SAE.save_model` / `load_from_disk`): `cfg.json` with `d_in`, `d_sae`, `architecture`
  (standard | jumprelu | topk | transcoder), `hook_name` (`blocks.{L}.hook_resid_pre` ...), `apply_b_dec_to_input`,
  `activation_fn_kwargs: {k}`; `sae_weights.safetensors` with `W_enc` (d_in, d_sae), `b_enc` (d_sae), `W_dec`
  (d_sae, d_in), `b_dec` (d_in) and `threshold` (d_sae) for JumpReLU.
- sparsify (`SparseCoder.save_to_disk`): a directory named after the hookpoint (`layers.3`, `layers.3.mlp`),
  `cfg.json` = the SparseCoderConfig (`expansion_factor`, `normalize_decoder`, `num_latents`, `k`, `transcode`, ...)
  plus `d_in`; `sae.safetensors` with `encoder.weight` (d_sae, d_in), `encoder.bias`, `W_dec` (d_sae, d_in),
  `b_dec` (d_in). `encode`: relu(encoder(x - b_dec)) (no b_dec subtracted when transcoding), then top-k.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file


def _random(shape: tuple[int, ...], generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * scale


def write_saelens(directory: Path, hook_name: str, d_in: int, d_sae: int, architecture: str = "standard",
                  k: int = 5, seed: int = 0, apply_b_dec_to_input: bool = True,
                  tensors: dict[str, torch.Tensor] | None = None) -> Path:
    g = torch.Generator().manual_seed(seed)
    transcoder = architecture.endswith("transcoder")
    weights = {"W_enc": _random((d_in, d_sae), g, d_in ** -0.5), "b_enc": _random((d_sae,), g, 0.1),
               "W_dec": _random((d_sae, d_in), g, d_sae ** -0.5), "b_dec": _random((d_in,), g, 0.1)}
    if architecture == "jumprelu":
        weights["threshold"] = torch.rand(d_sae, generator=g) * 0.3
    weights.update(tensors or {})
    cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "hook_name": hook_name,
           "hook_layer": int(hook_name.split(".")[1]), "hook_head_index": None,
           "apply_b_dec_to_input": apply_b_dec_to_input and not transcoder, "activation_fn_str": "relu",
           "activation_fn_kwargs": {"k": k} if architecture == "topk" else {}, "normalize_activations": "none",
           "dtype": "float32", "device": "cpu", "model_name": "tiny", "context_size": 64, "prepend_bos": False,
           "finetuning_scaling_factor": False, "sae_lens_training_version": "5.0.0"}
    if transcoder:
        cfg.update(d_out=d_in, hook_name_out=hook_name.replace("hook_mlp_in", "hook_mlp_out"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cfg.json").write_text(json.dumps(cfg))
    save_file({name: t.contiguous() for name, t in weights.items()}, str(directory / "sae_weights.safetensors"))
    return directory


def write_sparsify(directory: Path, d_in: int, k: int = 5, expansion_factor: int = 1, num_latents: int = 24,
                   transcode: bool = False, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    d_sae = num_latents or d_in * expansion_factor
    weights = {"encoder.weight": _random((d_sae, d_in), g, d_in ** -0.5), "encoder.bias": _random((d_sae,), g, 0.1),
               "W_dec": _random((d_sae, d_in), g, d_sae ** -0.5), "b_dec": _random((d_in,), g, 0.1)}
    cfg = {"activation": "topk", "expansion_factor": expansion_factor, "normalize_decoder": True,
           "num_latents": num_latents, "k": k, "multi_topk": False, "skip_connection": False, "transcode": transcode,
           "d_in": d_in}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(directory / "sae.safetensors"))
    return directory


def reference_encode(directory: Path, x: np.ndarray) -> np.ndarray:
    """The documented encoder, in float64 numpy, straight from the files: (..., d_in) -> (..., d_sae)."""
    cfg = json.loads((directory / "cfg.json").read_text())
    x = x.astype(np.float64)
    if (directory / "sae.safetensors").exists():  # sparsify
        t = {k: v.astype(np.float64) for k, v in load_file(str(directory / "sae.safetensors")).items()}
        if not cfg["transcode"]:
            x = x - t["b_dec"]
        pre = np.maximum(x @ t["encoder.weight"].T + t["encoder.bias"], 0)
        return _keep_top(pre, cfg["k"])
    t = {k: v.astype(np.float64) for k, v in load_file(str(directory / "sae_weights.safetensors")).items()}
    if cfg["apply_b_dec_to_input"]:
        x = x - t["b_dec"]
    pre = x @ t["W_enc"] + t["b_enc"]
    if cfg["architecture"] == "jumprelu":
        return np.maximum(pre, 0) * (pre > t["threshold"])
    if cfg["architecture"] == "topk":
        return np.maximum(_keep_top(pre, cfg["activation_fn_kwargs"]["k"]), 0)
    return np.maximum(pre, 0)


def _keep_top(pre: np.ndarray, k: int) -> np.ndarray:
    threshold = -np.sort(-pre, axis=-1)[..., k - 1:k]
    return np.where(pre >= threshold, pre, 0.0)
