"""PII redaction: positives are replaced, look-alikes (failing Luhn / IBAN checks, dates, amounts) stay."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.operators.clean.pii import PiiRedact, iban_ok, luhn_ok


def redact(text: str, **params) -> tuple[str, dict]:
    op = PiiRedact(PiiRedact.Params(**params))
    out = op.process(pa.table({"text": [text]}))["text"][0].as_py()
    return out, op.take_counters()


@pytest.mark.parametrize("text,expected,kind", [
    ("write to jane.doe+news@example.co.uk today", "write to <EMAIL> today", "EMAIL"),
    ("call +1 (415) 555-2671 now", "call <PHONE> now", "PHONE"),
    ("call +44 20 7946 0958 now", "call <PHONE> now", "PHONE"),
    ("call (212) 555-0199 now", "call <PHONE> now", "PHONE"),
    ("call 020 7946 0958 now", "call <PHONE> now", "PHONE"),
    ("host 192.168.10.254 up", "host <IP_ADDRESS> up", "IP_ADDRESS"),
    ("host 2001:db8::8a2e:370:7334 up", "host <IP_ADDRESS> up", "IP_ADDRESS"),
    ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok", "CREDIT_CARD"),
    ("card 5500-0000-0000-0004 ok", "card <CREDIT_CARD> ok", "CREDIT_CARD"),
    ("iban GB82 WEST 1234 5698 7654 32 ok", "iban <IBAN> ok", "IBAN"),
    ("iban DE89370400440532013000 ok", "iban <IBAN> ok", "IBAN"),
])
def test_positives(text, expected, kind):
    out, counts = redact(text)
    assert out == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize("text", [
    "card 4111 1111 1111 1112 fails Luhn",
    "iban GB82 WEST 1234 5698 7654 33 fails mod-97",
    "iban DE89370400440532013001 fails mod-97",
    "the years 1999-2003 and 2010-2020",
    "a budget of 1,000,000 dollars and 3.14159",
    "version 10.2.3.4.5 and time 12:30:45",
    "order number 12345678 shipped",
    "not an ip 999.12.1.1",
    "ratio 3:2 and a:b:c labels",
])
def test_look_alikes_stay(text):
    out, counts = redact(text)
    assert out == text and not counts


def test_types_can_be_turned_off_and_placeholder_changed():
    out, _ = redact("mail a@b.org from 10.0.0.1", ip_addresses=False, placeholder="[{type}]")
    assert out == "mail [EMAIL] from 10.0.0.1"


@given(st.lists(st.integers(0, 9), min_size=12, max_size=18))
def test_luhn_matches_definition(digits):
    s = "".join(map(str, digits))
    # independent formulation: double every second digit from the right, sum the digits of the results
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += sum(int(c) for c in str(d * 2)) if i % 2 else d
    assert luhn_ok(s) == (total % 10 == 0)


def test_iban_check():
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not iban_ok("GB82 WEST 1234 5698 7654 3")  # wrong length for GB
    assert not iban_ok("GB83 WEST 1234 5698 7654 32")
