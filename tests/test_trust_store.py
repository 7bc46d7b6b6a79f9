"""The trust store: fetching, adopting and remembering directories (the I/O edge of SPEC §2).

The verifier's rules are tested in ``test_trust_rules``; here: which bytes reach it, what is kept
when it refuses, and what a restarted node believes. Times are the fixed test clock (``NOW``)
handed to the store, so nothing depends on the wall clock.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import (
    ConfigError,
    DirectoryFetchFailed,
    DirectoryUnavailable,
    DocumentExpired,
    GatewayError,
    MalformedDocument,
    RollbackRefused,
    ThresholdNotMet,
)
from gateway.trust.signing import Ed25519Signer
from gateway.trust.store import TrustStore, describe_source, fetch_bundle
from tests.trustkit import NOW, Pki, standard_pki


@dataclass
class Files:
    """One node's trust files, the published bundle, and a clock the test moves."""

    tmp: Path
    pki: Pki
    now: datetime = NOW

    @property
    def root(self) -> Path:
        return self.tmp / "trust" / "root.json"

    @property
    def state(self) -> Path:
        return self.tmp / "trust" / "state.json"

    @property
    def last_good(self) -> Path:
        return self.tmp / "trust" / "directory.json"

    @property
    def source(self) -> Path:
        return self.tmp / "published" / "bundle.json"

    def publish(self, bundle: bytes) -> bytes:
        self.source.parent.mkdir(parents=True, exist_ok=True)
        self.source.write_bytes(bundle)
        return bundle

    def open(self, source: str | None = None) -> TrustStore:
        return TrustStore(
            pinned_root=self.root,
            state_path=self.state,
            last_good_path=self.last_good,
            source=str(self.source) if source is None else source,
            clock=lambda: self.now,
        )


@pytest.fixture
def files(tmp_path: Path) -> Files:
    f = Files(tmp_path, standard_pki())
    f.root.parent.mkdir(parents=True)
    f.root.write_bytes(f.pki.roots[0].to_bytes())
    return f


def test_refresh_from_a_file_adopts_and_persists(files: Files) -> None:
    store = files.open()
    with pytest.raises(DirectoryUnavailable):
        store.current()
    bundle = files.publish(files.pki.bundle())
    directory = store.refresh()
    assert store.current() is directory
    assert [n.node_id for n in directory.nodes()] == ["cq-beibei", "cq-liangjiang", "sc-nanbu"]
    assert files.last_good.read_bytes() == bundle
    assert json.loads(files.state.read_text())["directory_version"] == 1
    assert store.ca_bundle_pem() == directory.ca_bundle_pem()


def test_file_url_source(files: Files) -> None:
    files.publish(files.pki.bundle())
    assert files.open(files.source.as_uri()).refresh().version == 1


# --- a failed refresh keeps the last good directory ------------------------------------------------

Publish = Callable[[Files], None]


def _source_missing(f: Files) -> None:
    f.source.unlink()


def _not_json(f: Files) -> None:
    f.publish(b"<html>502 Bad Gateway</html>")


def _signed_by_a_stranger(f: Files) -> None:
    f.pki.directory_version = 3
    f.publish(f.pki.bundle(manifest_signers=[Ed25519Signer.generate()]))


def _expired(f: Files) -> None:
    f.pki.directory_version = 3
    f.publish(f.pki.bundle(expires=NOW - timedelta(minutes=1)))


def _older_version(f: Files) -> None:
    f.pki.directory_version = 1  # the publisher (or a mirror an attacker controls) serves an old one
    f.publish(f.pki.bundle())


@pytest.mark.parametrize(
    ("break_source", "error"),
    [
        pytest.param(_source_missing, DirectoryFetchFailed, id="source_missing"),
        pytest.param(_not_json, MalformedDocument, id="not_json"),
        pytest.param(_signed_by_a_stranger, ThresholdNotMet, id="manifest_signed_by_a_stranger"),
        pytest.param(_expired, DocumentExpired, id="expired_bundle"),
        pytest.param(_older_version, RollbackRefused, id="rollback_to_older_version"),
    ],
)
def test_failed_refresh_keeps_the_last_good(
    files: Files, caplog: pytest.LogCaptureFixture, break_source: Publish, error: type[GatewayError]
) -> None:
    files.pki.directory_version = 2
    files.publish(files.pki.bundle())
    store = files.open()
    good = store.refresh()
    last_good, state = files.last_good.read_bytes(), files.state.read_bytes()

    break_source(files)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tongban.trust"), pytest.raises(error):
        store.refresh()

    assert store.current() is good
    assert isinstance(store.last_error, error)
    assert (files.last_good.read_bytes(), files.state.read_bytes()) == (last_good, state)
    [record] = caplog.records
    assert error.code in record.getMessage()
    assert "\n" not in record.getMessage()


def test_a_newer_directory_replaces_the_old_one(files: Files) -> None:
    files.publish(files.pki.bundle())
    store = files.open()
    store.refresh()
    files.pki.directory_version = 2
    newer = files.publish(files.pki.bundle())
    assert store.refresh().version == 2
    assert store.current().version == 2
    assert files.last_good.read_bytes() == newer
    assert store.last_error is None


# --- restarts -----------------------------------------------------------------------------------


