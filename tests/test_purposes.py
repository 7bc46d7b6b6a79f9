"""Purpose profiles (SPEC §3): the rules as tables of named cases, then the drift check of the docs.

Read the tables as the rules: which profile tables load, which payloads a receiver refuses and
why, and what the sender's minimisation leaves. The wire conversions of the payloads the profiles
name are round-tripped at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from tongban.v1 import exchange_pb2

from gateway.cli import main
from gateway.errors import ConfigError, ForbiddenField, InvalidRecord, PayloadInvalid, PurposeNotAllowed
from gateway.exchange.purposes import (
    PurposeProfile,
    Role,
    check_payload,
    load_profiles,
    minimise,
    ordered_fields,
    parse_payload,
    payload_class,
    render_markdown,
)
from gateway.wire import (
    LedgerStatus,
    MatchOutcome,
    MatchResult,
    MatchResultBatch,
    NoticeBatch,
    RosterManifest,
    manifest_from_wire,
    manifest_to_wire,
    match_batch_from_wire,
    match_batch_to_wire,
    notice_batch_from_wire,
    notice_batch_to_wire,
    notice_from_record,
)
from tests.factories import child

ROOT = Path(__file__).resolve().parent.parent
PACKAGED = (ROOT / "gateway" / "data" / "purposes.toml").read_text(encoding="utf-8")
SECRET_REF = "秘密-notice-ref-value"  # a value that must never appear in an error


def notice(i: int = 0, **overrides: object) -> exchange_pb2.MigrantNotice:
    fields: dict[str, object] = {
        "notice_ref": f"n-{i}",
        "id_token": bytes([i]) * 32,
        "name_encoding": b"\x0f" * 64,
        "birth_year_month": "2015-06",
        "sex": 2,
        "residence_division": "500157",
        "registration_division": "511321",
        "living_since": "2024-03-01",
        "key_care": True,
        "birth_encoding": b"\xf0" * 32,
    }
    fields.update(overrides)
    return exchange_pb2.MigrantNotice(**fields)  # type: ignore[arg-type]


def batch(n: int = 3) -> exchange_pb2.MigrantNoticeBatch:
    return exchange_pb2.MigrantNoticeBatch(
        period="2026Q3", roster_id="roster-1", batch_index=0, notices=[notice(i) for i in range(n)]
    )


def with_unknown_field(message: Message, *, number: int = 99) -> bytes:
    """The message's bytes with a length-delimited field ``number`` appended (unknown to the schema)."""
    value = SECRET_REF.encode()
    tag = (number << 3) | 2
    varint = bytearray()
    while True:
        byte, tag = tag & 0x7F, tag >> 7
        varint.append(byte | (0x80 if tag else 0))
        if not tag:
            break
    return message.SerializeToString() + bytes(varint) + bytes([len(value)]) + value


PROFILES = load_profiles()
NOTICE = PROFILES.get("migrant_notice")
NO_LIVING_SINCE = dataclasses.replace(NOTICE, fields=NOTICE.fields - {"notices.living_since"})


# --- the packaged table ------------------------------------------------------------------------


EXPECTED = {
    # name: (sender, recipient, payload type, personal, encrypted)
    "migrant_notice": (Role.RESIDENCE, Role.REGISTRATION, "tongban.v1.MigrantNoticeBatch", True, False),
    "roster_manifest": (Role.ANY_COUNTY, Role.ANY_COUNTY, "tongban.v1.RosterManifest", False, False),
    "match_result": (Role.REGISTRATION, Role.RESIDENCE, "tongban.v1.MatchResultBatch", True, False),
    "case_handoff": (Role.RESIDENCE, Role.REGISTRATION, "tongban.v1.SealedPayload", True, True),
    "case_decision": (Role.REGISTRATION, Role.RESIDENCE, "tongban.v1.SealedPayload", True, True),
    "custody_event": (Role.ANY_COUNTY, Role.ANY_COUNTY, "tongban.v1.CustodyChain", False, False),
    "case_supervision": (Role.ANY_COUNTY, Role.ANY_COUNTY, "tongban.v1.CaseSupervisionAlert", False, False),
}


