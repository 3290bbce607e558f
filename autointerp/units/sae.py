"""Dictionary latents: SAE latents read at a hook point of the subject, and transcoder latents read at the
MLP input. One directory per hook point, in either of two on-disk layouts (docs/sae.md):

- SAELens: `cfg.json` (`d_in`, `d_sae`, `architecture`, `hook_name` like `blocks.3.hook_resid_post`,
  `apply_b_dec_to_input`, `k` or `activation_fn_kwargs.k`) and `sae_weights.safetensors` (`W_enc` (d_in, d_sae),
  `b_enc`, `W_dec`, `b_dec`, `threshold` for JumpReLU);
- sparsify (EleutherAI): a directory named after the module (`layers.3`, `layers.3.mlp`), `cfg.json` (`d_in`,
  `num_latents` or `expansion_factor`, `k`, `transcode`) and `sae.safetensors` (`encoder.weight` (d_sae, d_in),
  `encoder.bias`, `W_dec`, `b_dec`).

The encoder gives a latent's activation, what the recorder stores, like a neuron's; the decoder row what it
writes (`output.py`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from autointerp.errors import ConfigError, ModelLoadError
from autointerp.units import REGISTRY, UnitSource
from autointerp.units.mlp import GPT2_FAMILY, MLPNeurons

FORMATS = {"saelens": "sae_weights.safetensors", "sparsify": "sae.safetensors"}
# Where in a layer a dictionary reads: the residual stream before/after the layer, the MLP's input (transcoders)
# or output, the attention block's output.
SITES = ("resid_pre", "resid_post", "mlp_in", "mlp_out", "attn_out")
_SAELENS_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_mlp_out": "mlp_out",
                  "hook_attn_out": "attn_out", "hook_mlp_in": "mlp_in", "ln2.hook_normalized": "mlp_in"}
_SAELENS_ARCHITECTURES = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk",
                          "transcoder": "relu", "skip_transcoder": "relu", "jumprelu_transcoder": "jumprelu"}


@dataclass(frozen=True)
class SAEOptions:
    """`units: {kind: sae, path: DIR, format: saelens|sparsify, hook: SITE}`."""

    path: str = ""  # one hook point's directory, or a directory of them (one per hook point)
    format: str = "saelens"
    hook: str = ""  # keep only the dictionaries read at this site (when a layer has several)

    def check(self, where: str) -> None:
        if not self.path:
            raise ConfigError(f"{where}.path: the directory of the SAE files is required")
        if self.format not in FORMATS:
            raise ConfigError(f"{where}.format: unknown SAE file format '{self.format}'; known: {', '.join(FORMATS)}")
        if self.hook and self.hook not in SITES:
            raise ConfigError(f"{where}.hook: unknown hook point '{self.hook}'; known: {', '.join(SITES)}")


@dataclass(frozen=True)
class Dictionary:
    """One SAE or transcoder, as read from its `cfg.json`; weights are loaded on first use."""

    directory: Path
    layer: int
    site: str
    encoder: Literal["relu", "topk", "jumprelu"]
    d_in: int
    d_sae: int
    k: int | None
    subtract_b_dec: bool  # x - b_dec before encoding (SAELens apply_b_dec_to_input; sparsify unless transcoding)
    transcoder: bool
    weights_file: Path
    format: str

    def load(self) -> "Encoder":
        import torch
        from safetensors.torch import load_file

        where = f"SAE file {self.weights_file}"
        try:
            tensors = load_file(str(self.weights_file))
        except Exception as exc:  # safetensors' own error type for truncated or foreign files; OSError
            raise ModelLoadError(f"{where}: not a readable safetensors file (truncated, or another format?): "
                                 f"{' '.join(str(exc).split())[:200]}") from None
        try:
            if self.format == "saelens":
                w_enc = tensors["W_enc"]
                b_enc = tensors["b_enc"]
                threshold = tensors.get("threshold")
                if threshold is None and "log_threshold" in tensors:
                    threshold = tensors["log_threshold"].exp()
            else:
                w_enc, b_enc, threshold = tensors["encoder.weight"].T, tensors["encoder.bias"], None
            b_dec = tensors["b_dec"] if self.subtract_b_dec else None
        except KeyError as exc:
            raise ModelLoadError(f"{where}: no tensor {exc} (expected the {self.format} layout, docs/sae.md)") from None
        expected = {"encoder": (self.d_in, self.d_sae), "encoder bias": (self.d_sae,)}
        found = {"encoder": tuple(w_enc.shape), "encoder bias": tuple(b_enc.shape)}
        if b_dec is not None:
            expected["b_dec"], found["b_dec"] = (self.d_in,), tuple(b_dec.shape)
        if self.encoder == "jumprelu":
            if threshold is None:
                raise ModelLoadError(f"{where}: a JumpReLU SAE needs a 'threshold' tensor")
            expected["threshold"], found["threshold"] = (self.d_sae,), tuple(threshold.shape)
        for name, shape in expected.items():
            if found[name] != shape:
                raise ModelLoadError(f"{where}: {name} has shape {found[name]}, but cfg.json says {shape} "
                                     f"(d_in {self.d_in}, d_sae {self.d_sae})")

        def f32(t: Any) -> Any:
            return None if t is None else t.to(torch.float32).contiguous()

        return Encoder(self, f32(w_enc), f32(b_enc), f32(b_dec), f32(threshold))

    def decoder(self) -> Any:
        """(d_sae, d_in) float32 `W_dec`: each latent's decoder row, what it writes (both layouts store it so)."""
        import torch
        from safetensors import safe_open

        where = f"SAE file {self.weights_file}"
        try:
            with safe_open(str(self.weights_file), framework="pt") as f:
                w_dec = f.get_tensor("W_dec")
        except Exception as exc:  # a missing tensor or a foreign file
            raise ModelLoadError(f"{where}: cannot read W_dec: {' '.join(str(exc).split())[:200]}") from None
        if tuple(w_dec.shape) != (self.d_sae, self.d_in):
            raise ModelLoadError(f"{where}: W_dec has shape {tuple(w_dec.shape)}, but cfg.json says "
                                 f"{(self.d_sae, self.d_in)}")
        return w_dec.to(torch.float32)


