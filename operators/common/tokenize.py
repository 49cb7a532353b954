"""A word tokenizer compiled with numba, over the UTF-8 bytes of a whole Arrow string column.

Per token it yields a 64-bit hash (FNV-1a of its bytes), its length in code points and two flags
(made of punctuation/symbols only; contains a letter) — everything the Gopher, FineWeb and C4 word
statistics need, without making one Python (or Rust) string per token.

The rules follow spaCy's blank-English tokenizer, which datatrove's filters use, closely enough
to agree on filter decisions (measured in bench/filters.py):

- whitespace separates tokens and is never a token;
- a word is a run of letters, digits, marks and ``_``; it continues through ``.`` between word
  characters unless a lower-case letter meets an upper-case one (``example.com`` and ``U.S``
  stay whole, ``end.Next`` splits), and through ``, : / . -`` between digits (``1,000``, ``3.5``,
  ``2010-2020``); a final ``.`` stays on a dotted abbreviation (``U.S.``, ``e.g.``);
- ``http://``, ``https://`` and ``www.`` start a URL token that runs to the next whitespace;
- an apostrophe followed by letters is a token (``it's`` -> ``it`` ``'s``; ``don't`` -> ``don``
  ``'t``, the same lengths as spaCy's ``do`` ``n't``);
- two or more dots are one token, as is ``…``; any other symbol is a token of its own
  (so ``e-mail`` -> ``e`` ``-`` ``mail``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

SPACE, LETTER, DIGIT, MARK, PUNCT = 0, 1, 2, 3, 4
FLAG_SYMBOL, FLAG_LETTER = 1, 2  # token has no letter, digit or mark / token has a letter

_ASCII = np.full(128, PUNCT, dtype=np.int8)
for _c in range(128):
    ch = chr(_c)
    if ch.isspace():  # as Python's str.split: \t \n \v \f \r, \x1c-\x1f and space
        _ASCII[_c] = SPACE
    elif ch.isalpha():
        _ASCII[_c] = LETTER
    elif ch.isdigit():
        _ASCII[_c] = DIGIT
_ASCII[ord("_")] = MARK  # a word character that is not a letter

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a(s: str) -> int:
    """The token hash, in Python (for stop-word lists)."""
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@njit(cache=True, inline="always")
def _decode(data, i):
    b0 = data[i]
    if b0 < 0x80:
        return np.int64(b0), 1
    return _decode_multi(data, i)


@njit(cache=True)
def _decode_multi(data, i):
    b0 = data[i]
    if b0 < 0x80:
        return np.int64(b0), 1
    if b0 < 0xE0:
        return np.int64(((b0 & 0x1F) << 6) | (data[i + 1] & 0x3F)), 2
    if b0 < 0xF0:
        return np.int64(((b0 & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)), 3
    return np.int64(((b0 & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6)
                    | (data[i + 3] & 0x3F)), 4


@njit(cache=True, inline="always")
def _cls(cp, ascii_table):
    if cp < 128:
        return ascii_table[cp]
    return _cls_multi(cp)


@njit(cache=True)
def _cls_multi(cp):
    if cp == 0xA0 or cp == 0x85 or cp == 0x1680 or (0x2000 <= cp <= 0x200A) or cp == 0x2028 or cp == 0x2029 \
            or cp == 0x202F or cp == 0x205F or cp == 0x3000:
        return SPACE
    if (0x300 <= cp <= 0x36F) or (0x1AB0 <= cp <= 0x1AFF) or (0x1DC0 <= cp <= 0x1DFF) or (0x20D0 <= cp <= 0x20FF) \
            or (0xFE20 <= cp <= 0xFE2F) or cp == 0x200B or cp == 0x200C or cp == 0x200D:
        return MARK
    if cp <= 0xBF:
        if cp == 0xAA or cp == 0xB5 or cp == 0xBA:
            return LETTER
        return PUNCT
    if cp == 0xD7 or cp == 0xF7:
        return PUNCT
    if (0x2010 <= cp <= 0x2027) or (0x2030 <= cp <= 0x205E) or (0x20A0 <= cp <= 0x20CF) or (0x2190 <= cp <= 0x23FF) \
            or (0x2460 <= cp <= 0x27BF) or (0x2900 <= cp <= 0x2BFF) or (0x2E00 <= cp <= 0x2E7F) \
            or (0x3001 <= cp <= 0x3003) or (0x3008 <= cp <= 0x3011) or (0x3014 <= cp <= 0x301F) \
            or (0xFE30 <= cp <= 0xFE4F) or (0xFE50 <= cp <= 0xFE6F) or (0xFF01 <= cp <= 0xFF0F) \
            or (0xFF1A <= cp <= 0xFF20) or (0xFF3B <= cp <= 0xFF40) or (0xFF5B <= cp <= 0xFF65) \
            or (0x1F000 <= cp <= 0x1FAFF) or cp == 0xFFFD:
        return PUNCT
    return LETTER


@njit(cache=True)
def _is_lower(cp):
    return (97 <= cp <= 122) or (0xDF <= cp <= 0xFF and cp != 0xF7)


@njit(cache=True)
def _is_upper(cp):
    return (65 <= cp <= 90) or (0xC0 <= cp <= 0xDE and cp != 0xD7)


@njit(cache=True)
def _starts(data, i, end, lit):
    if i + len(lit) > end:
        return False
    for k in range(len(lit)):
        c = data[i + k]
        if 65 <= c <= 90:
            c += 32
        if c != lit[k]:
            return False
    return True


@njit(cache=True)
def tokenize_kernel(data, offsets, d0, hashes, lens, flags, counts, ascii_table, http, https, www):
    """Tokenize documents d0, d0+1, ... into the output arrays until the next document might not
    fit (a document of B bytes has at most B tokens). Returns (tokens written, next document)."""
    n_docs = len(offsets) - 1
    cap = len(hashes)
    t = 0
    for d in range(d0, n_docs):
        i = offsets[d]
        end = offsets[d + 1]
        if t + (end - i) > cap:
            return t, d
        while i < end:
            b = data[i]
            if b < 128:
                cp = np.int64(b)
                w = 1
                c = ascii_table[b]
            else:
                cp, w = _decode_multi(data, i)
                c = _cls_multi(cp)
            if c == SPACE:
                i += w
                continue
            start = i
            nchars = 0
            letter = False
            symbol = not (c == LETTER or c == DIGIT or c == MARK)  # the first character decides the token's kind
            if c == LETTER or c == DIGIT or c == MARK:
                b = data[i] | 32
                if (b == 104 or b == 119) and (_starts(data, i, end, http) or _starts(data, i, end, https)
                                               or _starts(data, i, end, www)):
                    while i < end:
                        cp2, w2 = _decode(data, i)
                        if _cls(cp2, ascii_table) == SPACE:
                            break
                        if _cls(cp2, ascii_table) == LETTER:
                            letter = True
                        i += w2
                        nchars += 1
                else:
                    prev = np.int64(-1)
                    prev_c = -1
                    dots = 0
                    last_seg = 0
                    while i < end:
                        b2 = data[i]
                        if b2 < 128:
                            cp2 = np.int64(b2)
                            w2 = 1
                            c2 = ascii_table[b2]
                        else:
                            cp2, w2 = _decode_multi(data, i)
                            c2 = _cls_multi(cp2)
                        if c2 == LETTER or c2 == DIGIT or c2 == MARK:
                            if c2 == LETTER:
                                letter = True
                            prev = cp2
                            prev_c = c2
                            i += w2
                            nchars += 1
                            last_seg += 1
                            continue
                        if i + w2 < end and (cp2 == 46 or cp2 == 44 or cp2 == 58 or cp2 == 47 or cp2 == 45):
                            nxt, _w3 = _decode(data, i + w2)
                            nc = _cls(nxt, ascii_table)
                            if cp2 == 46 and (nc == LETTER or nc == DIGIT) and not (_is_lower(prev) and _is_upper(nxt)):
                                i += w2
                                nchars += 1
                                dots += 1
                                last_seg = 0
                                continue
                            if prev_c == DIGIT and nc == DIGIT:
                                i += w2
                                nchars += 1
                                last_seg = 0
                                continue
                        if cp2 == 46 and dots > 0 and last_seg == 1:
                            i += w2
                            nchars += 1
                        break
            elif (cp == 39 or cp == 0x2019) and i + w < end:
                nxt, _w3 = _decode(data, i + w)
                if _cls(nxt, ascii_table) == LETTER:
                    symbol = False
                    i += w
                    nchars += 1
                    while i < end:
                        cp2, w2 = _decode(data, i)
                        if _cls(cp2, ascii_table) != LETTER and _cls(cp2, ascii_table) != MARK:
                            break
                        letter = True
                        i += w2
                        nchars += 1
                else:
                    i += w
                    nchars = 1
            elif cp == 46 and i + 1 < end and data[i + 1] == 46:
                while i < end and data[i] == 46:
                    i += 1
                    nchars += 1
            else:
                i += w
                nchars = 1
            h = FNV_OFFSET
            for k in range(start, i):
                h = (h ^ np.uint64(data[k])) * FNV_PRIME
            # (hashes of the same bytes are equal: the n-gram kernels rely on nothing more)
            hashes[t] = h
            lens[t] = nchars
            f = 0
            if symbol:
                f |= FLAG_SYMBOL
            if letter:
                f |= FLAG_LETTER
            flags[t] = f
            t += 1
            counts[d] += 1
    return t, n_docs


_HTTP = np.frombuffer(b"http://", dtype=np.uint8).copy()
_HTTPS = np.frombuffer(b"https://", dtype=np.uint8).copy()
_WWW = np.frombuffer(b"www.", dtype=np.uint8).copy()


def string_buffers(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(UTF-8 bytes, offsets) of a string column, zero-copy where possible; nulls read as ''."""
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks() if text.num_chunks != 1 else text.chunk(0)
    off_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    if text.null_count:
        text = text.fill_null("")
    bufs = text.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type, count=len(text) + 1, offset=text.offset * np.dtype(off_type).itemsize)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, dtype=np.uint8)
    return data, offsets.astype(np.int64)