def test_restart_loads_the_last_good_without_the_publisher(files: Files) -> None:
    files.publish(files.pki.bundle())
    files.open().refresh()
    files.source.unlink()  # the publisher is down
    restarted = files.open()
    assert restarted.current().version == 1
    assert restarted.ensure_usable().version == 1  # the failed start-up refresh is not fatal


def test_restart_refuses_an_expired_last_good(files: Files) -> None:
    files.publish(files.pki.bundle(expires=NOW + timedelta(hours=1)))
    files.open().refresh()
    files.source.unlink()
    files.now = NOW + timedelta(hours=2)
    restarted = files.open()
    with pytest.raises(DirectoryUnavailable, match="document_expired"):
        restarted.current()
    assert isinstance(restarted.last_error, DocumentExpired)
    with pytest.raises(DirectoryUnavailable):
        restarted.ensure_usable()


def test_a_held_directory_stops_at_its_expiry(files: Files) -> None:
    files.publish(files.pki.bundle(expires=NOW + timedelta(hours=1)))
    store = files.open()
    store.refresh()
    files.now = NOW + timedelta(hours=2)
    with pytest.raises(DocumentExpired):
        store.current()
    assert store.ca_bundle_pem()  # TLS anchors remain, so callers learn *why* they are refused


def test_rollback_protection_survives_a_restart(files: Files) -> None:
    old = files.pki.bundle()
    files.pki.directory_version = 2
    files.publish(files.pki.bundle())
    files.open().refresh()
    files.last_good.write_bytes(old)  # someone puts the old directory back while the node is down
    restarted = files.open()
    assert isinstance(restarted.last_error, RollbackRefused)
    with pytest.raises(DirectoryUnavailable):
        restarted.current()
    assert restarted.refresh().version == 2  # the publisher still has v2


def test_without_saved_state_the_pinned_root_is_used_and_the_state_saved(files: Files) -> None:
    files.last_good.write_bytes(files.pki.bundle())  # e.g. shipped with the enrolment package
    store = files.open(source="")
    assert store.current().version == 1
    assert json.loads(files.state.read_text())["directory_version"] == 1
    with pytest.raises(DirectoryUnavailable, match="no directory source"):
        store.refresh()


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        pytest.param(lambda f: f.state.write_text("{"), MalformedDocument, id="state_not_json"),
        pytest.param(lambda f: f.state.write_text('{"root": 1}'), MalformedDocument, id="state_malformed"),
        pytest.param(lambda f: f.root.unlink(), ConfigError, id="no_pinned_root"),
        pytest.param(lambda f: f.root.write_text("[]"), MalformedDocument, id="pinned_root_malformed"),
    ],
)
def test_unreadable_trust_files_are_errors_not_fallbacks(
    files: Files, damage: Callable[[Files], object], error: type[GatewayError]
) -> None:
    damage(files)
    with pytest.raises(error):
        files.open()


def test_an_expired_pinned_root_is_refused(files: Files) -> None:
    files.now = NOW + timedelta(days=400)
    with pytest.raises(DocumentExpired):
        files.open()


# --- sources ------------------------------------------------------------------------------------


@pytest.fixture
def http_source() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A publisher on 127.0.0.1: serves ``pages[path]``, 404 otherwise."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_source(files: Files, http_source: tuple[str, dict[str, bytes]]) -> None:
    base, pages = http_source
    pages["/directory/bundle.json"] = files.pki.bundle()
    store = files.open(f"{base}/directory/bundle.json")
    assert store.refresh().version == 1
    pages.clear()
    with pytest.raises(DirectoryFetchFailed, match="HTTP 404"):
        store.refresh()
    assert store.current().version == 1


def test_http_source_refuses_an_oversized_answer(http_source: tuple[str, dict[str, bytes]]) -> None:
    base, pages = http_source
    pages["/big"] = b"x" * 2048
    with pytest.raises(DirectoryFetchFailed, match="larger than"):
        fetch_bundle(f"{base}/big", limit=1024)


def test_unreachable_http_source() -> None:
    with pytest.raises(DirectoryFetchFailed):
        fetch_bundle("http://127.0.0.1:9/bundle.json", timeout=2)  # the discard port: refused


def test_unsupported_source_scheme(files: Files) -> None:
    with pytest.raises(ConfigError):
        files.open("ftp://publisher.example/bundle.json")


def test_logged_source_hides_credentials_and_query() -> None:
    assert describe_source("https://user:secret@dir.example:8443/b.json?token=x#f") == "https://dir.example:8443/b.json"
    assert describe_source("/srv/tongban/bundle.json") == "/srv/tongban/bundle.json"


# --- background refresher ------------------------------------------------------------------------


def test_background_refresher_picks_up_a_new_directory(files: Files) -> None:
    files.publish(files.pki.bundle())
    store = TrustStore(
        pinned_root=files.root,
        state_path=files.state,
        last_good_path=files.last_good,
        source=str(files.source),
        refresh_seconds=0.05,
        clock=lambda: files.now,
    )
    store.start_refresher()
    try:
        files.pki.directory_version = 2
        files.publish(files.pki.bundle())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if store.current().version == 2:
                    break
            except DirectoryUnavailable:
                pass
            time.sleep(0.02)
        assert store.current().version == 2
    finally:
        store.stop_refresher()
    assert 0.045 <= store.next_delay() <= 0.055