@dataclass
class Encoder:
    """x (..., d_in) -> latent activations (..., d_sae), as SAELens's and sparsify's `encode` compute them."""

    spec: Dictionary
    w_enc: Any  # (d_in, d_sae)
    b_enc: Any
    b_dec: Any | None
    threshold: Any | None

    def __call__(self, x: Any) -> Any:
        import torch

        if self.w_enc.device != x.device:  # encode where the subject runs (its `device` key): move the weights once
            self.w_enc, self.b_enc = self.w_enc.to(x.device), self.b_enc.to(x.device)
            self.b_dec = None if self.b_dec is None else self.b_dec.to(x.device)
            self.threshold = None if self.threshold is None else self.threshold.to(x.device)
        x = x.float()
        if self.b_dec is not None:
            x = x - self.b_dec
        pre = x @ self.w_enc + self.b_enc
        if self.spec.encoder == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold)
        if self.spec.encoder == "relu":
            return torch.relu(pre)
        # TopK: the k largest pre-activations survive, then ReLU (the order sparsify uses gives the same values)
        top = pre.topk(self.spec.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))


def read_dictionary(directory: Path, layout: str) -> Dictionary:
    """Parse one hook point's `cfg.json` in the given layout; every problem names the file."""
    cfg_path = directory / "cfg.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"SAE config {cfg_path}: cannot read it: {exc}") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"SAE config {cfg_path}: not a JSON object")
    weights = directory / FORMATS[layout]
    if not weights.is_file():
        other = next((f for f, name in FORMATS.items() if (directory / name).is_file()), None)
        hint = f" (it holds {FORMATS[other]}: format: {other}?)" if other else ""
        raise ModelLoadError(f"SAE directory {directory}: no {FORMATS[layout]}, as the {layout} layout has{hint}")
    parse = _saelens if layout == "saelens" else _sparsify
    try:
        return parse(directory, cfg, weights)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"SAE config {cfg_path}: missing or bad key {exc} for the {layout} layout") from None


