"""Planning: consecutive batch-local ops fuse into one stage; each global op is a barrier.

A plan of N global ops runs in N+1 passes over the data. Pass k reads the input (k = 0) or
the rows pass k-1 left, applies global op k-1's decisions, runs the fused local ops of stage
k in one go per batch, and then either fingerprints for global op k or writes the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from thresher.pipeline.ops import GlobalOp, Op


@dataclass
class Stage:
    local_ops: list[Op] = field(default_factory=list)  # fused: one pass per batch
    barrier: GlobalOp | None = None  # the global op that ends this stage, if any


def make_plan(ops: list[Op]) -> list[Stage]:
    stages = [Stage()]
    for op in ops:
        if isinstance(op, GlobalOp):
            stages[-1].barrier = op
            stages.append(Stage())
        else:
            stages[-1].local_ops.append(op)
    return stages


def describe(stages: list[Stage]) -> str:
    parts = []
    for i, s in enumerate(stages):
        fused = " + ".join(op.ctx.key for op in s.local_ops) or "(no local ops)"
        parts.append(f"pass {i}: {fused}" + (f" -> fingerprint[{s.barrier.ctx.key}]" if s.barrier else " -> write"))
    return "\n".join(parts)
