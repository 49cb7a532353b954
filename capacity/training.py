"""Training planner: per-GPU memory (weights, gradients, optimizer states, activations, logits
peak, framework reserve), FLOPs (dense 6N-style term per token plus attention from Σ len², not
mean len), step time, total time, GPU-hours and cost for full fine-tuning, LoRA and QLoRA under
ZeRO 0–3 / FSDP, tensor, pipeline (1F1B or interleaved) and context parallelism, activation
recomputation, and SFT / DPO / KTO objectives (frozen reference forwards and memory, or none with
precomputed reference log-probs). Communication volumes and links: capacity/comm.py.

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
  Quantization", ICLR 2022. Paged optimizers (states in unified memory that may page out): QLoRA §3.
- Tensor and sequence parallel activations, sbh(10 + 24/t + 5as/(ht)) and sbh(34 + 5as/h)/t per
  layer: Korthikanti et al. 2022, Table 2.
- ZeRO-3/FSDP transient buffers, the computing and the prefetched unit's gathered parameters:
  PyTorch FSDP (Zhao et al., VLDB 2023; ``limit_all_gathers``).
Checks against published figures: tests/capacity/test_memory.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from thresher.capacity.comm import Layout, StepComm, bubble, step_comm
from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.serving import CUDA_VISIBLE, GIB
from thresher.capacity.stats import LengthStats

NF4_BITS = 4 + 0.127  # QLoRA §3: NF4 + double-quantized block constants
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
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
    """One training job and its layout. ``data`` holds one length per sequence the policy trains on
    (DPO: a pair contributes its chosen and its rejected sequence, so pairs = sequences / 2; KTO: one
    per example). ``global_batch`` and ``micro_batch`` count such sequences (after packing);
    ``global_batch_tokens``, when given, sets the global batch in tokens instead. The global batch
    is exactly dp x micro_batch x accumulation when the layout divides it (the search only
    proposes layouts that do)."""
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
    cp: int = 1  # context (sequence) parallel ranks splitting each sequence
    virtual: int = 1  # interleaved pipeline stages per GPU (Megatron's virtual pipeline)
    global_batch_tokens: int | None = None
    objective: str = "sft"  # sft | dpo | kto
    precomputed_reference: bool = False  # reference log-probs computed beforehand: no reference model
    sequence_parallel: bool = True  # Megatron sequence parallelism with tp > 1 (shards norms and dropouts too)
    adapter_dtype: str = "fp32"  # fp32 (PEFT's default) | bf16 (qlora.py casts adapters with --bf16)
    ep: int = 1  # expert-parallel ranks (MoE): each holds experts/ep of every MoE layer; carved out of dp

    @property
    def dp(self) -> int:
        return max(1, self.gpus // (self.tp * self.pp * self.cp))

    @property
    def sequences_per_step(self) -> int:
        if self.global_batch_tokens:
            return max(1, round(self.global_batch_tokens / self.max_len))
        return max(1, self.global_batch)

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step on each data-parallel rank (pipeline: per pipeline)."""
        return max(1, math.ceil(self.sequences_per_step / (self.dp * self.micro_batch)))


@lru_cache(maxsize=1024)
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


def activation_bytes_per_token_layer(m: Model, recompute: str, flash: bool, seq: int, tp: int = 1,
                                     sequence_parallel: bool = True) -> float:
    """Bytes one layer keeps for the backward pass per token (16-bit activations), per GPU of a
    tensor-parallel group of ``tp``. Korthikanti et al. 2022 (Table 2): per layer sbh(34 + 5as/h)
    without parallelism; tensor parallelism shards all but the 10sbh before and after the parallel
    regions (layer-norm inputs and outputs, dropout masks): sbh(10 + 24/t + 5as/(ht)); sequence
    parallelism shards those too: sbh(34 + 5as/h)/t; selective recomputation drops the 5as/h
    score term. Here every saved tensor is counted for the model's shapes (GQA, gated MLPs, no
    dropout), so a GPT-3-shaped model gives 32 in place of their 34 (no dropout masks);
    FlashAttention saves no s² scores. Full recomputation keeps the layer's input only (2sbh, /t
    with sequence parallelism)."""
    t = max(1, tp)
    if recompute == "full":
        return 2 * m.hidden / (t if sequence_parallel else 1)  # only the layer's input
    h, q, kv = m.hidden, m.q_dim, m.kv_dim
    inter = m.intermediate * (m.experts_per_token if m.experts > 1 else 1)
    replicated = 2 * h + 2 * h + 2 * h + 2 * h  # norm in/out before attention and before the MLP
    attn = 2 * q + 2 * kv + 2 * kv + 2 * q  # q, k, v, attention output (o_proj input)
    mlp = (8 if m.gated_mlp else 4) * inter  # gate/up/act/product (GeLU: input and output)
    scores = 0 if flash or recompute == "selective" else 4 * m.heads * seq + m.heads * seq  # scores, softmax, dropout mask
    return replicated / (t if sequence_parallel else 1) + (attn + mlp + scores) / t


