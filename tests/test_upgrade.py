"""Upgrading: a database made at an older schema revision migrates to head, and the node serves.

Two starting points, each on SQLite and PostgreSQL: the **previous** revision (head minus one,
read from the Alembic script directory, so it stays right when a migration is added) and the very
**first** one. The database is created at that revision with the migrations, and filled with real
rows: those the node's own code writes today — child records through the repository, an orphan
case accepted through the case service (its events, sealed documents and chunks, the envelopes
queued in the outbox, the custody chain it opens and offers), audit entries — written into
an enrolled node's scratch database, then copied into every table the old revision has, column by
column as that revision declares them. Then:

* the node refuses the old database (``SchemaOutOfDate``) until it is migrated;
* ``migrate`` brings it to head, and the schema is exactly the declared one;
* every row reads back through today's code: the records open under the node's keyring, the case
  loads with its history and documents, the outbox envelopes open, the custody chain folds to the
  same state;
* the node starts its :class:`NodeServer` on the migrated database and serves: health SERVING over
  mutual TLS on its port, and ``GetNodeInfo`` names it.

A migration that transforms data (not only adds tables or columns) needs rows shaped the old way:
add them to :data:`OLD_ROWS` for that revision; the copy fails loudly when an old NOT NULL column
has no value in today's rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import Connection, Engine, MetaData, select

from gateway import audit, config
from gateway.cases.store import CaseStore
from gateway.cases.wiring import CaseParts
from gateway.config import NodeConfig
from gateway.custody import store as custody_store
from gateway.errors import SchemaOutOfDate
from gateway.exchange import outbox
from gateway.exchange.purposes import load_profiles
from gateway.node import open_node
from gateway.server import NodeServer
from gateway.store.db import SCRIPT_LOCATION, current_revision, head_revision, make_engine, migrate
from gateway.store.schema import metadata, outbox_envelopes
from gateway.store.schema import outbox as outbox_table
from gateway.trust import keyfile
from gateway.trust.store import utc_now
from gateway.trust.tls import secure_channel_to
from tests.factories import child
from tests.test_cases_service import FILES, orphan_draft
from tests.test_delivery import FAST
from tests.test_mtls import CHANNEL_OPTIONS, PASSPHRASE, TIMEOUT, LivePki, enrol_on_disk, node_info, publish

pytestmark = pytest.mark.slow

LJ, NB = "cq-liangjiang", "sc-nanbu"
PERIOD = "2026Q4"


def _script() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return ScriptDirectory.from_config(cfg)


def previous_revision() -> str:
    """Head minus one: the revision the last migration starts from (the history is linear)."""
    head = _script().get_revision(head_revision())
    assert head is not None
    down = head.down_revision
    assert isinstance(down, str), "the migration history must be linear, with one head"
    return down


def first_revision() -> str:
    (base,) = _script().get_bases()
    return base


def _outbox_with_envelopes(src: Connection) -> list[dict[str, Any]]:
    """Outbox rows as revisions before 0011 held them: the sealed envelope inline."""
    o, e = outbox_table.c, outbox_envelopes.c
    query = select(outbox_table, e.key_id, e.envelope_sealed).join(outbox_envelopes, e.message_id == o.message_id)
    return [dict(r._mapping) for r in src.execute(query)]


# Rows shaped the old way, for a revision whose upgrade transforms data: revision -> table -> how to
# read them from the donor (today's schema).
OLD_ROWS: dict[str, dict[str, Callable[[Connection], list[dict[str, Any]]]]] = {
    "0010": {"outbox": _outbox_with_envelopes},  # 0011 moved the envelope to outbox_envelopes
}


@dataclasses.dataclass
class Donor:
    """An enrolled node at head, with real rows written by today's code in its SQLite database."""

    cfg: NodeConfig
    live: LivePki
    case_id: str
    records: list[Any]


@pytest.fixture
def donor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Donor:
    monkeypatch.setenv(keyfile.ENV_PASSPHRASE, PASSPHRASE)
    live = LivePki.create()
    cfg = enrol_on_disk(tmp_path, live, LJ, "500157")
    pki = live.node(LJ)
    keyfile.write_private_key(cfg.signing_key, pki.signers[0].private_key, PASSPHRASE.encode())
    keyfile.write_private_key(cfg.encryption_key, pki.encryption_key, PASSPHRASE.encode())
    publish(cfg, live.bundle())
    node = open_node(cfg)
    try:
        records = [child(400 + i) for i in range(4)]
        node.children.add_many(records, period=PERIOD)
        parts = CaseParts.build(
            node,
            signer=pki.signers[0],
            encryption_key=pki.encryption_key,
            directory=live.directory,
            profiles=load_profiles(),
            clock=utc_now,
        )
        case_id = parts.service().accept(orphan_draft(7, FILES), FILES, utc_now() - timedelta(minutes=5))
        with node.engine.begin() as conn:  # the hash-chained audit trail
            for action in ("send", "read"):
                audit.append(conn, actor=LJ, action=action, purpose="case_handoff", reference=case_id)
    finally:
        node.engine.dispose()
    return Donor(cfg, live, case_id, records)


