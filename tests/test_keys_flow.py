"""The keys tool's library end to end, judged by the real verifier (no CLI; see test_keys_cli).

A national root with 3 keys (2 must sign), provinces 50 and 51, nodes 500157 and 511321 enrolled by
request → issue → install, parts published, a directory built and signed, and then what every node
does with it: ``TrustState.accept`` and ``Directory.authenticate_peer`` / ``signing_key``. Times are
explicit (``NOW`` and offsets from it), never the wall clock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.config import NodeConfig
from gateway.errors import (
    DuplicateNode,
    GatewayError,
    KeyNotValid,
    NodeNotActive,
    OperatorStateError,
    OutsidePrefix,
    PeerMismatch,
    RetiredDivision,
    RollbackRefused,
    ThresholdNotMet,
    UnknownNode,
    WrongKey,
)
from gateway.trust import keyfile
from gateway.trust.documents import MANIFEST_TYPE, Bundle, Manifest, NodeStatus, PartRef, ProvincePart
from gateway.trust.dsse import SignedDocument, sign_document
from gateway.trust.verifier import Directory, TrustState
from keys import enrol, root
from keys import province as prov
from keys.directory import build_bundle, sign_bundle
from keys.files import load_signer
from tests.trustkit import NOW

PASS = b"flow-test-passphrase"
DAY = timedelta(days=1)


def node_config(base: Path, node_id: str, division: str, port: int) -> NodeConfig:
    """A node's configuration as ``tongban node init`` writes it (no database needed here)."""
    base.mkdir(parents=True)
    path = base / config_mod.CONFIG_FILE
    path.write_text(config_mod.render(node_id, division, f"127.0.0.1:{port}", "sqlite:///node.db"), encoding="utf-8")
    return config_mod.load(path)


@dataclass
class World:
    """Operators' and nodes' directories under one tmp dir, and the last bundle published."""

    tmp: Path
    nodes: dict[str, NodeConfig] = field(default_factory=dict)
    bundle: Bundle | None = None

    @property
    def root_dir(self) -> Path:
        return self.tmp / "root"

    def pdir(self, prefix: str) -> Path:
        return self.tmp / f"province-{prefix}"

    def new_node(self, node_id: str, division: str) -> NodeConfig:
        cfg = node_config(self.tmp / node_id, node_id, division, 7400 + len(self.nodes))
        self.nodes[node_id] = cfg
        return cfg

    def enrol(self, prefix: str, node_id: str, division: str, *, now: datetime = NOW) -> NodeConfig:
        cfg = self.new_node(node_id, division)
        request = enrol.create_enrolment_request(cfg, endpoint=None, passphrase=PASS, now=now)
        issued = enrol.issue(self.pdir(prefix), request, passphrase=PASS, now=now)
        root_bytes = (self.root_dir / root.ROOT).read_bytes()
        enrol.install(cfg, issued.response, root_bytes=root_bytes, directory_source=None, passphrase=PASS, now=now)
        return cfg

    def publish(self, *prefixes: str, now: datetime = NOW, days: int = 30) -> bytes:
        """Publish the named provinces' parts, build the next directory, sign it; the bundle bytes."""
        parts = []
        for prefix in prefixes:
            signer = load_signer(self.pdir(prefix) / prov.OPERATOR_KEY, PASS)
            parts.append(prov.publish_part(self.pdir(prefix), signer, expires=now + days * DAY, now=now).document)
        built = build_bundle(
            root.history(self.root_dir), parts, expires=now + days * DAY, now=now, previous=self.bundle
        )
        signed, _, _ = sign_bundle(built.bundle, load_signer(self.root_dir / root.DIRECTORY_KEY, PASS))
        self.bundle = signed
        return signed.to_bytes()

    def pinned(self, node_id: str) -> TrustState:
        return TrustState.from_pinned_root(self.nodes[node_id].trust_root.read_bytes(), NOW)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    prov.init_province(w.pdir("50"), prefix="50", name="重庆市民政局", passphrase=PASS, now=NOW - DAY)
    prov.init_province(w.pdir("51"), prefix="51", name="四川省民政厅", passphrase=PASS, now=NOW - DAY)
    root.init_root(
        w.root_dir,
        keys=3,
        threshold=2,
        expires=NOW + 365 * DAY,
        provinces=[prov.read_descriptor(w.pdir("50")), prov.read_descriptor(w.pdir("51"))],
        passphrase=PASS,
        now=NOW - DAY,
    )
    w.enrol("50", "cq-liangjiang", "500157")
    w.enrol("51", "sc-nanbu", "511321")
    return w


