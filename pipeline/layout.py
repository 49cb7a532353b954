"""Where a run keeps its files. Everything under ``_work/`` is scratch that ``--resume`` reuses.

    <out>/data/part-SSSSS-NNN.<ext>     output rows (renamed into place when a shard is done)
    <out>/quarantine/passK-SSSSS.jsonl  bad input and rows an op could not process, with reasons
    <out>/trace/NN-<op>.jsonl           up to N dropped samples per op, with reason and stats
    <out>/ledger.json                   the balanced ledger
    <out>/profile.json                  histograms of every filter stat and of the corpus (pipeline/profile.py)
    <out>/report.html                   the run's report, one self-contained page (pipeline/report/)
    <out>/_SUCCESS                      written last: its absence means the output is incomplete
    <out>/_work/manifest.json           recipe fingerprint + shards, checked by --resume
    <out>/_work/pass-K/...              intermediates, fingerprints, decisions, done markers
"""

from __future__ import annotations

import json
from pathlib import Path

PROFILE_NAME = "profile.json"
REPORT_NAME = "report.html"


class Layout:
    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.data = self.out / "data"
        self.quarantine = self.out / "quarantine"
        self.trace = self.out / "trace"
        self.work = self.out / "_work"
        self.manifest = self.work / "manifest.json"
        self.ledger = self.out / "ledger.json"
        self.profile = self.out / PROFILE_NAME
        self.report = self.out / REPORT_NAME
        self.success = self.out / "_SUCCESS"

    def pass_dir(self, k: int) -> Path:
        return self.work / f"pass-{k}"

    def done(self, k: int, shard: int) -> Path:
        return self.pass_dir(k) / f"done-{shard:05d}.json"

    # ``piece`` (Ray executor): one input block of a shard, e.g. "b00003"; "" = the whole shard
    def intermediate(self, k: int, shard: int, piece: str = "") -> Path:
        return self.pass_dir(k) / (f"rows-{shard:05d}.arrow" + (f".{piece}" if piece else ""))

    def fingerprints(self, k: int, shard: int, piece: str = "") -> Path:
        return self.pass_dir(k) / (f"fp-{shard:05d}" + (f".{piece}" if piece else "") + ".parquet")

    def decisions(self, k: int) -> Path:
        return self.pass_dir(k) / "decisions.parquet"

    def state(self, k: int) -> Path:
        return self.pass_dir(k) / "state.parquet"

    def resolved(self, k: int) -> Path:
        return self.pass_dir(k) / "resolved.json"

    def quarantine_file(self, k: int, shard: int, piece: str = "") -> Path:
        return self.quarantine / (f"pass{k}-{shard:05d}" + (f".{piece}" if piece else "") + ".jsonl")

    def read_done(self, k: int, shard: int) -> dict | None:
        p = self.done(k, shard)
        if not p.exists():
            return None
        return json.loads(p.read_text(encoding="utf-8"))
