"""Text chunks: Data-Juicer's text_chunk_mapper, one row per chunk (a 1:N mapper).

The chunking rules run in one compiled pass per batch over the UTF-8 bytes, with the separator
matches found for every document at once by RE2: each match is wrapped in a placeholder character
(``replace_substring_regex`` with ``\\0``) and the text split there, so the piece lengths give the
match positions. Data-Juicer searches the separator again in what is left of the text after each
chunk, and only inside the next ``max_len`` characters; the matches of the whole text give the same
answer except when a match straddles the place where the remainder starts (after a forced cut) or
where the window ends. The kernel stops a document there, and the next round searches that
remainder (or that window) itself, so the chunks are Data-Juicer's (checked against a plain-Python
copy of its code in tests/operators/test_text_rules.py).
"""

from __future__ import annotations

import contextlib
import functools
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit
from pydantic import Field, field_validator, model_validator

from thresher.operators.common.re2 import check_pattern
from thresher.operators.common.strings import blank as _blank
from thresher.operators.common.strings import free_char, gather_spans
from thresher.operators.common.tokenize import string_buffers
from thresher.pipeline.ops import Mapper, MapResult, OpParams
from thresher.pipeline.registry import register

FIXED, RECURSIVE = 0, 1  # cut every max_len units / prefer the separator (Data-Juicer's two modes with max_len)
DONE, STOP_START, STOP_WINDOW, NEXT = 0, 1, 2, 3  # how the kernel left a document


@njit(cache=True)
def _chunk_kernel(data, offsets, mode, single_step, size, overlap, m_off, m_start, m_end, t_off, t_end, t_bytes,
                  cpb, units, out_doc, out_start, out_end, stop_kind, stop_char, stop_byte):
    """Chunks of every document as byte spans [out_start, out_end) of ``data`` (``out_doc``: which
    document); returns how many. Positions are in units: characters, or tokens when ``t_off`` has
    one entry per document + 1 (token k ends at ``t_end[t_off[d] + k]``, a byte or character offset
    from the document's start as ``t_bytes`` says). Matches of the separator (RECURSIVE) are
    character spans from the document's start. A document the kernel cannot finish (a match
    straddles a forced cut, or the end of a window) is left at ``stop_char``/``stop_byte`` with
    ``stop_kind``; a document whose ``single_step`` is set (a window) gets one cut and is left at NEXT."""
    n_out = 0
    tokens = len(t_off) == len(offsets)
    for d in range(len(offsets) - 1):
        a, e = offsets[d], offsets[d + 1]
        nch = 0
        i = a
        while i < e:  # character -> byte map
            cpb[nch] = i
            nch += 1
            x = data[i]
            i += 1 if x < 0x80 else (2 if x < 0xE0 else (3 if x < 0xF0 else 4))
        cpb[nch] = e
        if tokens:
            n_units = t_off[d + 1] - t_off[d]
            for k in range(n_units):
                v = t_end[t_off[d] + k]
                units[k] = np.searchsorted(cpb[: nch + 1], a + v) if t_bytes else min(v, nch)
        else:
            n_units = nch
        stop_kind[d] = DONE
        if mode == FIXED:
            if n_units <= size:
                if not _blank(data, a, e):
                    out_doc[n_out] = d
                    out_start[n_out] = a
                    out_end[n_out] = e
                    n_out += 1
                continue
            for st in range(0, n_units, size - overlap):
                last = min(st + size, n_units) - 1
                cs = 0 if st == 0 else (units[st - 1] if tokens else st)
                ce = units[last] if tokens else last + 1
                if not _blank(data, cpb[cs], cpb[ce]):
                    out_doc[n_out] = d
                    out_start[n_out] = cpb[cs]
                    out_end[n_out] = cpb[ce]
                    n_out += 1
            continue
        s = 0
        mi = m_off[d]
        mend = m_off[d + 1]
        while True:
            t0 = np.searchsorted(units[:n_units], s, side="right") if tokens else s
            if n_units - t0 <= size and not single_step[d]:
                if not _blank(data, cpb[s], e):
                    out_doc[n_out] = d
                    out_start[n_out] = cpb[s]
                    out_end[n_out] = e
                    n_out += 1
                break
            w_end = units[min(t0 + size, n_units) - 1] if tokens else min(s + size, nch)
            straddle = False
            while mi < mend and m_start[mi] < s:
                if m_end[mi] > s:
                    straddle = True
                mi += 1
            if straddle and not tokens:
                stop_kind[d] = STOP_START
                break
            last = -1
            j = mi
            while j < mend and m_start[j] < w_end:
                if m_end[j] <= w_end:
                    last = j
                else:
                    straddle = True
                j += 1
            if straddle and not tokens:
                stop_kind[d] = STOP_WINDOW
                break
            if last >= 0:
                cut, nxt = m_start[last], m_end[last]
                mi = last + 1
            else:
                cut = w_end
                nxt = (units[t0 + size - overlap - 1] if tokens else s + size - overlap) if overlap else w_end
            if not _blank(data, cpb[s], cpb[cut]):
                out_doc[n_out] = d
                out_start[n_out] = cpb[s]
                out_end[n_out] = cpb[cut]
                n_out += 1
            s = nxt
            if single_step[d]:
                stop_kind[d] = NEXT
                break
        stop_char[d] = s
        stop_byte[d] = cpb[s]
    return n_out