def korthikanti_activation_bytes(s: int, b: int, h: int, a: int, t: int = 1, sequence_parallel: bool = False,
                                 recompute: str = "none") -> float:
    """Activation bytes per transformer layer as Korthikanti et al. 2022 write them (Table 2; 16-bit
    activations, dropout included): none sbh(34 + 5as/h); tensor parallel sbh(10 + 24/t + 5as/(ht));
    + sequence parallel sbh(34 + 5as/h)/t; + selective recomputation sbh·34/t; full 2sbh."""
    sbh = s * b * h
    if recompute == "full":
        return 2 * sbh / (t if sequence_parallel else 1)
    score = 0.0 if recompute == "selective" else 5 * a * s / h
    if sequence_parallel:
        return sbh * (34 + score) / t
    return sbh * (10 + 24 / t + score / t)


ADAPTER_BYTES = {"fp32": 4, "bf16": 2}  # PEFT keeps adapters fp32 (autocast_adapter_dtype); qlora.py casts to bf16
OPTIMIZER_BYTES = {"adamw": 8, "adamw8bit": 2, "paged_adamw": 8, "paged_adamw8bit": 2}  # m + v per trainable param
PAGED = {"paged_adamw", "paged_adamw8bit"}  # bitsandbytes paged optimizers: states in CUDA unified memory
ACTIVATION_FRAGMENTATION = 0.10  # extra share of activations/logits lost to the caching allocator


@dataclass
class MemoryBreakdown:
    """Per-GPU bytes. ``buffers``: transient buffers (ZeRO-3/FSDP gathered layers being used and
    prefetched, reduce-scatter gradient buckets, QLoRA's dequantised weights). ``pageable``: the
    part of ``optimizer`` a paged optimizer lets the driver evict to host memory under pressure, so
    ``fits`` does not require it on the GPU."""
    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    reserve: float
    capacity: float
    buffers: float = 0.0
    pageable: float = 0.0

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.activations + self.logits + self.reserve
                + self.buffers)

    @property
    def fits(self) -> bool:
        return self.total - self.pageable <= self.capacity

    def largest(self) -> tuple[str, float]:
        parts = {k: v for k, v in asdict(self).items() if k not in ("capacity", "pageable")}
        k = max(parts, key=parts.get)
        return k, parts[k]

    def gib(self) -> dict:
        d = {k: round(v / GIB, 2) for k, v in asdict(self).items()}
        d["total"] = round(self.total / GIB, 2)
        d["fits"] = self.fits
        return d


def reference_bytes(m: Model, t: TrainInputs) -> float:
    """Per-GPU bytes of the frozen reference model that DPO/KTO run forward: a bf16 copy of the
    weights, sharded like the policy (ZeRO-3 shards it too). None with precomputed reference
    log-probs, or with adapters (the reference is the base with the adapters switched off)."""
    if t.objective == "sft" or t.precomputed_reference or t.method != "full":
        return 0.0
    return 2 * _nparams(m) / (t.tp * t.pp) / (t.dp if t.zero >= 3 else 1)


