"""Model architectures from Hugging Face ``config.json`` fields (a catalogue of common models, or
any config by path) and exact parameter counts: GQA, head_dim != hidden/heads, qkv biases, tied
embeddings, gated MLPs, MoE (total vs active), Gemma-2's extra norms.

A config.json is read as transformers reads it: fields it omits take the defaults of that
``model_type``'s config class (``tie_word_embeddings`` above all: ``PretrainedConfig`` ties by
default, Llama/Mistral/Qwen2/Phi/GPT-NeoX/DeepSeek untie), Falcon's ``multi_query`` /
``new_decoder_architecture`` + ``num_kv_heads``, MPT's ``attn_config.kv_n_heads`` and bias-free
layers, GPT-NeoX's and Phi's biases and LayerNorm biases, Qwen-1's halved ``intermediate_size``,
DeepSeek-MoE's shared experts and leading dense layers. The model's name comes from the config
(``_name_or_path``, else ``model_type`` and size), not from the folder holding it."""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from thresher.pipeline.errors import ThresherError

CATALOGUE = Path(__file__).parent / "data" / "models.yaml"
NON_GATED = {"gpt2", "gpt_neox", "gptj", "mpt", "opt", "falcon", "bloom", "phi"}  # plain 2-matrix MLPs
# transformers' tie_word_embeddings default per model_type when config.json does not say; any other
# model_type gets PretrainedConfig's default (True); a config with no model_type: untied (Llama-like)
TIED_BY_DEFAULT = {"gemma": True, "gemma2": True, "mpt": True, "gpt2": True, "falcon": True, "opt": True,
                   "bloom": True, "starcoder2": True, "llama": False, "mistral": False, "mixtral": False,
                   "qwen": False, "qwen2": False, "qwen2_moe": False, "phi": False, "phi3": False, "gpt_neox": False,
                   "gptj": False, "deepseek": False, "deepseek_v2": False, "cohere": True}
ALIASES = {"d_model": "hidden_size", "n_embd": "hidden_size", "n_embed": "hidden_size", "n_layers": "num_hidden_layers",
           "n_layer": "num_hidden_layers", "n_heads": "num_attention_heads", "n_head": "num_attention_heads",
           "num_layers": "num_hidden_layers", "max_seq_len": "max_position_embeddings",
           "n_positions": "max_position_embeddings", "n_head_kv": "num_kv_heads", "seq_length": "max_position_embeddings"}
MODEL_TYPE_ALIASES = {"RefinedWeb": "falcon", "RefinedWebModel": "falcon"}  # Falcon's pre-transformers configs
# Defaults of transformers' config classes (and the remote-code DeepSeek one) for what a config may omit
DEFAULTS = {
    "falcon": {"vocab_size": 65024, "hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71,
               "multi_query": True, "parallel_attn": True, "bias": False, "new_decoder_architecture": False,
               "max_position_embeddings": 2048},
    "mpt": {"hidden_size": 2048, "num_attention_heads": 16, "num_hidden_layers": 24, "expansion_ratio": 4,
            "max_position_embeddings": 2048, "vocab_size": 50368, "no_bias": True},
    "gpt_neox": {"vocab_size": 50432, "hidden_size": 6144, "num_hidden_layers": 44, "num_attention_heads": 64,
                 "intermediate_size": 24576, "max_position_embeddings": 2048, "attention_bias": True},
    "qwen2": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
              "num_attention_heads": 32, "max_position_embeddings": 32768},
    "gemma": {"vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576, "num_hidden_layers": 28,
              "num_attention_heads": 16, "num_key_value_heads": 16, "head_dim": 256, "max_position_embeddings": 8192},
    "phi": {"vocab_size": 51200, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
            "num_attention_heads": 32, "max_position_embeddings": 2048},
    "deepseek": {"vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008, "moe_intermediate_size": 1407,
                 "num_hidden_layers": 30, "num_attention_heads": 32, "first_k_dense_replace": 0, "moe_layer_freq": 1},
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32, "max_position_embeddings": 2048},
}


