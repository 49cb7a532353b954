"""Lines made only of symbols: datatrove's SymbolLinesFormatter."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from thresher.operators.common.segments import join_kept, split_flat
from thresher.pipeline.columns import set_column
from thresher.pipeline.ops import Mapper, OpParams
from thresher.pipeline.registry import register

# datatrove.utils.text.PUNCTUATION: ASCII and CJK/full-width punctuation and the C0/C1 control
# characters except \t and \n
PUNCTUATION = ("!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
               + "".join(map(chr, (x for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b)))))
# characters Python's str.strip() removes (a line of only these is blank, not a symbol line)
_PY_SPACE = {c for c in map(chr, range(0x3001)) if c.isspace()}


def _cls(chars) -> str:
    return "".join(f"\\x{{{ord(c):x}}}" for c in sorted(set(chars)))


SYMBOL_LINE = f"^[{_cls(set(PUNCTUATION) | {' '})}]*$"
HAS_SYMBOL = f"[{_cls(set(PUNCTUATION) - _PY_SPACE)}]"


@register
class SymbolLinesRemove(Mapper):
    """Remove lines made only of punctuation and symbols (datatrove's SymbolLinesFormatter); a run of
    such lines can be replaced by one line of ``replace_char``.

    As datatrove: a line is removed when it is not blank and every character is one of datatrove's
    ``PUNCTUATION`` (ASCII and CJK/full-width punctuation, C0/C1 control characters) or a space;
    lines of only whitespace are kept. Unlike datatrove, lines are split at ``\\n`` only and a text
    with no such line is left exactly as it was (datatrove's ``splitlines()`` also turns ``\\r\\n``
    and other breaks into ``\\n`` and drops a final newline). A text can become empty; it is kept
    (put a length filter after this op).
    """

    name = "symbol_lines_remove"
    metrics = {"symbol_lines_removed": "lines removed"}

    class Params(OpParams):
        replace_char: str = Field("", description="put this line in place of each run of removed lines ('' "
                                  "removes them; datatrove: '', or '\\n' to leave a paragraph break)")

    example = {"replace_char": ""}

    def process(self, batch: pa.Table) -> pa.Table:
        text = batch[self.text_key]
        has = pc.match_substring_regex(text, HAS_SYMBOL).fill_null(False).to_numpy(zero_copy_only=False)
        if not has.any():
            return batch
        idx = np.flatnonzero(has)  # only the texts with a symbol character can change
        sub = (text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text).take(pa.array(idx))
        flat, parent, n_docs = split_flat(sub, "\n")
        symbol = (pc.match_substring_regex(flat, SYMBOL_LINE).to_numpy(zero_copy_only=False)
                  & pc.match_substring_regex(flat, HAS_SYMBOL).to_numpy(zero_copy_only=False))
        if not symbol.any():
            return batch
        self.record("symbol_lines_removed", int(symbol.sum()))
        prev = np.zeros_like(symbol)
        prev[1:] = symbol[:-1] & (parent[1:] == parent[:-1])
        keep = ~symbol
        if self.params.replace_char:
            first = symbol & ~prev  # the first line of each run stands for the run
            flat = pc.if_else(pa.array(first), pa.scalar(self.params.replace_char, flat.type), flat)
            keep |= first
        fixed = join_kept(flat, parent, keep, n_docs, "\n")
        # scatter the rewritten texts back
        pick = np.arange(len(has), dtype=np.int64)
        pick[idx] = len(has) + np.arange(len(idx), dtype=np.int64)
        whole = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
        combined = pa.concat_arrays([whole.cast(pa.large_string()), fixed.cast(pa.large_string())])
        return set_column(batch, self.text_key, combined.take(pa.array(pick)).cast(whole.type))
