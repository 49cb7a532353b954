"""Serving planner: weights and KV-cache memory (vLLM's block arithmetic), prefill latency, decode
step latency against batch size, the largest batch that meets the latency SLOs, throughput,
replicas for a target request rate, and $ per million tokens."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.roofline import CALIBRATED, IDEAL, Efficiency, Precision, forward
from thresher.capacity.stats import LengthStats

GIB = 1 << 30
# CUDA reports ~1% less than the marketed capacity (an A100-80GB shows 79.15 GiB of 80 in
# torch.cuda.mem_get_info / vLLM's log): ECC and driver reservations.
CUDA_VISIBLE = 79.15 / 80
# vLLM's profiling run also sees allocations outside PyTorch's allocator (cuBLAS/NCCL workspaces,
# CUDA graphs' pools): ~0.6 GiB on a single A100/H100 in vLLM's "non_torch_memory" log line.
NON_TORCH_BYTES = 0.6 * GIB


@dataclass
class ServeInputs:
    prompt: LengthStats
    output: LengthStats
    rate: float = 1.0  # requests / s to serve
    ttft_p95_s: float = 1.0
    tpot_s: float = 0.05  # time per output token
    precision: Precision = field(default_factory=Precision)
    tp: int = 1
    gpu_memory_utilization: float = 0.9
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None  # vLLM's default: max(max_model_len, 2048)
    max_model_len: int | None = None
    mode: str = "calibrated"


def weights_bytes(m: Model, p: Precision, tp: int = 1) -> float:
    """Per GPU: layer linears at the weight precision; embeddings, LM head and norms at 16 bits
    (what AWQ/GPTQ/FP8 checkpoints keep)."""
    linear = m.linear_params()
    other = m.params() - linear
    return (linear * p.weight_bits / 8 + other * 2) / tp


def profile_activation_bytes(m: Model, batched_tokens: int, max_num_seqs: int, p: Precision, tp: int = 1) -> float:
    """Peak activation of vLLM's profiling forward pass (``max_num_batched_tokens`` tokens, logits
    for ``max_num_seqs`` sequences): the MLP's input, gate/up outputs and activation at once, plus
    fp32 logits, probabilities and log-probabilities in the sampler."""
    a = p.act_bits / 8
    inter = (m.intermediate * (m.experts_per_token if m.experts > 1 else 1)) // tp
    mlp = batched_tokens * (2 * m.hidden + 3 * inter) * a
    sampler = 3 * max_num_seqs * m.vocab * 4
    return mlp + sampler


def kv_cache_blocks(m: Model, gpu: GPU, s: ServeInputs) -> tuple[int, dict]:
    """vLLM's KV blocks: (total GPU memory x gpu_memory_utilization - weights - profiled peak
    activation - non-torch memory) / (block_size x KV bytes per token per GPU)."""
    max_len = s.max_model_len or m.max_position
    batched = s.max_num_batched_tokens or max(max_len, 2048)
    total = gpu.memory_bytes * CUDA_VISIBLE
    w = weights_bytes(m, s.precision, s.tp)
    act = profile_activation_bytes(m, batched, s.max_num_seqs, s.precision, s.tp)
    budget = total * s.gpu_memory_utilization - w - act - NON_TORCH_BYTES
    per_block = s.block_size * m.kv_bytes_per_token(s.precision.kv_bits) / s.tp
    blocks = max(0, math.floor(budget / per_block))
    return blocks, {"total": total, "weights": w, "activation_peak": act, "non_torch": NON_TORCH_BYTES,
                    "kv_cache": blocks * per_block, "kv_bytes_per_token": m.kv_bytes_per_token(s.precision.kv_bits) / s.tp,
                    "unused": total - total * s.gpu_memory_utilization}


@dataclass
class ServePlan:
    model: str
    gpu: str
    tp: int
    weights_gib: float
    kv_bytes_per_token: float
    kv_blocks: int
    kv_tokens: int
    max_concurrent: int
    prefill_ms_p50: float
    prefill_ms_p95: float
    decode_ms_by_batch: dict[int, float]
    batch: int
    tpot_ms: float
    tokens_per_s: float
    requests_per_s: float
    replicas: int
    gpus: int
    usd_per_hour: float
    usd_per_million_tokens: float
    usd_per_million_output_tokens: float
    memory: dict
    meets_slo: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def plan_serving(m: Model, gpu: GPU, s: ServeInputs) -> ServePlan:
    eff: Efficiency = CALIBRATED if s.mode == "calibrated" else IDEAL
    blocks, mem = kv_cache_blocks(m, gpu, s)
    kv_tokens = blocks * s.block_size
    per_seq = s.prompt.mean + s.output.mean
    max_conc = min(s.max_num_seqs, int(kv_tokens // max(per_seq, 1)))
    p50, p95 = s.prompt.quantile(0.5), s.prompt.quantile(0.95)
    ctx = int(s.prompt.mean + s.output.mean / 2)  # mean KV length during decode

    def prefill(n: float) -> float:
        return forward(m, gpu, "prefill", 1, max(1, int(n)), p=s.precision, eff=eff, tp=s.tp).time

    def step(b: int) -> float:
        return forward(m, gpu, "decode", b, ctx, p=s.precision, eff=eff, tp=s.tp).time

    batches = sorted({b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, max_conc) if 1 <= b <= max(1, max_conc)})
    decode = {b: step(b) for b in batches}
    pf_mean, pf95 = prefill(s.prompt.mean), prefill(p95)
    # the largest batch whose step time meets TPOT (prefills interleave, so TTFT ~ a p95 prefill
    # plus one decode step it waits behind)
    best = 0
    for b in range(1, max(1, max_conc) + 1):
        t = decode.get(b) or step(b)
        if t <= s.tpot_s and pf95 + t <= s.ttft_p95_s:
            best = b
        else:
            break
    meets = best > 0 and blocks > 0
    b = best if meets else 1
    tpot = decode.get(b) or step(b)
    # a generation of b requests: out_mean decode steps plus b prefills (without chunked prefill)
    rps = b / (s.output.mean * tpot + b * pf_mean)
    tokens_per_s = rps * s.output.mean
    replicas = max(1, math.ceil(s.rate / rps)) if meets else 0
    usd_h = replicas * s.tp * gpu.price_per_hour
    served = s.rate * 3600
    per_m = usd_h / (served * per_seq) * 1e6 if meets else float("inf")
    per_m_out = usd_h / (served * s.output.mean) * 1e6 if meets else float("inf")
    note = ""
    if blocks == 0:
        note = (f"the weights ({mem['weights'] / GIB:.1f} GiB per GPU) leave no room for a KV cache on {gpu.key}: "
                "use more tensor parallelism, a quantized model, or a GPU with more memory")
    elif not meets:
        note = f"no batch meets TPOT {s.tpot_s * 1e3:.0f} ms and TTFT p95 {s.ttft_p95_s * 1e3:.0f} ms on {gpu.key}"
    return ServePlan(m.key, gpu.key, s.tp, mem["weights"] / GIB, mem["kv_bytes_per_token"], blocks, kv_tokens, max_conc,
                     prefill(p50) * 1e3, pf95 * 1e3, {k: v * 1e3 for k, v in decode.items()}, b, tpot * 1e3,
                     tokens_per_s, rps, replicas, replicas * s.tp, usd_h, per_m, per_m_out,
                     {k: v / GIB for k, v in mem.items() if k != "kv_bytes_per_token"}, meets, note)