def _saelens(directory: Path, cfg: dict, weights: Path) -> Dictionary:
    where = directory / "cfg.json"
    hook = cfg.get("hook_name") or (cfg.get("metadata") or {}).get("hook_name")  # SAELens 6 moved it to metadata
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", str(hook))
    if not match or match.group(2) not in _SAELENS_HOOKS:
        raise ModelLoadError(f"SAE config {where}: hook_name '{hook}' is not a hook point we can read; known: "
                             + ", ".join(f"blocks.N.{h}" for h in _SAELENS_HOOKS))
    architecture = cfg.get("architecture", "standard")
    if architecture == "standard" and cfg.get("activation_fn_str") == "topk":  # SAELens < 6 wrote TopK this way
        architecture = "topk"
    if architecture not in _SAELENS_ARCHITECTURES:
        raise ModelLoadError(f"SAE config {where}: architecture '{architecture}' is not supported; known: "
                             f"{', '.join(_SAELENS_ARCHITECTURES)}")
    if cfg.get("normalize_activations") not in (None, "none"):
        raise ModelLoadError(f"SAE config {where}: normalize_activations '{cfg['normalize_activations']}' is not "
                             "supported (the SAE expects rescaled inputs); fold the scale into W_enc and b_dec")
    if cfg.get("hook_head_index") is not None:
        raise ModelLoadError(f"SAE config {where}: per-head SAEs (hook_head_index) are not supported")
    transcoder = architecture.endswith("transcoder")
    encoder = _SAELENS_ARCHITECTURES[architecture]
    k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
    return Dictionary(directory, int(match.group(1)), _SAELENS_HOOKS[match.group(2)], encoder,  # type: ignore[arg-type]
                      _size(cfg["d_in"], "d_in", where), _size(cfg["d_sae"], "d_sae", where),
                      _k(k, encoder, where, _size(cfg["d_sae"], "d_sae", where)),
                      # a transcoder's b_dec lives in the output space: it is never subtracted from the input
                      bool(cfg.get("apply_b_dec_to_input", True)) and not transcoder, transcoder, weights, "saelens")


def _sparsify(directory: Path, cfg: dict, weights: Path) -> Dictionary:
    where = directory / "cfg.json"
    # The directory is the hookpoint: the module whose output (its input, for a transcoder) was trained on.
    match = re.fullmatch(r"(?:model\.|transformer\.)?(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attn))?", directory.name)
    if not match:
        raise ModelLoadError(f"SAE directory {directory}: '{directory.name}' is not a hookpoint we can read; known: "
                             "layers.N (residual after layer N), layers.N.mlp, layers.N.self_attn (GPT-2: h.N ...)")
    transcoder = bool(cfg.get("transcode", False))
    module = match.group(2)
    if module is None:
        site = "resid_post"
    else:
        site = "attn_out" if module != "mlp" else "mlp_in" if transcoder else "mlp_out"
    if transcoder and module != "mlp":
        raise ModelLoadError(f"SAE config {where}: a transcoder must be trained on an MLP (layers.N.mlp)")
    if cfg.get("activation", "topk") != "topk":
        raise ModelLoadError(f"SAE config {where}: activation '{cfg['activation']}' is not supported; known: topk")
    d_in = _size(cfg["d_in"], "d_in", where)
    d_sae = (_size(cfg["num_latents"], "num_latents", where) if cfg.get("num_latents") else
             _size(d_in * _size(cfg["expansion_factor"], "expansion_factor", where), "d_in x expansion_factor", where))
    return Dictionary(directory, int(match.group(1)), site, "topk", d_in, d_sae, _k(cfg.get("k"), "topk", where, d_sae),
                      not transcoder, transcoder, weights, "sparsify")


MAX_SIZE = 2**31 - 1  # widths and k are stored and indexed as 32-bit integers