def accept(world: World, bundle: bytes, node_id: str = "cq-liangjiang", *, at: datetime = NOW) -> Directory:
    return world.pinned(node_id).accept(bundle, at)[1]


# --- enrolment, publication, verification -------------------------------------------------------------


def test_enrolled_nodes_are_in_the_verified_directory(world: World) -> None:
    directory = accept(world, world.publish("50", "51"), at=NOW + timedelta(hours=1))
    assert [e.node_id for e in directory.nodes()] == ["cq-liangjiang", "sc-nanbu"]
    for node_id, cfg in world.nodes.items():
        entry = directory.authenticate_peer(cfg.tls_certificate.read_bytes(), NOW + timedelta(hours=1))
        assert (entry.node_id, entry.division) == (node_id, cfg.division)
        own = load_signer(cfg.signing_key, PASS).public_key
        assert directory.signing_key(node_id, own.key_id, signed_at=NOW, now=NOW) == own
    # the other node's pinned root accepts the same bundle (every node verifies for itself)
    assert world.bundle is not None
    assert len(accept(world, world.bundle.to_bytes(), "sc-nanbu")) == 2


def test_private_keys_stay_on_the_node_encrypted(world: World) -> None:
    cfg = world.nodes["cq-liangjiang"]
    for path in (cfg.tls_key, cfg.signing_key, cfg.encryption_key):
        assert keyfile.is_sealed(path.read_bytes())
        assert path.stat().st_mode & 0o777 == 0o600
    for path in (
        world.pdir("50") / prov.OPERATOR_KEY,
        world.pdir("50") / prov.CA_KEY,
        world.root_dir / "root-key-1.pem",
    ):
        assert keyfile.is_sealed(path.read_bytes())
        assert path.stat().st_mode & 0o777 == 0o600
    # what leaves the node and the operators is public only
    request = _request(world, "cq-beibei", "500109").to_bytes()
    response = enrol.issue(world.pdir("50"), SignedDocument.parse(request), passphrase=PASS, now=NOW).response
    public = [request, response.to_bytes(), (world.pdir("50") / prov.NODES).read_bytes()]
    public += [(world.pdir("50") / prov.DESCRIPTOR).read_bytes(), (world.root_dir / root.ROOT).read_bytes()]
    for data in public:
        assert b"PRIVATE" not in data


def test_key_files_refuse_a_wrong_passphrase(world: World) -> None:
    with pytest.raises(GatewayError, match="wrong passphrase"):
        load_signer(world.nodes["cq-liangjiang"].signing_key, b"not the passphrase")


def test_a_node_never_overwrites_its_keys(world: World) -> None:
    with pytest.raises(OperatorStateError, match="refusing to overwrite"):
        enrol.create_enrolment_request(world.nodes["cq-liangjiang"], endpoint=None, passphrase=PASS, now=NOW)


# --- issue-time rules, as a table ----------------------------------------------------------------------

Case = Callable[[World], SignedDocument]


def _request(world: World, node_id: str, division: str) -> SignedDocument:
    cfg = world.new_node(node_id, division)
    return enrol.create_enrolment_request(cfg, endpoint=None, passphrase=PASS, now=NOW)