def _normalise_config(c: dict) -> dict:
    """GPT-2/MPT/Falcon-style field names -> Llama-style ones, the model_type's defaults for what is
    missing; MLP width from an expansion ratio."""
    c = dict(c)
    if c.get("model_type") in MODEL_TYPE_ALIASES:
        c["model_type"] = MODEL_TYPE_ALIASES[c["model_type"]]
    mt = c.get("model_type")
    if mt == "mpt" and isinstance(c.get("attn_config"), dict) and c["attn_config"].get("kv_n_heads"):
        c.setdefault("num_key_value_heads", c["attn_config"]["kv_n_heads"])
    out = dict(c)
    for old, new in ALIASES.items():
        if old in c and new not in c:
            out[new] = c[old]
    for k, v in DEFAULTS.get(mt, {}).items():
        out.setdefault(k, v)
    if mt == "qwen":  # Qwen-1: intermediate_size counts both halves of the gated MLP
        out["intermediate_size"] = int(out["intermediate_size"]) // 2
    if "intermediate_size" not in out and "hidden_size" in out:
        ratio = c.get("expansion_ratio") or 4
        out["intermediate_size"] = c.get("n_inner") or c.get("ffn_hidden_size") or int(ratio * out["hidden_size"])
    if mt == "falcon":
        heads = int(out["num_attention_heads"])
        if out.get("new_decoder_architecture"):
            kv = out.get("num_kv_heads") or heads
        else:
            kv = 1 if out.get("multi_query", True) else heads
        out["num_key_value_heads"] = int(kv)
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
    o_bias: bool = False  # attention output projection bias (GPT-NeoX, Phi)
    mlp_bias: bool = False  # biases on the MLP linears (GPT-NeoX, Phi)
    norm_bias: bool = False  # LayerNorm with a bias (Falcon, GPT-NeoX, Phi), not RMSNorm
    lm_head_bias: bool = False  # Phi-1/2
    shared_intermediate: int = 0  # width of the always-on shared expert(s) (DeepSeek-MoE, Qwen2-MoE)
    shared_expert_gate: bool = False  # Qwen2-MoE's sigmoid gate on the shared expert
    dense_layers: int = 0  # leading layers with a dense MLP instead of experts (DeepSeek first_k_dense_replace)
    dense_intermediate: int = 0  # their MLP width

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
        bias += h if self.o_bias else 0
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + bias

    def _mlp_params(self, inter: int) -> int:
        if not inter:
            return 0
        bias = ((2 if self.gated_mlp else 1) * inter + self.hidden) if self.mlp_bias else 0
        return (3 if self.gated_mlp else 2) * self.hidden * inter + bias

    @property
    def expert_params(self) -> int:
        return self._mlp_params(self.intermediate)

    @property
    def shared_params(self) -> int:
        return self._mlp_params(self.shared_intermediate) + (self.hidden if self.shared_expert_gate else 0)

    @property
    def router_params(self) -> int:
        return self.hidden * self.experts if self.experts > 1 else 0

    @property
    def norm_params(self) -> int:
        return self.hidden * (2 if self.norm_bias else 1)

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.experts > 1 else 0

    def layer_params(self, active: bool = False) -> int:
        """One (MoE, where the model has experts) decoder layer."""
        e = self.experts_per_token if active and self.experts > 1 else self.experts
        return (self.attn_params + e * self.expert_params + self.shared_params + self.router_params
                + self.norms_per_layer * self.norm_params)

    def dense_layer_params(self) -> int:
        return self.attn_params + self._mlp_params(self.dense_intermediate or self.intermediate) + self.norms_per_layer * self.norm_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return self.vocab * self.hidden

    def params(self, active: bool = False) -> int:
        """All parameters (``active``: those one token uses — MoE routes to ``experts_per_token``)."""
        head = (0 if self.tied else self.lm_head_params) + (self.vocab if self.lm_head_bias else 0)
        moe = self.moe_layers if self.experts > 1 else self.layers
        return (moe * self.layer_params(active) + (self.layers - moe) * self.dense_layer_params() + self.norm_params
                + self.embedding_params + head)

    def linear_params(self, active: bool = False) -> int:
        """Parameters in the layers' linear projections (what LoRA targets and NF4 quantizes)."""
        e = self.experts_per_token if active and self.experts > 1 else self.experts
        moe = self.moe_layers if self.experts > 1 else self.layers
        dense_mlp = (3 if self.gated_mlp else 2) * self.hidden * (self.dense_intermediate or self.intermediate)
        shared = (3 if self.gated_mlp else 2) * self.hidden * self.shared_intermediate
        return moe * (self.attn_params + e * self.expert_params + shared) + (self.layers - moe) * (self.attn_params + dense_mlp)

    def kv_bytes_per_token(self, kv_bits: int = 16) -> float:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_dim * kv_bits / 8

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_config(cls, key: str, c: dict, official: int | None = None, official_active: int | None = None) -> Model:
        c = _normalise_config(c)
        mt = c.get("model_type")
        try:
            hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
            moe = int(c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts") or 1)
            inter = int(c.get("moe_intermediate_size") if moe > 1 and c.get("moe_intermediate_size") else c["intermediate_size"])
            shared = int(c.get("shared_expert_intermediate_size") or 0)
            if c.get("n_shared_experts"):
                shared = int(c["n_shared_experts"]) * inter
            dense = 0
            if moe > 1 and c.get("first_k_dense_replace"):
                dense = int(c["first_k_dense_replace"])
            if mt == "falcon":
                norms = 2 if c.get("new_decoder_architecture") or not c.get("parallel_attn", True) else 1
            else:
                norms = 4 if mt == "gemma2" else 2
            if mt == "phi":
                norms = 1  # one LayerNorm feeds the parallel attention and MLP
            biased = mt == "phi" or (mt == "falcon" and bool(c.get("bias"))) or (mt == "mpt" and not c.get("no_bias", True))
            attn_bias = bool(c.get("attention_bias", False))
            tie_default = TIED_BY_DEFAULT.get(mt, True) if mt else False
            return cls(
                key=key, hidden=hidden, intermediate=inter,
                layers=int(c["num_hidden_layers"]), heads=heads,
                kv_heads=int(c.get("num_key_value_heads") or heads), head_dim=int(c.get("head_dim") or hidden // heads),
                vocab=int(c["vocab_size"]), tied=bool(c.get("tie_word_embeddings", tie_default)),
                qkv_bias=attn_bias or mt in ("qwen", "qwen2", "qwen2_moe") or biased,
                experts=moe, experts_per_token=int(c.get("num_experts_per_tok") or 1),
                gated_mlp=mt not in NON_GATED,
                norms_per_layer=norms,
                max_position=int(c.get("max_position_embeddings") or 4096),
                official_params=official, official_active_params=official_active,
                o_bias=biased or (attn_bias and mt in ("gpt_neox", "llama")),
                mlp_bias=biased or mt == "gpt_neox" or bool(c.get("mlp_bias")),
                norm_bias=mt in ("falcon", "gpt_neox", "phi", "gpt2", "opt", "bloom") or biased,
                lm_head_bias=mt == "phi", shared_intermediate=shared, shared_expert_gate=mt == "qwen2_moe" and shared > 0,
                dense_layers=dense, dense_intermediate=int(c["intermediate_size"]) if dense else 0)
        except KeyError as e:
            raise ThresherError(f"model '{key}': config lacks {e.args[0]}") from None


def config_name(c: dict, m: Model) -> str:
    """The model's name from its config: ``_name_or_path`` (its last part if it is a local path),
    else model_type and size (``falcon-6.9b``)."""
    n = str(c.get("_name_or_path") or "").strip()
    if n:
        return n.rstrip("/").rsplit("/", 1)[-1] if n.startswith(("/", ".", "~")) else n
    mt = str(c.get("model_type") or "model")
    mt = MODEL_TYPE_ALIASES.get(mt, mt)
    return f"{mt}-{m.params() / 1e9:.1f}b"


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
        if not isinstance(cfg, dict):
            raise ThresherError(f"{p}: not a config.json object")
        m = Model.from_config(str(p), cfg)
        return dataclasses.replace(m, key=config_name(cfg, m))
    cat = catalogue()
    key = name.lower().strip()
    if key not in cat:
        close = difflib.get_close_matches(key, list(cat), n=1, cutoff=0.3)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ThresherError(f"unknown model '{name}'.{hint} Known: {', '.join(cat)}; or give the path of a "
                            "Hugging Face config.json")
    return cat[key]
