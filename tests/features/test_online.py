"""The hand-written decoders against Feast's own encoders (unit level).

The end-to-end parity test against `FeatureStore.get_online_features` on a
materialized repo is in tests/features/test_parity.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key as feast_serialize
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from features.online import decode_timestamp, decode_value, field_hash, serialize_entity_key


@given(st.text(min_size=1, max_size=40))
def test_entity_key_matches_feast(customer_id: str) -> None:
    key = EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)])
    assert serialize_entity_key("customer_id", customer_id) == feast_serialize(key, 3)


@pytest.mark.parametrize("name", ["customer_profile:segment", "action_attributes:price"])
def test_field_hash_matches_feast(name: str) -> None:
    view, feature = name.split(":")
    assert field_hash(view, feature) == _mmh3(name)


@given(st.one_of(
    st.builds(lambda v: Value(string_val=v), st.text(max_size=50)),
    st.builds(lambda v: Value(int64_val=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: Value(int32_val=v), st.integers(-(2**31), 2**31 - 1)),
    st.builds(lambda v: Value(double_val=v), st.floats(allow_nan=False)),
    st.builds(lambda v: Value(float_val=v), st.floats(width=32, allow_nan=False)),
    st.builds(lambda v: Value(bool_val=v), st.booleans()),
))
def test_decode_value_matches_protobuf(value: Value) -> None:
    kind = value.WhichOneof("val")
    assert kind is not None  # every value drawn sets one (getattr would raise on None)
    expected = getattr(value, kind)
    got = decode_value(value.SerializeToString())
    if kind == "string_val" and expected == "":
        assert got in ("", None)  # proto3 drops empty strings on the wire
    elif expected in (0, False) and kind != "string_val":
        assert got in (0, False, None)
    else:
        assert got == expected


def test_decode_timestamp() -> None:
    ts = Timestamp()
    ts.FromDatetime(datetime(2026, 11, 1, 12, 30, 5, 250000, tzinfo=UTC))
    assert decode_timestamp(ts.SerializeToString()) == pytest.approx(
        datetime(2026, 11, 1, 12, 30, 5, 250000, tzinfo=UTC).timestamp()
    )
