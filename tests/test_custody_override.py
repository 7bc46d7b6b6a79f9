"""The operator's override (SPEC §6): a lost node's cases are reassigned, only once it is revoked.

Three nodes as in ``tests/test_cases_transfer.py``: 南部县 (sc-nanbu) receives a case from 两江新区
and is then lost for good. The 四川 operator signs an override offline (``sign_override`` and the
``tongban custody override`` command) from a chain exported by 两江新区: refused while the directory
shows 南部县 active, accepted once it is revoked; 两江新区 imports it (``tongban custody import``'s
service call) and can act again; anything 南部县 signs later is refused.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.cases import lifecycle as lc
from gateway.custody import export
from gateway.custody.chain import can_act
from gateway.custody.events import Offer, sign_event
from gateway.custody.service import sign_override
from gateway.errors import OverrideRefused
from gateway.trust.documents import NodeStatus
from gateway.trust.keyfile import ENV_PASSPHRASE, write_private_key
from gateway.trust.store import utc_now
from gateway.trust.verifier import Directory
from tests.test_cases_custody import Net
from tests.test_cases_service import BB, FILES, LJ, NB, orphan_draft
from tests.test_cases_transfer import build_net
from tests.test_mtls import LivePki


@pytest.fixture
def live() -> LivePki:
    return LivePki.create()


@pytest.fixture
def holder(live: LivePki) -> list[Directory]:
    """The directory every node currently holds (replaced when the operator revokes a node)."""
    return [live.directory()]


@pytest.fixture
def net(tmp_path: Path, live: LivePki, holder: list[Directory]) -> Iterator[Net]:
    built = build_net(tmp_path, live, lambda: holder[0])
    yield built
    for node in built.nodes.values():
        node.service.store.engine.dispose()


def _revoke(live: LivePki, holder: list[Directory], node_id: str) -> None:
    live.node(node_id).status = NodeStatus.REVOKED
    holder[0] = live.directory()


def test_an_override_needs_the_revocation_then_the_new_holder_acts_and_the_lost_node_is_refused(
    net: Net, live: LivePki, holder: list[Directory]
) -> None:
    lj = net.nodes[LJ]
    now = utc_now()
    case_id = lj.service.accept(orphan_draft(31, FILES), FILES, now)
    net.settle(now)
    assert net.actors(case_id) == {NB}
    chain = lj.custody.chain(case_id)
    operator = live.province("51").signers[0]

    with pytest.raises(OverrideRefused, match="not revoked"):
        sign_override(chain, lost_node=NB, to_node=LJ, signer=operator, directory=holder[0], now=utc_now())
    _revoke(live, holder, NB)
    with pytest.raises(OverrideRefused, match="not in province"):  # the other province's operator
        sign_override(
            chain, lost_node=NB, to_node=LJ, signer=live.province("50").signers[0], directory=holder[0], now=utc_now()
        )

    override, state = sign_override(
        chain, lost_node=NB, to_node=LJ, signer=operator, directory=holder[0], now=utc_now()
    )
    assert override.signer == "operator:51"
    assert state.holder == LJ
    imported = lj.custody.import_override(case_id, (*chain, override))
    assert imported.holder == LJ
    assert can_act(imported, LJ)
    assert lj.custody.settle() == {}, "no offer to the revoked node"

    # The lost node's later events are refused as new events.
    late = sign_event(
        live.node(NB).signers[0],
        signer_id=NB,
        case_id=case_id,
        predecessor=chain[-1].hash,
        created=utc_now(),
        action=Offer(BB),
    )
    with lj.service.store.engine.begin() as conn:
        applied = lj.custody.apply(conn, NB, case_id, [late.signed])
    assert applied.outcomes == {"custody_signer_not_active": 1}
    assert lj.custody.holder(case_id) == LJ

    # The new holder acts on the case: the residence node withdraws it and closes it.
    t = now + timedelta(minutes=1)
    assert lj.service.withdraw(case_id, t).status is lc.Status.WITHDRAWN
    assert lj.service.close(case_id, t).status is lc.Status.CLOSED
    lj.custody.settle()
    view = lj.custody.view(case_id)
    assert view is not None
    assert view.closed
    assert [e.kind.value for e in view.chain][-2:] == ["override", "close"]


def test_an_import_without_an_override_is_refused(net: Net) -> None:
    lj = net.nodes[LJ]
    now = utc_now()
    case_id = lj.service.accept(orphan_draft(32, FILES), FILES, now)
    net.settle(now)
    with pytest.raises(OverrideRefused, match="does not end with an override"):
        lj.custody.import_override(case_id, lj.custody.chain(case_id))


def test_the_override_command_signs_offline_with_the_province_key(
    net: Net, live: LivePki, holder: list[Directory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.cli import main

    lj = net.nodes[LJ]
    now = utc_now()
    case_id = lj.service.accept(orphan_draft(33, FILES), FILES, now)
    net.settle(now)
    province = tmp_path / "province-51"
    province.mkdir()
    monkeypatch.setenv(ENV_PASSPHRASE, "synthetic passphrase")
    write_private_key(
        province / "operator-key.pem", live.province("51").signers[0].private_key, b"synthetic passphrase"
    )
    (province / "root.json").write_bytes(live.pki.roots[0].to_bytes())
    chain_file, out = tmp_path / "chain.json", tmp_path / "override.json"
    chain_file.write_text(export.dumps(case_id, lj.custody.chain(case_id)), encoding="utf-8")
    argv = ["custody", "override", case_id, "--lost", NB, "--to", LJ, "--province-dir", str(province)]
    argv += ["--chain", str(chain_file), "--out", str(out)]

    (province / "directory.json").write_bytes(live.bundle())
    assert main(argv) != 0, "refused while the directory shows the node active"
    assert not out.exists()

    _revoke(live, holder, NB)
    (province / "directory.json").write_bytes(live.bundle())
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    assert "override by operator:51" in stdout.getvalue()
    file_case, events = export.loads(out.read_bytes())
    assert file_case == case_id
    assert lj.custody.import_override(case_id, events).holder == LJ
