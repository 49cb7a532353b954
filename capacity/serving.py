"""Serving planner: weights and KV-cache memory (vLLM's block arithmetic), prefill latency, decode
step latency against batch size, the largest batch that meets the latency SLOs, throughput,
replicas for a target request rate, and $ per million tokens."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.roofline import CALIBRATED, IDEAL, Efficiency, Precision, forward
from thresher.capacity.stats import LengthStats
from thresher.pipeline.errors import ThresherError

GIB = 1 << 30
# CUDA reports ~1% less than the marketed capacity (an A100-80GB shows 79.15 GiB of 80 in
# torch.cuda.mem_get_info / vLLM's log): ECC and driver reservations.
CUDA_VISIBLE = 79.15 / 80
# vLLM's profiling run also sees allocations outside PyTorch's allocator (cuBLAS workspaces, CUDA
# graphs' pools): ~0.6 GiB on a single A100/H100 in vLLM's "non_torch_memory" log line. Under tensor
# parallelism NCCL's buffers and the all-reduce nodes captured in every CUDA graph add memory that
# grows with the layers (two all-reduces each) and with the peers: ~54 MiB per layer per extra rank.
# Calibrated on vLLM PR #2031 (github.com/vllm-project/vllm/pull/2031, WoosukKwon, Dec 2023): after
# its profiling fix Llama-2-70B at TP 4 on 4x A100-80GB logs "# GPU blocks: 20865" (and Llama-2-7B
# at TP 1: 7351); cross-checked on vLLM PR #10511, where Llama-3-8B's non_torch_memory goes from
# 1.79 GiB at TP 1 to 3.58 GiB at TP 2 (+1.79 GiB; this model: +32 x 54 MiB = +1.69 GiB).
NON_TORCH_BYTES = 0.6 * GIB
NON_TORCH_PER_LAYER_PER_PEER = 54 * (1 << 20)
BLOCK_SIZES = (8, 16, 32)  # what vLLM's CUDA paged-attention kernels accept


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
    objective: str = "slo"  # slo: the largest batch meeting TTFT/TPOT; throughput: the largest that fits
    chunked_prefill: bool = True  # prefills split into chunks that ride along the decode steps

    def validate(self) -> None:
        if not self.rate > 0:
            raise ThresherError(f"--rate {self.rate:g}: requests per second must be above 0")
        if self.output.mean < 1:
            raise ThresherError("--output-len: responses must average at least 1 token")
        if self.prompt.mean < 1:
            raise ThresherError("--prompt-len: prompts must average at least 1 token")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ThresherError(f"--gpu-memory-utilization {self.gpu_memory_utilization:g}: use a share in (0, 1]")
        if self.block_size not in BLOCK_SIZES:
            raise ThresherError(f"--block-size {self.block_size}: vLLM takes {', '.join(map(str, BLOCK_SIZES))}")
        if self.max_num_seqs < 1:
            raise ThresherError(f"--max-num-seqs {self.max_num_seqs}: use 1 or more")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ThresherError(f"--max-model-len {self.max_model_len}: use 1 or more")
        if not (self.ttft_p95_s > 0 and self.tpot_s > 0):
            raise ThresherError("--ttft and --tpot must be above 0")
        if self.objective not in ("slo", "throughput"):
            raise ThresherError(f"objective {self.objective!r}: use slo or throughput")


def non_torch_bytes(m: Model, tp: int = 1) -> float:
    """Memory outside PyTorch's allocator per GPU: a fixed base plus NCCL/CUDA-graph memory that
    grows with the layers and the tensor-parallel peers (see ``NON_TORCH_PER_LAYER_PER_PEER``)."""
    return NON_TORCH_BYTES + NON_TORCH_PER_LAYER_PER_PEER * m.layers * max(0, tp - 1)


def check_tp(m: Model, tp: int) -> None:
    """vLLM's constraints: TP divides the attention heads, and the KV heads (or is a multiple of them)."""
    if tp < 1:
        raise ThresherError(f"--tp {tp}: use 1 or more")
    if m.heads % tp:
        raise ThresherError(f"--tp {tp} does not divide {m.key}'s {m.heads} attention heads; use one of "
                            f"{', '.join(str(t) for t in range(1, m.heads + 1) if m.heads % t == 0 and t <= 16)}")
    if m.kv_heads % tp and tp % m.kv_heads:
        raise ThresherError(f"--tp {tp} neither divides nor is a multiple of {m.key}'s {m.kv_heads} KV heads")


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
    nt = non_torch_bytes(m, s.tp)
    budget = total * s.gpu_memory_utilization - w - act - nt
    per_block = s.block_size * m.kv_bytes_per_token(s.precision.kv_bits) / s.tp
    blocks = max(0, math.floor(budget / per_block))
    return blocks, {"total": total, "weights": w, "activation_peak": act, "non_torch": nt,
                    "kv_cache": blocks * per_block, "kv_bytes_per_token": m.kv_bytes_per_token(s.precision.kv_bits) / s.tp,
                    "unused": total - total * s.gpu_memory_utilization}