def tokenize(text: pa.Array | pa.ChunkedArray):
    """(hashes, lengths, flags, tokens per document) for every document of a string column."""
    data, offsets = string_buffers(text)
    n_docs = len(offsets) - 1
    counts = np.zeros(n_docs, dtype=np.int64)
    sizes = np.diff(offsets)
    cap = int(max(1024, len(data) // 3, sizes.max(initial=0)))
    parts = []
    d = 0
    while d < n_docs:
        hashes = np.empty(cap, dtype=np.uint64)
        lens = np.empty(cap, dtype=np.int64)
        flags = np.empty(cap, dtype=np.uint8)
        t, d = tokenize_kernel(data, offsets, d, hashes, lens, flags, counts,
                               _ASCII, _HTTP, _HTTPS, _WWW)
        parts.append((hashes[:t], lens[:t], flags[:t]))
    if len(parts) == 1:
        return (*parts[0], counts)
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8), counts
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), counts)


def token_strings(text: str) -> list[str]:
    """The tokens of one string, as text (for tests and docs; the kernel itself makes no strings)."""
    import re

    arr = pa.array([text])
    hashes, lens, _flags, _counts = tokenize(arr)
    # recover the token texts by re-walking with the same lengths
    out, pos = [], 0
    for n in lens:
        while text[pos].isspace() or re.match(r"[\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x85]", text[pos]):
            pos += 1
        out.append(text[pos: pos + int(n)])
        pos += int(n)
    return out


