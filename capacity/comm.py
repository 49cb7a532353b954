"""Collective-communication costs of a training step: which link a process group uses (inside a
node: NVLink/NVSwitch or PCIe; between nodes: each GPU's share of the node's NICs), the bytes each
GPU sends in ring collectives, and the traffic of data, ZeRO/FSDP, tensor, context and pipeline
parallelism.

Sources:
- Ring all-reduce sends 2(n-1)/n x the buffer per GPU; reduce-scatter and all-gather (n-1)/n
  each (Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms", 2009; NCCL's "bus bandwidth"
  in nccl-tests/doc/PERFORMANCE.md uses the same factors).
- ZeRO-1/2 move the same volume as an all-reduce (reduce-scatter gradients, all-gather updated
  parameters); ZeRO-3/FSDP 1.5x: parameters all-gathered again in the backward pass
  (Rajbhandari et al., "ZeRO", SC 2020, §7).
- Megatron tensor parallelism: two all-reduces of the b·s·h activations per layer in the forward
  and two in the backward pass (Shoeybi et al., "Megatron-LM", 2019, §3; with sequence
  parallelism the same volume as reduce-scatter + all-gather, Korthikanti et al. 2022).
- Pipeline parallelism sends one b·s·h activation forward and one gradient backward per
  micro-batch and stage boundary; the 1F1B bubble is (p-1)/(m+p-1) of the step, (p-1)/(v·m+p-1)
  with v interleaved stages per GPU (Narayanan et al., "Efficient Large-Scale Language Model
  Training on GPU Clusters Using Megatron-LM", SC 2021, §2.2).
- Ranks are laid out Megatron-style, tensor parallel innermost, then context, then data, then
  pipeline parallel outermost: a group stays inside a node while the product of the inner sizes
  fits in one.
"""

from __future__ import annotations

from dataclasses import dataclass

from thresher.capacity.hardware import GPU


def all_reduce_bytes(n: int, nbytes: float) -> float:
    """Bytes each GPU sends (and receives) in a ring all-reduce of ``nbytes`` over ``n`` GPUs."""
    return 2 * (n - 1) / n * nbytes if n > 1 else 0.0


def reduce_scatter_bytes(n: int, nbytes: float) -> float:
    return (n - 1) / n * nbytes if n > 1 else 0.0


def all_gather_bytes(n: int, nbytes: float) -> float:
    """``nbytes`` is the gathered (full) buffer; each GPU contributes 1/n of it."""
    return (n - 1) / n * nbytes if n > 1 else 0.0


@dataclass(frozen=True)
class Link:
    kind: str
    bytes_per_s: float  # per GPU and direction
    inter_node: bool

    def seconds(self, nbytes: float) -> float:
        return nbytes / self.bytes_per_s if nbytes else 0.0


def group_link(gpu: GPU, inner: int, size: int) -> Link:
    """The link a group of ``size`` ranks with stride ``inner`` (the product of the parallel sizes
    laid out inside it) uses: intra-node if ``inner x size`` GPUs fit in one node."""
    if inner * size <= gpu.gpus_per_node:
        return Link(gpu.interconnect_kind, gpu.link_intra, False)
    return Link(gpu.network_kind, min(gpu.network, gpu.link_intra), True)


@dataclass
class Layout:
    tp: int = 1
    cp: int = 1
    dp: int = 1
    pp: int = 1
    ep: int = 1  # expert-parallel ranks, a subgroup of the data-parallel ranks (innermost of them)


@dataclass
class StepComm:
    """Seconds of each kind of traffic; ``per_micro`` ones recur every micro-batch (on the
    critical path of each pipeline slot), ``per_step`` ones once per optimizer step."""
    tp_s: float = 0.0  # per micro-batch, exposed (blocking activations)
    cp_s: float = 0.0  # per micro-batch, K/V ring of context parallelism (largely overlapped)
    pp_s: float = 0.0  # per micro-batch and pipeline slot, point-to-point
    zero3_s: float = 0.0  # per micro-batch, parameter all-gathers (prefetched: overlapped)
    dp_s: float = 0.0  # per step, gradient reduce(-scatter) (+ ZeRO-1/2 parameter all-gather)
    ep_s: float = 0.0  # per micro-batch, MoE token dispatch/combine all-to-alls (on the critical path)
    links: dict | None = None  # kind of traffic -> Link

    def link_name(self, part: str) -> str:
        link = (self.links or {}).get(part)
        if link is None:
            return "none"
        where = "between nodes" if link.inter_node else "inside a node"
        return f"{link.kind} {where}, {link.bytes_per_s / 1e9:.1f} GB/s per GPU"