def memory(m: Model, gpu: GPU, t: TrainInputs) -> MemoryBreakdown:
    """Per-GPU memory of one training job.

    Full fine-tuning: bf16 weights and gradients + fp32 master and Adam m, v (2 + 2 + 12 bytes per
    parameter; 8-bit Adam 4 + 2), partitioned by ZeRO stage 1 (optimizer), 2 (+ gradients) and 3
    (+ weights) over the data-parallel ranks (Rajbhandari et al. 2020, §3).
    LoRA/QLoRA: the frozen base in bf16 (LoRA) or NF4 + double-quantised constants, 4.127 bits
    per parameter of the linear layers, embeddings and norms in bf16 (QLoRA §3); adapters and their
    gradients in ``adapter_dtype`` (PEFT: fp32), Adam m and v in fp32 (8 bytes; 8-bit: 2), i.e.
    4 + 4 + 8 bytes per trainable parameter as PEFT keeps them. Paged optimizers
    (``paged_adamw``, ``paged_adamw8bit``, QLoRA §3) keep the same states in unified memory that
    may be evicted: counted, and reported as ``pageable``.
    Buffers: ZeRO-3/FSDP hold the gathered parameters of the layer being computed and of the one
    prefetched (2 x layer parameters x 2 bytes / tp; NF4 storage under QLoRA), and gradients
    partitioned by ZeRO-2/3 pass through a reduce-scatter bucket of one layer's gradients (bf16);
    QLoRA's bitsandbytes dequantises each NF4 weight to bf16 for its matmul and frees it after:
    one layer's worth (its linear weights) in bf16 is held as a bound on what is live at once.
    Reserve: the CUDA context and library workspaces, 5% of the static allocations and 10% of
    the activations and logits for the caching allocator's fragmentation (an assumption, not a
    measurement: the allocator rounds and splits blocks, and the variable-size activation blocks
    fragment most; torch.cuda.memory_reserved() / memory_allocated() on the target measures it)."""
    n = _nparams(m)
    shard = t.tp * t.pp
    dp = t.dp
    z3 = dp if t.zero >= 3 else 1
    # expert parallelism: the routed experts are split over ep ranks (and sharded by ZeRO over the
    # dp/ep ranks holding the same experts); everything else as without it
    ep = max(1, t.ep)
    n_exp = expert_param_count(m)
    n_eff = n - n_exp + n_exp / ep  # parameters this rank holds (before ZeRO), per model-parallel shard x shard
    edp = max(1, dp // ep)

    def zshard(total_dense: float, total_exp: float, stage_on: bool) -> float:
        """Per-GPU share of a per-parameter quantity: dense over dp, experts over dp/ep (when ZeRO
        partitions it at this stage), else replicated."""
        return (total_dense / dp + total_exp / ep / edp) if stage_on else (total_dense + total_exp / ep)
    lp = m.layer_params() / t.tp  # one layer's parameters on this tensor-parallel rank
    lin_layer = m.linear_params(active=True) / m.layers / t.tp  # one layer's linear weights (experts it routes to)
    buffers = 0.0
    pageable = 0.0
    if t.optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"unknown optimizer {t.optimizer!r}; known: {', '.join(OPTIMIZER_BYTES)}")
    if t.method == "full":
        dense = n - n_exp
        weights = 2 * zshard(dense, n_exp, t.zero >= 3) / shard
        grads = 2 * zshard(dense, n_exp, t.zero >= 2) / shard
        per_param = 4 + OPTIMIZER_BYTES[t.optimizer]  # fp32 master + m + v (8-bit: master + 2 x 1 byte)
        optim = per_param * zshard(dense, n_exp, t.zero >= 1) / shard
        if t.zero >= 3 and dp > 1:
            buffers += 2 * 2 * lp  # gathered current + prefetched layer, bf16
        if t.zero >= 2 and dp > 1:
            buffers += 2 * lp  # one layer's full gradients before they are reduce-scattered
        if t.optimizer in PAGED:
            pageable = OPTIMIZER_BYTES[t.optimizer] * zshard(dense, n_exp, t.zero >= 1) / shard
    else:
        lora = lora_params(m, t.lora_rank, t.lora_targets)
        ab = ADAPTER_BYTES[t.adapter_dtype]
        lin = m.linear_params() - n_exp + n_exp / ep  # the linear weights this expert-parallel rank holds
        if t.method == "qlora":
            base = lin * NF4_BITS / 8 + (n - m.linear_params()) * 2
            buffers += 2 * lin_layer  # dequantised bf16 weights of one layer
            gathered = lp * NF4_BITS / 8
        else:
            base = 2 * n_eff
            gathered = 2 * lp
        if t.zero >= 3 and dp > 1:
            buffers += 2 * gathered  # current + prefetched layer of the sharded base
        weights = (base / z3 + ab * lora) / shard
        grads = ab * lora / shard
        optim = OPTIMIZER_BYTES[t.optimizer] * lora / shard
        if t.optimizer in PAGED:
            pageable = optim
    weights += reference_bytes(m, t)
    seq = t.max_len / t.cp  # context parallelism splits every sequence
    tokens = t.micro_batch * seq
    # 1F1B: the first stage holds min(m, p) micro-batches of its L/p layers = the whole model's
    # activations of one micro-batch when m >= p
    in_flight = min(t.accumulation, t.pp) / t.pp
    sp = t.sequence_parallel
    act = tokens * m.layers * in_flight * activation_bytes_per_token_layer(m, t.recompute, t.flash, t.max_len, t.tp, sp)
    if t.recompute == "full":  # plus the one layer being recomputed
        act += tokens * activation_bytes_per_token_layer(m, "none", t.flash, t.max_len, t.tp, sp)
    logits = tokens * m.vocab * (2 + 4) / t.tp  # bf16 logits + their fp32 copy for the loss
    reserve = (CUDA_CONTEXT + FRAGMENTATION * (weights + grads + optim + buffers)
               + ACTIVATION_FRAGMENTATION * (act + logits))
    return MemoryBreakdown(weights, grads, optim, act, logits, reserve, gpu.memory_bytes * CUDA_VISIBLE,
                           buffers=buffers, pageable=pageable)


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
    cp: int = 1
    dp: int = 1
    virtual: int = 1
    accumulation: int = 1
    objective: str = "sft"
    precomputed_reference: bool = False
    bubble: float = 0.0  # share of the step the pipeline idles
    comm_s: dict = field(default_factory=dict)  # exposed seconds per step by kind of traffic
    bound: str = "compute"  # what bounds the step, naming the link for communication
    pareto: bool = False  # on the cost/time Pareto front of the search that produced it
    ep: int = 1  # expert-parallel ranks (MoE)

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
    """(tokens, model FLOPs, hardware FLOPs incl. recomputation) for all epochs.

    DPO runs the policy forward and backward on chosen and rejected (both are in ``data``) and
    the frozen reference forward on both: 6N + 2N per token, 4/3 of SFT on the same tokens.
    KTO adds a policy forward (no gradient) and a reference forward on the mismatched pairs of its
    KL estimate: 6N + 2N + 2 x 2N. Precomputed reference log-probs (TRL's
    ``precompute_ref_log_probs``) drop the reference forwards."""
    return _flops(m, t.method, t.recompute, t.flash, t.objective, t.precomputed_reference, t.epochs, t.lora_rank,
                  t.lora_targets, *token_counts(t))