def _size(value: Any, key: str, where: Path) -> int:
    """A width from cfg.json: a positive integer (2048.0 is accepted; 1e400, Infinity, 0.5 and "64" are not)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise ModelLoadError(f"SAE config {where}: {key} must be a positive integer up to {MAX_SIZE:,}, "
                             f"got {value!r}"[:300])
    return value


def _k(k: Any, encoder: str, where: Path, d_sae: int) -> int | None:
    if encoder != "topk":
        return None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ModelLoadError(f"SAE config {where}: a TopK SAE needs a positive integer k, got {k!r}")
    if k > d_sae:  # refused here, not after the forward pass that would fail on it
        raise ModelLoadError(f"SAE config {where}: k {k} is more than the {d_sae} latents (d_sae) it selects from")
    return k


class DictionaryLatents(UnitSource):
    """The latents of one dictionary per layer; a layer without one has no units."""

    def __init__(self, root: Path, layout: str, site: str = ""):
        self.root, self.layout, self.site = root, layout, site
        self._encoders: dict[int, Encoder] = {}

    @cached_property
    def dictionaries(self) -> dict[int, Dictionary]:
        if not self.root.is_dir():
            raise ModelLoadError(f"SAE path {self.root} is not a directory (the demo SAE is made by "
                                 "`autointerp train-sae`, docs/sae.md)")
        dirs = [self.root] if (self.root / "cfg.json").is_file() else sorted(
            d for d in self.root.iterdir() if (d / "cfg.json").is_file())
        if not dirs:
            raise ModelLoadError(f"SAE path {self.root}: no cfg.json in it or in its subdirectories")
        found = [read_dictionary(d, self.layout) for d in dirs]
        chosen = [d for d in found if not self.site or d.site == self.site]
        if not chosen:
            raise ModelLoadError(f"SAE path {self.root}: no dictionary reads {self.site} (found: "
                                 f"{', '.join(sorted({d.site for d in found}))})")
        by_layer: dict[int, Dictionary] = {}
        for d in chosen:
            if d.layer in by_layer:
                raise ModelLoadError(f"SAE path {self.root}: two dictionaries for layer {d.layer} "
                                     f"({by_layer[d.layer].directory.name}, {d.directory.name}); pick one with "
                                     "`hook:` (resid_post, mlp_out, ...) or declare another model for the other")
            by_layer[d.layer] = d
        widths = {d.d_sae for d in chosen}
        if len(widths) > 1:
            raise ModelLoadError(f"SAE path {self.root}: the dictionaries have different widths {sorted(widths)}; "
                                 "a model's layers share one width (declare one model per width)")
        return dict(sorted(by_layer.items()))

    @property
    def label(self) -> str:
        from autointerp.subject.sources import file_hash

        kinds = {"transcoder" if d.transcoder else "sae" for d in self.dictionaries.values()}
        return f"{'+'.join(sorted(kinds))}:{self.layout}:{file_hash(self.files())}"

    def files(self) -> list[Path]:
        return [f for d in self.dictionaries.values() for f in (d.directory / "cfg.json", d.weights_file)]

    def check_architecture(self, config: Any) -> None:
        MLPNeurons().check_architecture(config)  # the same two families: we know where their blocks are
        n_layers, d_model = self.n_layers(config), _d_model(config)
        for layer, d in self.dictionaries.items():
            where = f"SAE {d.directory}"
            if layer >= n_layers:
                raise ModelLoadError(f"{where} reads layer {layer}, but the model has layers 0-{n_layers - 1}")
            if d.d_in != d_model:
                raise ModelLoadError(f"{where}: d_in {d.d_in} does not match the model's hidden size {d_model} "
                                     f"at {d.site}: an SAE for another model?")

    def width(self, config: Any) -> int:
        return next(iter(self.dictionaries.values())).d_sae

    def layers(self, config: Any) -> list[int]:
        return list(self.dictionaries)

    def dictionary(self, layer: int) -> Dictionary:
        if layer not in self.dictionaries:
            raise ModelLoadError(f"no SAE for layer {layer} in {self.root} (it has layers "
                                 f"{', '.join(map(str, self.dictionaries))})")
        return self.dictionaries[layer]

    def hook_point(self, model: Any, layer: int) -> tuple[Any, Literal["input", "output"]]:
        self.check_architecture(model.config)
        return module_at(model, layer, self.dictionary(layer).site)

    def output_directions(self, model: Any, layer: int) -> Any:
        return self.dictionary(layer).decoder()

    def activations(self, layer: int, hooked: Any) -> Any:
        if layer not in self._encoders:
            self._encoders[layer] = self.dictionary(layer).load()
        return self._encoders[layer](hooked)


def module_at(model: Any, layer: int, site: str) -> tuple[Any, Literal["input", "output"]]:
    """The module whose input or output is `site` of `layer`, in the GPT-2 and Llama families."""
    gpt2 = model.config.model_type in GPT2_FAMILY
    block = model.transformer.h[layer] if gpt2 else model.model.layers[layer]
    return {"resid_pre": (block, "input"), "resid_post": (block, "output"), "mlp_in": (block.mlp, "input"),
            "mlp_out": (block.mlp, "output"), "attn_out": (block.attn if gpt2 else block.self_attn, "output")}[site]


def _d_model(config: Any) -> int:
    return int(config.n_embd if config.model_type in GPT2_FAMILY else config.hidden_size)


@REGISTRY.register("sae", SAEOptions)
def dictionary_latents(options: SAEOptions, base_dir: Path | None = None) -> DictionaryLatents:
    path = Path(options.path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return DictionaryLatents(path, options.format, options.hook)

