"""The vectorised pieces of exact dedup and of the run profile against their reference definitions:
NFKC of only the rows that may need it equals NFKC of every row (UAX #15 quick check), and the byte
counts over Arrow's buffers equal ``utf8_length`` and ``count_substring``."""

from __future__ import annotations

import unicodedata

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from thresher.operators.dedup import exact
from thresher.pipeline.profile import utf8_counts

# characters NFKC treats specially: compatibility forms, combining marks, Hangul syllables and jamo,
# the class-0 characters that compose with the one before (Indic vowel signs), and a few plain ones
SPECIAL = ("ﬁﬂ…\u00a0\u2122\u00bd\u00b2Ｆｕｌ\u3000\u0301\u0308\u0323\u0327e\u00e9\u1e9b\uac00\u1100\u1161\u11a8"
           "\u0b47\u0b3e\u0bc6\u0bbe\u0d46\u0d3e\u1025\u102e\u212b\u2126\u00c5\u0344\u0f73\u2fa1d\U0001d400"
           "\U000e0100\ufb1d\u05b4\u0915\u093c\u0958aA \n\t")
TEXT = st.text(alphabet=st.one_of(st.sampled_from(SPECIAL), st.characters(blacklist_categories=("Cs",))),
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
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12), st.integers(0, 3))
def test_utf8_counts_equal_arrow_length_and_newline_count(texts, cut):
    arr = pa.array(["x\ny"] * cut + texts, pa.string()).slice(cut)
    for a in (arr, arr.cast(pa.large_string())):
        chars, newlines = utf8_counts(a)
        filled = pc.fill_null(a, "")
        assert chars.tolist() == pc.utf8_length(filled).to_pylist()
        assert newlines.tolist() == pc.count_substring(filled, "\n").to_pylist()
