"""The ledger balance check catches lost or invented rows."""

from __future__ import annotations

import pytest

from thresher.pipeline.errors import LedgerImbalance
from thresher.pipeline.ledger import Ledger


def ledger(read_in=10, read_q=1, f_in=9, f_out=6, f_drop=3):
    led = Ledger([("f", "text_length_filter", 0)])
    led["read"].rows_in, led["read"].rows_out = read_in, read_in - read_q
    led["read"].quarantined["malformed JSON"] = read_q
    led["f"].rows_in, led["f"].rows_out = f_in, f_out
    led["f"].dropped["too_few_words"] = f_drop
    return led


def test_balanced():
    ledger().check_balance(6)


@pytest.mark.parametrize("kw,out", [({}, 5), ({"f_drop": 2}, 6), ({"f_in": 8, "f_drop": 2}, 6)])
def test_imbalance_is_an_error(kw, out):
    with pytest.raises(LedgerImbalance):
        ledger(**kw).check_balance(out)


def test_round_trip_and_merge():
    a, b = ledger(), ledger()
    a.merge(Ledger.from_dict(b.to_dict()))
    a.check_balance(12)
    assert a["f"].dropped["too_few_words"] == 6