# Calibrated decode bandwidth efficiency (share of HBM bandwidth a decode step's memory traffic
# reaches) depends on the batch and the KV size, not one batch-1 factor for every step:
# - weight streaming (and activations): ``Efficiency.memory`` (0.60, Databricks' batch-1 MBU);
# - KV reads (paged attention): low when the step reads little KV (per-block bookkeeping, small
#   loads, few thread blocks), approaching KV_MBU_MAX as batch x context grows (half way at
#   KV_MBU_HALF_TOKENS tokens of KV read per step). Assumptions until bench/capacity_gpu.py
#   measures them; the step time still grows with batch and context (efficiency / tokens falls).
KV_MBU_MIN, KV_MBU_MAX, KV_MBU_HALF_TOKENS = 0.35, 0.85, 16384


def decode_efficiency(batch: int, context: int, base: Efficiency = CALIBRATED) -> tuple[float, float]:
    """(weight-streaming, KV-read) bandwidth efficiency of one decode step of ``batch`` sequences
    at ``context`` tokens of KV each."""
    x = batch * context
    return base.memory, KV_MBU_MIN + (KV_MBU_MAX - KV_MBU_MIN) * x / (x + KV_MBU_HALF_TOKENS)


def decode_step(m: Model, gpu: GPU, batch: int, context: int, p: Precision, tp: int = 1,
                mode: str = "calibrated") -> float:
    """Seconds per decode step: the roofline with batch- and KV-dependent bandwidth efficiency in
    calibrated mode (ideal: the plain roofline)."""
    if mode != "calibrated":
        return forward(m, gpu, "decode", batch, context, p=p, eff=IDEAL, tp=tp).time
    f = forward(m, gpu, "decode", batch, context, p=p, eff=CALIBRATED, tp=tp)
    w_eff, kv_eff = decode_efficiency(batch, context)
    peak = gpu.peak(p.compute_dtype) * CALIBRATED.compute
    t = f.overhead
    for o in f.ops:
        if o.bound == "interconnect":
            t += o.time * o.count
            continue
        eff = kv_eff if o.name.startswith("attention") else w_eff
        t += max(o.flops / peak, o.bytes / (gpu.bandwidth * eff)) * o.count
    return t


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
    loadable: bool = True  # False: vLLM would refuse to start (latency figures are then 0)
    objective: str = "slo"
    ttft_ms_p95: float = 0.0
    block_size: int = 16
    kv_bits: int = 16
    fits_instead: str = ""  # when not loadable: what would load

    def to_dict(self) -> dict:
        return asdict(self)


def _loads(m: Model, gpu: GPU, s: ServeInputs) -> tuple[bool, int]:
    blocks, _ = kv_cache_blocks(m, gpu, s)
    return blocks * s.block_size >= (s.max_model_len or m.max_position), blocks