@njit(cache=True)
def _word_count_kernel(data, offsets, ascii_table):
    n = len(offsets) - 1
    out = np.zeros(n, dtype=np.int64)
    longest = np.zeros(n, dtype=np.int64)
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        inside = False
        cnt = 0
        run = 0
        while i < end:
            b = data[i]
            if b < 128:
                space = ascii_table[b] == SPACE
                i += 1
            else:
                cp, w = _decode_multi(data, i)
                space = _cls_multi(cp) == SPACE
                i += w
            if not space and not inside:
                cnt += 1
                run = 0
            if not space:
                run += 1
                if run > longest[d]:
                    longest[d] = run
            inside = not space
        out[d] = cnt
    return out, longest


def whitespace_word_counts(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Whitespace-separated words per string (``len(s.split())``), compiled."""
    data, offsets = string_buffers(text)
    return _word_count_kernel(data, offsets, _ASCII)[0]


def word_counts_and_longest(text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-separated words per string, and code points in the longest of them."""
    data, offsets = string_buffers(text)
    return _word_count_kernel(data, offsets, _ASCII)


@njit(cache=True)
def _char_class_kernel(data, offsets, ascii_table):
    n = len(offsets) - 1
    out = np.zeros((n, 5), dtype=np.int64)  # columns: SPACE, LETTER, DIGIT, MARK, PUNCT
    for d in range(n):
        i, end = offsets[d], offsets[d + 1]
        while i < end:
            b = data[i]
            if b < 128:
                c = ascii_table[b]
                i += 1
            else:
                cp, w = _decode_multi(data, i)
                c = _cls_multi(cp)
                i += w
            out[d, c] += 1
    return out


def char_class_counts(text: pa.Array | pa.ChunkedArray) -> dict[str, np.ndarray]:
    """Code points per class in each string: space, letter, digit, mark (incl. '_'), punct (symbols)."""
    data, offsets = string_buffers(text)
    m = _char_class_kernel(data, offsets, _ASCII)
    return {"space": m[:, SPACE], "letter": m[:, LETTER], "digit": m[:, DIGIT], "mark": m[:, MARK],
            "punct": m[:, PUNCT], "total": m.sum(axis=1)}


@njit(cache=True)
def _string_hash_kernel(data, offsets):
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    for d in range(n):
        h = FNV_OFFSET
        for k in range(offsets[d], offsets[d + 1]):
            h = (h ^ np.uint64(data[k])) * FNV_PRIME
        out[d] = h
    return out


def string_hashes(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """FNV-1a 64 of each string's UTF-8 bytes: stable across processes, machines and versions."""
    data, offsets = string_buffers(strings)
    return _string_hash_kernel(data, offsets)
