"""The ledger: per op, rows in / out / dropped by reason / quarantined, counters and seconds.

Invariant, checked at the end of every run (a run that breaks it fails):
``input rows + rows created = output rows + Σ dropped + Σ quarantined``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from thresher.pipeline.errors import LedgerImbalance

READ = "read"  # the pseudo-op for the reader: rows seen, bad records quarantined


@dataclass
class OpEntry:
    key: str
    name: str
    index: int  # position in process (-1 for read)
    rows_in: int = 0
    rows_out: int = 0
    created: int = 0  # rows added by 1:N mappers
    dropped: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    # ``thresher analyze`` drops nothing: the rows an op *would* drop, by reason, are counted here
    flagged: Counter = field(default_factory=Counter)

    def merge(self, other: OpEntry) -> None:
        self.rows_in += other.rows_in
        self.rows_out += other.rows_out
        self.created += other.created
        self.dropped.update(other.dropped)
        self.quarantined.update(other.quarantined)
        self.counters.update(other.counters)
        self.seconds += other.seconds
        self.flagged.update(other.flagged)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def n_quarantined(self) -> int:
        return sum(self.quarantined.values())

    def to_dict(self) -> dict:
        out = {
            "op": self.name, "index": self.index, "rows_in": self.rows_in, "rows_out": self.rows_out,
            "created": self.created, "dropped": dict(sorted(self.dropped.items())),
            "quarantined": dict(sorted(self.quarantined.items())),
            "counters": dict(sorted(self.counters.items())), "seconds": round(self.seconds, 4),
        }
        if self.flagged:
            out["flagged"] = dict(sorted(self.flagged.items()))
        return out

    @classmethod
    def from_dict(cls, key: str, d: dict) -> OpEntry:
        return cls(key, d["op"], d["index"], d["rows_in"], d["rows_out"], d.get("created", 0),
                   Counter(d["dropped"]), Counter(d["quarantined"]), Counter(d.get("counters", {})), d["seconds"],
                   Counter(d.get("flagged", {})))


class Ledger:
    """Ordered op entries; the first is always ``read``."""

    def __init__(self, ops: list[tuple[str, str, int]] | None = None):
        self.entries: dict[str, OpEntry] = {READ: OpEntry(READ, READ, -1)}
        for key, name, index in ops or []:
            self.entries[key] = OpEntry(key, name, index)

    def __getitem__(self, key: str) -> OpEntry:
        return self.entries[key]

    def merge(self, other: Ledger) -> None:
        for key, e in other.entries.items():
            if key not in self.entries:
                self.entries[key] = OpEntry(key, e.name, e.index)
            self.entries[key].merge(e)

    def take(self) -> dict:
        """The entries as ``to_dict()["ops"]``, then zero them in place (a streaming reader
        reports what each block added)."""
        out = self.to_dict()["ops"]
        for key, e in list(self.entries.items()):
            self.entries[key].__init__(key, e.name, e.index)
        return out

    @property
    def input_rows(self) -> int:
        return self.entries[READ].rows_in

    def totals(self) -> dict[str, int]:
        return {
            "input": self.input_rows,
            "created": sum(e.created for e in self.entries.values()),
            "dropped": sum(e.n_dropped for e in self.entries.values()),
            "quarantined": sum(e.n_quarantined for e in self.entries.values()),
        }

    def check_balance(self, output_rows: int) -> None:
        t = self.totals()
        lhs, rhs = t["input"] + t["created"], output_rows + t["dropped"] + t["quarantined"]
        problems = []
        if lhs != rhs:
            problems.append(f"input {t['input']} + created {t['created']} != output {output_rows} + "
                            f"dropped {t['dropped']} + quarantined {t['quarantined']} ({lhs - rhs:+d} rows unaccounted)")
        prev_out = None
        for e in self.entries.values():
            if e.rows_in + e.created != e.rows_out + e.n_dropped + e.n_quarantined:
                problems.append(f"op '{e.key}': in {e.rows_in} + created {e.created} != out {e.rows_out} + "
                                f"dropped {e.n_dropped} + quarantined {e.n_quarantined}")
            if prev_out is not None and e.rows_in != prev_out:
                problems.append(f"op '{e.key}' received {e.rows_in} rows but the op before it emitted {prev_out}")
            prev_out = e.rows_out
        if prev_out is not None and prev_out != output_rows:
            problems.append(f"the last op emitted {prev_out} rows but {output_rows} were written")
        if problems:
            raise LedgerImbalance("ledger does not balance: " + "; ".join(problems))

    def to_dict(self, output_rows: int | None = None) -> dict:
        d = {"ops": {k: e.to_dict() for k, e in self.entries.items()}, "totals": self.totals()}
        if output_rows is not None:
            d["totals"]["output"] = output_rows
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Ledger:
        led = cls()
        led.entries = {k: OpEntry.from_dict(k, v) for k, v in d["ops"].items()}
        return led