def what_fits(m: Model, gpu: GPU, s: ServeInputs) -> str:
    """The nearest configurations that would load: more tensor parallelism, a quantized model, a
    shorter --max-model-len, an 8-bit KV cache."""
    out = []
    for tp in (2, 4, 8, 16):
        if tp <= s.tp or m.heads % tp or (m.kv_heads % tp and tp % m.kv_heads):
            continue
        ok, blocks = _loads(m, gpu, replace(s, tp=tp))
        if ok:
            out.append(f"TP {tp} ({blocks:,} KV blocks)")
            break
    for w in (8, 4):
        if w < s.precision.weight_bits:
            ok, blocks = _loads(m, gpu, replace(s, precision=replace(s.precision, weight_bits=w)))
            if ok:
                out.append(f"w{w}a16 weights at TP {s.tp} ({blocks:,} KV blocks)")
                break
    blocks, _ = kv_cache_blocks(m, gpu, s)
    if blocks > 0:
        out.append(f"--max-model-len {blocks * s.block_size} (what {blocks:,} KV blocks hold)")
        if s.precision.kv_bits > 8:
            ok, b8 = _loads(m, gpu, replace(s, precision=replace(s.precision, kv_bits=8)))
            if ok:
                out.append(f"an FP8 KV cache ({b8:,} blocks)")
    return "; or ".join(out) or "a GPU with more memory"


