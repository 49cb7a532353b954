"""A word tokenizer compiled with numba, over the UTF-8 bytes of a whole Arrow string column.

Per token it yields a 64-bit hash (FNV-1a of its bytes), its length in code points and two flags
(made of punctuation/symbols only; contains a letter) — everything the Gopher, FineWeb and C4 word
statistics need, without making one Python (or Rust) string per token.

The algorithm is spaCy's (the blank-English tokenizer datatrove's filters use), so that the two
agree on filter decisions (measured in bench/filters.py). Text is split at whitespace; from each
chunk, prefix characters are split off the front and suffixes off the back, then infix rules split
the middle:

- prefixes: opening and closing punctuation ``( [ { < " ' `` and ``, : ; ! ? _ # * &``, quotes,
  currency, symbols (icons), ``§ % = + — –`` and runs of dots;
- suffixes: the same punctuation, quotes and symbols, dashes, ``'s``, ``n't``, ``'ll 're 've 'd 'm``,
  a run of dots, and a final ``.`` after a digit, a lower-case letter, a symbol or two capitals —
  except on abbreviations (``U.S.``, ``e.g.``, ``Mr.``, ``Jan.``);
- infixes: a hyphen or ``: < > = /`` between a letter or digit and a letter, ``,`` between
  letters, ``.`` between a lower-case and an upper-case letter, ``+ - * ^`` between digits, an
  ellipsis, a symbol;
- ``http://``, ``https://`` and ``www.`` chunks stay whole.

So ``e-mail`` -> ``e - mail``, ``don't`` -> ``do n't``, ``(3.5%)`` -> ``( 3.5 % )``, ``/usr/bin`` and
``-----`` stay whole, as in spaCy.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from numba import njit

# string_buffers lives in the numba-free utf8 module; the kernels' callers import it from here too
from thresher.operators.common.utf8 import string_buffers

SPACE, LETTER, DIGIT, MARK, PUNCT = 0, 1, 2, 3, 4
FLAG_SYMBOL, FLAG_LETTER = 1, 2  # token has no letter, digit or mark / token has a letter
PREFIX, SUFFIX, ICON = 1, 2, 4

_ASCII = np.full(128, PUNCT, dtype=np.int8)
_AFFIX = np.zeros(128, dtype=np.int8)
for _c in range(128):
    ch = chr(_c)
    if ch.isspace():  # as Python's str.split: \t \n \v \f \r, \x1c-\x1f and space
        _ASCII[_c] = SPACE
    elif ch.isalpha():
        _ASCII[_c] = LETTER
    elif ch.isdigit():
        _ASCII[_c] = DIGIT
for _ch in ",:;!?()[]{}<>_#*&'\"`":
    _AFFIX[ord(_ch)] = PREFIX | SUFFIX
for _ch in "%=+$":
    _AFFIX[ord(_ch)] = PREFIX

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)

ABBREVIATIONS = ["Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "Prof", "Inc", "Ltd", "Co", "Corp", "vs", "Gen", "Gov", "Sen", "Rep", "Rev", "Mt", "Ft", "Lt", "Col", "Sgt", "Capt", "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec"]


def fnv1a(s: str) -> int:
    """The token hash, in Python (for word lists)."""
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


_ABBREV = np.array(sorted(fnv1a(a) for a in ABBREVIATIONS), dtype=np.uint64)


@njit(cache=True)
def _decode_multi(data, i):
    b0 = data[i]
    if b0 < 0xE0:
        return np.int64(((b0 & 0x1F) << 6) | (data[i + 1] & 0x3F)), 2
    if b0 < 0xF0:
        return np.int64(((b0 & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)), 3
    return np.int64(((b0 & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6)
                    | (data[i + 3] & 0x3F)), 4


@njit(cache=True, inline="always")
def _decode(data, i):
    b0 = data[i]
    if b0 < 0x80:
        return np.int64(b0), 1
    return _decode_multi(data, i)


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
    if (0x2010 <= cp <= 0x2027) or (0x2030 <= cp <= 0x205E) or (0x20A0 <= cp <= 0x20CF) or (0x2100 <= cp <= 0x214F) \
            or (0x2190 <= cp <= 0x23FF) or (0x2460 <= cp <= 0x27BF) or (0x27E6 <= cp <= 0x27EF) \
            or (0x2900 <= cp <= 0x2BFF) or (0x2E00 <= cp <= 0x2E7F) or (0x3001 <= cp <= 0x3003) \
            or (0x3008 <= cp <= 0x3011) or (0x3014 <= cp <= 0x301F) or (0xFE30 <= cp <= 0xFE4F) \
            or (0xFE50 <= cp <= 0xFE6F) or (0xFF01 <= cp <= 0xFF0F) or (0xFF1A <= cp <= 0xFF20) \
            or (0xFF3B <= cp <= 0xFF40) or (0xFF5B <= cp <= 0xFF65) or (0x1F000 <= cp <= 0x1FAFF) or cp == 0xFFFD:
        return PUNCT
    return LETTER


@njit(cache=True, inline="always")
def _cls(cp, ascii_table):
    if cp < 128:
        return ascii_table[cp]
    return _cls_multi(cp)


@njit(cache=True)
def _affix_multi(cp):
    """Prefix/suffix/icon flags of a non-ASCII code point (spaCy's punctuation, quotes, currency, icons)."""
    if cp == 0x2026:  # …
        return PREFIX | SUFFIX | ICON
    if cp == 0x2013 or cp == 0x2014:  # – —
        return PREFIX | SUFFIX
    if (0x2018 <= cp <= 0x201F) or cp == 0xAB or cp == 0xBB or cp == 0xB4 or cp == 0xBF or cp == 0xA1 \
            or cp == 0xB7 or cp == 0xFFFD or (0x3001 <= cp <= 0x3003) or (0x3008 <= cp <= 0x3011) or (0x3014 <= cp <= 0x301B) \
            or (0xFF01 <= cp <= 0xFF0F) or (0xFF1A <= cp <= 0xFF1F) or cp == 0xFF5E or cp == 0x27E6 or cp == 0x27E7 \
            or cp == 0x60C or cp == 0x61B or cp == 0x61F or cp == 0x6D4 or cp == 0x964:
        return PREFIX | SUFFIX
    if cp == 0xA7 or cp == 0xA3 or cp == 0xA5 or (0x20A0 <= cp <= 0x20CF):  # § and currency
        return PREFIX
    if cp == 0xA9 or cp == 0xAE or cp == 0xB0 or (0x2100 <= cp <= 0x214F) or (0x2190 <= cp <= 0x23FF) \
            or (0x2460 <= cp <= 0x27BF) or (0x2900 <= cp <= 0x2BFF) or (0x1F000 <= cp <= 0x1FAFF):
        return PREFIX | SUFFIX | ICON  # symbols (Unicode So): spaCy's LIST_ICONS
    return 0


@njit(cache=True, inline="always")
def _affix(cp, affix_table):
    if cp < 128:
        return affix_table[cp]
    return _affix_multi(cp)


@njit(cache=True)
def _is_lower(cp):
    return (97 <= cp <= 122) or (0xDF <= cp <= 0xFF and cp != 0xF7)


@njit(cache=True)
def _is_upper(cp):
    return (65 <= cp <= 90) or (0xC0 <= cp <= 0xDE and cp != 0xD7)


@njit(cache=True)
def _prev_start(data, i, lo):
    """Start byte of the character that ends just before byte i."""
    j = i - 1
    while j > lo and (data[j] & 0xC0) == 0x80:
        j -= 1
    return j


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
def _ends_ci(data, lo, hi, lit):
    """The bytes [lo, hi) end with ``lit`` (ASCII, case-insensitive)."""
    n = len(lit)
    if hi - lo < n:
        return False
    for k in range(n):
        c = data[hi - n + k]
        if 65 <= c <= 90:
            c += 32
        if c != lit[k]:
            return False
    return True


@njit(cache=True)
def _hash(data, a, b):
    h = FNV_OFFSET
    for k in range(a, b):
        h = (h ^ np.uint64(data[k])) * FNV_PRIME
    return h


@njit(cache=True)
def _emit(data, a, b, hashes, lens, flags, t, ascii_table, store):
    """Write token [a, b) at slot t: hash, code points, flags. Returns t + 1 (or t when empty).
    With ``store`` false only counts it."""
    if b <= a:
        return t
    if not store:
        return t + 1
    nchars = 0
    letter = False
    wordish = False
    h = FNV_OFFSET
    for i in range(a, b):
        x = data[i]
        h = (h ^ np.uint64(x)) * FNV_PRIME
        if x < 128:
            c = ascii_table[x]
        elif x >= 0xC0:  # a lead byte: classify the code point it starts
            cp, _w = _decode_multi(data, i)
            c = _cls_multi(cp)
        else:
            continue  # continuation byte
        nchars += 1
        if c == LETTER:
            letter = True
            wordish = True
        elif c == DIGIT or c == MARK:
            wordish = True
    hashes[t] = h
    lens[t] = nchars
    f = 0
    if not wordish:
        f |= FLAG_SYMBOL
    if letter:
        f |= FLAG_LETTER
    flags[t] = f
    return t + 1


@njit(cache=True)
def _apostrophe_at(data, k, end):
    """Length in bytes of an apostrophe (' or ’) at byte k, else 0."""
    if data[k] == 39:
        return 1
    if k + 2 < end and data[k] == 0xE2 and data[k + 1] == 0x80 and data[k + 2] == 0x99:
        return 3
    return 0


@njit(cache=True)
def _clitic(data, cs, ce):
    """Start of a clitic suffix ('s n't 'll 're 've 'd 'm) ending at ce after a letter, or -1."""
    # n't / n’t
    for alen in (1, 3):
        # "...n" + apostrophe + "t"
        if ce - cs > 2 + alen and (data[ce - 1] | 32) == 116:
            k = ce - 1 - alen
            if _apostrophe_at(data, k, ce) == alen and (data[k - 1] | 32) == 110 and k - 1 > cs:
                return k - 1
        for tail in (1, 2):  # 's 'd 'm (1 letter) / 'll 're 've (2 letters)
            k = ce - tail - alen
            if k > cs and _apostrophe_at(data, k, ce) == alen:
                ok = True
                for q in range(k + alen, ce):
                    c = data[q] | 32
                    if not (97 <= c <= 122):
                        ok = False
                if ok:
                    word = 0
                    for q in range(k + alen, ce):
                        word = word * 128 + (data[q] | 32)
                    if tail == 1 and (word == 115 or word == 100 or word == 109):  # s d m
                        return k
                    if tail == 2 and (word == 108 * 128 + 108 or word == 114 * 128 + 101 or word == 118 * 128 + 101):
                        return k
    return -1


@njit(cache=True)
def _split_final_dot(data, cs, ce, ascii_table, abbrev):
    """spaCy's rule for a final '.': split it after a digit, a lower-case letter, a symbol or two
    capitals, unless the chunk is an abbreviation (has an inner '.', or is in the list)."""
    k = ce - 1
    if k <= cs:
        return False
    for q in range(cs, k):
        if data[q] == 46:
            return False  # U.S. e.g. i.e.
    h = _hash(data, cs, k)
    pos = np.searchsorted(abbrev, h)
    if pos < len(abbrev) and abbrev[pos] == h:
        return False
    p = _prev_start(data, k, cs)
    cp, _w = _decode(data, p)
    c = _cls(cp, ascii_table)
    if c == DIGIT or c == PUNCT or _is_lower(cp) or (c == LETTER and cp >= 128 and not _is_upper(cp)):
        return True
    if _is_upper(cp) and p > cs:
        p2 = _prev_start(data, p, cs)
        cp2, _w2 = _decode(data, p2)
        return _is_upper(cp2)
    return False


@njit(cache=True)
def _infix(data, cs, ce, hashes, lens, flags, t, ascii_table, affix_table, store):
    """Split the core [cs, ce) by spaCy's infix rules and emit the pieces."""
    ps = cs
    k = cs
    pcp = np.int64(-1)
    pc = -1
    while k < ce:
        cp, w = _decode(data, k)
        c = _cls(cp, ascii_table)
        nxt = np.int64(-1)
        nc = -1
        if k + w < ce:
            nxt, _w = _decode(data, k + w)
            nc = _cls(nxt, ascii_table)
        split_len = 0
        if cp == 46 and nxt == 46:  # a run of dots
            e = k
            while e < ce and data[e] == 46:
                e += 1
            split_len = e - k
        elif cp != 46 and (_affix(cp, affix_table) & ICON) != 0 or (cp == 45 or cp == 0x2013 or cp == 0x2014 or cp == 126) and (pc == LETTER or pc == DIGIT) and nc == LETTER or (cp == 58 or cp == 60 or cp == 62 or cp == 61 or cp == 47) and (pc == LETTER or pc == DIGIT) and nc == LETTER or cp == 44 and pc == LETTER and nc == LETTER or cp == 46 and _is_lower(pcp) and _is_upper(nxt) or (cp == 43 or cp == 45 or cp == 42 or cp == 94) and pc == DIGIT and (nc == DIGIT or nxt == 45):
            split_len = w
        if split_len:
            t = _emit(data, ps, k, hashes, lens, flags, t, ascii_table, store)
            t = _emit(data, k, k + split_len, hashes, lens, flags, t, ascii_table, store)
            k += split_len
            ps = k
            pcp = np.int64(-1)
            pc = -1
            continue
        pcp = cp
        pc = c
        k += w
    return _emit(data, ps, ce, hashes, lens, flags, t, ascii_table, store)


@njit(cache=True)
def tokenize_kernel(data, offsets, d0, hashes, lens, flags, counts, ascii_table, affix_table, abbrev,
                    http, https, www, cannot, sfx, store, cap):
    """Tokenize documents d0, d0+1, ... into the output arrays until the next document might not
    fit in ``cap`` slots (a document of B bytes has at most B tokens). Returns (tokens written,
    next document). With ``store`` false only ``counts`` is written."""
    n_docs = len(offsets) - 1
    t = 0
    for d in range(d0, n_docs):
        i = offsets[d]
        end = offsets[d + 1]
        if t + (end - i) > cap:
            return t, d
        t0 = t
        while i < end:
            cp, w = _decode(data, i)
            if _cls(cp, ascii_table) == SPACE:
                i += w
                continue
            cs = i  # a whitespace-delimited chunk [cs, ce)
            plain = True  # only ASCII letters and digits: a token as it is
            h = FNV_OFFSET  # its hash and whether it has a letter, while it is plain
            letter = False
            while i < end:
                x = data[i]
                if x < 128:
                    c = ascii_table[x]
                    if c == SPACE:
                        break
                    if c == LETTER:
                        letter = True
                    elif c != DIGIT:
                        plain = False
                    h = (h ^ np.uint64(x)) * FNV_PRIME
                    i += 1
                else:
                    plain = False
                    cp, w = _decode_multi(data, i)
                    if _cls_multi(cp) == SPACE:
                        break
                    i += w
            ce = i
            if plain and not (ce - cs == 6 and _ends_ci(data, cs, ce, cannot)):
                if store:  # as _emit writes it
                    hashes[t] = h
                    lens[t] = ce - cs
                    flags[t] = FLAG_LETTER if letter else 0
                t += 1
                continue
            b = data[cs] | 32
            if (b == 104 or b == 119) and (_starts(data, cs, ce, http) or _starts(data, cs, ce, https)
                                           or _starts(data, cs, ce, www)):
                t = _emit(data, cs, ce, hashes, lens, flags, t, ascii_table, store)
                continue
            # prefixes
            while cs < ce:
                cp, w = _decode(data, cs)
                if cp == 46 and cs + 1 < ce and data[cs + 1] == 46:
                    e = cs
                    while e < ce and data[e] == 46:
                        e += 1
                    t = _emit(data, cs, e, hashes, lens, flags, t, ascii_table, store)
                    cs = e
                    continue
                a = _affix(cp, affix_table)
                if (a & PREFIX) != 0 and not (cp == 43 and cs + 1 < ce and 48 <= data[cs + 1] <= 57):
                    t = _emit(data, cs, cs + w, hashes, lens, flags, t, ascii_table, store)
                    cs += w
                    continue
                break
            # suffixes (remembered, emitted after the core)
            ns = 0
            while ce > cs:
                p = _prev_start(data, ce, cs)
                cp, w = _decode(data, p)
                if cp == 46 and p > cs and data[p - 1] == 46:  # trailing run of dots
                    e = p
                    while e > cs and data[e - 1] == 46:
                        e -= 1
                    sfx[ns] = e
                    ns += 1
                    ce = e
                    continue
                if cp == 46:
                    if _split_final_dot(data, cs, ce, ascii_table, abbrev):
                        sfx[ns] = p
                        ns += 1
                        ce = p
                        continue
                    break
                a = _affix(cp, affix_table)
                if (a & SUFFIX) != 0:
                    sfx[ns] = p
                    ns += 1
                    ce = p
                    continue
                if cp == 37 and p > cs and 48 <= data[p - 1] <= 57:  # 3.5%
                    sfx[ns] = p
                    ns += 1
                    ce = p
                    continue
                if ce - cs == 6 and _ends_ci(data, cs, ce, cannot):  # "cannot" -> "can" "not"
                    sfx[ns] = cs + 3
                    ns += 1
                    ce = cs + 3
                    break
                k = _clitic(data, cs, ce)
                if k > cs:
                    sfx[ns] = k
                    ns += 1
                    ce = k
                    continue
                break
            t = _infix(data, cs, ce, hashes, lens, flags, t, ascii_table, affix_table, store)
            # suffix j spans [sfx[j], sfx[j-1]) (the first one found ends the chunk): emit innermost first
            for j in range(ns - 1, -1, -1):
                t = _emit(data, sfx[j], sfx[j - 1] if j > 0 else i, hashes, lens, flags, t, ascii_table, store)
        counts[d] = t - t0
    return t, n_docs


_HTTP = np.frombuffer(b"http://", dtype=np.uint8).copy()
_HTTPS = np.frombuffer(b"https://", dtype=np.uint8).copy()
_WWW = np.frombuffer(b"www.", dtype=np.uint8).copy()
_CANNOT = np.frombuffer(b"cannot", dtype=np.uint8).copy()


def tokenize(text: pa.Array | pa.ChunkedArray):
    """(hashes, lengths, flags, tokens per document) for every document of a string column."""
    return tokenize_buffers(*string_buffers(text))


def token_counts(text: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Tokens per document (``tokenize``'s last array), without writing the tokens."""
    data, offsets = string_buffers(text)
    counts = np.zeros(len(offsets) - 1, dtype=np.int64)
    sfx = np.empty(int(np.diff(offsets).max(initial=0)) + 1, dtype=np.int64)
    none = np.empty(0, np.uint64)
    tokenize_kernel(data, offsets, 0, none, none.view(np.int64), none.view(np.uint8), counts, _ASCII, _AFFIX, _ABBREV,
                    _HTTP, _HTTPS, _WWW, _CANNOT, sfx, False, np.int64(2**62))
    return counts


def tokenize_buffers(data: np.ndarray, offsets: np.ndarray):
    """``tokenize`` over a column's UTF-8 bytes and offsets (``string_buffers``)."""
    n_docs = len(offsets) - 1
    counts = np.zeros(n_docs, dtype=np.int64)
    sizes = np.diff(offsets)
    longest = int(sizes.max(initial=0))
    cap = int(max(1024, len(data) // 3, longest))
    sfx = np.empty(longest + 1, dtype=np.int64)
    parts = []
    d = 0
    while d < n_docs:
        hashes = np.empty(cap, dtype=np.uint64)
        lens = np.empty(cap, dtype=np.int64)
        flags = np.empty(cap, dtype=np.uint8)
        t, d = tokenize_kernel(data, offsets, d, hashes, lens, flags, counts, _ASCII, _AFFIX, _ABBREV,
                               _HTTP, _HTTPS, _WWW, _CANNOT, sfx, True, cap)
        parts.append((hashes[:t], lens[:t], flags[:t]))
    if not parts:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.uint8), counts
    if len(parts) == 1:
        return (*parts[0], counts)
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