def _tampered(world: World) -> SignedDocument:
    doc = _request(world, "cq-beibei", "500109")
    payload = json.loads(doc.payload)
    payload["endpoint"] = "203.0.113.9:443"  # redirect the node's traffic; the signature no longer covers it
    return replace(doc, payload=json.dumps(payload).encode())


def _again_with_other_keys(world: World) -> SignedDocument:
    cfg = world.nodes["cq-liangjiang"]
    other = node_config(world.tmp / "impostor", cfg.node_id, cfg.division, 7499)
    return enrol.create_enrolment_request(other, endpoint=None, passphrase=PASS, now=NOW)


def _rotation_signed_by_new_key_only(world: World) -> SignedDocument:
    doc = enrol.create_rotation_request(world.nodes["cq-liangjiang"], new_tls=False, passphrase=PASS, now=NOW)
    new_key = enrol.Request.from_document(doc).signing_key.key_id
    return replace(doc, signatures=tuple(s for s in doc.signatures if s.key_id == new_key))


def _rotation_from_another_node(world: World) -> SignedDocument:
    """sc-nanbu's keys sign a rotation that claims to be cq-liangjiang's."""
    cfg = world.nodes["sc-nanbu"]
    forged = replace(cfg, node_id="cq-liangjiang", division="500157")
    return enrol.create_rotation_request(forged, new_tls=False, passphrase=PASS, now=NOW)


def _rotation_of_unknown_node(world: World) -> SignedDocument:
    cfg = world.nodes["cq-liangjiang"]
    return enrol.create_rotation_request(replace(cfg, node_id="cq-nowhere"), new_tls=False, passphrase=PASS, now=NOW)


ISSUE_REFUSALS: dict[str, tuple[Case, type[GatewayError]]] = {
    "province_50_enrolling_510104": (lambda w: _request(w, "sc-jinjiang", "510104"), OutsidePrefix),
    "retired_division": (lambda w: _request(w, "cq-jiangbei", "500105"), RetiredDivision),
    "tampered_request": (_tampered, ThresholdNotMet),
    "enrolled_id_with_other_keys": (_again_with_other_keys, DuplicateNode),
    "rotation_not_signed_by_current_key": (_rotation_signed_by_new_key_only, ThresholdNotMet),
    "rotation_by_another_nodes_key": (_rotation_from_another_node, KeyNotValid),
    "rotation_of_unknown_node": (_rotation_of_unknown_node, UnknownNode),
}


@pytest.mark.parametrize("case", sorted(ISSUE_REFUSALS))
def test_issue_refuses(world: World, case: str) -> None:
    make, error = ISSUE_REFUSALS[case]
    request = make(world)
    before = (world.pdir("50") / prov.NODES).read_bytes()
    with pytest.raises(error):
        enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW)
    assert (world.pdir("50") / prov.NODES).read_bytes() == before, "a refused request must change nothing"


def test_issue_checks_the_fingerprint_read_over_the_phone(world: World) -> None:
    request = _request(world, "cq-beibei", "500109")
    with pytest.raises(PeerMismatch):
        enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW, expected_fingerprint="0000 1111")
    said = enrol.request_fingerprint(request).upper()
    assert enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW, expected_fingerprint=said).entry


def test_the_same_request_again_reissues_the_certificate(world: World) -> None:
    request = _request(world, "cq-beibei", "500109")
    first = enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW)
    again = enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW + DAY)
    assert not first.reissued
    assert again.reissued
    assert again.entry.signing_keys == first.entry.signing_keys
    assert again.response.certificate != first.response.certificate


def test_a_hand_edited_node_list_is_refused_before_signing(world: World) -> None:
    """A 510104 entry smuggled into province 50's list: the tool refuses to sign it, as nodes would."""
    path = world.pdir("50") / prov.NODES
    state = json.loads(path.read_text(encoding="utf-8"))
    state["nodes"]["cq-liangjiang"]["division"] = "510104"
    path.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(OutsidePrefix):
        world.publish("50")


