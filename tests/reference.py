"""Independent MLP-neuron activations, computed by hand from a model's weights (no transformers code).

Used to check that the hooks read exactly "the input of the MLP's output projection" (docs/method.md s.1).
"""

from __future__ import annotations

import math

import torch


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: (H, T, d), k/v: (H, T, d), causal softmax attention."""
    t = q.shape[1]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def gpt2_neurons(model, token_ids: list[int]) -> list[torch.Tensor]:
    """Per layer, gelu_new(ln_2(x) @ W_fc + b_fc): (T, n_inner)."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.config
    ids = torch.tensor(token_ids)
    x = sd["transformer.wte.weight"][ids] + sd["transformer.wpe.weight"][: len(ids)]
    heads, width = cfg.n_head, cfg.n_embd
    out = []

    def ln(h, prefix):
        return torch.nn.functional.layer_norm(h, (width,), sd[prefix + ".weight"], sd[prefix + ".bias"], cfg.layer_norm_epsilon)

    for layer in range(cfg.n_layer):
        p = f"transformer.h.{layer}."
        qkv = ln(x, p + "ln_1") @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = (t.reshape(len(ids), heads, -1).transpose(0, 1) for t in qkv.split(width, dim=-1))
        a = _attention(q, k, v).transpose(0, 1).reshape(len(ids), width)
        x = x + a @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        pre = ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"]
        act = 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre**3)))  # gelu_new
        out.append(act.float())
        x = x + act @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
    return out


def llama_neurons(model, token_ids: list[int]) -> list[torch.Tensor]:
    """Per layer, silu(h @ W_gate^T) * (h @ W_up^T) with h = RMSNorm(x): (T, intermediate)."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.config
    ids = torch.tensor(token_ids)
    t = len(ids)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    d = cfg.hidden_size // heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    inv_freq = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.arange(t, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rotate(h):  # (H, T, d)
        half = torch.cat([-h[..., d // 2:], h[..., : d // 2]], dim=-1)
        return h * cos + half * sin

    def rms(h, weight):
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + cfg.rms_norm_eps) * weight

    x = sd["model.embed_tokens.weight"][ids]
    out = []
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).reshape(t, heads, d).transpose(0, 1)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).reshape(t, kv_heads, d).transpose(0, 1)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).reshape(t, kv_heads, d).transpose(0, 1)
        group = heads // kv_heads
        k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
        a = _attention(rotate(q), rotate(k), v).transpose(0, 1).reshape(t, heads * d)
        x = x + a @ sd[p + "self_attn.o_proj.weight"].T
        h2 = rms(x, sd[p + "post_attention_layernorm.weight"])
        act = torch.nn.functional.silu(h2 @ sd[p + "mlp.gate_proj.weight"].T) * (h2 @ sd[p + "mlp.up_proj.weight"].T)
        out.append(act.float())
        x = x + act @ sd[p + "mlp.down_proj.weight"].T
    return out


def manual_neurons(model, token_ids: list[int]) -> list[torch.Tensor]:
    return gpt2_neurons(model, token_ids) if model.config.model_type == "gpt2" else llama_neurons(model, token_ids)