VERSIONS = {
    "migrant_notice": 1,
    "roster_manifest": 1,
    "match_result": 2,
    "case_handoff": 1,
    "case_decision": 1,
    "custody_event": 2,
    "case_supervision": 1,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_packaged_profile_loads(name: str) -> None:
    p = PROFILES.get(name, version=VERSIONS[name])
    assert (p.sender_role, p.recipient_role, p.payload_type, p.personal, p.encrypted) == EXPECTED[name]
    assert p.fields
    assert 0 < p.max_lifetime_seconds <= 90 * 86_400
    assert payload_class(p.payload_type).DESCRIPTOR.full_name == p.payload_type


def test_packaged_table_is_complete() -> None:
    assert [p.name for p in PROFILES.all()] == list(EXPECTED)
    assert [r.name for r in PROFILES.reserved()] == []  # custody_event was the last; see _RESERVED below


def test_migrant_notice_carries_no_name_and_no_id_number() -> None:
    # Every MigrantNotice field is declared, and none of them is a plain name or ID number.
    declared = {f.removeprefix("notices.") for f in NOTICE.fields if f.startswith("notices.")}
    assert declared == set(exchange_pb2.MigrantNotice.DESCRIPTOR.fields_by_name)
    assert not {"name", "id_number", "birth_date"} & declared


@pytest.mark.parametrize(
    ("name", "version"),
    [
        pytest.param("no_such_purpose", None, id="unknown_purpose"),
        pytest.param("", None, id="empty_name"),
        pytest.param("Migrant_Notice", None, id="other_spelling"),
        pytest.param("migrant_notice", 2, id="other_version"),
        pytest.param("custody_event", 1, id="custody_event_reserved_version"),
    ],
)
def test_purposes_refused(name: str, version: int | None) -> None:
    with pytest.raises(PurposeNotAllowed):
        PROFILES.get(name, version)


@pytest.mark.parametrize(
    "payload_type",
    [
        pytest.param("tongban.v1.MigrantNotice", id="sub_message_of_a_payload"),
        pytest.param("tongban.v1.ChildRecord", id="full_child_record"),
        pytest.param("tongban.v1.Envelope", id="envelope"),
        pytest.param("tongban.v1.CaseDecision", id="reserved_purpose_has_no_type"),
        pytest.param("", id="empty"),
    ],
)
def test_payload_class_only_for_profile_types(payload_type: str) -> None:
    with pytest.raises(PurposeNotAllowed):
        payload_class(payload_type)


# --- bad profile tables (ConfigError) ------------------------------------------------------------


def _edit(old: str, new: str, count: int = 1) -> str:
    assert old in PACKAGED, old
    return PACKAGED.replace(old, new, count)


_MANIFEST_FIELDS = 'fields = ["period", "roster_id", "count", "batches", "entries_sha256", "purpose"]'
_EXTRA_PROFILE = """
[[purpose]]
name = "roster_manifest"
version = 2
status = "active"
summary = "again"
sender = "any_county"
recipient = "any_county"
personal = false
encrypted = false
max_lifetime_seconds = 60
payload_type = "tongban.v1.RosterManifest"
fields = ["period"]
"""

# A reserved purpose (the packaged table holds none since custody_event was defined).
_RESERVED = """
[[purpose]]
name = "future_purpose"
version = 1
status = "reserved"
summary = "Declared for the record."
sender = "any_county"
recipient = "any_county"
personal = false
encrypted = false
max_lifetime_seconds = 604_800
reserved_until = "some later piece of work defines its payload message"
"""

# name: (table text, what the error must say)
BAD_TABLES: dict[str, tuple[str, str]] = {
    "not_toml": ("[[purpose]\nname=", "not valid TOML"),
    "empty_text": ("", "top level"),
    "wrong_format": (_edit('format = "tongban-purposes-v1"', 'format = "tongban-purposes-v2"'), "format"),
    "unknown_top_level_key": ("strict = false\n" + PACKAGED, "top level"),
    "empty_field_list": (_edit(_MANIFEST_FIELDS, "fields = []"), "field list is empty"),
    "unknown_key": (
        _edit('name = "roster_manifest"', 'name = "roster_manifest"\nallow_all = true'),
        "unknown key(s) allow_all",
    ),
    "missing_key": (_edit('summary = "Closes a roster', '# summary = "Closes a roster'), "missing key(s) summary"),
    "duplicate_purpose": (PACKAGED + _EXTRA_PROFILE, "declared twice"),
    "duplicate_key_in_toml": (
        _edit('version = 1\nstatus = "active"', 'version = 1\nversion = 2\nstatus = "active"'),
        "not valid TOML",
    ),
    "field_listed_twice": (_edit(_MANIFEST_FIELDS, 'fields = ["period", "period"]'), "listed twice"),
    "field_does_not_exist": (_edit(_MANIFEST_FIELDS, 'fields = ["period", "name"]'), "field name does not exist"),
    "field_path_through_scalar": (_edit(_MANIFEST_FIELDS, 'fields = ["period.year"]'), "no sub-fields"),
    "message_instead_of_leaves": (_edit('    "notices.notice_ref",\n', '    "notices",\n'), "is a message"),
    "unknown_payload_type": (_edit('"tongban.v1.RosterManifest"', '"tongban.v1.ChildRecord"'), "not a payload message"),
    "unknown_status": (
        _edit(
            'name = "roster_manifest"\nversion = 1\nstatus = "active"',
            'name = "roster_manifest"\nversion = 1\nstatus = "draft"',
        ),
        "status must be",
    ),
    "unknown_role": (_edit('sender = "any_county"', 'sender = "province"'), "sender must be"),
    "same_role_both_sides": (_edit('sender = "registration"', 'sender = "residence"'), "roles must differ"),
    "version_zero": (
        _edit('name = "match_result"\nversion = 2', 'name = "match_result"\nversion = 0'),
        "version must be",
    ),
    "lifetime_zero": (
        _edit("max_lifetime_seconds = 604_800  # 7 days", "max_lifetime_seconds = 0  # 7 days"),
        "max_lifetime_seconds",
    ),
    "lifetime_a_year": (
        _edit("max_lifetime_seconds = 604_800  # 7 days", "max_lifetime_seconds = 31_536_000  # 7 days"),
        "max_lifetime_seconds",
    ),
    "personal_not_a_bool": (_edit("personal = false", 'personal = "no"'), "personal must be"),
    "encrypted_without_sealed_payload": (
        _edit("personal = false\nencrypted = false", "personal = false\nencrypted = true"),
        "encrypted purpose",
    ),
    "sealed_payload_not_encrypted": (
        _edit(
            "personal = true\nencrypted = true\nmax_lifetime_seconds = 604_800  # 7",
            "personal = true\nencrypted = false\nmax_lifetime_seconds = 604_800  # 7",
        ),
        "encrypted purpose",
    ),
    "reserved_with_fields": (
        PACKAGED + _RESERVED.replace('reserved_until = "some', 'fields = ["period"]\nreserved_until = "some'),
        "unknown key(s) fields",
    ),
    "bad_name": (_edit('name = "custody_event"', 'name = "Custody Event"'), "needs a name"),
    "only_reserved": (
        'format = "tongban-purposes-v1"\n' + _RESERVED,
        "no active purpose",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TABLES), ids=list(BAD_TABLES))
def test_bad_profile_tables_are_refused(case: str) -> None:
    text, reason = BAD_TABLES[case]
    with pytest.raises(ConfigError) as info:
        load_profiles(text)
    assert reason in str(info.value)


def test_packaged_text_loads_like_the_default() -> None:
    assert load_profiles(PACKAGED) == PROFILES


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"fields": frozenset()}, id="empty_fields"),
        pytest.param({"fields": frozenset({"notices.name"})}, id="unknown_field"),
        pytest.param({"payload_type": "tongban.v1.ChildRecord"}, id="unknown_payload_type"),
        pytest.param({"encrypted": True}, id="encrypted_plain_payload"),
    ],
)
def test_a_profile_is_valid_by_construction(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        dataclasses.replace(NOTICE, **change)  # type: ignore[arg-type]


# --- the receiver's check ------------------------------------------------------------------------


def _unknown_in_second_notice(m: exchange_pb2.MigrantNoticeBatch) -> bytes:
    inner = with_unknown_field(m.notices[1])
    del m.notices[1:]
    extra = exchange_pb2.MigrantNotice()
    extra.ParseFromString(inner)
    m.notices.append(extra)
    return m.SerializeToString()


# (profile, how the payload is made, expected error or None, text the error must name)
RECEIVER_CASES: dict[
    str, tuple[PurposeProfile, Callable[[exchange_pb2.MigrantNoticeBatch], bytes], type[Exception] | None, str]
] = {
    "only_declared_fields": (NOTICE, lambda m: m.SerializeToString(), None, ""),
    "empty_batch": (NOTICE, lambda m: exchange_pb2.MigrantNoticeBatch(period="2026Q3").SerializeToString(), None, ""),
    "undeclared_field_at_its_default": (NO_LIVING_SINCE, lambda m: _clear_all_living_since_but(m, -1), None, ""),
    "undeclared_field_set": (
        NO_LIVING_SINCE,
        lambda m: m.SerializeToString(),
        ForbiddenField,
        "notices[0].living_since",
    ),
    "undeclared_field_in_one_notice": (
        NO_LIVING_SINCE,
        lambda m: _clear_all_living_since_but(m, 2),
        ForbiddenField,
        "notices[2].living_since",
    ),
    "undeclared_top_level_field": (
        dataclasses.replace(NOTICE, fields=NOTICE.fields - {"roster_id"}),
        lambda m: m.SerializeToString(),
        ForbiddenField,
        "roster_id",
    ),
    "unknown_field_number_top_level": (NOTICE, with_unknown_field, ForbiddenField, "#99"),
    "unknown_field_number_in_notice": (NOTICE, _unknown_in_second_notice, ForbiddenField, "notices[1].#99"),
    "reserved_field_number": (NOTICE, lambda m: with_unknown_field(m, number=5), ForbiddenField, "#5"),
    "not_protobuf": (NOTICE, lambda m: b"\xff\xff\xff\xff", PayloadInvalid, ""),
    "truncated": (NOTICE, lambda m: m.SerializeToString()[:-3], PayloadInvalid, ""),
    "bad_utf8_in_string": (NOTICE, lambda m: b"\x0a\x02\xc3\x28", PayloadInvalid, ""),
}


def _clear_all_living_since_but(m: exchange_pb2.MigrantNoticeBatch, keep: int) -> bytes:
    for i, n in enumerate(m.notices):
        if i != keep:
            n.ClearField("living_since")
    return m.SerializeToString()


@pytest.mark.parametrize("case", list(RECEIVER_CASES), ids=list(RECEIVER_CASES))
def test_receiver_field_rules(case: str) -> None:
    profile, make, error, names = RECEIVER_CASES[case]
    m = batch()
    m.notices[1].notice_ref = SECRET_REF
    data = make(m)
    if error is None:
        parsed = parse_payload(profile, data)
        assert parsed.SerializeToString() == data
        return
    with pytest.raises(error) as info:
        parse_payload(profile, data)
    assert names in str(info.value)
    assert SECRET_REF not in str(info.value)
    assert "2024-03-01" not in str(info.value)


def test_check_payload_refuses_another_message_type() -> None:
    with pytest.raises(PayloadInvalid):
        check_payload(NOTICE, exchange_pb2.RosterManifest(period="2026Q3"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from([p.name for p in PROFILES.all()]))
def test_random_bytes_are_refused_or_pass_only_declared_fields(data: bytes, name: str) -> None:
    profile = PROFILES.get(name)
    try:
        message = parse_payload(profile, data)
    except (PayloadInvalid, ForbiddenField):
        return
    assert minimise(profile, message) == message  # what passed carries nothing undeclared


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_minimise_always_yields_an_acceptable_payload(data: bytes) -> None:
    message = exchange_pb2.MigrantNoticeBatch()
    try:
        message.ParseFromString(data)
    except Exception:  # noqa: BLE001 - only parseable inputs are of interest here
        return
    result = minimise(NO_LIVING_SINCE, message)
    check_payload(NO_LIVING_SINCE, result)
    assert parse_payload(NO_LIVING_SINCE, result.SerializeToString()) == result


# --- the sender's minimisation -------------------------------------------------------------------


def test_minimise_clears_exactly_the_undeclared_fields() -> None:
    profile = dataclasses.replace(NOTICE, fields=NOTICE.fields - {"notices.living_since", "roster_id"})
    original = batch()
    original_bytes = original.SerializeToString()
    expected = batch()
    expected.ClearField("roster_id")
    for n in expected.notices:
        n.ClearField("living_since")
    result = minimise(profile, original)
    assert result == expected
    assert original.SerializeToString() == original_bytes  # the input is not changed
    check_payload(profile, result)
    assert minimise(profile, result) == result


def test_minimise_with_the_full_profile_keeps_everything_but_unknown_fields() -> None:
    original = exchange_pb2.MigrantNoticeBatch.FromString(with_unknown_field(batch()))
    result = minimise(NOTICE, original)
    assert result == batch()
    check_payload(NOTICE, result)


def test_minimise_drops_a_sub_message_with_no_declared_leaf() -> None:
    profile = dataclasses.replace(NOTICE, fields=frozenset({"period", "roster_id", "batch_index"}))
    assert minimise(profile, batch()) == exchange_pb2.MigrantNoticeBatch(
        period="2026Q3", roster_id="roster-1", batch_index=0
    )


def test_minimise_refuses_another_message_type() -> None:
    with pytest.raises(PayloadInvalid):
        minimise(NOTICE, exchange_pb2.RosterManifest())


def test_field_order_follows_the_schema() -> None:
    assert ordered_fields(NOTICE)[:4] == ["period", "roster_id", "batch_index", "notices.notice_ref"]


# --- the docs table ------------------------------------------------------------------------------


def test_docs_table_matches_the_profiles() -> None:
    docs = (ROOT / "docs" / "purposes.md").read_text(encoding="utf-8")
    assert docs == render_markdown(PROFILES), "docs/purposes.md is stale: run `tongban purposes render`"


def test_render_command_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "purposes.md"
    assert main(["purposes", "render", "--out", str(out), "--check"]) == 1
    assert main(["purposes", "render", "--out", str(out)]) == 0
    assert main(["purposes", "render", "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert main(["purposes", "render", "--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_list_and_show_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["purposes", "list"]) == 0
    assert main(["purposes", "show", "migrant_notice"]) == 0
    assert main(["purposes", "show", "custody_event"]) == 0
    out = capsys.readouterr().out
    assert "notices.key_care" in out
    assert "events.signature.value" in out
    assert main(["purposes", "show", "no_such_purpose"]) == PurposeNotAllowed.exit_code


# --- wire conversions of the payloads ------------------------------------------------------------


def test_notice_batch_round_trip() -> None:
    records = [child(n) for n in range(5)]
    domain = NoticeBatch(
        "2026Q3",
        "roster-1",
        2,
        tuple(
            notice_from_record(r, notice_ref=f"n-{i}", id_token=bytes([i]) * 32, name_encoding=b"\x01" * 8)
            for i, r in enumerate(records)
        ),
    )
    wire = exchange_pb2.MigrantNoticeBatch.FromString(notice_batch_to_wire(domain).SerializeToString())
    check_payload(NOTICE, wire)
    assert notice_batch_from_wire(wire) == domain
    first = domain.notices[0]
    assert first.birth_year_month == f"{records[0].birth_date:%Y-%m}"
    assert first.living_since == date(2024, 3, 1)
    assert records[0].name not in repr(domain)


def test_manifest_round_trip() -> None:
    domain = RosterManifest("2026Q3", "roster-1", 1200, 3, b"\x07" * 32, "migrant_notice")
    wire = exchange_pb2.RosterManifest.FromString(manifest_to_wire(domain).SerializeToString())
    check_payload(PROFILES.get("roster_manifest"), wire)
    assert manifest_from_wire(wire) == domain


def test_match_result_batch_round_trip() -> None:
    domain = MatchResultBatch(
        "2026Q3",
        "roster-1",
        0,
        (
            MatchResult("n-0", MatchOutcome.MATCHED, LedgerStatus.LEFT_BEHIND, "reg-17"),
            MatchResult("n-1", MatchOutcome.POSSIBLE, LedgerStatus.MIGRANT, "reg-18"),
            MatchResult("n-2", MatchOutcome.NOT_FOUND),
        ),
    )
    wire = exchange_pb2.MatchResultBatch.FromString(match_batch_to_wire(domain).SerializeToString())
    check_payload(PROFILES.get("match_result"), wire)
    assert match_batch_from_wire(wire) == domain


BAD_WIRE: dict[str, tuple[Callable[[], object], str]] = {
    "notice_bad_period": (
        lambda: notice_batch_from_wire(exchange_pb2.MigrantNoticeBatch(period="2026q3", roster_id="r")),
        "period",
    ),
    "notice_no_roster_id": (
        lambda: notice_batch_from_wire(exchange_pb2.MigrantNoticeBatch(period="2026Q3")),
        "roster_id",
    ),
    "notice_unspecified_sex": (lambda: _notice_batch_with(sex=0), "notices[0].sex"),
    "notice_bad_year_month": (lambda: _notice_batch_with(birth_year_month="2015-13"), "notices[0].birth_year_month"),
    "notice_short_division": (lambda: _notice_batch_with(residence_division="50015"), "notices[0].residence_division"),
    "notice_bad_living_since": (lambda: _notice_batch_with(living_since="2024-02-30"), "notices[0].living_since"),
    "notice_living_since_other_spelling": (
        lambda: _notice_batch_with(living_since="20240301"),
        "notices[0].living_since",
    ),
    "notice_short_token": (lambda: _notice_batch_with(id_token=b"\x01" * 16), "notices[0].id_token"),
    "notice_no_ref": (lambda: _notice_batch_with(notice_ref=""), "notices[0].notice_ref"),
    "manifest_short_digest": (
        lambda: manifest_from_wire(
            exchange_pb2.RosterManifest(
                period="2026Q3", roster_id="r", count=1, batches=1, entries_sha256=b"x", purpose="migrant_notice"
            )
        ),
        "entries_sha256",
    ),
    "manifest_batches_without_entries": (
        lambda: manifest_from_wire(
            exchange_pb2.RosterManifest(
                period="2026Q3", roster_id="r", count=0, batches=1, entries_sha256=b"x" * 32, purpose="migrant_notice"
            )
        ),
        "count",
    ),
    "result_unspecified_outcome": (lambda: _result_batch_with(outcome=0), "results[0].outcome"),
    "result_found_without_status": (lambda: _result_batch_with(ledger_status=0), "results[0]"),
    "result_not_found_with_reference": (
        lambda: _result_batch_with(outcome=exchange_pb2.MATCH_OUTCOME_NOT_FOUND, ledger_status=0),
        "results[0]",
    ),
    "result_unknown_status": (lambda: _result_batch_with(ledger_status=9), "results[0].ledger_status"),
}


def _notice_batch_with(**overrides: object) -> object:
    m = exchange_pb2.MigrantNoticeBatch(period="2026Q3", roster_id="r", notices=[notice(0, **overrides)])
    return notice_batch_from_wire(m)


def _result_batch_with(**overrides: object) -> object:
    fields: dict[str, object] = {
        "notice_ref": "n-0",
        "outcome": exchange_pb2.MATCH_OUTCOME_MATCHED,
        "ledger_status": exchange_pb2.LEDGER_STATUS_LEFT_BEHIND,
        "registration_ref": "reg-1",
    }
    fields.update(overrides)
    result = exchange_pb2.MatchResult(**fields)  # type: ignore[arg-type]
    return match_batch_from_wire(exchange_pb2.MatchResultBatch(period="2026Q3", roster_id="r", results=[result]))


@pytest.mark.parametrize("case", list(BAD_WIRE), ids=list(BAD_WIRE))
def test_bad_wire_payloads_are_typed_errors(case: str) -> None:
    convert, names = BAD_WIRE[case]
    with pytest.raises(InvalidRecord) as info:
        convert()
    assert names in str(info.value)
