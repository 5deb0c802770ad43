"""The canonical form of input (anju/canonical.py): what every boundary accepts."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anju import canonical
from anju.canonical import InputError


def test_nul_surrogate_and_controls_become_replacement_characters() -> None:
    assert canonical.clean_str("clo\x00sed") == "clo\ufffdsed"
    assert canonical.clean_str("\ud800x") == "\ufffdx"
    assert canonical.clean_str("a\tb\nc\rd") == "a\tb\nc\rd"
    assert canonical.clean_str("\x1b[31m") == "\ufffd[31m"
    s = "plain 中文"
    assert canonical.clean_str(s) is s


def test_clean_walks_keys_values_and_normalises_negative_zero() -> None:
    doc = canonical.loads(b'{"a\\u0000": ["x\\ud800", -0.0, 1e16, {"k": null}]}', max_bytes=1000)
    out = canonical.clean(doc)
    assert out == {"a\ufffd": ["x\ufffd", 0.0, 1e16, {"k": None}]}
    assert math.copysign(1.0, out["a\ufffd"][1]) == 1.0
    # the canonical text can be stored: no NUL, encodable as UTF-8
    canonical.dumps(out).encode("utf-8")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 20_000 + b"]" * 20_000, "too_deep"),
        (b"1" * 4_400, "bad_number"),
        (b'{"v": ' + b"9" * 25 + b"}", "bad_number"),
        (b'{"v": 1e400}', "bad_number"),
        (b'{"v": NaN}', "bad_number"),
        (b'{"v": Infinity}', "bad_number"),
        (b"\xff\xfe", "bad_json"),
        (b"{", "bad_json"),
        (b"x" * 101, "too_large"),
    ],
)
def test_bad_input_is_an_input_error_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InputError) as err:
        canonical.clean(canonical.loads(payload, max_bytes=100 if reason == "too_large" else 10**6))
    assert err.value.reason == reason


def test_depth_is_bounded_even_below_the_parsers_limit() -> None:
    doc = canonical.loads(b"[" * 200 + b"]" * 200, max_bytes=10_000)
    with pytest.raises(InputError) as err:
        canonical.clean(doc)
    assert err.value.reason == "too_deep"
    assert canonical.clean(canonical.loads(b"[[[1]]]", max_bytes=100)) == [[[1]]]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_either_clean_or_input_error(data: bytes) -> None:
    try:
        out = canonical.clean(canonical.loads(data, max_bytes=10_000))
    except InputError:
        return
    text = canonical.dumps(out)
    assert "\x00" not in text
    text.encode("utf-8")
    assert canonical.clean(json.loads(text)) == out  # idempotent


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_values_round_trip_through_json(v: object) -> None:
    out = canonical.clean(v)
    again = canonical.clean(canonical.loads(canonical.dumps(out), max_bytes=10**6))
    assert again == out
    assert canonical.dumps(again) == canonical.dumps(out)
