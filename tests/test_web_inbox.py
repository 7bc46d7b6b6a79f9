"""The web inbox over real HTTP on 127.0.0.1, on SQLite and PostgreSQL (issue 7; SPEC §7).

A 南部县 node (not enrolled: it can show cases but not act) holds one received orphan case registered
in 南部县 and one registered elsewhere. These tests speak HTTP with their own cookie jar (the
browser tests are ``tests/test_web_browser.py``): sign-in with a one-time code and a password,
throttling, the cookie's attributes, CSRF and origin checks, escaping, the visibility rule, the
audit of every read — and that no URL or log line carries personal data.
"""

from __future__ import annotations

import hashlib
import http.client
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from gateway import audit
from gateway.cases import lifecycle as lc
from gateway.cases.codec import CaseFile
from gateway.cases.store import CaseStore, DocumentState, Side, steps_of
from gateway.cases.types import Case, EvidenceDocument, EvidenceKind, new_case_id
from gateway.errors import SessionInvalid, SignInRefused, SignInThrottled
from gateway.node import Node, init_node, open_node
from gateway.store.schema import web_sessions, web_signin_codes, web_staff
from gateway.web import accounts
from gateway.web.accounts import StaffRole
from gateway.web.app import WebInbox
from gateway.web.server import WebServer
from tests.test_cases_service import orphan_draft

DATA = b"%PDF synthetic scan " * 200
NOW = datetime.now(UTC)