def _flops(m: Model, method, recompute, flash, objective, precomputed, epochs, rank, targets, tokens, squares):
    matmul = m.linear_params(active=True) + m.lm_head_params  # embeddings are a lookup
    attn = 12 * m.layers * m.q_dim * squares  # fwd 4·L·d·s² per sequence, x3 for training
    fwd = 2 * matmul * tokens + attn / 3  # one forward pass over the tokens
    if method == "full":
        dense = 6 * matmul * tokens
    else:  # frozen base: forward + input gradients, no weight gradients; adapters train fully
        dense = 4 * matmul * tokens + 6 * lora_params(m, rank, targets) * tokens
    extra_fwd = 0.0
    if objective == "kto":
        extra_fwd += fwd  # policy on the KL pairs, no gradient
    if objective in ("dpo", "kto") and not precomputed:
        extra_fwd += fwd * (2 if objective == "kto" else 1)  # reference on the examples (and the KL pairs)
    model = (dense + attn + extra_fwd) * epochs
    extra = 0.0
    if recompute == "full":
        extra = (2 * matmul * tokens + attn / 3) * epochs
    elif recompute == "selective" and not flash:
        extra = attn / 3 * epochs
    return tokens * epochs, model, model + extra


def small_batch_efficiency(tokens_per_micro_batch: float) -> float:
    """Matmuls of few rows run below the calibrated utilisation (the calibration is at 2,048
    tokens per micro-batch): (1 + K/2048) / (1 + K/T), K = 256 tokens, at most 1. An assumption
    until bench/capacity_gpu.py measures it."""
    k = 256.0
    return min(1.0, (1 + k / 2048) / (1 + k / max(1.0, tokens_per_micro_batch)))


def layers_per_stage(m: Model, pp: int) -> int:
    return math.ceil(m.layers / pp)


@lru_cache(maxsize=256)
def _nparams(m: Model) -> int:
    return m.params()


def expert_param_count(m: Model) -> int:
    """Parameters of the routed experts (what expert parallelism splits; shared experts, attention and
    embeddings are replicated on every expert-parallel rank)."""
    return m.moe_layers * m.experts * m.expert_params if m.experts > 1 else 0


