"""Round trips through the one wire converter, for every message it handles."""

from __future__ import annotations

import pytest
from tongban.v1 import common_pb2, records_pb2

from gateway.errors import InputError, InvalidRecord
from gateway.wire import (
    NodeDescription,
    node_info_from_wire,
    node_info_to_wire,
    record_from_wire,
    record_to_wire,
)
from tests.factories import child


def test_node_info_round_trip() -> None:
    d = NodeDescription("cq-liangjiang", "500157", "两江新区", "0.1.0")
    wire = common_pb2.NodeInfo.FromString(node_info_to_wire(d).SerializeToString())
    assert wire.province_code == "50"
    assert node_info_from_wire(wire) == d


@pytest.mark.parametrize("n", [pytest.param(n, id=f"record_{n}") for n in range(12)])
def test_child_record_round_trip(n: int) -> None:
    r = child(n, disabled=n % 4 == 0, with_id=n != 5)
    wire = records_pb2.ChildRecord.FromString(record_to_wire(r).SerializeToString())
    assert record_from_wire(wire) == r


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(lambda m: m.ClearField("birth_date"), InvalidRecord, id="missing_birth_date"),
        pytest.param(lambda m: setattr(m, "sex", 0), InvalidRecord, id="unspecified_sex"),
        pytest.param(lambda m: setattr(m.birth_date, "month", 13), InvalidRecord, id="impossible_date"),
        pytest.param(lambda m: m.key_care.append("not_a_flag"), InvalidRecord, id="unknown_key_care_code"),
        pytest.param(lambda m: setattr(m.father, "situation", "abroad"), InvalidRecord, id="unknown_parent_code"),
        pytest.param(lambda m: setattr(m, "registration_division", "50015"), InvalidRecord, id="short_division"),
        pytest.param(
            lambda m: m.disability.CopyFrom(records_pb2.Disability(category=9, level=1)),
            InvalidRecord,
            id="disability_category_9",
        ),
        pytest.param(
            lambda m: m.disability.CopyFrom(records_pb2.Disability(category=1, level=5)),
            InvalidRecord,
            id="disability_level_5",
        ),
    ],
)
def test_bad_wire_records_are_typed_errors(mutate: object, error: type[InputError]) -> None:
    r = child(1)
    m = record_to_wire(r)
    mutate(m)  # type: ignore[operator]
    with pytest.raises(error) as info:
        record_from_wire(m)
    assert r.name not in str(info.value)


def test_bad_node_info() -> None:
    with pytest.raises(InputError):
        node_info_from_wire(common_pb2.NodeInfo(node_id="x", division_code="50", province_code="50"))
    with pytest.raises(InputError):
        node_info_from_wire(common_pb2.NodeInfo(node_id="x", division_code="500157", province_code="51"))