def copy_into(revision: str, donor: Engine, target: Engine) -> dict[str, int]:
    """Copy the donor's rows into every table the target (at ``revision``) has, restricted to the
    columns that revision declares; returns rows copied per table."""
    old = MetaData()
    old.reflect(target)
    copied: dict[str, int] = {}
    with donor.connect() as src, target.begin() as dst:
        for table in old.sorted_tables:
            if table.name == "alembic_version":
                continue
            shape = OLD_ROWS.get(revision, {}).get(table.name)
            rows = shape(src) if shape is not None else None
            if rows is None:
                today = metadata.tables.get(table.name)
                if today is None:
                    raise AssertionError(f"{table.name} at {revision} is gone today: give it rows in OLD_ROWS")
                shared = [c.name for c in table.columns if c.name in today.c]
                lacking = [c.name for c in table.columns if c.name not in today.c and not c.nullable]
                if lacking:
                    raise AssertionError(f"{table.name}.{lacking} at {revision}: no value today; add OLD_ROWS")
                rows = [dict(r._mapping) for r in src.execute(select(*(today.c[n] for n in shared)))]
            if rows:
                dst.execute(table.insert(), rows)
            copied[table.name] = len(rows)
    return copied


def snapshot(engine: Engine, node: Any, donor: Donor, tables: set[str]) -> dict[str, Any]:
    """What today's code reads back from a database, for the tables it has."""
    out: dict[str, Any] = {
        "children": sorted((r.record_id, r) for r in node.children.iter_period(PERIOD)),
    }
    if "outbox" in tables:
        rows = outbox.list_messages(engine, limit=10_000)
        out["outbox"] = sorted((r.message_id, r.peer, r.purpose, r.status) for r in rows)
    if "cases" in tables:
        loaded = CaseStore(engine, node.keyring).load(donor.case_id)
        out["case"] = (
            loaded.state.status,
            [(e.action.value, e.at) for e in loaded.state.history],
            [(d.document.document_id, d.state) for d in loaded.documents],
        )
    if "audit_log" in tables:
        out["audit"] = audit.verify(engine)  # the chain of hashes still holds: entries counted
    if "custody_events" in tables:
        with engine.connect() as conn:
            state = custody_store.view(conn, donor.case_id, donor.live.directory())
        assert state is not None
        out["custody"] = (state.head, state.holder, state.pending, len(state.chain))
    return out


Start = Callable[[], str]


@pytest.mark.parametrize("start", [previous_revision, first_revision], ids=["previous", "first"])
def test_an_older_database_migrates_to_head_and_the_node_serves(
    donor: Donor, db_url: str, start: Start, tmp_path: Path
) -> None:
    revision = start()
    assert revision != head_revision()
    before = open_node(donor.cfg)  # what today's code reads from the donor at head
    try:
        expected = snapshot(before.engine, before, donor, set(metadata.tables))
    finally:
        before.engine.dispose()

    engine = make_engine(db_url)
    migrate(engine, revision)
    assert current_revision(engine) == revision
    donor_engine = make_engine(donor.cfg.database_url)
    try:
        copied = copy_into(revision, donor_engine, engine)
    finally:
        donor_engine.dispose()
    old_tables = set(copied)
    assert copied["node_meta"] >= 2
    assert copied["child_records"] == len(donor.records)
    if revision == previous_revision():
        assert copied["cases"] == 1
        assert copied["outbox"] >= 2
        assert copied["custody_events"] >= 2
        assert copied["audit_log"] == 2

    cfg = dataclasses.replace(donor.cfg, database_url=db_url)
    with pytest.raises(SchemaOutOfDate):
        open_node(cfg)
    migrate(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()

    node = open_node(cfg)
    read = snapshot(node.engine, node, donor, old_tables)
    assert set(read) == ({"children", "outbox", "audit", "case", "custody"} if "cases" in old_tables else {"children"})
    assert read == {k: v for k, v in expected.items() if k in read}
    if "outbox" in old_tables:  # the queued envelopes open with the node's keyring, byte for byte
        for item in outbox.claim(node.engine, "upgrade-test", limit=10_000):
            assert item.envelope(node.keyring)
        outbox.release(node.engine, "upgrade-test")

    server = NodeServer(node, retry_policy=FAST, delivery_poll_interval=0.1)
    server.start()
    try:
        channel = secure_channel_to(
            LJ,
            donor.live.directory(),
            donor.live.identity(NB),
            now=utc_now(),
            target=server.address,
            options=CHANNEL_OPTIONS,
        )
        with channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert node_info(channel).node_id == LJ
        read_while_serving = snapshot(server.node.engine, server.node, donor, old_tables)
        assert read_while_serving["children"] == expected["children"]
    except grpc.RpcError as exc:  # pragma: no cover - a failure shows the status, not a traceback
        raise AssertionError(f"the upgraded node does not serve: {exc.code()}") from None
    finally:
        server.stop(grace=0)
    assert config.load(cfg.path).node_id == LJ  # the configuration was never touched