@dataclass
class StepTime:
    step_s: float
    steps: int
    hours: float
    accumulation: int
    bubble: float
    compute_s: float  # compute of the step, pipeline idle excluded
    exposed: dict  # kind of traffic -> exposed seconds per step
    comm: StepComm


def step_time(m: Model, gpu: GPU, t: TrainInputs, fl: tuple[float, float, float]) -> StepTime:
    """Seconds per optimizer step: (v·m + p - 1)/v pipeline slots of one micro-batch's compute at
    the (calibrated) utilisation plus its unhidden tensor/context parallel, ZeRO-3 and point-to-
    point traffic; then the data-parallel gradient sync beyond what the last micro-batch's
    backward hides, and the optimizer update (memory-bound)."""
    tokens, _, hw_f = fl
    calibrated = t.mode == "calibrated"
    hfu = t.hfu if t.hfu is not None else (CALIBRATED_HFU[t.method] if calibrated else 1.0)
    if calibrated and t.hfu is None:
        hfu *= small_batch_efficiency(t.micro_batch * t.max_len / t.cp)
    per_step = t.sequences_per_step
    steps = max(1, math.ceil(tokens / (per_step * t.max_len)))
    acc = t.accumulation
    lps = layers_per_stage(m, t.pp)
    imbalance = lps * t.pp / m.layers  # the slowest stage sets the pace
    compute_step = hw_f / steps / (t.gpus * gpu.peak("bf16") * hfu)
    t_mb = compute_step * imbalance / acc
    c = _step_comm(m, gpu, t, lps)
    overlap = CALIBRATED_OVERLAP if calibrated else 1.0
    z3 = max(0.0, c.zero3_s - overlap * t_mb)  # prefetched behind the micro-batch's compute
    cp = max(0.0, c.cp_s - overlap * t_mb / 2)  # ring attention hides K/V passing behind attention
    slot = t_mb + c.tp_s + c.pp_s + z3 + cp + c.ep_s  # the all-to-alls sit between router and experts: not hidden
    bub = bubble(t.pp, acc, t.virtual)
    pipeline = acc * slot / (1 - bub)
    dp = max(0.0, c.dp_s - overlap * (2 / 3) * t_mb)  # overlapped with the last micro-batch's backward
    trainable = _nparams(m) if t.method == "full" else lora_params(m, t.lora_rank, t.lora_targets)
    if t.method == "full" and t.ep > 1:  # routed experts split over the expert-parallel ranks
        n_exp = expert_param_count(m)
        trainable = trainable - n_exp + n_exp / t.ep
    opt_bytes = 28 * trainable / (t.tp * t.pp) / (t.dp if t.zero >= 1 else 1)  # read + write master, m, v, grad
    step = pipeline + dp + opt_bytes / gpu.bandwidth
    k = acc / (1 - bub)
    exposed = {"tensor_parallel": k * c.tp_s, "pipeline_p2p": k * c.pp_s, "pipeline_bubble": pipeline * bub,
               "zero3_gather": k * z3, "context_parallel": k * cp, "data_parallel": dp,
               "expert_all_to_all": k * c.ep_s}
    return StepTime(step, steps, steps * step / 3600, acc, bub, acc * t_mb, exposed, c)


LINK_OF = {"tensor_parallel": "tp", "pipeline_p2p": "pp", "zero3_gather": "zero3", "context_parallel": "cp",
           "data_parallel": "dp", "pipeline_bubble": "pp", "expert_all_to_all": "ep"}