def match_spans(text: pa.Array, pattern: str, mark: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every match of ``pattern`` in each string, as character spans from the string's start:
    (offsets per string, starts, ends). ``mark``: a character no string contains."""
    marked = pc.replace_substring_regex(text, pattern, f"{mark}\\0{mark}")
    pieces = pc.split_pattern(marked, mark)  # gap, match, gap, match, ..., gap
    n_pieces = pc.list_value_length(pieces).to_numpy(zero_copy_only=False).astype(np.int64)
    lens = pc.utf8_length(pc.list_flatten(pieces)).to_numpy(zero_copy_only=False).astype(np.int64)
    first = np.zeros(len(n_pieces) + 1, dtype=np.int64)
    np.cumsum(n_pieces, out=first[1:])
    ends = np.cumsum(lens)
    pos_end = ends - np.repeat(ends[first[:-1]] - lens[first[:-1]], n_pieces)  # end of each piece in its string
    is_match = (np.arange(len(lens)) - np.repeat(first[:-1], n_pieces)) % 2 == 1
    m_off = np.zeros(len(n_pieces) + 1, dtype=np.int64)
    np.cumsum((n_pieces - 1) // 2, out=m_off[1:])
    return m_off, pos_end[is_match] - lens[is_match], pos_end[is_match]


@functools.lru_cache(maxsize=4)
def _tiktoken_lengths(spec: str):
    from thresher.pipeline.tokenizers import token_counter

    enc = token_counter(spec)._tt
    lens = np.zeros(enc.max_token_value + 1, dtype=np.int64)
    for i in range(len(lens)):
        with contextlib.suppress(KeyError):  # ids with no token
            lens[i] = len(enc.decode_single_token_bytes(i))
    return enc, lens


def token_ends(spec: str, text: pa.Array) -> tuple[np.ndarray, np.ndarray, bool]:
    """Where each token of each string ends: (offsets per string, ends, True when the ends are
    byte offsets — tiktoken — or False for character offsets — a tokenizer.json)."""
    from thresher.pipeline.tokenizers import token_counter

    texts = text.to_pylist()
    counter = token_counter(spec)  # the tokenizer token_length_filter loads (its encoder: _tt or _hf)
    if counter._tt is not None:  # tiktoken: token byte lengths, summed
        enc, lens = _tiktoken_lengths(spec)
        ids = enc.encode_ordinary_batch(texts, num_threads=1)
        counts = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(counts.sum()))
        nbytes = lens[flat]
        in_bytes = True
    else:  # tokenizers: character offsets
        encs = counter._hf.encode_batch(texts, add_special_tokens=False)
        counts = np.fromiter((len(x.offsets) for x in encs), dtype=np.int64, count=len(encs))
        ends = np.fromiter((o[1] for x in encs for o in x.offsets), dtype=np.int64, count=int(counts.sum()))
        in_bytes = False
    off = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    if in_bytes:
        ends = np.cumsum(nbytes)
        ends -= np.repeat(ends[off[:-1]] - nbytes[off[:-1]], counts) if len(ends) else 0
    else:
        for d in range(len(counts)):  # offsets can step back (special pieces): keep them monotonic
            seg = ends[off[d]:off[d + 1]]
            np.maximum.accumulate(seg, out=seg)
    return off, ends, in_bytes


@register
class TextChunk(Mapper):
    """Split each document into chunks of at most ``max_len`` characters (or tokens), cut at a
    separator where possible, one row per chunk (Data-Juicer's text_chunk_mapper).

    Data-Juicer's rules: with ``split_pattern`` and ``max_len``, a text longer than ``max_len`` is
    cut before the last separator match inside its first ``max_len`` characters and goes on after
    the match; with no match there, it is cut at ``max_len`` and goes on ``overlap_len`` characters
    back; the rest is one chunk once it fits. With only ``split_pattern``, the text is split at
    every match. With only ``max_len``, chunks start every ``max_len - overlap_len`` characters
    and hold ``max_len`` (Data-Juicer's loop, so the last one may lie inside the one before it).
    With ``tokenizer``, lengths are tokens (cl100k_base offline, or a tokenizer.json), counted over
    the whole document (Data-Juicer tokenizes each remainder again, so a chunk edge can differ by a
    token), and cuts fall on token boundaries.

    Chunks that are empty or only whitespace are left out (Data-Juicer 1.6 drops them too, except a
    last piece or a pure ``max_len`` chunk); a document with no chunk left is dropped
    (``no_chunks``). Each chunk is a row with the document's other columns; its id is
    ``<id>#<k>`` (k = 0, 1, ... in order, the id as text) and ``parent_id_key`` holds the
    document's id. Separator patterns are RE2 (no backreferences or lookaround; ``\\s`` is ASCII
    whitespace, where Python's is Unicode), must not match an empty string, and do not return their
    groups as chunks (Python's ``re.split`` would).
    """

    name = "text_chunk"
    one_to_many = True
    metrics = {"chunks": "chunks written", "chunked_docs": "documents cut into two or more chunks"}

    class Params(OpParams):
        max_len: int | None = Field(None, ge=1, description="characters (tokens with tokenizer) per chunk at most; "
                                    "null: split at every separator (Data-Juicer: null)")
        split_pattern: str | None = Field("\n\n", description="RE2 separator to cut at; null: cut every max_len "
                                          "(Data-Juicer: '\\n\\n')")
        overlap_len: int = Field(0, ge=0, description="characters (tokens) a forced cut repeats in the next chunk "
                                 "(Data-Juicer: 0)")
        tokenizer: str | None = Field(None, description="count tokens instead of characters: cl100k_base (offline) or "
                                      "a path to a tokenizer.json (Data-Juicer: a tokenizer name; null: characters)")
        parent_id_key: str = Field("parent_id", description="column that gets each chunk's document id")

        @field_validator("split_pattern")
        @classmethod
        def _valid_pattern(cls, v):
            if v is not None:
                check_pattern(v)
                probe = pa.array(["", "a b\n\nc.d"])
                wrapped = "".join(pc.replace_substring_regex(probe, v, "\ue000\\0\ue001").to_pylist())
                if "\ue000\ue001" in wrapped:  # an empty match
                    raise ValueError(f"split_pattern '{v}' matches the empty string")
            return v

        @model_validator(mode="after")
        def _consistent(self):
            if self.max_len is None and self.split_pattern is None:
                raise ValueError("max_len and split_pattern cannot both be null")
            if self.max_len is not None and self.overlap_len >= self.max_len:
                raise ValueError(f"overlap_len ({self.overlap_len}) must be less than max_len ({self.max_len})")
            return self

    example = {"max_len": 2000, "split_pattern": "\n\n", "overlap_len": 200}

    def prepare(self) -> None:
        if self.params.tokenizer:
            from thresher.pipeline.tokenizers import token_counter

            token_counter(self.params.tokenizer)  # fail early if it cannot load

    def process(self, batch: pa.Table) -> MapResult:
        text = batch[self.text_key]
        text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
        text = text.fill_null("") if text.null_count else text
        if self.params.max_len is None:
            doc, starts, ends, data = self._split_all(text)
        else:
            doc, starts, ends, data = self._chunk(text)
        return self._rows(batch, doc, gather_spans(data, starts, ends))

    def _split_all(self, text: pa.Array):
        """Only a pattern: every piece between matches that is not blank."""
        pieces = pc.split_pattern_regex(text, self.params.split_pattern)
        flat = pc.list_flatten(pieces)
        doc = pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False).astype(np.int64)
        data, offsets = string_buffers(flat)
        keep = ~_blank_all(data, offsets)
        return doc[keep], offsets[:-1][keep], offsets[1:][keep], data

    def _chunk(self, text: pa.Array):
        p = self.params
        data, offsets = string_buffers(text)
        n = len(text)
        mode = FIXED if p.split_pattern is None else RECURSIVE
        if p.tokenizer:
            t_off, t_end, t_bytes = token_ends(p.tokenizer, text)
        else:
            t_off, t_end, t_bytes = np.zeros(1, np.int64), np.zeros(0, np.int64), False
        mark = free_char(text) if mode == RECURSIVE else ""
        step = p.max_len - p.overlap_len
        # Rounds: the first looks at every whole text. A document the kernel leaves part-way goes
        # on in the next round from where it stopped: with its remainder (a match straddled a
        # forced cut: search the remainder itself), or with one window of max_len characters (a
        # match straddled the window's end: search the window itself, one cut).
        docs = np.arange(n, dtype=np.int64)  # the batch rows this round looks at
        start = offsets[:-1].copy()  # byte where each document's part of this round starts
        end = offsets[1:].copy()  # ... and ends
        single = np.zeros(n, dtype=np.bool_)  # a window: one cut only
        cur_data, cur_offsets = data, offsets
        out = []
        while True:
            sizes = np.diff(cur_offsets)
            m_off = np.zeros(len(docs) + 1, np.int64)
            m_start = m_end = np.zeros(0, np.int64)
            if mode == RECURSIVE:
                # texts of at most max_len bytes are one chunk: only the others need their matches
                need = np.flatnonzero((sizes > p.max_len) | single | bool(p.tokenizer))
                if len(need):
                    cur = pa.LargeStringArray.from_buffers(len(docs), pa.py_buffer(cur_offsets), pa.py_buffer(cur_data))
                    o, m_start, m_end = match_spans(cur.take(pa.array(need)), p.split_pattern, mark)
                    counts = np.zeros(len(docs), np.int64)
                    counts[need] = np.diff(o)
                    np.cumsum(counts, out=m_off[1:])
            n_tok = np.diff(t_off) if p.tokenizer else np.zeros(0, np.int64)
            cap = int(len(m_start) + (sizes // step).sum() + (n_tok // step).sum() + 2 * len(docs))
            out_doc = np.empty(cap, np.int64)
            out_start = np.empty(cap, np.int64)
            out_end = np.empty(cap, np.int64)
            stop_kind = np.empty(len(docs), np.int64)
            stop_char = np.empty(len(docs), np.int64)
            stop_byte = np.empty(len(docs), np.int64)
            k = _chunk_kernel(cur_data, cur_offsets, mode, single, p.max_len, p.overlap_len, m_off, m_start, m_end,
                              t_off, t_end, t_bytes, np.empty(int(sizes.max(initial=0)) + 1, np.int64),
                              np.empty(int(max(n_tok.max(initial=0), 1)), np.int64),
                              out_doc, out_start, out_end, stop_kind, stop_char, stop_byte)
            local = out_doc[:k]
            shift = start[docs[local]] - cur_offsets[local]  # bytes of this round -> bytes of data
            out.append((docs[local], out_start[:k] + shift, out_end[:k] + shift))
            left = np.flatnonzero(stop_kind != DONE)
            if not len(left):
                break
            docs = docs[left]
            start[docs] += stop_byte[left] - cur_offsets[left]
            single = stop_kind[left] == STOP_WINDOW
            end[docs] = offsets[docs + 1]
            if single.any():
                end[docs[single]] = _advance_chars(data, start[docs[single]], end[docs[single]], p.max_len)
            cur_data, cur_offsets = string_buffers(gather_spans(data, start[docs], end[docs]))
        doc = np.concatenate([o[0] for o in out])
        starts = np.concatenate([o[1] for o in out])
        ends = np.concatenate([o[2] for o in out])
        order = np.lexsort((starts, doc))
        return doc[order], starts[order], ends[order], data

    def _rows(self, batch: pa.Table, doc: np.ndarray, chunks: pa.Array) -> MapResult:
        n = batch.num_rows
        per_doc = np.bincount(doc, minlength=n)
        empty = np.flatnonzero(per_doc == 0)  # one placeholder row each, dropped as no_chunks
        rows = np.concatenate([doc, empty])
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        is_chunk = order < len(doc)
        k = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")  # place within the document
        text = batch[self.text_key]
        text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
        texts = pa.concat_arrays([chunks.cast(pa.large_string()), text.take(pa.array(empty)).cast(pa.large_string())])
        out = batch.take(pa.array(rows))
        out = out.set_column(out.column_names.index(self.text_key), self.text_key,
                             texts.take(pa.array(order)).cast(text.type if int(pc.sum(pc.binary_length(texts)).as_py() or 0)
                                                              < 2**31 - 1 else pa.large_string()))
        id_key = self.ctx.id_key
        if id_key in out.column_names:
            parent = out[id_key]
            ids = pc.binary_join_element_wise(pc.cast(parent, pa.string()), pa.array(k.astype(str)), "#")
            out = out.set_column(out.column_names.index(id_key), id_key, ids)
            key = self.params.parent_id_key
            out = (out.set_column(out.column_names.index(key), key, parent) if key in out.column_names
                   else out.append_column(key, parent))
        self.record("chunks", int(is_chunk.sum()))
        self.record("chunked_docs", int((per_doc > 1).sum()))
        return MapResult(out, drop={"no_chunks": ~is_chunk})


@njit(cache=True)
def _blank_kernel(data, offsets):
    out = np.empty(len(offsets) - 1, dtype=np.bool_)
    for d in range(len(offsets) - 1):
        out[d] = _blank(data, offsets[d], offsets[d + 1])
    return out


def _blank_all(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return _blank_kernel(data, offsets)


@njit(cache=True)
def _advance(data, starts, limits, n):
    out = np.empty(len(starts), np.int64)
    for k in range(len(starts)):
        i = starts[k]
        c = 0
        while i < limits[k] and c < n:
            x = data[i]
            i += 1 if x < 0x80 else (2 if x < 0xE0 else (3 if x < 0xF0 else 4))
            c += 1
        out[k] = i
    return out


def _advance_chars(data: np.ndarray, starts: np.ndarray, limits: np.ndarray, n: int) -> np.ndarray:
    """The byte ``n`` characters after each start (at most its limit)."""
    return _advance(data, np.asarray(starts, np.int64), np.asarray(limits, np.int64), n)
