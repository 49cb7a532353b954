"""Training planner: per-GPU memory (weights, gradients, optimizer states, activations, logits
peak, framework reserve), FLOPs (dense 6N-style term per token plus attention from Σ len², not
mean len), step time, total time, GPU-hours and cost for full fine-tuning, LoRA and QLoRA under
ZeRO 0–3 / FSDP, tensor and pipeline parallelism and activation recomputation.

Sources of the formulas:
- Mixed-precision AdamW memory, 2 + 2 + 12 bytes per parameter, and ZeRO's partitioning of
  optimizer states (stage 1), gradients (2) and parameters (3): Rajbhandari et al., "ZeRO", SC 2020, §3.
- Activations per layer and token, and recomputation: Korthikanti et al., "Reducing Activation
  Recomputation in Large Transformer Models", 2022 (their 34·s·b·h + 5·a·s²·b, generalised here to
  GQA and gated MLPs by counting every saved tensor; FlashAttention saves no s² scores).
- Training FLOPs 6N per token plus 12·L·d·s per token for attention: Chowdhery et al., "PaLM",
  2022, appendix B (MFU); summed per sequence as 12·L·d·Σ s².
- QLoRA storage, NF4 plus double-quantized constants = 4.127 bits per parameter: Dettmers et al.,
  "QLoRA", 2023, §3.
- 8-bit Adam states, 2 bytes per parameter: Dettmers et al., "8-bit Optimizers via Block-wise
  Quantization", ICLR 2022.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.serving import CUDA_VISIBLE, GIB
from thresher.capacity.stats import LengthStats

NF4_BITS = 4 + 0.127  # QLoRA §3: NF4 + double-quantized block constants
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
INTER_NODE_GBS = 25.0  # per GPU between nodes: 200 Gb/s InfiniBand per GPU (assumption; override)
GPUS_PER_NODE = 8
CUDA_CONTEXT = 0.5 * GIB  # CUDA context + cuBLAS/NCCL workspaces
FRAGMENTATION = 0.05  # share of allocated memory lost to the caching allocator's fragmentation

# Calibrated hardware-FLOPs utilisation (what share of dense peak the step reaches):
# full fine-tuning 0.45 ~ PaLM's 46.2% MFU (Chowdhery et al. 2022, Table 3); LoRA and QLoRA run
# smaller trainable matmuls and (QLoRA) dequantize NF4 weights on every forward: 0.40 and 0.30 are
# assumptions until bench/capacity_gpu.py measures them on the target GPU.
CALIBRATED_HFU = {"full": 0.45, "lora": 0.40, "qlora": 0.30}
CALIBRATED_OVERLAP = 0.8  # share of gradient/parameter communication hidden behind compute


@dataclass
class TrainInputs:
    data: LengthStats
    epochs: float = 1.0
    max_len: int = 2048
    packing: bool = True
    method: str = "full"  # full | lora | qlora
    lora_rank: int = 16
    lora_targets: tuple[str, ...] = LORA_TARGETS
    optimizer: str = "adamw"  # adamw | adamw8bit
    zero: int = 0  # 0-3 (3 = FSDP full shard)
    tp: int = 1
    pp: int = 1
    recompute: str = "none"  # none | selective | full
    micro_batch: int = 1  # sequences per GPU per micro-step
    global_batch: int = 64  # sequences per optimizer step
    gpus: int = 1
    flash: bool = True
    mode: str = "calibrated"
    hfu: float | None = None

    @property
    def dp(self) -> int:
        return max(1, self.gpus // (self.tp * self.pp))


def lora_params(m: Model, rank: int, targets: tuple[str, ...]) -> int:
    shapes = {"q_proj": (m.hidden, m.q_dim), "k_proj": (m.hidden, m.kv_dim), "v_proj": (m.hidden, m.kv_dim),
              "o_proj": (m.q_dim, m.hidden), "gate_proj": (m.hidden, m.intermediate),
              "up_proj": (m.hidden, m.intermediate), "down_proj": (m.intermediate, m.hidden)}
    unknown = set(targets) - set(shapes)
    if unknown:
        raise ValueError(f"unknown LoRA target(s) {sorted(unknown)}; known: {', '.join(shapes)}")
    n = 0
    for t in targets:
        d_in, d_out = shapes[t]
        per = rank * (d_in + d_out)
        n += per * (m.experts if t in ("gate_proj", "up_proj", "down_proj") else 1)
    return n * m.layers


def activation_bytes_per_token_layer(m: Model, recompute: str, flash: bool, seq: int) -> float:
    """Bytes one layer keeps for the backward pass per token (16-bit activations)."""
    if recompute == "full":
        return 2 * m.hidden  # only the layer's input
    h, q, kv = m.hidden, m.q_dim, m.kv_dim
    inter = m.intermediate * (m.experts_per_token if m.experts > 1 else 1)
    attn = 2 * h + 2 * h + 2 * q + 2 * kv + 2 * kv + 2 * q  # norm in/out, q, k, v, attention output
    mlp = 2 * h + 2 * h + (8 if m.gated_mlp else 4) * inter  # norm in/out, gate/up/act/product
    scores = 0 if flash or recompute == "selective" else 4 * m.heads * seq + m.heads * seq  # scores, softmax, dropout mask
    return attn + mlp + scores


@dataclass
class MemoryBreakdown:
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    reserve: float
    capacity: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.reserve

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def largest(self) -> tuple[str, float]:
        parts = {k: v for k, v in asdict(self).items() if k != "capacity"}
        k = max(parts, key=parts.get)
        return k, parts[k]

    def gib(self) -> dict:
        d = {k: round(v / GIB, 2) for k, v in asdict(self).items()}
        d["total"] = round(self.total / GIB, 2)
        d["fits"] = self.fits
        return d


def memory(m: Model, gpu: GPU, t: TrainInputs) -> MemoryBreakdown:
    n = m.params()
    shard = t.tp * t.pp
    dp = t.dp
    if t.method == "full":
        weights = 2 * n / shard / (dp if t.zero >= 3 else 1)
        grads = 2 * n / shard / (dp if t.zero >= 2 else 1)
        per_param = 12 if t.optimizer == "adamw" else 6  # fp32 master + m + v (8-bit: master + 2 x 1 byte)
        optim = per_param * n / shard / (dp if t.zero >= 1 else 1)
    else:
        lora = lora_params(m, t.lora_rank, t.lora_targets)
        if t.method == "qlora":
            base = m.linear_params() * NF4_BITS / 8 + (n - m.linear_params()) * 2
        else:
            base = 2 * n
        weights = (base / (dp if t.zero >= 3 else 1) + 4 * lora) / shard  # adapters in fp32
        grads = 4 * lora / shard
        optim = (8 if t.optimizer == "adamw" else 2) * lora / shard
    seq = t.max_len
    tokens = t.micro_batch * seq
    act = tokens * m.layers * activation_bytes_per_token_layer(m, t.recompute, t.flash, seq) / t.tp
    if t.recompute == "full":  # plus the one layer being recomputed
        act += tokens * activation_bytes_per_token_layer(m, "none", t.flash, seq) / t.tp
    logits = tokens * m.vocab * (2 + 4) / t.tp  # bf16 logits + their fp32 copy for the loss
    reserve = CUDA_CONTEXT + FRAGMENTATION * (weights + grads + optim + act + logits)
    return MemoryBreakdown(weights, grads, optim, act, logits, reserve, gpu.memory_bytes * CUDA_VISIBLE)


@dataclass
class TrainPlan:
    model: str
    gpu: str
    gpus: int
    method: str
    zero: int
    tp: int
    pp: int
    recompute: str
    micro_batch: int
    global_batch: int
    tokens: float
    model_flops: float
    hardware_flops: float
    steps: int
    step_s: float
    hours: float
    gpu_hours: float
    cost_usd: float
    mfu: float
    memory: dict
    fits: bool
    params: int
    trainable_params: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def token_counts(t: TrainInputs) -> tuple[float, float]:
    """(tokens trained on per epoch, Σ over attention windows of len²). Packed: documents longer than
    max_len are cut into max_len chunks, attention stays within a document (varlen attention);
    unpacked: every example truncated and padded to max_len."""
    x = t.data.lengths
    if t.packing:
        full, rest = np.floor_divide(x, t.max_len), np.mod(x, t.max_len)
        tokens = float(x.sum())
        squares = float((full * t.max_len ** 2 + rest.astype(np.float64) ** 2).sum())
    else:
        tokens = float(len(x)) * t.max_len
        squares = float(len(x)) * t.max_len ** 2
    return tokens * t.data.scale, squares * t.data.scale


def flops(m: Model, t: TrainInputs) -> tuple[float, float, float]:
    """(tokens, model FLOPs, hardware FLOPs incl. recomputation) for all epochs."""
    tokens, squares = token_counts(t)
    matmul = m.linear_params(active=True) + m.lm_head_params  # embeddings are a lookup
    attn = 12 * m.layers * m.q_dim * squares  # fwd 4·L·d·s² per sequence, x3 for training
    if t.method == "full":
        dense = 6 * matmul * tokens
    else:  # frozen base: forward + input gradients, no weight gradients; adapters train fully
        dense = 4 * matmul * tokens + 6 * lora_params(m, t.lora_rank, t.lora_targets) * tokens
    model = (dense + attn) * t.epochs
    extra = 0.0
    if t.recompute == "full":
        extra = (2 * matmul * tokens + attn / 3) * t.epochs
    elif t.recompute == "selective" and not t.flash:
        extra = attn / 3 * t.epochs
    return tokens * t.epochs, model, model + extra


def plan_training(m: Model, gpu: GPU, t: TrainInputs) -> TrainPlan:
    mem = memory(m, gpu, t)
    tokens, model_f, hw_f = flops(m, t)
    calibrated = t.mode == "calibrated"
    hfu = t.hfu if t.hfu is not None else (CALIBRATED_HFU[t.method] if calibrated else 1.0)
    peak = gpu.peak("bf16")
    tokens_per_step = t.global_batch * t.max_len if t.packing else t.global_batch * t.max_len
    steps = max(1, math.ceil(tokens / tokens_per_step))
    compute_step = hw_f / steps / (t.gpus * peak * hfu)
    comm_step = _comm_seconds(m, gpu, t)
    overlap = CALIBRATED_OVERLAP if calibrated else 1.0
    step = max(compute_step, comm_step) + (1 - overlap) * min(compute_step, comm_step)
    seconds = steps * step
    hours = seconds / 3600
    notes = []
    if comm_step > compute_step:
        notes.append(f"communication-bound: {comm_step:.2f} s of gradient/parameter traffic per step vs "
                     f"{compute_step:.2f} s of compute ({gpu.interconnect_kind})")
    if not mem.fits:
        k, v = mem.largest()
        notes.append(f"does not fit: needs {mem.total / GIB:.1f} GiB per GPU of {mem.capacity / GIB:.1f}; "
                     f"largest part: {k} {v / GIB:.1f} GiB")
    trainable = m.params() if t.method == "full" else lora_params(m, t.lora_rank, t.lora_targets)
    return TrainPlan(m.key, gpu.key, t.gpus, t.method, t.zero, t.tp, t.pp, t.recompute, t.micro_batch, t.global_batch,
                     tokens, model_f, hw_f, steps, step, hours, hours * t.gpus, hours * t.gpus * gpu.price_per_hour,
                     model_f / (seconds * t.gpus * peak) if seconds else 0.0, mem.gib(), mem.fits, m.params(),
                     trainable, notes)


def _comm_seconds(m: Model, gpu: GPU, t: TrainInputs) -> float:
    """Per step: ring all-reduce of gradients across data parallel ranks (ZeRO-2/3: reduce-scatter,
    same volume), plus ZeRO-3's parameter all-gathers in forward and backward."""
    dp = t.dp
    if dp <= 1:
        return 0.0
    bw = gpu.interconnect if t.gpus <= GPUS_PER_NODE else min(gpu.interconnect, INTER_NODE_GBS * 1e9)
    grad_bytes = (2 * m.params() if t.method == "full" else 4 * lora_params(m, t.lora_rank, t.lora_targets)) / (t.tp * t.pp)
    ring = 2 * (dp - 1) / dp
    vol = ring * grad_bytes
    if t.zero >= 3:
        weight_bytes = (2 * m.params() if t.method != "qlora" else m.linear_params() * NF4_BITS / 8) / (t.tp * t.pp)
        vol += 2 * (dp - 1) / dp * weight_bytes
    return vol / bw


def gpu_hours(gpus: int, days: float) -> float:
    return gpus * days * 24


def mfu(tokens_per_s_per_gpu: float, m: Model, seq: int, peak: float) -> float:
    """Model FLOPs utilisation from a measured throughput (PaLM appendix B):
    (6N + 12·L·d·s) x tokens/s / peak."""
    return (6 * (m.linear_params(active=True) + m.lm_head_params) + 12 * m.layers * m.q_dim * seq) * tokens_per_s_per_gpu / peak
