"""Search: the cheapest feasible training plans over the whole layout — GPU type and count (whole
nodes beyond one node), tensor parallel (dividing attention and KV heads, inside a node),
pipeline parallel (dividing the layers, or the layers + 2 with the first and last stage one layer
short as Llama 3 did; interleaved stages where they divide a stage), context parallel for long
sequences, data parallel, ZeRO stage, method, recomputation and micro-batch — with the global
batch exactly dp x micro-batch x accumulation and never more data-parallel ranks than sequences
per step. Ranked by cost (a minimum billable time per job optional), then time; the cost/time
Pareto front is marked.

Speed: the FLOPs depend only on method x recomputation (computed once); layouts are pruned by the
head, layer, node and batch constraints before any is evaluated, and only the plans that fit are
priced. 16,384 GPUs of one type search in well under a second."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from thresher.capacity.hardware import GPU
from thresher.capacity.models import Model
from thresher.capacity.training import (
    TrainInputs,
    TrainPlan,
    flops,
    memory,
    plan_training,
    step_time,
    token_counts,
)

COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
NODES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # default machine sizes beyond one node, in nodes
METHODS = ("full", "lora", "qlora")
RECOMPUTE = ("none", "selective", "full")
COMPLEXITY = {"none": 0, "selective": 1, "full": 2}
MICRO_BATCHES = (1, 2, 4, 8, 16)
LONG_SEQUENCE = 8192  # context parallelism is considered from here, keeping >= 4,096 tokens per rank


@dataclass
class SearchResult:
    ranked: list[TrainPlan]  # feasible, cheapest first; one layout per GPU type x count x method
    considered: int
    fitting: list[TrainPlan]  # fit in memory (deadline/budget aside), fastest first
    pareto: list[TrainPlan] = field(default_factory=list)  # feasible cost/time front, cheapest first


def sequences_in_data(t: TrainInputs) -> int:
    """Sequences one epoch holds (packed: tokens / max_len)."""
    tokens, _ = token_counts(t)
    return max(1, math.ceil(tokens / t.max_len)) if t.packing else max(1, t.data.rows)


def default_counts(gpu: GPU, max_gpus: int = 512) -> tuple[int, ...]:
    """1, 2, 4 GPUs, then whole nodes."""
    node = gpu.gpus_per_node
    small = [c for c in (1, 2, 4) if c < node]
    return tuple(c for c in (*small, *(k * node for k in NODES)) if c <= max_gpus)


def tp_options(m: Model, gpu: GPU, n: int) -> list[int]:
    """Tensor parallel sizes that divide the attention and KV heads and stay inside one node."""
    return [t for t in range(1, min(gpu.gpus_per_node, n) + 1)
            if n % t == 0 and m.heads % t == 0 and m.kv_heads % t == 0 and gpu.gpus_per_node % t == 0]


def pp_options(m: Model, n: int) -> list[int]:
    """Pipeline sizes that divide the layers (or layers + 2), with at least two layers a stage."""
    return [p for p in range(1, m.layers // 2 + 1)
            if n % p == 0 and (m.layers % p == 0 or (m.layers + 2) % p == 0)] or [1]


def virtual_options(m: Model, pp: int, accumulation: int) -> list[int]:
    """Interleaved stages per GPU: they divide a stage's layers, and Megatron needs the
    micro-batch count to be a multiple of the pipeline size."""
    if pp == 1 or accumulation % pp:
        return [1]
    lps = -(-m.layers // pp)
    return [v for v in (1, 2, 3, 4, 6, 8) if lps % v == 0]


def search(m: Model, gpus: list[GPU], base: TrainInputs, deadline_h: float | None = None, budget: float | None = None,
           counts: tuple[int, ...] | None = None, methods: tuple[str, ...] = METHODS, zeros: tuple[int, ...] = (0, 1, 2, 3),
           recomputes: tuple[str, ...] = RECOMPUTE, tps: tuple[int, ...] | None = None,
           pps: tuple[int, ...] | None = None, cps: tuple[int, ...] | None = None,
           micro_batches: tuple[int, ...] | None = None, min_billable_h: float = 0.0,
           max_gpus: int = 512, eps: tuple[int, ...] | None = None) -> SearchResult:
    """``counts``/``tps``/``pps``/``cps``/``micro_batches`` pin those choices (None: search them);
    ``min_billable_h`` bills every job at least that long on every GPU it holds."""
    G = min(base.sequences_per_step, sequences_in_data(base))  # a step cannot hold more than the data
    fl_cache: dict = {}
    cands: list[tuple] = []  # (cost, hours, gpu, inputs, memory): the fastest layout of each shape
    considered = 0
    recomputes = tuple(rc for rc in recomputes if not (rc == "selective" and base.flash)) or ("none",)
    t = dataclasses.replace(base, global_batch=G, global_batch_tokens=None, virtual=1)  # scratch, mutated below

    def self_fits(t, n, tp, pp, cp, mb, method, z, rc) -> bool:
        t.gpus, t.tp, t.pp, t.cp, t.micro_batch, t.method, t.zero, t.recompute = n, tp, pp, cp, mb, method, z, rc
        return memory(m, gpu, t).fits

    def layouts(dp: int, mb: int):
        """(ep, method) pairs: expert parallelism is searched for MoE models (ep divides the experts
        and the data-parallel ranks)."""
        for ep in eps or ep_options(m, dp):
            if dp % ep or (m.experts > 1 and m.experts % ep) or (m.experts <= 1 and ep > 1):
                continue
            for method in methods:
                yield ep, method

    for gpu in gpus:
        for n in counts or default_counts(gpu, max_gpus):
            for tp in tps or tp_options(m, gpu, n):
                if n % tp:
                    continue
                for pp in pps or pp_options(m, n // tp):
                    if n % (tp * pp):
                        continue
                    for cp in cps or _cp_options(base.max_len, n // (tp * pp)):
                        if n % (tp * pp * cp):
                            continue
                        dp = n // (tp * pp * cp)
                        if dp > G:
                            continue  # never more data-parallel ranks than sequences per step
                        for mb in micro_batches or MICRO_BATCHES:
                            if G % (dp * mb):
                                continue  # the global batch must be exactly dp x mb x accumulation
                            acc = G // (dp * mb)
                            for ep, method in layouts(dp, mb):
                                t.ep = ep
                                best = None
                                # ZeRO-1/2 move what ZeRO-0 moves with less memory, and recomputation
                                # only adds work: per recompute level, the lowest fitting stage of 0-2
                                # and stage 3; a level only when the one below fitted nowhere
                                for rc in recomputes:
                                    tried = [z for z in zeros if not (dp == 1 and z > 0)]
                                    light = [z for z in tried if z < 3]
                                    picks = []
                                    for z in light:
                                        if self_fits(t, n, tp, pp, cp, mb, method, z, rc):
                                            picks.append(z)
                                            break
                                    if 3 in tried:
                                        picks.append(3)
                                    considered += len(tried)
                                    found = False
                                    for zero in picks:
                                        t.gpus, t.tp, t.pp, t.cp, t.micro_batch = n, tp, pp, cp, mb
                                        t.method, t.zero, t.recompute, t.virtual = method, zero, rc, 1
                                        mem = memory(m, gpu, t)
                                        if not mem.fits:
                                            continue
                                        found = True
                                        key = (method, rc)
                                        if key not in fl_cache:
                                            fl_cache[key] = flops(m, t)
                                        for v in virtual_options(m, pp, acc):
                                            t.virtual = v
                                            h = step_time(m, gpu, t, fl_cache[key]).hours
                                            k = (_bucket(h, 1.002), zero, COMPLEXITY[rc], v, h)  # within 0.2%: simpler
                                            if best is None or k < best[0]:
                                                best = (k, (zero, rc, v), mem)
                                    if found:
                                        break
                                if best is not None:
                                    h = best[0][-1]
                                    zero, rc, v = best[1]
                                    cost = max(h, min_billable_h) * n * gpu.price_per_hour
                                    cands.append((cost, h, gpu, dataclasses.replace(
                                        t, gpus=n, tp=tp, pp=pp, cp=cp, micro_batch=mb, method=method, zero=zero,
                                        recompute=rc, virtual=v, ep=ep), best[2]))
                            if mb * base.max_len / cp >= 2048:
                                break  # larger micro-batches only add memory and pipeline bubble
    return _select(m, cands, considered, deadline_h, budget, min_billable_h, fl_cache)


def ep_options(m: Model, dp: int) -> list[int]:
    """Expert-parallel sizes for a MoE model: 1 and the powers of two dividing both its experts and
    the data-parallel ranks (dense models: 1)."""
    if m.experts <= 1:
        return [1]
    return [e for e in (1, 2, 4, 8, 16, 32, 64) if e <= dp and dp % e == 0 and m.experts % e == 0]


def _cp_options(max_len: int, n: int) -> list[int]:
    return [c for c in (1, 2, 4, 8, 16) if c == 1 or (max_len >= LONG_SEQUENCE and max_len // c >= 4096 and n % c == 0)]


def _select(m, cands, considered, deadline_h, budget, min_billable_h, fl_cache) -> SearchResult:
    """Full plans only for what is shown: the best layout of each GPU type x count x method
    (ranked, and fitting for the explanations) and the cost/time Pareto front."""
    def plan(c) -> TrainPlan:
        cost, h, gpu, t, mem = c
        p = plan_training(m, gpu, t, fl_cache[(t.method, t.recompute)], mem)
        if cost > p.cost_usd * (1 + 1e-9):
            p.cost_usd = cost
            p.notes.append(f"billed for the minimum {min_billable_h:g} h")
        return p

    shapes: dict = {}
    for c in sorted(cands, key=lambda c: (_bucket(c[0]), c[0], c[1], c[3].gpus)):
        shapes.setdefault((c[2].key, c[3].gpus, c[3].method), c)
    ok = [c for c in cands if (deadline_h is None or c[1] <= deadline_h) and (budget is None or c[0] <= budget)]
    front_ids, fastest = set(), float("inf")
    for c in sorted(ok, key=lambda c: (c[0], c[1])):
        if c[1] < fastest:
            front_ids.add(id(c))
            fastest = c[1]
    built = {id(c): plan(c) for c in {id(c): c for c in (*shapes.values(), *(c for c in ok if id(c) in front_ids))}.values()}
    for i in front_ids:
        built[i].pareto = True
    ok_ids = {id(c) for c in ok}
    ranked = sorted((built[id(c)] for c in shapes.values() if id(c) in ok_ids), key=_rank)
    front = sorted((built[i] for i in front_ids), key=lambda p: (p.cost_usd, p.hours))
    return SearchResult(ranked, considered, sorted((built[id(c)] for c in shapes.values()), key=lambda p: p.hours), front)


def _bucket(x: float, ratio: float = 1.01) -> int:
    """Costs within 1% of each other tie (then the smaller machine wins)."""
    return math.floor(math.log(max(x, 1e-12)) / math.log(ratio))


def _rank(p: TrainPlan) -> tuple:
    """Cheapest (costs within 1% tie), then the smaller machine, then fastest and simplest."""
    return _bucket(p.cost_usd), p.gpus, p.hours, p.zero, COMPLEXITY[p.recompute], p.tp * p.pp * p.cp * p.ep