def plan_serving(m: Model, gpu: GPU, s: ServeInputs) -> ServePlan:
    s.validate()
    check_tp(m, s.tp)
    if s.max_model_len is not None and s.max_model_len > m.max_position:
        raise ThresherError(f"--max-model-len {s.max_model_len} is over {m.key}'s {m.max_position:,} positions")
    eff: Efficiency = CALIBRATED if s.mode == "calibrated" else IDEAL
    blocks, mem = kv_cache_blocks(m, gpu, s)
    kv_tokens = blocks * s.block_size
    max_len = s.max_model_len or m.max_position
    per_seq = s.prompt.mean + s.output.mean
    max_conc = min(s.max_num_seqs, int(kv_tokens // max(per_seq, 1)))
    mem_gib = {k: v / GIB for k, v in mem.items() if k != "kv_bytes_per_token"}
    common = dict(model=m.key, gpu=gpu.key, tp=s.tp, weights_gib=mem["weights"] / GIB,
                  kv_bytes_per_token=mem["kv_bytes_per_token"], kv_blocks=blocks, kv_tokens=kv_tokens,
                  memory=mem_gib, objective=s.objective, block_size=s.block_size, kv_bits=s.precision.kv_bits)
    if kv_tokens < max_len or max_conc < 1:
        usable = mem["total"] * s.gpu_memory_utilization / GIB
        if blocks == 0:
            why = (f"the weights ({mem['weights'] / GIB:.1f} GiB per GPU) with activations and non-torch memory "
                   f"({(mem['activation_peak'] + mem['non_torch']) / GIB:.1f} GiB) leave no room for a KV cache in "
                   f"the {usable:.1f} GiB usable on {gpu.key}")
        elif kv_tokens < max_len:
            why = f"its {kv_tokens:,}-token KV cache is shorter than max_model_len {max_len:,} on {gpu.key}"
        else:
            why = f"its {kv_tokens:,}-token KV cache holds no {per_seq:.0f}-token request on {gpu.key}"
        fits = what_fits(m, gpu, s)
        return ServePlan(**common, max_concurrent=0, prefill_ms_p50=0.0, prefill_ms_p95=0.0, decode_ms_by_batch={},
                         batch=0, tpot_ms=0.0, tokens_per_s=0.0, requests_per_s=0.0, replicas=0, gpus=0,
                         usd_per_hour=0.0, usd_per_million_tokens=float("inf"),
                         usd_per_million_output_tokens=float("inf"), meets_slo=False,
                         note=f"cannot load at TP {s.tp}: {why}. Would load: {fits}", loadable=False,
                         fits_instead=fits)

    p50, p95 = s.prompt.quantile(0.5), s.prompt.quantile(0.95)
    pm, om = s.prompt.mean, s.output.mean  # mean prompt (P) and output (O) tokens
    ctx = int(pm + om / 2)  # mean KV length during decode
    budget = s.max_num_batched_tokens or (2048 if s.chunked_prefill else max(max_len, 2048))

    def prefill(n: float) -> float:
        return forward(m, gpu, "prefill", 1, max(1, int(n)), p=s.precision, eff=eff, tp=s.tp).time

    # continuous batching with chunked prefill: each step decodes b tokens and prefills b x P / O
    # prompt tokens (every request needs its prompt once per O output tokens) in the same forward;
    # the prefill tokens ride on the weights the decode already streams, so they add their compute
    pf = forward(m, gpu, "prefill", 1, max(1, int(pm)), p=s.precision, eff=eff, tp=s.tp)
    pf_flop_time = pf.flops / max(1, int(pm)) / (gpu.peak(s.precision.compute_dtype) * eff.compute)
    decode_cache: dict[int, float] = {}

    def step(b: int) -> float:
        if b not in decode_cache:
            decode_cache[b] = decode_step(m, gpu, b, ctx, s.precision, s.tp, s.mode)
        return decode_cache[b]

    def mixed(b: int) -> float:
        return step(b) + (b * pm / om * pf_flop_time if s.chunked_prefill else 0.0)

    pf_mean, pf95 = prefill(pm), prefill(p95)

    def ttft(b: int) -> float:
        if not s.chunked_prefill:
            return pf95 + step(b)
        chunk = max(1, budget - b)
        return max(pf95, math.ceil(p95 / chunk) * mixed(b)) + mixed(b)

    def rps_at(b: int) -> float:
        if s.chunked_prefill:
            return b / (om * mixed(b))
        return b / (om * step(b) + b * pf_mean)  # serial: b prefills, then om decode steps

    if s.objective == "throughput":
        best = max_conc  # memory-bound batch: as many requests as the KV cache (and max_num_seqs) hold
    else:
        best = 0
        for b in range(1, max_conc + 1):
            if mixed(b) <= s.tpot_s and ttft(b) <= s.ttft_p95_s:
                best = b
            else:
                break
    meets = best > 0
    b = best if meets else 1
    tpot = mixed(b)
    rps = rps_at(b)
    tokens_per_s = rps * om
    replicas = max(1, math.ceil(s.rate / rps)) if meets else 0
    usd_h = replicas * s.tp * gpu.price_per_hour
    served = s.rate * 3600
    per_m = usd_h / (served * per_seq) * 1e6 if meets else float("inf")
    per_m_out = usd_h / (served * om) * 1e6 if meets else float("inf")
    note = ""
    if not meets:
        note = (f"no batch meets TPOT {s.tpot_s * 1e3:.0f} ms and TTFT p95 {s.ttft_p95_s * 1e3:.0f} ms on {gpu.key} "
                f"(batch 1: TPOT {mixed(1) * 1e3:.1f} ms, TTFT p95 {ttft(1) * 1e3:.0f} ms)")
    batches = sorted({x for x in (1, 2, 4, 8, 16, 32, 64, 128, 256, max_conc) if 1 <= x <= max_conc})
    return ServePlan(**common, max_concurrent=max_conc, prefill_ms_p50=prefill(p50) * 1e3, prefill_ms_p95=pf95 * 1e3,
                     decode_ms_by_batch={x: step(x) * 1e3 for x in batches}, batch=b, tpot_ms=tpot * 1e3,
                     tokens_per_s=tokens_per_s, requests_per_s=rps, replicas=replicas, gpus=replicas * s.tp,
                     usd_per_hour=usd_h, usd_per_million_tokens=per_m, usd_per_million_output_tokens=per_m_out,
                     meets_slo=meets, note=note, ttft_ms_p95=ttft(b) * 1e3)