def test_a_node_whose_certificate_expired_is_left_out_not_fatal(world: World) -> None:
    """The verifier refuses a whole directory that lists an expired certificate, so publishing leaves
    such a node out (with a note) instead of breaking every node of the country."""
    request = _request(world, "cq-beibei", "500109")
    enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW, days=1)
    signer = load_signer(world.pdir("50") / prov.OPERATOR_KEY, PASS)
    soon = prov.publish_part(world.pdir("50"), signer, expires=NOW + 30 * DAY, now=NOW)
    assert any("cq-beibei's certificate expires" in n for n in soon.notes)
    later = prov.publish_part(world.pdir("50"), signer, expires=NOW + 30 * DAY, now=NOW + 2 * DAY)
    assert [n.node_id for n in later.part.nodes] == ["cq-liangjiang"]
    assert any(n.startswith("warning: left out cq-beibei") for n in later.notes)


def test_install_refuses_another_nodes_response(world: World) -> None:
    response = enrol.issue(world.pdir("50"), _request(world, "cq-beibei", "500109"), passphrase=PASS, now=NOW).response
    cfg = world.nodes["cq-liangjiang"]
    before = cfg.tls_certificate.read_bytes()
    with pytest.raises(PeerMismatch):
        enrol.install(cfg, response, root_bytes=None, directory_source=None, passphrase=PASS, now=NOW)
    assert cfg.tls_certificate.read_bytes() == before


# --- rotation with an overlap window --------------------------------------------------------------------


def test_rotation_keeps_old_signatures_valid_inside_the_overlap_only(world: World) -> None:
    world.publish("50", "51")
    cfg = world.nodes["cq-liangjiang"]
    old = load_signer(cfg.signing_key, PASS).public_key.key_id
    rotated_at = NOW + 2 * DAY
    request = enrol.create_rotation_request(cfg, new_tls=False, passphrase=PASS, now=rotated_at)
    issued = enrol.issue(world.pdir("50"), request, passphrase=PASS, now=rotated_at, overlap_days=7)
    enrol.install(cfg, issued.response, root_bytes=None, directory_source=None, passphrase=PASS, now=rotated_at)
    new = load_signer(cfg.signing_key, PASS).public_key.key_id
    assert new != old
    assert new == issued.response.signing_key_id
    assert not enrol.pending(cfg.signing_key).exists(), "the old private key is gone, the new one is current"

    directory = accept(world, world.publish("50", now=rotated_at), at=rotated_at)
    key = directory.signing_key
    before, after = rotated_at - timedelta(hours=1), rotated_at + timedelta(hours=1)
    assert key("cq-liangjiang", old, signed_at=before, now=rotated_at + 6 * DAY).key_id == old
    with pytest.raises(KeyNotValid, match="rotated before"):
        key("cq-liangjiang", old, signed_at=after, now=after)
    with pytest.raises(KeyNotValid, match="overlap window has ended"):
        key("cq-liangjiang", old, signed_at=before, now=rotated_at + 8 * DAY)
    assert key("cq-liangjiang", new, signed_at=after, now=rotated_at + 8 * DAY).key_id == new
    with pytest.raises(KeyNotValid, match="not yet valid"):
        key("cq-liangjiang", new, signed_at=before, now=after)
    # and the renewed certificate is the one peers now accept
    assert directory.authenticate_peer(cfg.tls_certificate.read_bytes(), after).node_id == "cq-liangjiang"


def test_rotation_with_a_new_tls_key(world: World) -> None:
    cfg = world.nodes["cq-liangjiang"]
    old_tls = cfg.tls_key.read_bytes()
    request = enrol.create_rotation_request(cfg, new_tls=True, passphrase=PASS, now=NOW + DAY)
    issued = enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW + DAY)
    enrol.install(cfg, issued.response, root_bytes=None, directory_source=None, passphrase=PASS, now=NOW + DAY)
    assert cfg.tls_key.read_bytes() != old_tls
    assert not enrol.pending(cfg.tls_key).exists()
    directory = accept(world, world.publish("50", "51", now=NOW + DAY), at=NOW + DAY)
    assert directory.authenticate_peer(cfg.tls_certificate.read_bytes(), NOW + DAY).node_id == "cq-liangjiang"


