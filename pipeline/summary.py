"""The run's summary of its done markers, read once each, while the passes run.

Every shard of every pass leaves a done marker (its ledger, row count, files, trace samples and
data profile). The driver needs them after each pass (the quarantine policy, the next pass's
progress totals, whether the global op has rows to resolve) and at the end (the ledger, trace,
``profile.json`` and the list of output files). Reading every marker at each of those points cost
the driver ~6 reads of each pass-0 marker (~10 ms to parse a fineweb shard's, ~3 ms to merge its
profile) — the serial term that grew with the shard count (docs/design.md, "Scaling model").

A :class:`MarkerSummary` reads each marker once, as its shard finishes (while the other shards are
still running, so the driver's work overlaps the workers'), and merges it in (pass, shard) order:
a marker that arrives early waits on disk until the shards before it have been merged. The merge
order is therefore the one a single sequential read gives, so ``profile.json``'s float sums are the
same whatever order the workers finish in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from thresher.pipeline.errors import OutputError
from thresher.pipeline.io.writers import write_json_atomic
from thresher.pipeline.layout import Layout
from thresher.pipeline.ledger import Ledger
from thresher.pipeline.profile import Profile
from thresher.pipeline.runner import keep_sample

PIECES = "pieces.json"  # in a pass's directory: every shard's fingerprint pieces, in shard order


def read_pieces(layout: Layout, k: int) -> list[list] | None:
    """Pass ``k``'s pieces per shard as :meth:`MarkerSummary.complete` wrote them (None: not written)."""
    path = layout.pass_dir(k) / PIECES
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))["pieces"]


class MarkerSummary:
    """The merged done markers of a run's passes (see the module docstring)."""

    def __init__(self, layout: Layout, ops: list[tuple[str, str, int]], shards: Iterable[int], trace_samples: int):
        self.layout = layout
        self.shards = sorted(shards)
        self.trace_samples = trace_samples
        self.ledger = Ledger(ops)  # every merged marker's ledger (resolve records are added by the caller)
        self.trace: dict[str, list[dict]] = {key: [] for key, _, _ in ops}
        self.profile = Profile()
        self.rows_out: dict[int, dict[int, int]] = {}  # pass -> shard -> rows it kept
        self.files: dict[int, dict[int, list[str]]] = {}  # pass -> shard -> its output files
        self.pieces: dict[int, dict[int, list]] = {}  # pass -> shard -> its fingerprint pieces
        self._next: tuple[int, int] = (0, 0)  # (pass, position in self.shards) to merge next
        self.reads = 0  # markers parsed (tests: once each)

    # ------------------------------------------------------------------------------ merging
    def arrived(self, k: int) -> None:
        """A shard of pass ``k`` has written its marker: merge every marker now in order."""
        self._advance(k, strict=False)

    def complete(self, k: int) -> None:
        """Pass ``k`` is over: merge its markers (and any earlier pass's) — every one must exist —
        and write its pieces (what the resolve step reads, ``PIECES``)."""
        self._advance(k, strict=True)
        write_json_atomic(self.layout.pass_dir(k) / PIECES,
                          {"pieces": [self.pieces.get(k, {}).get(s, [["", 0]]) for s in self.shards]})

    def _advance(self, k: int, strict: bool) -> None:
        while self._next[0] <= k:
            p, i = self._next
            if i == len(self.shards):
                self._next = (p + 1, 0)
                continue
            if not self.layout.done(p, self.shards[i]).exists():
                if strict:
                    raise OutputError(f"pass {p} shard {self.shards[i]} has no done marker; the run is incomplete")
                return  # an earlier shard is still running: its marker is merged when it arrives
            done = self.layout.read_done(p, self.shards[i])
            self.reads += 1
            self._merge(p, self.shards[i], done)
            self._next = (p, i + 1)

    def _merge(self, k: int, shard: int, done: dict) -> None:
        self.ledger.merge(Ledger.from_dict({"ops": done["ledger"]}))
        self.rows_out.setdefault(k, {})[shard] = int(done["rows_out"])
        self.files.setdefault(k, {})[shard] = list(done["files"])
        self.pieces.setdefault(k, {})[shard] = done.get("pieces", [["", 0]])
        self.profile.merge(done.get("profile", {}))
        for key, recs in done["trace"].items():
            self.trace[key] = keep_sample(self.trace.get(key, []) + recs, self.trace_samples)

    # ------------------------------------------------------------------------------ reading
    def kept(self, k: int) -> dict[int, int]:
        """Rows each shard kept in pass ``k`` (merged passes only)."""
        return dict(self.rows_out.get(k, {}))

    def output_files(self, k: int) -> list[str]:
        """Pass ``k``'s output files, in shard order, as paths under the output directory."""
        return [f"data/{f}" for s in self.shards for f in self.files.get(k, {}).get(s, [])]
