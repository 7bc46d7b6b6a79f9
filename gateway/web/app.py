"""The web inbox for county staff (SPEC §7): server-rendered pages over the same case service the CLI uses.

:class:`WebInbox` is a WSGI application. Registration-place staff (户籍地工作人员) sign in, see the
cases registered in their county sorted by due day with overdue steps marked, open a case (applicant
summary, documents, the clock, the custody history, the history of steps) and act on it: request
material once and in full (一次性告知), the township's first review, approve or not approve with the
reason forms the state machine requires, return (退回). Case officers (受理地经办人员) see the cases
accepted in their county, read-only. The interface is Chinese.

**Safety** (each point is tested, most in a real browser: ``tests/test_web_browser.py``):

* The session cookie is ``__Host-``-prefixed, ``HttpOnly``, ``Secure``, ``SameSite=Strict``, path
  ``/``, named per node (two nodes on one host never overwrite each other's cookie). The sign-in form
  has a CSRF token bound to a pre-session cookie; every form after sign-in carries the session's CSRF
  token, compared in constant time, and a POST whose ``Origin`` header names another site is
  refused as well.
* Every string that reaches a page goes through Jinja2's autoescaping; pages are sent with a strict
  Content-Security-Policy (no inline script, no framing), ``nosniff``, ``Referrer-Policy: same-origin`` and
  ``Cache-Control: no-store``.
* URLs carry case ids and document ids, never personal data; after an action the page redirects
  with the action's code only. Logs name the staff account id, the case id and the error code.
* Sign-in throttling: per account (:mod:`gateway.web.accounts`) and per client address
  (:data:`IP_FAILURES` failures in :data:`IP_WINDOW`), answered ``429``.
* A case is shown only to staff of its county and side (:func:`visible`); anything else, including
  a case that does not exist, is the same ``404``. Every case page and document read is in the audit
  trail (action ``read``, purpose ``web_inbox``, actor the staff account id).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date, datetime
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2

from gateway import audit, logs
from gateway.cases import lifecycle as lc
from gateway.cases.clock import WorkCalendar, due_dates
from gateway.cases.reasons import ReasonAction, load_reasons
from gateway.cases.service import InboxItem, inbox
from gateway.cases.store import CaseRow, CaseStore, Side, StoredCase
from gateway.cases.types import EvidenceKind, Programme
from gateway.cases.wiring import CaseParts
from gateway.domain import idnumber
from gateway.domain.divisions import DivisionTable
from gateway.errors import (
    CaseNotFound,
    CsrfRefused,
    GatewayError,
    InputError,
    SessionInvalid,
    SignInRefused,
    SignInThrottled,
)
from gateway.node import Node
from gateway.trust.store import utc_now
from gateway.web import accounts
from gateway.web.accounts import Session, Staff, StaffRole

log = logging.getLogger("tongban.web")

MAX_FORM_BYTES = 64 * 1024
MAX_TEXT = 500
IP_FAILURES = 20
IP_WINDOW = 15 * 60.0
_CASE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DOCUMENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ACTIONS = ("request-material", "first-review", "approve", "reject", "return")
_MEDIA = {
    b"%PDF": ("application/pdf", ".pdf"),
    b"\x89PNG": ("image/png", ".png"),
    b"\xff\xd8\xff": ("image/jpeg", ".jpg"),
}
_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),  # "no-referrer" would make browsers send "Origin: null" on our own forms
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-store"),
]

# What staff read for each error code; anything else shows its code.
ERROR_TEXT: Mapping[str, str] = {
    "illegal_transition": "当前状态下不能进行此操作。",
    "not_eligible": "申请不符合条件，不能批准。请选择不予批准并说明理由。",
    "unknown_reason_code": "请选择此操作适用的理由。",
    "attachment_refused": "有材料尚未接收完整，暂不能办理。",
    "invalid_case": "表单填写不完整或有误。",
    "invalid_input": "表单填写不完整或有误。",
    "custody_not_permitted": "本节点当前不持有此案件，不能办理。",
    "not_permitted": "本节点当前不持有此案件，不能办理。",
    "storage_error": "数据库暂时不可用，请稍后再试。",
    "key_file_error": "本节点未配置加密密钥，不能办理案件。",
}
DONE_TEXT: Mapping[str, str] = {
    "request-material": "已一次性告知需补正的材料。",
    "first-review": "已记录乡镇初审。",
    "approve": "已批准，结果已反馈受理地。",
    "reject": "已作出不予批准的决定，结果已反馈受理地。",
    "return": "已退回受理地。",
}
ACTION_ZH: Mapping[lc.ActionKind, str] = {
    lc.ActionKind.ACCEPT: "受理",
    lc.ActionKind.PUSH: "推送",
    lc.ActionKind.RECEIVE: "接收",
    lc.ActionKind.REQUEST_MATERIAL: "一次性告知补正",
    lc.ActionKind.RESUBMIT: "补正材料",
    lc.ActionKind.FIRST_REVIEW: "乡镇初审",
    lc.ActionKind.APPROVE: "批准",
    lc.ActionKind.REJECT: "不予批准",
    lc.ActionKind.DELIVER_RESULT: "反馈结果",
    lc.ActionKind.NOTIFY_APPLICANT: "告知申请人",
    lc.ActionKind.RETURN: "退回",
    lc.ActionKind.TRANSFER: "转办",
    lc.ActionKind.WITHDRAW: "撤回",
    lc.ActionKind.CLOSE: "归档",
}
CUSTODY_ZH: Mapping[str, str] = {
    "genesis": "受理建档",
    "offer": "移交",
    "accept": "接收",
    "decline": "拒收",
    "recall": "召回",
    "override": "省级接管",
    "close": "办结",
}
DOCUMENT_ZH: Mapping[str, str] = {"complete": "已接收", "pending": "接收中", "refused": "校验未通过"}
SEX_ZH = {"male": "男", "female": "女", "M": "男", "F": "女"}


def visible(staff: Staff, side: Side, accepting_division: str, registration_division: str) -> bool:
    """Whether ``staff`` may open a case: registration staff the registration-side cases of their
    county, case officers the residence-side cases accepted in theirs."""
    if staff.role is StaffRole.REGISTRATION_STAFF:
        return side is Side.REGISTRATION and registration_division == staff.division
    return side is Side.RESIDENCE and accepting_division == staff.division


def zh_date(day: date | None) -> str:
    return f"{day.year}年{day.month}月{day.day}日" if day is not None else "—"


def zh_time(at: datetime) -> str:
    local = at.astimezone(lc.CHINA)
    return f"{zh_date(local.date())} {local:%H:%M}"


def mask_id(number: str) -> str:
    """An ID number as staff see it on a list or a screen: region and last four kept."""
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


class Response:
    def __init__(self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status, self.body, self.headers = status, body, list(headers)


class _IpThrottle:
    """Failed sign-ins per client address in a sliding window (in memory: one process's view)."""

    def __init__(self, limit: int = IP_FAILURES, window: float = IP_WINDOW) -> None:
        self._limit, self._window = limit, window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, ip: str, now: float) -> deque[float]:
        q = self._failures.setdefault(ip, deque())
        while q and q[0] <= now - self._window:
            q.popleft()
        return q

    def blocked(self, ip: str) -> bool:
        with self._lock:
            return len(self._recent(ip, time.monotonic())) >= self._limit

    def failed(self, ip: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(ip, now).append(now)
            if len(self._failures) > 10_000:  # bounded: forget the quietest addresses
                for key in [k for k, v in self._failures.items() if not v][:5000]:
                    del self._failures[key]


class WebInbox:
    """The WSGI application (see the module docstring). ``parts`` is ``None`` on a node that cannot
    act on cases (not enrolled, or without keys): the inbox then shows the cases but no actions."""

    def __init__(
        self,
        node: Node,
        parts: CaseParts | None,
        *,
        clock: Callable[[], datetime] = utc_now,
        calendar: WorkCalendar | None = None,
        divisions: DivisionTable | None = None,
    ) -> None:
        self._node = node
        self._parts = parts
        self._clock = clock
        self._calendar = calendar
        self._divisions = divisions or DivisionTable.load_default()
        self._reasons = load_reasons()
        self._throttle = _IpThrottle()
        self._store = parts.store if parts is not None else CaseStore(node.engine, node.keyring)
        node_id = node.config.node_id
        self.cookie = "__Host-tongban-" + node_id
        self.pre_cookie = "__Host-tongban-pre-" + node_id
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("gateway.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._env.globals.update(zh_date=zh_date, zh_time=zh_time, node=node.description)
        self._css = resources.files("gateway.web").joinpath("static/inbox.css").read_bytes()

    # --- WSGI ---------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        # The request's id (the proxy's X-Request-Id if well formed, else a new one) on every log
        # record made while it is handled, and sent back (gateway.logs).
        request_id = logs.request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        token = logs.REQUEST_ID.set(request_id)
        try:
            response = self._route(environ)
        except Exception as exc:  # noqa: BLE001 - a page must never leak a traceback; logged by type only
            log.error("web inbox: request failed (%s)", type(exc).__name__)
            response = self._page(HTTPStatus.INTERNAL_SERVER_ERROR, "error.html", None, message="系统内部错误。")
        finally:
            logs.REQUEST_ID.reset(token)
        reason = HTTPStatus(response.status).phrase
        headers = [
            *_SECURITY_HEADERS,
            *response.headers,
            ("Content-Length", str(len(response.body))),
            ("X-Request-Id", request_id),
        ]
        start_response(f"{response.status} {reason}", headers)
        return iter([response.body])

    def _route(self, environ: dict[str, Any]) -> Response:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        if method == "GET" and path == "/static/inbox.css":
            return Response(200, self._css, [("Content-Type", "text/css; charset=utf-8")])
        if method == "GET" and path == "/healthz":
            return Response(200, b"ok", [("Content-Type", "text/plain")])
        if path == "/signin":
            if method == "POST":
                return self._sign_in(environ)
            return self._sign_in_page(None, environ)
        if path == "/favicon.ico":
            return Response(HTTPStatus.NOT_FOUND, b"", [("Content-Type", "text/plain")])
        if method not in ("GET", "POST"):
            return Response(405, b"", [("Allow", "GET, POST")])
        try:
            session = accounts.session(self._node.engine, self._cookies(environ).get(self.cookie), now=self._clock())
        except SessionInvalid:
            return self._redirect("/signin")
        form: dict[str, list[str]] = {}
        if method == "POST":
            checked = self._form(environ, session)
            if isinstance(checked, Response):
                return checked
            form = checked
        if path == "/" and method == "GET":
            return self._redirect("/inbox")
        if path == "/inbox" and method == "GET":
            return self._inbox(session)
        if path == "/signout" and method == "POST":
            accounts.sign_out(self._node.engine, session.session_id, now=self._clock())
            return self._redirect("/signin", clear=True)
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "cases" and _CASE_ID.fullmatch(parts[1]):
            case_id = parts[1]
            if len(parts) == 2 and method == "GET":
                done = parse_qs(str(environ.get("QUERY_STRING", ""))).get("done", [""])[0]
                return self._case(session, case_id, done=done)
            if len(parts) == 4 and parts[2] == "documents" and method == "GET" and _DOCUMENT_ID.fullmatch(parts[3]):
                return self._document(session, case_id, parts[3])
            if len(parts) == 3 and parts[2] in _ACTIONS and method == "POST":
                return self._act(session, case_id, parts[2], form)
        return self._page(HTTPStatus.NOT_FOUND, "error.html", session, message="页面不存在。")

    # --- plumbing -------------------------------------------------------------------------------------

    @staticmethod
    def _cookies(environ: Mapping[str, Any]) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(environ.get("HTTP_COOKIE", ""))
        except CookieError:
            return {}
        return {k: m.value for k, m in jar.items()}

    def _set_cookie(self, name: str, value: str, *, max_age: int | None = None) -> tuple[str, str]:
        parts = [f"{name}={value}", "Path=/", "Secure", "HttpOnly", "SameSite=Strict"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        return ("Set-Cookie", "; ".join(parts))

    def _redirect(self, location: str, *, clear: bool = False) -> Response:
        headers = [("Location", location)]
        if clear:
            headers.append(self._set_cookie(self.cookie, "", max_age=0))
        return Response(HTTPStatus.SEE_OTHER, b"", headers)

    def _page(
        self,
        status: int,
        template: str,
        session: Session | None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        **ctx: Any,
    ) -> Response:
        body = self._env.get_template(template).render(session=session, **ctx).encode("utf-8")
        return Response(status, body, [("Content-Type", "text/html; charset=utf-8"), *headers])

    @staticmethod
    def _same_origin(environ: Mapping[str, Any]) -> bool:
        origin = environ.get("HTTP_ORIGIN")
        if not origin or origin == "null":
            return origin is None  # a form from an opaque origin ("null") is never ours
        return bool(urlsplit(origin).netloc == environ.get("HTTP_HOST", ""))

    @staticmethod
    def _read_form(environ: Mapping[str, Any]) -> dict[str, list[str]] | None:
        if not str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded"):
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length > MAX_FORM_BYTES:
            return None
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            return parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            return None

    def _form(self, environ: Mapping[str, Any], session: Session) -> dict[str, list[str]] | Response:
        form = self._read_form(environ)
        token = (form or {}).get("csrf", [""])[0]
        if form is None or not self._same_origin(environ) or not secrets.compare_digest(token, session.csrf_token):
            log.warning("web inbox: form refused for %s (%s)", session.staff.staff_id, CsrfRefused.code)
            return self._page(
                HTTPStatus.FORBIDDEN, "error.html", session, message="表单已失效或不是从本系统页面提交的，操作未执行。"
            )
        return form

    @staticmethod
    def _client(environ: Mapping[str, Any]) -> str:
        return str(environ.get("REMOTE_ADDR", ""))

    # --- sign-in --------------------------------------------------------------------------------------

    def _sign_in_page(self, error: str | None, environ: Mapping[str, Any], status: int = HTTPStatus.OK) -> Response:
        # The pre-session token is kept while the browser has one: a second tab or a request the
        # browser makes on its own must not invalidate the form already on the screen.
        pre = self._cookies(environ).get(self.pre_cookie, "")
        if not re.fullmatch(r"[0-9a-f]{64}", pre):
            pre = secrets.token_hex(32)
        return self._page(
            status, "signin.html", None, error=error, csrf=pre, headers=[self._set_cookie(self.pre_cookie, pre)]
        )

    def _sign_in(self, environ: Mapping[str, Any]) -> Response:
        client = self._client(environ)
        if self._throttle.blocked(client):
            log.warning("web inbox: sign-in throttled for a client address")
            return self._sign_in_page("登录失败次数过多，请稍后再试。", environ, HTTPStatus.TOO_MANY_REQUESTS)
        form = self._read_form(environ)
        pre = self._cookies(environ).get(self.pre_cookie, "")
        token = (form or {}).get("csrf", [""])[0]
        if form is None or not pre or not self._same_origin(environ) or not secrets.compare_digest(token, pre):
            log.warning(
                "web inbox: sign-in form refused (%s: form %s, pre-session cookie %s, same origin %s)",
                CsrfRefused.code, form is not None, bool(pre), self._same_origin(environ),
            )  # fmt: skip
            return self._sign_in_page("登录页面已失效，请重新登录。", environ, HTTPStatus.FORBIDDEN)
        username, secret = form.get("username", [""])[0], form.get("secret", [""])[0]
        if len(username) > 40 or len(secret) > 200:
            self._throttle.failed(client)
            return self._sign_in_page("用户名或密码（一次性登录码）错误。", environ, HTTPStatus.UNAUTHORIZED)
        try:
            session = accounts.sign_in(self._node.engine, username, secret, now=self._clock())
        except SignInThrottled:
            self._throttle.failed(client)
            locked = "登录失败次数过多，账号已暂时锁定，请稍后再试。"
            return self._sign_in_page(locked, environ, HTTPStatus.TOO_MANY_REQUESTS)
        except SignInRefused:
            self._throttle.failed(client)
            log.info("web inbox: sign-in refused (%s)", SignInRefused.code)
            return self._sign_in_page("用户名或密码（一次性登录码）错误。", environ, HTTPStatus.UNAUTHORIZED)
        log.info("web inbox: %s signed in", session.staff.staff_id)
        response = self._redirect("/inbox")
        response.headers.append(self._set_cookie(self.cookie, session.session_id))
        response.headers.append(self._set_cookie(self.pre_cookie, "", max_age=0))
        return response

    # --- pages ----------------------------------------------------------------------------------------

    def _division_name(self, code: str) -> str:
        try:
            return self._divisions.lookup(code).name
        except GatewayError:
            return code

    def _inbox(self, session: Session) -> Response:
        today = lc.china_date(self._clock())
        store = self._store
        items = [
            i
            for i in inbox(store, today, calendar=self._calendar)
            if visible(session.staff, i.side, i.accepting_division, i.registration_division)
        ]
        rows = [self._inbox_row(i) for i in items]
        return self._page(HTTPStatus.OK, "inbox.html", session, rows=rows, today=today)

    def _inbox_row(self, i: InboxItem) -> dict[str, Any]:
        return {
            "case_id": i.case_id,
            "programme": i.programme.label_zh,
            "status": i.status.label_zh,
            "due": i.due,
            "due_step": i.due_step.label_zh if i.due_step is not None else "—",
            "overdue": i.overdue,
            "accepting": self._division_name(i.accepting_division),
            "registration": self._division_name(i.registration_division),
            "flag": "重复申请" if i.flag == "duplicate_application" else (i.flag or ""),
        }

    def _visible_row(self, session: Session, case_id: str) -> CaseRow | None:
        """The case's plain columns if ``session``'s staff may open it (nothing is decrypted to decide);
        ``None`` for a case that is not theirs and for one that does not exist alike."""
        try:
            row = self._store.row(case_id)
        except CaseNotFound:
            return None
        return row if visible(session.staff, row.side, row.accepting_division, row.registration_division) else None

    def _visible_case(self, session: Session, case_id: str) -> StoredCase | None:
        """The case, opened, if ``session``'s staff may open it (see :meth:`_visible_row`)."""
        if self._visible_row(session, case_id) is None:
            return None
        try:
            return self._store.load(case_id)
        except CaseNotFound:
            return None

    def _case(
        self, session: Session, case_id: str, *, done: str = "", error: str | None = None, status: int = 200
    ) -> Response:
        stored = self._visible_case(session, case_id)
        if stored is None:
            return self._not_found(session)
        row = stored.row
        with self._node.engine.begin() as conn:
            audit.append(
                conn, actor=session.staff.staff_id, action=audit.Action.READ, purpose=accounts.PURPOSE,
                reference=case_id, at=self._clock(),
            )  # fmt: skip
        log.info("web inbox: %s opened case %s", session.staff.staff_id, case_id)
        case = stored.file.case
        child = stored.file.child
        resident = idnumber.parse(child.id_number)
        clocks = due_dates(case, stored.state.history, self._calendar)
        today = lc.china_date(self._clock())
        holder = self._parts.custody.holder(case_id) if self._parts is not None else None
        custody = self._custody_rows(case_id)
        ctx: dict[str, Any] = {
            "case": case,
            "row": row,
            "programme": case.programme.label_zh,
            "case_status": stored.state.status.label_zh,
            "child_name": child.name,
            "child_id": mask_id(child.id_number),
            "child_birth": resident.birth_date,
            "child_sex": SEX_ZH.get(resident.sex.value, ""),
            "accepting": self._division_name(case.accepting_division),
            "registration": self._division_name(stored.state.registration_division),
            "documents": [
                {
                    "id": d.document.document_id,
                    "kind": d.document.kind.label_zh,
                    "size": d.document.size,
                    "state": DOCUMENT_ZH.get(d.state.value, d.state.value),
                    "complete": d.state.value == "complete",
                }
                for d in stored.documents
            ],
            "clocks": [
                {
                    "step": c.step.label_zh,
                    "limit": c.limit,
                    "started": c.started_on,
                    "due": c.due,
                    "state": (
                        "已逾期"
                        if c.overdue_on(today)
                        else "超时完成"
                        if c.late
                        else "已完成"
                        if c.completed
                        else "暂停（待补正）"
                        if c.paused
                        else "进行中"
                        if c.running
                        else "未开始"
                    ),
                    "overdue": c.overdue_on(today),
                }
                for c in clocks.values()
            ],
            "history": [
                {
                    "at": e.at,
                    "action": ACTION_ZH.get(e.action, e.action.value),
                    "role": e.role.label_zh,
                    "target": e.target.label_zh,
                }
                for e in stored.state.history
            ],
            "custody": custody,
            "holder": holder,
            "holds": holder == self._node.config.node_id,
            "forms": self._forms(session, stored.state, case.programme, holder),
            "error": error,
            "done": DONE_TEXT.get(done),
            "csrf": session.csrf_token,
        }
        return self._page(status, "case.html", session, **ctx)

    def _custody_rows(self, case_id: str) -> list[dict[str, Any]]:
        if self._parts is None:
            return []
        state = self._parts.custody.view(case_id)
        if state is None:
            return []
        rows = []
        for event in state.chain:
            kind = event.action.kind.value
            target = getattr(event.action, "to_node", None) or getattr(event.action, "registration_node", None)
            rows.append(
                {
                    "at": event.created,
                    "kind": CUSTODY_ZH.get(kind, kind),
                    "signer": event.signed.signer,
                    "target": target or "",
                }
            )
        return rows

    def _forms(self, session: Session, state: lc.CaseState, programme: Programme, holder: str | None) -> dict[str, Any]:
        if (
            session.staff.role is not StaffRole.REGISTRATION_STAFF
            or self._parts is None
            or not self._parts.can_act
            or holder != self._node.config.node_id
        ):
            return {}
        table = lc.allowed(programme.family)
        role = lc.Role.REGISTRATION_NODE

        def can(kind: lc.ActionKind) -> bool:
            return (state.status, role, kind) in table

        forms: dict[str, Any] = {}
        if can(lc.ActionKind.REQUEST_MATERIAL) and not state.material_requested:
            forms["request_material"] = [(k.value, k.label_zh) for k in EvidenceKind]
        if can(lc.ActionKind.FIRST_REVIEW):
            forms["first_review"] = True
        if can(lc.ActionKind.APPROVE):
            forms["approve"] = lc.china_date(self._clock()).strftime("%Y-%m")
        if can(lc.ActionKind.REJECT):
            forms["reject"] = self._reason_options(ReasonAction.REJECT, programme)
        if can(lc.ActionKind.RETURN):
            forms["return"] = self._reason_options(ReasonAction.RETURN, programme)
        return forms

    def _reason_options(self, action: ReasonAction, programme: Programme) -> list[tuple[str, str]]:
        return [(r.code, r.zh) for r in self._reasons.reasons if action in r.actions and programme in r.programmes]

    def _not_found(self, session: Session) -> Response:
        return self._page(HTTPStatus.NOT_FOUND, "error.html", session, message="未找到该案件，或您无权查看。")

    def _document(self, session: Session, case_id: str, document_id: str) -> Response:
        stored = self._visible_case(session, case_id)
        if stored is None:
            return self._not_found(session)
        store = self._store
        doc = next((d for d in stored.documents if d.document.document_id == document_id), None)
        if doc is None or doc.state.value != "complete":
            return self._not_found(session)
        with self._node.engine.begin() as conn:
            data = b"".join(store.read_chunks(conn, case_id, document_id))
            audit.append(
                conn, actor=session.staff.staff_id, action=audit.Action.READ, purpose=accounts.PURPOSE,
                reference=case_id, detail=f"document={document_id}"[:200], at=self._clock(),
            )  # fmt: skip
        media, ext = next(((m, e) for magic, (m, e) in _MEDIA.items() if data.startswith(magic)), (None, ".bin"))
        filename = re.sub(r"[^A-Za-z0-9._-]", "_", document_id) + ext
        headers = [
            ("Content-Type", media or "application/octet-stream"),
            ("Content-Disposition", f'attachment; filename="{filename}"'),
        ]
        log.info("web inbox: %s downloaded a document of case %s", session.staff.staff_id, case_id)
        return Response(HTTPStatus.OK, data, headers)

    # --- actions --------------------------------------------------------------------------------------

    def _act(self, session: Session, case_id: str, action: str, form: dict[str, list[str]]) -> Response:
        if self._visible_row(session, case_id) is None:
            return self._not_found(session)
        if session.staff.role is not StaffRole.REGISTRATION_STAFF or self._parts is None:
            return self._case(session, case_id, error="您的账号不能办理此案件。", status=HTTPStatus.FORBIDDEN)

        def field(name: str) -> str:
            return form.get(name, [""])[0].strip()

        now = self._clock()
        try:
            service = self._parts.service()
            if action == "request-material":
                items = [EvidenceKind(v) for v in form.get("items", []) if v in EvidenceKind._value2member_map_]
                if not items:
                    raise InputError("choose at least one kind of material")
                service.request_material(case_id, items, now, note=_text(field("note"), required=False))
            elif action == "first-review":
                service.first_review(case_id, now)
            elif action == "approve":
                month = field("payment_month")
                if not re.fullmatch(r"\d{4}-\d{2}", month):
                    raise InputError("the payment month is YYYY-MM")
                try:
                    first = date.fromisoformat(month + "-01")
                except ValueError:
                    raise InputError("the payment month is YYYY-MM") from None
                service.approve(case_id, first, now)
            elif action == "reject":
                service.reject(case_id, field("reason"), _text(field("text")), now)
            else:
                service.return_case(case_id, field("reason"), _text(field("text")), now)
        except (GatewayError, ValueError) as exc:
            code = exc.code if isinstance(exc, GatewayError) else "invalid_input"
            log.info("web inbox: %s could not %s case %s (%s)", session.staff.staff_id, action, case_id, code)
            message = ERROR_TEXT.get(code, f"操作未完成（错误代码 {code}）。")
            return self._case(session, case_id, error=message, status=HTTPStatus.CONFLICT)
        log.info("web inbox: %s did %s on case %s", session.staff.staff_id, action, case_id)
        return self._redirect(f"/cases/{case_id}?done={action}")


def _text(value: str, *, required: bool = True) -> str:
    if required and not value:
        raise InputError("the explanation is required")
    if len(value) > MAX_TEXT:
        raise InputError(f"the explanation is at most {MAX_TEXT} characters")
    return value


__all__ = ["ERROR_TEXT", "WebInbox", "visible"]