def test_expired_overlap_keys_are_dropped_at_the_next_publication(world: World) -> None:
    cfg = world.nodes["cq-liangjiang"]
    request = enrol.create_rotation_request(cfg, new_tls=False, passphrase=PASS, now=NOW)
    issued = enrol.issue(world.pdir("50"), request, passphrase=PASS, now=NOW, overlap_days=1)
    enrol.install(cfg, issued.response, root_bytes=None, directory_source=None, passphrase=PASS, now=NOW)
    assert len(accept(world, world.publish("50", "51")).entry("cq-liangjiang").signing_keys) == 2
    later = accept(world, world.publish("50", now=NOW + 2 * DAY), at=NOW + 2 * DAY)
    assert [k.key.key_id for k in later.entry("cq-liangjiang").signing_keys] == [issued.response.signing_key_id]


# --- revocation ---------------------------------------------------------------------------------------------


def test_revocation_takes_effect_with_the_next_publication(world: World) -> None:
    first = accept(world, world.publish("50", "51"))
    cert = world.nodes["sc-nanbu"].tls_certificate.read_bytes()
    prov.set_status(world.pdir("51"), "sc-nanbu", NodeStatus.REVOKED)
    assert first.authenticate_peer(cert, NOW).node_id == "sc-nanbu", "not before the next directory"

    assert world.bundle is not None
    state, _ = world.pinned("cq-liangjiang").accept(world.bundle.to_bytes(), NOW)
    state, second = state.accept(world.publish("51", now=NOW + DAY), NOW + DAY)
    assert second.entry("sc-nanbu").status is NodeStatus.REVOKED
    with pytest.raises(NodeNotActive):
        second.authenticate_peer(cert, NOW + DAY)
    key = load_signer(world.nodes["sc-nanbu"].signing_key, PASS).public_key.key_id
    with pytest.raises(NodeNotActive):
        second.signing_key("sc-nanbu", key, signed_at=NOW, now=NOW + DAY)
    # replaying the directory from before the revocation is a rollback for this node
    with pytest.raises(RollbackRefused):
        state.accept(_first(world), NOW + DAY)


def _first(world: World) -> bytes:
    """Directory v1 rebuilt from the province's v1 parts (what an attacker replaying it would send)."""
    parts = [SignedDocument.parse((world.pdir(p) / prov.PARTS / "1.json").read_bytes()) for p in ("50", "51")]
    built = build_bundle(root.history(world.root_dir), parts, expires=NOW + 7 * DAY, now=NOW, version=1)
    return sign_bundle(built.bundle, load_signer(world.root_dir / root.DIRECTORY_KEY, PASS))[0].to_bytes()


def test_suspension_is_reversible_revocation_is_not(world: World) -> None:
    pdir = world.pdir("51")
    assert prov.set_status(pdir, "sc-nanbu", NodeStatus.SUSPENDED) == (NodeStatus.ACTIVE, NodeStatus.SUSPENDED)
    assert prov.set_status(pdir, "sc-nanbu", NodeStatus.ACTIVE) == (NodeStatus.SUSPENDED, NodeStatus.ACTIVE)
    prov.set_status(pdir, "sc-nanbu", NodeStatus.REVOKED)
    with pytest.raises(OperatorStateError, match="final"):
        prov.set_status(pdir, "sc-nanbu", NodeStatus.ACTIVE)
    with pytest.raises(NodeNotActive):  # nor re-enrolled under the same id with fresh keys
        enrol.issue(pdir, _reenrol(world, "sc-nanbu"), passphrase=PASS, now=NOW)


