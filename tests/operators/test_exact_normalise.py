"""The vectorised pieces of exact dedup and of the run profile against their reference definitions:
NFKC of only the rows that may need it equals NFKC of every row (UAX #15 quick check), lower-casing
only the characters that change and folding whitespace with numpy equal Arrow's ``utf8_lower`` and
RE2's ``\\s+`` -> " " (hash values too), and the byte counts over Arrow's buffers equal
``utf8_length`` and ``count_substring``."""

from __future__ import annotations

import unicodedata

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import example, given, settings
from hypothesis import strategies as st

from thresher.operators.common import utf8
from thresher.operators.dedup import exact
from thresher.pipeline.profile import utf8_counts

# characters NFKC treats specially: compatibility forms, combining marks, Hangul syllables and jamo,
# the class-0 characters that compose with the one before (Indic vowel signs), and a few plain ones
SPECIAL = ("ﬁﬂ…\u00a0\u2122\u00bd\u00b2Ｆｕｌ\u3000\u0301\u0308\u0323\u0327e\u00e9\u1e9b\uac00\u1100\u1161\u11a8"
           "\u0b47\u0b3e\u0bc6\u0bbe\u0d46\u0d3e\u1025\u102e\u212b\u2126\u00c5\u0344\u0f73\u2fa1d\U0001d400"
           "\U000e0100\ufb1d\u05b4\u0915\u093c\u0958aA \n\t")
# whitespace of every kind RE2, Arrow's trim or Python treat as such, and letters lower-casing changes
SPACES = "  \t\n\r\f\v\x1c\x1f\x85\u00a0\u2028\u2029\u3000\u2003"
CASED = "AZaz\u00c9\u00e9\u03a3\u03c3\u0130\u212a\u2160\u24b6\u1e9e\u0178\U00010400\u023a\u2c65"
TEXT = st.text(alphabet=st.one_of(st.sampled_from(SPECIAL), st.sampled_from(SPACES), st.sampled_from(CASED),
                                   st.characters(blacklist_categories=("Cs",))),
               max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12), st.integers(0, 3))
def test_nfkc_of_the_rows_that_need_it_equals_nfkc_of_every_row(texts, cut):
    arr = pa.array(["pad"] * cut + texts, pa.string()).slice(cut)
    for a in (arr, arr.cast(pa.large_string())):
        assert exact.nfkc(a).to_pylist() == pc.utf8_normalize(a, form="NFKC").to_pylist()


def test_the_characters_that_compose_backwards_are_those_unicodedata_gives():
    """The class-0 "Maybe" list kept for unicodedata 14.0.0 is what a scan of the decompositions finds."""
    scanned = {int(part, 16) for c in range(0x110000) if (m := unicodedata.decomposition(chr(c))) and m[0] != "<"
               for part in m.split()[1:] if unicodedata.combining(chr(int(part, 16))) == 0}
    if unicodedata.unidata_version == "14.0.0":
        assert scanned == set(exact._MAYBE_STARTERS_14)
    assert scanned | exact._HANGUL_JAMO == exact._maybe_starters()


def test_every_code_point_nfkc_changes_is_marked_unsafe():
    """A string of one character that NFKC changes is always sent to the normaliser."""
    cps = [c for c in range(0x80, 0x30000) if not 0xD800 <= c < 0xE000]
    changed = [c for c in cps if unicodedata.normalize("NFKC", chr(c)) != chr(c)]
    assert exact._unsafe(pa.array(changed).to_numpy()).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12), st.integers(0, 3), st.sampled_from([1, 3, 1 << 18]))
def test_utf8_counts_equal_arrow_length_and_newline_count(texts, cut, slice_bytes):
    """Also with ``find_bytes`` looking at the bytes a few at a time."""
    arr = pa.array(["x\ny"] * cut + texts, pa.string()).slice(cut)
    saved, utf8.SLICE = utf8.SLICE, slice_bytes
    try:
        for a in (arr, arr.cast(pa.large_string())):
            chars, newlines = utf8_counts(a)
            filled = pc.fill_null(a, "")
            assert chars.tolist() == pc.utf8_length(filled).to_pylist()
            assert newlines.tolist() == pc.count_substring(filled, "\n").to_pylist()
            assert exact.nfkc(a).to_pylist() == pc.utf8_normalize(a, form="NFKC").to_pylist()
    finally:
        utf8.SLICE = saved


def reference(a: pa.Array, lowercase: bool, whitespace: bool, punctuation: bool, unicode: bool) -> pa.Array:
    """What exact dedup hashes, by definition (one Arrow kernel per step)."""
    if unicode:
        a = pc.utf8_normalize(a, form="NFKC")
    if lowercase:
        a = pc.utf8_lower(a)
    if punctuation:
        a = pc.replace_substring_regex(a, exact._PUNCT, "")
    if whitespace:
        a = pc.utf8_trim_whitespace(pc.replace_substring_regex(a, r"\s+", " "))
    return a


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12), st.integers(0, 3), st.tuples(*[st.booleans()] * 4),
       st.sampled_from([1, 2, 3, 7, 1 << 18]))
@example(["a\t\nb", " \r\n x ", "\n\n", "A\u00a0\u00a0B"], 0, (True, True, False, True), 2)
@example(["a\t\nb", " \r\n x ", "\n\n", "A\u00a0\u00a0B"], 1, (False, True, True, False), 1 << 18)
def test_normalised_text_and_its_hash_equal_the_reference(texts, cut, options, slice_bytes):
    """Every option combination, string and large string, sliced arrays, nulls, and whitespace runs
    across the slices ``_fold`` works in (down to one byte)."""
    arr = pa.array([" A\n\n"] * cut + texts, pa.string()).slice(cut)
    saved, exact._SLICE = exact._SLICE, slice_bytes
    try:
        for a in (arr, arr.cast(pa.large_string())):
            want = reference(a, *options)
            got = exact.normalise(a, *options)
            assert got.type == a.type
            assert got.to_pylist() == want.to_pylist()
            hi, lo = exact.hash_spans(*exact.normalised_spans(a, *options))
            whi, wlo = exact.hash128(want)
            assert hi.tolist() == whi.tolist() and lo.tolist() == wlo.tolist()
    finally:
        exact._SLICE = saved


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12), st.booleans(), st.booleans())
def test_recode_equals_arrow_normalise_and_lower(texts, nfkc, lower):
    arr = pa.array(texts, pa.string())
    want = pc.utf8_normalize(arr, form="NFKC") if nfkc else arr
    want = pc.utf8_lower(want) if lower else want
    assert exact.recode(arr, nfkc=nfkc, lower=lower).to_pylist() == want.to_pylist()


def test_every_code_point_lower_casing_changes_is_flagged():
    cps = [c for c in range(0x80, 0x30000) if not 0xD800 <= c < 0xE000]
    lowered = pc.utf8_lower(pa.array([chr(c) for c in cps])).to_pylist()
    changed = [c for c, low in zip(cps, lowered, strict=True) if low != chr(c)]
    assert changed and ((exact._flags(pa.array(changed).to_numpy()) & exact._LOWER_CHANGES) != 0).all()


def test_whitespace_runs_fold_within_rows_only():
    """A run at the end of one row and the start of the next stays two runs; \\v is not RE2's \\s."""
    arr = pa.array(["a \t", "\n\nb", "c\x0b\x0bd", "", " ", "e  f\r\ng"])
    d, offs = exact._fold(*exact.string_buffers(arr))
    assert [bytes(d[a:b]).decode() for a, b in zip(offs[:-1], offs[1:], strict=True)] == \
        ["a ", " b", "c\x0b\x0bd", "", " ", "e f g"]
