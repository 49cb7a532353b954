"""Roofline model of a decoder-only transformer: per layer and op, for prefill and decode, the
FLOPs and the bytes moved (weights, activations, KV cache reads and writes), arithmetic intensity,
whether the op is compute- or memory-bound, and time = max(FLOPs / peak, bytes / bandwidth)
(Williams, Waterman & Patterson, "Roofline", CACM 2009; applied to LLMs as in LLM-Viewer, Yuan et
al., "LLM Inference Unveiled: Survey and Roofline Model Insights", 2024).

Two modes. ``ideal``: no efficiency factors, comparable with LLM-Viewer. ``calibrated``: every
compute-bound op at ``Efficiency.compute`` of peak, memory-bound ops at ``Efficiency.memory`` of
the bandwidth, plus a fixed overhead per forward pass (see ``Efficiency``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model


@dataclass(frozen=True)
class Precision:
    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16

    @property
    def compute_dtype(self) -> str:
        """The tensor-core path the matmuls run on: weights and activations both 8-bit -> fp8/int8;
        weight-only quantization (w4a16, w8a16) dequantizes to 16-bit and computes there."""
        if self.act_bits <= 8 and self.weight_bits <= 8:
            return "fp8"
        return "bf16"


@dataclass(frozen=True)
class Efficiency:
    """Calibrated mode's factors (ideal mode: all 1, no overhead).

    - ``compute`` 0.70: share of dense peak that large bf16 GEMMs reach in prefill. cuBLAS on
      A100/H100 sustains 70–80% of peak on LLM-sized GEMMs (NVIDIA, "Matrix Multiplication
      Background User's Guide", GEMM performance figures); attention kernels and small GEMMs less.
    - ``memory`` 0.60: share of HBM bandwidth a batch-1 decode step reaches (model bandwidth
      utilisation, MBU). Databricks, "LLM Inference Performance Engineering: Best Practices" (2023)
      measured ~60% MBU for 7B models at batch 1 on A100-40GB.
    - ``overhead_s`` 0.002: fixed cost per forward pass (kernel launches, sampling, scheduler) that
      CUDA graphs leave in vLLM-class servers at small batch.
    ``bench/capacity_gpu.py`` measures these on a real GPU; pass your own with --efficiency.
    """

    compute: float = 0.70
    memory: float = 0.60
    overhead_s: float = 0.002


IDEAL = Efficiency(1.0, 1.0, 0.0)
BF16 = Precision()  # w16a16kv16
CALIBRATED = Efficiency()


@dataclass
class OpCost:
    name: str
    flops: float
    bytes: float
    count: int = 1  # how many times it runs per forward (e.g. layers)
    time: float = 0.0
    bound: str = ""

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")


@dataclass
class Forward:
    """One forward pass (a prefill of ``tokens`` prompt tokens, or one decode step) costed per op."""

    phase: str
    batch: int
    tokens: int  # new tokens this pass
    context: int  # KV length attended to (decode: tokens already in the cache + 1)
    ops: list[OpCost] = field(default_factory=list)
    overhead: float = 0.0

    @property
    def time(self) -> float:
        return sum(o.time * o.count for o in self.ops) + self.overhead

    @property
    def flops(self) -> float:
        return sum(o.flops * o.count for o in self.ops)

    @property
    def bytes(self) -> float:
        return sum(o.bytes * o.count for o in self.ops)


def _linear(name: str, tokens: float, d_in: int, d_out: int, p: Precision, weights_touched: float = 1.0) -> OpCost:
    a = p.act_bits / 8
    return OpCost(name, 2 * tokens * d_in * d_out,
                  weights_touched * d_in * d_out * p.weight_bits / 8 + tokens * (d_in + d_out) * a)


def _elementwise(name: str, elements: float, flops_per: float, tensors_moved: int, p: Precision) -> OpCost:
    return OpCost(name, flops_per * elements, tensors_moved * elements * p.act_bits / 8)


def layer_ops(m: Model, batch: int, new: int, context: int, p: Precision, flash: bool = True,
              tp: int = 1) -> list[OpCost]:
    """Ops of one decoder layer on one GPU (``tp``-way tensor parallel splits heads and MLP columns).
    ``new`` tokens per sequence are processed against ``context`` keys (prefill: new = context)."""
    T = batch * new
    h = m.hidden
    q, kv = m.q_dim // tp, m.kv_dim // tp
    heads = max(1, m.heads // tp)
    kvb, a = p.kv_bits / 8, p.act_bits / 8
    ops = [
        _elementwise("attn_norm", T * h, 4, 2, p),
        _linear("q_proj", T, h, q, p),
        _linear("k_proj", T, h, kv, p),
        _linear("v_proj", T, h, kv, p),
    ]
    # attention scores: causal prefill still computes the full square in the FLOP count, as
    # LLM-Viewer and MFU accounting do
    qk = 2 * batch * heads * new * context * m.head_dim
    sv = qk
    softmax_f = 5 * batch * heads * new * context
    k_read = v_read = batch * context * kv * kvb
    q_bytes = T * q * a
    kv_write = 2 * T * kv * kvb
    scores = batch * heads * new * context * a
    if flash:
        ops.append(OpCost("attention (flash)", qk + softmax_f + sv, q_bytes + k_read + v_read + q_bytes + kv_write))
    else:
        ops += [OpCost("qk_matmul", qk, q_bytes + k_read + scores + kv_write),
                OpCost("softmax", softmax_f, 2 * scores),
                OpCost("sv_matmul", sv, scores + v_read + q_bytes)]
    ops += [
        _linear("o_proj", T, q, h, p),
        _elementwise("attn_residual", T * h, 1, 3, p),
        _elementwise("mlp_norm", T * h, 4, 2, p),
    ]
    inter = m.intermediate // tp
    if m.experts > 1:  # tokens routed to experts_per_token experts; weights of every expert any token picked
        routed = T * m.experts_per_token
        touched = m.experts * (1 - (1 - m.experts_per_token / m.experts) ** T)
        ops.append(_linear("router", T, h, m.experts, p))
        mats = [("gate_proj", h, inter), ("up_proj", h, inter), ("down_proj", inter, h)] if m.gated_mlp else \
            [("up_proj", h, inter), ("down_proj", inter, h)]
        for name, di, do in mats:
            op = _linear(name, routed, di, do, p, weights_touched=touched)
            ops.append(op)
        ops.append(_elementwise("mlp_act", routed * inter, 5 if m.gated_mlp else 4, 3 if m.gated_mlp else 2, p))
    else:
        if m.gated_mlp:
            ops += [_linear("gate_proj", T, h, inter, p), _linear("up_proj", T, h, inter, p),
                    _elementwise("mlp_act", T * inter, 5, 3, p)]
        else:
            ops += [_linear("up_proj", T, h, inter, p), _elementwise("mlp_act", T * inter, 4, 2, p)]
        ops.append(_linear("down_proj", T, inter, h, p))
    ops.append(_elementwise("mlp_residual", T * h, 1, 3, p))
    return ops


def forward(m: Model, gpu: GPU, phase: str, batch: int, prompt: int, context: int | None = None,
            p: Precision = BF16, eff: Efficiency = IDEAL, flash: bool = True, tp: int = 1) -> Forward:
    """Cost of a prefill (``prompt`` tokens per sequence) or of one decode step at ``context``
    tokens already in the KV cache, for ``batch`` sequences, on one of ``tp`` GPUs."""
    if phase == "prefill":
        new, ctx = prompt, prompt
    elif phase == "decode":
        new, ctx = 1, (context if context is not None else prompt) + 1
    else:
        raise ValueError(f"phase must be prefill or decode, not {phase!r}")
    f = Forward(phase, batch, new, ctx)
    for op in layer_ops(m, batch, new, ctx, p, flash, tp):
        op.count = m.layers
        f.ops.append(op)
    # final norm and the LM head for the last position of each sequence (what a server samples from)
    last = Precision(16, p.act_bits, p.kv_bits)  # embeddings and head stay 16-bit under weight quantization
    f.ops.append(_elementwise("final_norm", batch * m.hidden, 4, 2, p))
    f.ops.append(_linear("lm_head", batch, m.hidden, m.vocab // tp, last))
    peak = gpu.peak(p.compute_dtype)
    for op in f.ops:
        tc = op.flops / (peak * eff.compute)
        tm = op.bytes / (gpu.bandwidth * eff.memory)
        op.time = max(tc, tm)
        op.bound = "compute" if tc >= tm else "memory"
    f.overhead = eff.overhead_s
    if tp > 1:  # two all-reduces of the hidden state per layer (attention and MLP outputs), ring
        vol = 2 * m.layers * batch * new * m.hidden * p.act_bits / 8 * 2 * (tp - 1) / tp
        f.ops.append(OpCost("tp_allreduce", 0.0, vol, 1, vol / (gpu.interconnect * eff.memory), "interconnect"))
    return f


def ridge_point(gpu: GPU, dtype: str = "bf16") -> float:
    """Arithmetic intensity (FLOP/byte) above which an op is compute-bound."""
    return gpu.peak(dtype) / gpu.bandwidth


def training_step(m: Model, gpu: GPU, micro_batch: int, seq: int, p: Precision = BF16, eff: Efficiency = IDEAL,
                  flash: bool = True, tp: int = 1) -> dict[str, Forward]:
    """The ops of one training micro-step, forward and backward, on one of ``tp`` GPUs: every op of
    the forward over all ``micro_batch x seq`` tokens (the LM head and loss on every position, not
    just the last), and its backward — a linear's input gradient (dX = dY·Wᵀ) and weight gradient
    (dW = Xᵀ·dY), each as many FLOPs as the forward; attention's backward 2.5x its forward FLOPs
    (FlashAttention-2 recomputes the scores: five matmuls to the forward's two); an element-wise
    op's backward reads one more tensor than it writes. Times use ``eff`` as ``forward`` does."""
    T = micro_batch * seq
    fwd = Forward("train forward", micro_batch, seq, seq)
    for op in layer_ops(m, micro_batch, seq, seq, p, flash, tp):
        op.count = m.layers
        fwd.ops.append(op)
    last = Precision(16, p.act_bits, p.kv_bits)
    fwd.ops.append(_elementwise("final_norm", T * m.hidden, 4, 2, p))
    fwd.ops.append(_linear("lm_head", T, m.hidden, m.vocab // tp, last))
    fwd.ops.append(_elementwise("cross_entropy", T * m.vocab // tp, 5, 2, Precision(16, 32, 16)))
    bwd = Forward("train backward", micro_batch, seq, seq)
    linears = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "router", "lm_head"}
    for o in fwd.ops:
        if o.name in linears:
            bwd.ops += [OpCost(f"{o.name} dX", o.flops, o.bytes, o.count), OpCost(f"{o.name} dW", o.flops, o.bytes, o.count)]
        elif o.name.startswith("attention") or o.name in ("qk_matmul", "sv_matmul", "softmax"):
            bwd.ops.append(OpCost(f"{o.name} bwd", 2.5 * o.flops, 2 * o.bytes, o.count))
        else:
            moved = o.bytes  # element-wise: read the saved input and the incoming gradient, write one
            bwd.ops.append(OpCost(f"{o.name} bwd", 2 * o.flops, moved * 1.5, o.count))
    peak = gpu.peak(p.compute_dtype)
    for f in (fwd, bwd):
        for op in f.ops:
            tc = op.flops / (peak * eff.compute)
            tm = op.bytes / (gpu.bandwidth * eff.memory)
            op.time = max(tc, tm)
            op.bound = "compute" if tc >= tm else "memory"
    fwd.overhead = eff.overhead_s
    return {"forward": fwd, "backward": bwd}