def _reenrol(world: World, node_id: str) -> SignedDocument:
    cfg = world.nodes[node_id]
    fresh = node_config(world.tmp / f"{node_id}-again", node_id, cfg.division, 7498)
    return enrol.create_enrolment_request(fresh, endpoint=None, passphrase=PASS, now=NOW)


# --- root rotation ----------------------------------------------------------------------------------------


def _forged_bundle(world: World, roots: list[SignedDocument], root_version: int) -> bytes:
    """A bundle carrying ``roots`` as given (bypassing ``build_bundle``'s own chain check)."""
    parts = {p: SignedDocument.parse((world.pdir(p) / prov.PARTS / "1.json").read_bytes()) for p in ("50", "51")}
    refs = {
        p: PartRef(ProvincePart.from_payload(d.payload).version, hashlib.sha256(d.payload).hexdigest())
        for p, d in parts.items()
    }
    manifest = Manifest(1, NOW + 7 * DAY, root_version, refs)
    directory_key = load_signer(world.root_dir / root.DIRECTORY_KEY, PASS)
    return Bundle(tuple(roots), sign_document(MANIFEST_TYPE, manifest.to_payload(), [directory_key]), parts).to_bytes()


def test_root_rotation_needs_old_and_new_thresholds(world: World) -> None:
    world.publish("50", "51")
    prov.init_province(world.pdir("52"), prefix="52", name="贵州省民政厅", passphrase=PASS, now=NOW)
    _, v1 = root.current(world.root_dir)
    change = root.RootChange(
        add_provinces=[prov.read_descriptor(world.pdir("52"))], add_keys=3, remove_key_ids=sorted(v1.keys)
    )
    draft = root.draft_update(world.root_dir, change, passphrase=PASS, now=NOW)
    assert draft.root.version == 2
    assert set(draft.root.keys).isdisjoint(v1.keys)
    new_files = sorted(p for kid, p in draft.new_key_files.items() if kid in draft.root.keys)
    for path in new_files[:2]:
        status = root.sign_draft(world.root_dir, load_signer(path, PASS))
    assert (status.old_signed, status.new_signed, status.ready) == (0, 2, False)

    with pytest.raises(ThresholdNotMet, match="root v1 keys: 0 valid"):
        root.publish_draft(world.root_dir, now=NOW)
    with pytest.raises(WrongKey):
        root.sign_draft(world.root_dir, load_signer(world.pdir("50") / prov.OPERATOR_KEY, PASS))
    # forced into a bundle by hand, the new-keys-only root is refused by every node
    v1_doc = root.history(world.root_dir)[0]
    draft_doc = SignedDocument.parse((world.root_dir / root.DRAFT).read_bytes())
    with pytest.raises(ThresholdNotMet):
        world.pinned("cq-liangjiang").accept(_forged_bundle(world, [v1_doc, draft_doc], 2), NOW)

    for n in (1, 3):
        status = root.sign_draft(world.root_dir, load_signer(root.root_key_path(world.root_dir, n), PASS))
    assert status.ready
    assert root.publish_draft(world.root_dir, now=NOW).version == 2
    assert [d.payload for d in root.history(world.root_dir)][1] == draft_doc.payload

    directory = accept(world, world.publish("50", now=NOW + DAY), at=NOW + DAY)
    assert directory.root.version == 2
    assert "52" in directory.root.provinces
    assert len(directory) == 2, "province 51's part is carried over from the previous directory"


def test_build_refuses_an_older_part_than_the_previous_directory(world: World) -> None:
    world.publish("50", "51")
    world.publish("50")
    stale = SignedDocument.parse((world.pdir("50") / prov.PARTS / "1.json").read_bytes())
    with pytest.raises(RollbackRefused):
        build_bundle(root.history(world.root_dir), [stale], expires=NOW + DAY, now=NOW, previous=world.bundle)
