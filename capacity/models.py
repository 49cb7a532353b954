"""Model architectures from Hugging Face ``config.json`` fields (a catalogue of common models, or
any config by path) and exact parameter counts: GQA, head_dim != hidden/heads, qkv biases, tied
embeddings, gated MLPs, MoE (total vs active), Gemma-2's extra norms."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from thresher.pipeline.errors import ThresherError

CATALOGUE = Path(__file__).parent / "data" / "models.yaml"
NON_GATED = {"gpt2", "gpt_neox", "gptj", "mpt", "opt", "falcon", "bloom", "phi"}  # plain 2-matrix MLPs
TIED_BY_DEFAULT = {"gemma": True, "gemma2": True, "mpt": True, "gpt2": True}  # when config.json does not say
ALIASES = {"d_model": "hidden_size", "n_embd": "hidden_size", "n_layers": "num_hidden_layers", "n_layer": "num_hidden_layers",
           "n_heads": "num_attention_heads", "n_head": "num_attention_heads", "num_layers": "num_hidden_layers",
           "max_seq_len": "max_position_embeddings", "n_positions": "max_position_embeddings"}


def _normalise_config(c: dict) -> dict:
    """GPT-2/MPT-style field names -> Llama-style ones; MLP width from an expansion ratio."""
    out = dict(c)
    for old, new in ALIASES.items():
        if old in c and new not in c:
            out[new] = c[old]
    if "intermediate_size" not in out and "hidden_size" in out:
        ratio = c.get("expansion_ratio") or 4
        out["intermediate_size"] = c.get("n_inner") or c.get("ffn_hidden_size") or int(ratio * out["hidden_size"])
    return out


@dataclass(frozen=True)
class Model:
    key: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    experts: int = 1
    experts_per_token: int = 1
    gated_mlp: bool = True
    norms_per_layer: int = 2
    max_position: int = 4096
    official_params: int | None = None
    official_active_params: int | None = None

    # ---------------------------------------------------------------- parameters
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def attn_params(self) -> int:
        h = self.hidden
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + bias

    @property
    def expert_params(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden * self.intermediate

    @property
    def router_params(self) -> int:
        return self.hidden * self.experts if self.experts > 1 else 0

    def layer_params(self, active: bool = False) -> int:
        e = self.experts_per_token if active and self.experts > 1 else self.experts
        return self.attn_params + e * self.expert_params + self.router_params + self.norms_per_layer * self.hidden

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden

    def params(self, active: bool = False) -> int:
        """All parameters (``active``: those one token uses — MoE routes to ``experts_per_token``)."""
        head = 0 if self.tied else self.lm_head_params
        return self.layers * self.layer_params(active) + self.hidden + self.embedding_params + head

    def linear_params(self, active: bool = False) -> int:
        """Parameters in the layers' linear projections (what LoRA targets and NF4 quantizes)."""
        e = self.experts_per_token if active and self.experts > 1 else self.experts
        return self.layers * (self.attn_params + e * self.expert_params)

    def kv_bytes_per_token(self, kv_bits: int = 16) -> float:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_dim * kv_bits / 8

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_config(cls, key: str, c: dict, official: int | None = None, official_active: int | None = None) -> Model:
        c = _normalise_config(c)
        try:
            hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
            moe = int(c.get("num_local_experts") or c.get("num_experts") or 1)
            return cls(
                key=key, hidden=hidden, intermediate=int(c.get("moe_intermediate_size") if moe > 1 and c.get("moe_intermediate_size") else c["intermediate_size"]),
                layers=int(c["num_hidden_layers"]), heads=heads,
                kv_heads=int(c.get("num_key_value_heads") or heads), head_dim=int(c.get("head_dim") or hidden // heads),
                vocab=int(c["vocab_size"]), tied=bool(c.get("tie_word_embeddings", TIED_BY_DEFAULT.get(c.get("model_type"), False))),
                qkv_bias=bool(c.get("attention_bias", False) or c.get("model_type") in ("qwen2", "qwen2_moe")),
                experts=moe, experts_per_token=int(c.get("num_experts_per_tok") or 1),
                gated_mlp=c.get("model_type") not in NON_GATED,
                norms_per_layer=4 if c.get("model_type") == "gemma2" else 2,
                max_position=int(c.get("max_position_embeddings") or 4096),
                official_params=official, official_active_params=official_active)
        except KeyError as e:
            raise ThresherError(f"model '{key}': config lacks {e.args[0]}") from None


@lru_cache(maxsize=1)
def catalogue() -> dict[str, Model]:
    data = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    return {k: Model.from_config(k, v["config"], v.get("official_params"), v.get("official_active_params"))
            for k, v in data.items()}


def get_model(name: str) -> Model:
    """A catalogue model by name, or a Hugging Face ``config.json`` (or a directory holding one)."""
    p = Path(name)
    if p.is_dir():
        p = p / "config.json"
    if p.suffix == ".json" or p.exists():
        if not p.exists():
            raise ThresherError(f"model config {p} does not exist")
        try:
            cfg = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ThresherError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
        return Model.from_config(p.parent.name or p.stem, cfg)
    cat = catalogue()
    key = name.lower().strip()
    if key not in cat:
        close = difflib.get_close_matches(key, list(cat), n=1, cutoff=0.3)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ThresherError(f"unknown model '{name}'.{hint} Known: {', '.join(cat)}; or give the path of a "
                            "Hugging Face config.json")
    return cat[key]