@dataclass
class Client:
    """A tiny HTTP client with its own cookie jar (Python's refuses ``Secure`` cookies over http)."""

    address: str
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie: list[str] = field(default_factory=list)

    def request(
        self, method: str, path: str, form: dict[str, str] | list[tuple[str, str]] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        host, port = self.address.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        head = {"Host": self.address, **{k.replace("_", "-"): v for k, v in headers.items()}}
        if self.cookies:
            head["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form).encode()
            head["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=head)
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
        self.set_cookie = response.headers.get_all("Set-Cookie") or []
        for raw in self.set_cookie:
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if "Max-Age=0" in raw:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        status, resp_headers = response.status, {k.lower(): v for k, v in response.getheaders()}
        conn.close()
        return status, resp_headers, text

    def csrf(self, path: str = "/signin") -> str:
        _, _, page = self.request("GET", path)
        match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
        assert match is not None
        return match.group(1)

    def sign_in(self, username: str, secret: str) -> int:
        token = self.csrf()
        status, _headers, _ = self.request("POST", "/signin", {"csrf": token, "username": username, "secret": secret})
        return status


@dataclass
class Site:
    node: Node
    server: WebServer
    inbox: WebInbox
    case_id: str
    foreign_case_id: str
    child_name: str = field(repr=False)  # synthetic, but never in test output
    child_id: str = field(repr=False)

    def client(self) -> Client:
        return Client(self.server.address)


def _case(store: CaseStore, registration: str, n: int) -> CaseFile:
    draft = orphan_draft(n, {"scan": DATA})
    accepted = lc.china_date(NOW - timedelta(days=3))
    case = Case(new_case_id(), draft.application, "cq-liangjiang", "500157", "sc-nanbu", registration, "ref", accepted)
    file = CaseFile(case, draft.child)
    doc = EvidenceDocument("scan", EvidenceKind.DEATH_CERTIFICATE, hashlib.sha256(DATA).hexdigest(), len(DATA))
    state, steps = steps_of(
        lc.new_state(case),
        [
            (lc.Role.RESIDENCE_STAFF, lc.Accept(), NOW - timedelta(days=3)),
            (lc.Role.RESIDENCE_NODE, lc.Push(), NOW - timedelta(days=3)),
            (lc.Role.REGISTRATION_NODE, lc.Receive(), NOW - timedelta(days=2)),
        ],
    )
    with store.engine.begin() as conn:
        store.create(conn, file, Side.REGISTRATION, now=NOW)
        store.append(conn, state, steps)
        store.add_document(conn, case.case_id, doc, chunks=1, state=DocumentState.PENDING, now=NOW)
        store.put_chunk(conn, case.case_id, "scan", 0, DATA)
        store.set_document_state(conn, case.case_id, "scan", DocumentState.COMPLETE)
    return file


@pytest.fixture
def site(db_url: str, tmp_path: Path) -> Iterator[Site]:
    cfg = init_node(tmp_path / "nb", node_id="sc-nanbu", division="511321", database_url=db_url)
    node = open_node(cfg)
    store = CaseStore(node.engine, node.keyring)
    mine, foreign = _case(store, "511321", 31), _case(store, "511322", 32)
    accounts.create_staff(
        node.engine, username="nb.li", display_name="<script>alert(1)</script>李科员",
        role=StaffRole.REGISTRATION_STAFF, division="511321", password="correct horse battery",
    )  # fmt: skip
    accounts.create_staff(
        node.engine, username="yb.wang", display_name="王科员", role=StaffRole.REGISTRATION_STAFF, division="511322"
    )
    app = WebInbox(node, None)
    server = WebServer(app, "127.0.0.1:0")
    server.start()
    try:
        yield Site(node, server, app, mine.case_id, foreign.case_id, mine.child.name, mine.child.id_number)
    finally:
        server.stop()
        node.engine.dispose()


def test_a_one_time_code_signs_in_once_and_the_cookie_is_locked_down(site: Site) -> None:
    code, _ = accounts.issue_code(site.node.engine, "nb.li")
    browser = site.client()
    assert browser.request("GET", "/inbox")[0] == 303  # not signed in
    assert browser.sign_in("nb.li", code.lower().replace("-", " ")) == 303  # typed loosely: still the code
    (cookie,) = [c for c in browser.set_cookie if c.startswith(site.inbox.cookie + "=")]
    attributes = {a.strip() for a in cookie.split(";")[1:]}
    assert {"Path=/", "Secure", "HttpOnly", "SameSite=Strict"} <= attributes
    assert site.inbox.cookie.startswith("__Host-")
    status, headers, page = browser.request("GET", "/inbox")
    assert status == 200
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;李科员" in page
    assert "<script>" not in page
    assert f"/cases/{site.case_id}" in page
    assert site.foreign_case_id not in page
    assert site.child_name not in page  # the inbox lists no personal data

    again = site.client()
    assert again.sign_in("nb.li", code) == 401  # used once
    with site.node.engine.connect() as conn:
        stored = conn.execute(select(web_signin_codes.c.code_hash)).scalars().all()
        sessions = conn.execute(select(web_sessions.c.session_hash)).scalars().all()
    assert code.encode() not in b"".join(bytes(h) for h in stored)
    assert browser.cookies[site.inbox.cookie].encode() not in b"".join(bytes(h) for h in sessions)


def test_the_case_page_shows_the_case_to_its_county_only_and_every_read_is_audited(site: Site) -> None:
    browser = site.client()
    assert browser.sign_in("nb.li", "correct horse battery") == 303
    status, _, page = browser.request("GET", f"/cases/{site.case_id}")
    assert status == 200
    assert site.child_name in page
    assert site.child_id not in page
    assert site.child_id[-4:] in page
    assert "孤儿" in page
    assert "已接收" in page
    status, headers, _data = browser.request("GET", f"/cases/{site.case_id}/documents/scan")
    assert status == 200
    assert headers["content-type"] == "application/pdf"
    assert headers["content-disposition"] == 'attachment; filename="scan.pdf"'
    assert browser.request("GET", f"/cases/{site.foreign_case_id}")[0] == 404  # registered in 511322
    assert browser.request("GET", f"/cases/{site.foreign_case_id}/documents/scan")[0] == 404
    assert browser.request("GET", f"/cases/{new_case_id()}")[0] == 404  # the same answer as "not yours"

    other = site.client()  # 511322's staff on this node: the 511321 case is not theirs
    code, _ = accounts.issue_code(site.node.engine, "yb.wang")
    assert other.sign_in("yb.wang", code) == 303
    assert other.request("GET", f"/cases/{site.case_id}")[0] == 404
    status, _, page = other.request("GET", "/inbox")
    assert site.case_id not in page
    assert site.foreign_case_id in page

    entries = [e for e in audit.tail(site.node.engine, 50) if e.purpose == accounts.PURPOSE and e.action == "read"]
    staff_id = accounts.find(site.node.engine, "nb.li").staff_id
    assert [(e.actor, e.reference, e.detail) for e in entries] == [
        (staff_id, site.case_id, ""),
        (staff_id, site.case_id, "document=scan"),
    ]


def test_forms_without_the_session_csrf_token_or_from_another_origin_are_refused(site: Site) -> None:
    browser = site.client()
    assert browser.sign_in("nb.li", "correct horse battery") == 303
    _, _, page = browser.request("GET", f"/cases/{site.case_id}")
    token = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert token is not None
    path = f"/cases/{site.case_id}/approve"
    before = CaseStore(site.node.engine, site.node.keyring).load(site.case_id).steps
    assert browser.request("POST", path, {"payment_month": "2026-12"})[0] == 403  # no token
    assert browser.request("POST", path, {"payment_month": "2026-12", "csrf": "0" * 64})[0] == 403  # wrong token
    forged = {"payment_month": "2026-12", "csrf": token.group(1)}
    assert browser.request("POST", path, forged, Origin="http://evil.example")[0] == 403  # another origin
    assert browser.request("POST", path, forged, Origin="null")[0] == 403  # an opaque origin
    assert browser.request("POST", "/signout", {"csrf": "0" * 64})[0] == 403
    assert CaseStore(site.node.engine, site.node.keyring).load(site.case_id).steps == before  # nothing changed
    # A node that cannot act (no keys) refuses the action itself even with a good token.
    assert browser.request("POST", path, forged)[0] == 403
    # Sign-in has its own token, bound to a pre-session cookie.
    stranger = site.client()
    status, _, _ = stranger.request("POST", "/signin", {"csrf": "0" * 64, "username": "nb.li", "secret": "x"})
    assert status == 403
    # Signing out ends the session on the server, not only in the browser.
    cookie = browser.cookies[site.inbox.cookie]
    assert browser.request("POST", "/signout", {"csrf": token.group(1)})[0] == 303
    with pytest.raises(SessionInvalid):
        accounts.session(site.node.engine, cookie)


def test_failed_sign_ins_lock_the_account_and_then_the_client_address(site: Site) -> None:
    browser = site.client()
    for _ in range(accounts.MAX_FAILURES):
        assert browser.sign_in("nb.li", "wrong password here") == 401
    assert browser.sign_in("nb.li", "correct horse battery") == 429  # locked, even with the right password
    with site.node.engine.connect() as conn:
        locked = conn.execute(select(web_staff.c.locked_until).where(web_staff.c.username == "nb.li")).scalar_one()
    assert locked is not None
    for _ in range(20):
        browser.sign_in("nobody", "whatever it is")
    status = browser.sign_in("yb.wang", "whatever it is")
    assert status == 429  # this address has failed too often: refused before any account is looked at
    actions = [e.action for e in audit.tail(site.node.engine, 100) if e.purpose == accounts.PURPOSE]
    assert actions.count("web_signin_failed") >= accounts.MAX_FAILURES
    assert "web_signin_throttled" in actions


def test_accounts_codes_and_sessions(site: Site) -> None:
    engine, at = site.node.engine, datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    code, expires = accounts.issue_code(engine, "yb.wang", now=at)
    assert expires == at + accounts.CODE_LIFETIME
    with pytest.raises(SignInRefused):
        accounts.sign_in(engine, "yb.wang", code, now=expires + timedelta(seconds=1))  # expired
    with pytest.raises(SignInRefused):
        accounts.sign_in(engine, "yb.wang", "no password set at all")  # code-only account
    session = accounts.sign_in(engine, "yb.wang", code, now=at)
    assert accounts.session(engine, session.session_id, now=at + timedelta(minutes=29)).staff.username == "yb.wang"
    with pytest.raises(SessionInvalid):  # idle for longer than IDLE_TIME
        accounts.session(engine, session.session_id, now=at + timedelta(minutes=29) + accounts.IDLE_TIME)
    code, _ = accounts.issue_code(engine, "yb.wang", now=at)
    session = accounts.sign_in(engine, "yb.wang", code, now=at)
    t = at
    while t < at + accounts.SESSION_TIME - timedelta(minutes=20):
        t += timedelta(minutes=20)
        accounts.session(engine, session.session_id, now=t)
    with pytest.raises(SessionInvalid):  # busy, but past the absolute limit
        accounts.session(engine, session.session_id, now=at + accounts.SESSION_TIME)
    code, _ = accounts.issue_code(engine, "yb.wang", now=at)
    session = accounts.sign_in(engine, "yb.wang", code, now=at)
    accounts.disable(engine, "yb.wang", now=at)
    with pytest.raises(SessionInvalid):
        accounts.session(engine, session.session_id, now=at)
    with pytest.raises(SignInRefused):
        accounts.sign_in(engine, "yb.wang", code, now=at)
    for _ in range(accounts.MAX_FAILURES):
        with pytest.raises(SignInRefused):
            accounts.sign_in(engine, "nb.li", "not the password", now=at)
    with pytest.raises(SignInThrottled):
        accounts.sign_in(engine, "nb.li", "correct horse battery", now=at + accounts.LOCK_TIME - timedelta(seconds=1))
    assert accounts.sign_in(engine, "nb.li", "correct horse battery", now=at + accounts.LOCK_TIME).staff.username
    with pytest.raises(SignInRefused):
        accounts.sign_in(engine, "nobody", "anything", now=at)


def test_no_url_of_the_inbox_carries_personal_data(site: Site) -> None:
    browser = site.client()
    assert browser.sign_in("nb.li", "correct horse battery") == 303
    pages = [browser.request("GET", p)[2] for p in ("/inbox", f"/cases/{site.case_id}")]
    urls = [u for page in pages for u in re.findall(r'(?:href|action)="([^"]*)"', page)]
    assert urls
    assert all(re.fullmatch(r"[/A-Za-z0-9._:?=-]*", u) for u in urls)
    assert not any(site.child_id in u or site.child_name in u for u in urls)


def test_the_node_serves_its_inbox_on_web_listen_and_only_on_loopback(tmp_path: Path) -> None:
    from gateway import config
    from gateway.errors import ConfigError
    from gateway.server import NodeServer

    cfg = init_node(tmp_path / "nb", node_id="sc-nanbu", division="511321", listen="127.0.0.1:0")
    with cfg.path.open("a", encoding="utf-8") as f:
        f.write('\n[web]\nlisten = "127.0.0.1:0"\n')
    server = NodeServer(open_node(config.load(cfg.path)))
    server.start()
    try:
        assert server.web is not None
        status, headers, page = Client(server.web.address).request("GET", "/signin")
        assert status == 200
        assert "工作人员登录" in page
        assert "__Host-tongban-pre-sc-nanbu=" in headers["set-cookie"]
    finally:
        server.stop(grace=0)
    with pytest.raises(ConfigError, match=r"web\.listen"):
        NodeServer(open_node(config.load(cfg.path, environ={"TONGBAN_WEB_LISTEN": "0.0.0.0:0"})))