def plan_training(m: Model, gpu: GPU, t: TrainInputs, fl: tuple[float, float, float] | None = None,
                  mem: MemoryBreakdown | None = None) -> TrainPlan:
    mem = mem or memory(m, gpu, t)
    fl = fl or flops(m, t)
    tokens, model_f, hw_f = fl
    st = step_time(m, gpu, t, fl)
    peak = gpu.peak("bf16")
    seconds, hours = st.steps * st.step_s, st.hours
    exposed, c = st.exposed, st.comm
    top = max(exposed, key=exposed.get)
    what = top.replace("_", " ")
    notes = []
    if exposed[top] > st.compute_s:
        bound = what if top == "pipeline_bubble" else f"{what} ({c.link_name(LINK_OF[top])})"
        notes.append(f"communication-bound: {exposed[top]:.2f} s of {what} per step vs "
                     f"{st.compute_s:.2f} s of compute ({c.link_name(LINK_OF[top])})")
    else:
        bound = "compute"
        if exposed[top] > 0.1 * st.step_s and top != "pipeline_bubble":
            notes.append(f"{what}: {exposed[top]:.2f} s per step not hidden behind compute "
                         f"({c.link_name(LINK_OF[top])})")
    if st.bubble > 0.1:
        notes.append(f"pipeline bubble {st.bubble:.0%} ({t.pp} stages, {st.accumulation} micro-batches, "
                     f"{t.virtual} virtual)")
    if not mem.fits:
        k, v = mem.largest()
        notes.append(f"does not fit: needs {mem.total / GIB:.1f} GiB per GPU of {mem.capacity / GIB:.1f}; "
                     f"largest part: {k} {v / GIB:.1f} GiB")
    trainable = _nparams(m) if t.method == "full" else lora_params(m, t.lora_rank, t.lora_targets)
    return TrainPlan(m.key, gpu.key, t.gpus, t.method, t.zero, t.tp, t.pp, t.recompute, t.micro_batch,
                     t.sequences_per_step, tokens, model_f, hw_f, st.steps, st.step_s, hours, hours * t.gpus,
                     hours * t.gpus * gpu.price_per_hour, model_f / (seconds * t.gpus * peak) if seconds else 0.0,
                     mem.gib(), mem.fits, _nparams(m), trainable, notes, cp=t.cp, dp=t.dp, virtual=t.virtual,
                     accumulation=st.accumulation, objective=t.objective, precomputed_reference=t.precomputed_reference,
                     bubble=st.bubble, comm_s={k: round(v, 6) for k, v in exposed.items()}, bound=bound, ep=t.ep)


def _step_comm(m: Model, gpu: GPU, t: TrainInputs, lps: int) -> StepComm:
    """Traffic of one step (capacity/comm.py): gradients of the trainable parameters over data
    parallel ranks, ZeRO-3's parameter gathers, tensor parallel activations per layer, context
    parallel K/V rings and pipeline point-to-point."""
    shard = t.tp * t.pp
    ep = max(1, t.ep)
    n, n_exp = _nparams(m), expert_param_count(m)
    if t.method == "full":
        grad_bytes, expert_grad_bytes = 2 * (n - n_exp) / shard, 2 * n_exp / ep / shard
    else:
        grad_bytes, expert_grad_bytes = 4 * lora_params(m, t.lora_rank, t.lora_targets) / shard, 0.0
    weight_bytes = (2 * (n - n_exp + n_exp / ep) if t.method != "qlora" else m.linear_params() * NF4_BITS / 8) / shard
    tokens_mb = t.micro_batch * t.max_len / t.cp
    moe_per_stage = lps * m.moe_layers / m.layers if m.experts > 1 else 0.0
    return step_comm(gpu, Layout(t.tp, t.cp, t.dp, t.pp, ep), grad_bytes=grad_bytes, weight_bytes=weight_bytes,
                     zero=t.zero, act_bytes_mb=2 * tokens_mb * m.hidden, kv_bytes_mb=2 * 2 * tokens_mb * m.kv_dim,
                     layers_per_stage=lps, tp_collectives_per_layer=6 if t.recompute == "full" else 4,
                     virtual=t.virtual, expert_grad_bytes=expert_grad_bytes,
                     dispatch_bytes_mb=2 * tokens_mb * m.hidden * m.experts_per_token / t.tp if m.experts > 1 else 0.0,
                     moe_layers_per_stage=moe_per_stage, a2a_per_layer=6 if t.recompute == "full" else 4)


def _comm_seconds(m: Model, gpu: GPU, t: TrainInputs) -> float:
    """Unhidden communication seconds of one step (kept for callers of the old name)."""
    c = _step_comm(m, gpu, t, layers_per_stage(m, t.pp))
    return c.tp_s * t.accumulation + c.pp_s * t.accumulation + c.dp_s + c.zero3_s * t.accumulation + c.cp_s


def gpu_hours(gpus: int, days: float) -> float:
    return gpus * days * 24


def mfu(tokens_per_s_per_gpu: float, m: Model, seq: int, peak: float) -> float:
    """Model FLOPs utilisation from a measured throughput (PaLM appendix B):
    (6N + 12·L·d·s) x tokens/s / peak."""
    return (6 * (m.linear_params(active=True) + m.lm_head_params) + 12 * m.layers * m.q_dim * seq) * tokens_per_s_per_gpu / peak