def step_comm(gpu: GPU, lay: Layout, *, grad_bytes: float, weight_bytes: float, zero: int, act_bytes_mb: float,
              kv_bytes_mb: float, layers_per_stage: float, tp_collectives_per_layer: int = 4,
              virtual: int = 1, expert_grad_bytes: float = 0.0, dispatch_bytes_mb: float = 0.0,
              moe_layers_per_stage: float = 0.0, a2a_per_layer: int = 4) -> StepComm:
    """Traffic for one optimizer step. ``grad_bytes``/``weight_bytes``: what one model-parallel
    shard (tp x pp) holds (``grad_bytes`` without the routed experts, whose gradients
    ``expert_grad_bytes`` are reduced over the dp/ep ranks holding the same experts);
    ``act_bytes_mb``: one micro-batch's b·s·h activation tensor on one context-parallel rank;
    ``kv_bytes_mb``: its K and V of one layer; ``dispatch_bytes_mb``: the token copies one MoE layer
    sends to its experts (b·s·h·top_k·2 bytes), moved by an all-to-all to the expert-parallel
    ranks and back, in the forward and again in the backward pass (GShard, Lepikhin et al. 2020;
    DeepSpeed-MoE, Rajbhandari et al. 2022): each rank keeps 1/ep of it, sends (ep-1)/ep."""
    tp_link = group_link(gpu, 1, lay.tp)
    cp_link = group_link(gpu, lay.tp, lay.cp)
    dp_link = group_link(gpu, lay.tp * lay.cp, lay.dp)
    pp_link = group_link(gpu, lay.tp * lay.cp * lay.dp, lay.pp)
    ep_link = group_link(gpu, lay.tp * lay.cp, lay.ep)
    edp_link = group_link(gpu, lay.tp * lay.cp * lay.ep, max(1, lay.dp // lay.ep))
    c = StepComm(links={"tp": tp_link, "cp": cp_link, "dp": dp_link, "pp": pp_link, "zero3": dp_link, "ep": ep_link})
    if lay.ep > 1 and moe_layers_per_stage:
        c.ep_s = ep_link.seconds(a2a_per_layer * moe_layers_per_stage * (lay.ep - 1) / lay.ep * dispatch_bytes_mb)
    if lay.tp > 1:
        vol = tp_collectives_per_layer * layers_per_stage * all_reduce_bytes(lay.tp, act_bytes_mb / 1)
        c.tp_s = tp_link.seconds(vol)
    if lay.cp > 1:  # ring attention passes K and V around in the forward pass, and their gradients back
        c.cp_s = cp_link.seconds(3 * layers_per_stage * all_gather_bytes(lay.cp, kv_bytes_mb * lay.cp))
    if lay.pp > 1:  # activation forward + gradient backward per boundary; interleaving crosses v times as often
        c.pp_s = pp_link.seconds(2 * virtual * act_bytes_mb / lay.tp)
    edp = max(1, lay.dp // max(1, lay.ep))
    if lay.dp > 1:
        if zero >= 3:
            c.dp_s = dp_link.seconds(reduce_scatter_bytes(lay.dp, grad_bytes))
            c.dp_s += edp_link.seconds(reduce_scatter_bytes(edp, expert_grad_bytes))
            c.zero3_s = dp_link.seconds(2 * all_gather_bytes(lay.dp, weight_bytes))
        else:  # all-reduce, or ZeRO-1/2's reduce-scatter + all-gather: the same volume
            c.dp_s = dp_link.seconds(all_reduce_bytes(lay.dp, grad_bytes))
            c.dp_s += edp_link.seconds(all_reduce_bytes(edp, expert_grad_bytes))
    return c


def bubble(pp: int, micro_batches: int, virtual: int = 1) -> float:
    """Share of a pipelined step spent idle: (p-1)/(v·m+p-1)."""
    return (pp - 1) / (virtual * micro_batches + pp - 1) if pp > 1 else 0.0
