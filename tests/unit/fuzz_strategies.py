"""Hypothesis strategies shared by the fuzz modules: JSON values, YAML-like values, secrets."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# Every kind of scalar a JSON document holds (floats include nan and the infinities, which
# Python's json module reads and writes).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=40)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)

# What yaml.safe_load can also build: dates, timestamps, bytes (!!binary), sets, non-string
# keys (ints, None, bools, floats, tuples of scalars).
yaml_scalars = (
    json_scalars
    | st.dates()
    | st.datetimes()
    | st.binary(max_size=16)
    | st.frozensets(st.integers(), max_size=3)
)
yaml_keys = (
    st.text(max_size=12)
    | st.integers()
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.dates()
    | st.tuples(st.integers(), st.text(max_size=4))
)
yaml_values: st.SearchStrategy[Any] = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(yaml_keys, inner, max_size=5),
    max_leaves=25,
)

# A secret a fuzzed file may carry anywhere; an inspection or a message must never show it.
SECRET_PREFIX = "S3CRET-"
secrets = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=16).map(
    lambda tail: SECRET_PREFIX + tail
)

# Timestamps of every year, with every offset Python allows (years 1 and 9999 included).
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
iso_timestamps = st.one_of(
    st.datetimes(timezones=st.none() | st.just(UTC) | offsets).map(lambda d: d.isoformat()),
    st.dates().map(date.isoformat),
    st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")),
    st.text(max_size=40),
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@st.composite
def jwts(draw: st.DrawFn) -> str:
    """JWT-shaped strings whose payload is any JSON value, any exp, or not JSON at all."""
    payload = draw(
        st.one_of(
            json_values.map(lambda v: json.dumps(v).encode()),
            st.dictionaries(st.just("exp"), json_scalars, min_size=1).map(
                lambda v: json.dumps(v).encode()
            ),
            st.binary(max_size=40),
        )
    )
    return f"{b64(b'{}')}.{b64(payload)}.{draw(secrets)}"


def now() -> datetime:
    return datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
