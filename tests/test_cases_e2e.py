"""A cross-province case over real mutual TLS on 127.0.0.1 (SPEC §6), through the staff commands.

The nodes of ``tests/test_reconcile_e2e.py`` (its ``world`` fixture: 两江新区 and 北碚区 in 重庆,
南部县 in 四川, enrolled, running :class:`NodeServer` with their delivery loops). 两江新区 accepts an
orphan-recognition application for a child registered in 南部县 with two attachments (one of three
chunks); 南部县 receives it (hashes checked), requests material once, 两江新区 resubmits, 南部县
reviews and approves with a payment month, the result comes back, 两江新区 notifies the applicant
and closes; both hold the same history and clocks. A second application for the same child and
benefit at 北碚区 is flagged to both residence places.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cases import lifecycle as lc
from gateway.cases.store import CaseStore, DocumentState
from gateway.cli import main
from gateway.node import open_node
from tests.factories import fake
from tests.test_delivery import eventually
from tests.test_reconcile_e2e import BB, LJ, NB, World, cfg_arg, world

pytestmark = pytest.mark.slow
__all__ = ["world"]


def application_file(tmp: Path, world: World, name: str) -> Path:
    record = world.children["c1"]
    folder = tmp / name
    folder.mkdir()
    (folder / "father.pdf").write_bytes(b"%PDF synthetic father " * 1000)
    (folder / "mother.pdf").write_bytes(b"%PDF synthetic mother " * 30000)  # 660 kB: three chunks
    body = {
        "child": {"id_number": record.id_number, "name": record.name, "registration_division": "511321", "ref": "lj-1"},
        "application": {
            "programme": "orphan",
            "father": {"situation": "deceased", "since": "2021-03-02"},
            "mother": {"situation": "deceased", "since": "2022-07-09"},
            "carer": {"name": fake.name(), "relation": "祖父母", "phone": "13800000000"},
            "evidence": [
                {"document_id": "father-death", "kind": "death_certificate", "file": "father.pdf"},
                {"document_id": "mother-death", "kind": "death_certificate", "file": "mother.pdf"},
            ],
        },
    }
    path = folder / "application.json"
    path.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    return path


def state(
    world: World, node_id: str, case_id: str
) -> tuple[lc.Status, list[tuple[str, datetime]], dict[str, DocumentState], str | None]:
    node = open_node(world.cfgs[node_id])
    try:
        store = CaseStore(node.engine, node.keyring)
        if not store.exists(case_id):
            return lc.Status.NEW, [], {}, None
        loaded = store.load(case_id)
        history = [(e.action.value, e.at) for e in loaded.state.history]
        docs = {d.document.document_id: d.state for d in loaded.documents}
        return loaded.state.status, history, docs, loaded.row.flag
    finally:
        node.engine.dispose()


def run(*argv: str) -> str:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def flagged(world: World, node_id: str, case_id: str) -> bool:
    run("case", "inbox", *cfg_arg(world, node_id))
    return state(world, node_id, case_id)[3] == "duplicate_application"


def holds(world: World, node_id: str, case_id: str) -> bool:
    """Whether ``node_id``'s own custody view names it the holder (`tongban custody show`)."""
    return f"holder  {node_id}\n" in run("custody", "show", case_id, *cfg_arg(world, node_id))


def synced(world: World, node_id: str, case_id: str, status: lc.Status) -> bool:
    run("case", "inbox", *cfg_arg(world, node_id))  # every command applies the inbox first
    return state(world, node_id, case_id)[0] is status


def test_an_orphan_case_crosses_provinces_and_comes_back_decided(world: World, tmp_path: Path) -> None:
    out = run("case", "accept", str(application_file(tmp_path, world, "lj")), *cfg_arg(world, LJ))
    match = re.search(r"accepted ([0-9a-f-]{36})", out)
    assert match is not None
    case_id = match.group(1)
    eventually(lambda: synced(world, NB, case_id, lc.Status.RECEIVED), what="the case received at 南部县")
    _, _, docs, flag = state(world, NB, case_id)
    assert (docs, flag) == ({"father-death": DocumentState.COMPLETE, "mother-death": DocumentState.COMPLETE}, None)
    inbox = run("case", "inbox", *cfg_arg(world, NB))
    assert case_id in inbox
    assert world.children["c1"].name not in inbox

    run("case", "request-material", case_id, "--items", "household_register", *cfg_arg(world, NB))
    eventually(lambda: synced(world, LJ, case_id, lc.Status.MATERIAL_REQUESTED), what="the request at 两江新区")
    register = tmp_path / "register.pdf"
    register.write_bytes(b"synthetic household register")
    run("case", "resubmit", case_id, "--document", f"register:household_register:{register}", *cfg_arg(world, LJ))
    eventually(lambda: synced(world, NB, case_id, lc.Status.RESUBMITTED), what="the resubmission at 南部县")
    eventually(lambda: state(world, NB, case_id)[2].get("register") is DocumentState.COMPLETE, what="the register")
    run("case", "first-review", case_id, *cfg_arg(world, NB))
    month = datetime.now(UTC).strftime("%Y-%m")
    run("case", "decide", case_id, "--approve", "--payment-month", month, *cfg_arg(world, NB))
    eventually(lambda: synced(world, LJ, case_id, lc.Status.RESULT_DELIVERED), what="the result at 两江新区")
    # The decision and the custody handback travel as separate messages: 两江新区 may act once it
    # holds the case again (before that, notify is refused with custody_not_permitted).
    eventually(lambda: holds(world, LJ, case_id), what="custody back at 两江新区")
    assert f"custody {LJ} (this node may act)" in run("case", "show", case_id, *cfg_arg(world, LJ))
    shown_at_nb = run("case", "show", case_id, *cfg_arg(world, NB))
    assert f"custody {LJ}\n" in shown_at_nb  # 南部县 sees who holds it, and may not act
    run("case", "notify", case_id, *cfg_arg(world, LJ))
    run("case", "close", case_id, *cfg_arg(world, LJ))
    eventually(lambda: synced(world, NB, case_id, lc.Status.CLOSED), what="the close at 南部县")
    assert state(world, LJ, case_id)[1] == state(world, NB, case_id)[1]
    shown = {n: run("case", "show", case_id, *cfg_arg(world, n)) for n in (LJ, NB)}
    clocks = {n: text[text.index("clock:") : text.index("history:")] for n, text in shown.items()}
    assert clocks[LJ] == clocks[NB]

    # A second application for the same child and benefit at 北碚区 is flagged to both.
    out = run("case", "accept", str(application_file(tmp_path, world, "bb")), *cfg_arg(world, BB))
    match = re.search(r"accepted ([0-9a-f-]{36})", out)
    assert match is not None
    second = match.group(1)
    # the first is closed: open a third at 两江新区 so two are open at once
    out = run("case", "accept", str(application_file(tmp_path, world, "lj2")), *cfg_arg(world, LJ))
    match = re.search(r"accepted ([0-9a-f-]{36})", out)
    assert match is not None
    third = match.group(1)
    eventually(lambda: synced(world, NB, third, lc.Status.RECEIVED), what="the third case at 南部县")
    eventually(lambda: synced(world, NB, second, lc.Status.RECEIVED), what="the second case at 南部县")
    eventually(lambda: flagged(world, BB, second), what="the flag at 北碚区")
    eventually(lambda: flagged(world, LJ, third), what="the flag at 两江新区")
