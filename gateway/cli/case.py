"""``tongban case``: the case workflow for staff (SPEC §6, §7 "Registration-place staff").

Every command first applies the case messages waiting in the node's inbox (``sync``; the running
node receives them, and syncs too, every ``exchange.case_sync_seconds``) and takes the custody
actions owed (:meth:`gateway.cases.custody_hook.CaseCustody.settle`), then acts through
:class:`gateway.cases.service.CaseService` — refused unless this node holds the case in its custody
chain; whatever it sends is queued in the outbox and delivered by the running node.

Residence place (居住地): ``accept FILE`` (a JSON application: accepted and pushed), ``resubmit``,
``notify``, ``close``, ``withdraw``. Registration place (户籍地): ``inbox``, ``show``,
``request-material``, ``first-review``, ``decide``, ``return``, ``transfer --to-division CODE``
(转办: the child's 户籍 moved; the case, re-sealed, goes to the node serving that division).
Either: ``overdue`` (督办: records and lists overdue steps this node answers for; sends each new
alert to the province's supervising node, ``[cases] supervisors``), ``supervision`` (at a
supervising node: the overdue alerts received, by county). Output names case ids, codes, divisions
and dates: the child's name appears only in ``show``, for the staff handling the case (an audited
read).

The application file (UTF-8 JSON)::

    {"child": {"id_number": "...", "name": "...", "registration_division": "511321", "ref": "local-id"},
     "application": {"programme": "orphan", "father": {...}, "mother": {...}, "carer": {...},
                     "evidence": [{"document_id": "d1", "kind": "death_certificate", "file": "d1.pdf"}]}}

``file`` paths are relative to the JSON file; the SHA-256 and size are computed here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from gateway import audit
from gateway import config as config_mod
from gateway.cases import codec
from gateway.cases.lifecycle import CHINA
from gateway.cases.service import TRANSFER_REASON, CaseService, Draft
from gateway.cases.types import EvidenceDocument, EvidenceKind
from gateway.cases.wiring import CaseParts
from gateway.cli.custody import describe_holder
from gateway.cli.node import acting_keys, add_config_argument, config_path
from gateway.custody.service import CustodyService
from gateway.errors import InputError, InvalidCase
from gateway.exchange.purposes import load_profiles
from gateway.node import open_node


@contextmanager
def open_service(args: argparse.Namespace) -> Iterator[CaseService]:
    cfg = config_mod.load(config_path(args))
    node = open_node(cfg)
    try:
        now = datetime.now(UTC)
        keys = acting_keys(cfg, now)
        parts = CaseParts.build(
            node,
            signer=keys.signer,
            encryption_key=keys.encryption_key,
            directory=lambda: keys.directory,
            profiles=load_profiles(),
            clock=_now,
        )
        service, custody = parts.service(), parts.custody
        summary = service.sync(now)
        for code, n in sorted(summary.refused.items()):
            print(f"refused {n} case message(s): {code}")
        custody.settle()  # custody owed on cases whose custody message came after their steps
        yield service
    finally:
        node.engine.dispose()


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = groups.add_parser(
        "case", help="cross-province cases: accept, inbox, show, decide …", description="The case workflow (跨省通办)."
    )
    commands = parser.add_subparsers(dest="case_command", metavar="SUBCOMMAND", required=True)

    def command(name: str, help_text: str, handler: Any, *, case: bool = True) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text)
        if case:
            p.add_argument("case_id", metavar="CASE")
        add_config_argument(p)
        p.set_defaults(handler=handler)
        return p

    accept = command(
        "accept", "accept an application (JSON file) and push it to the registration node", _accept, case=False
    )
    accept.add_argument("file", type=Path, metavar="FILE")
    command(
        "inbox", "this node's cases by due date, overdue marked (no personal data)", _inbox, case=False
    ).add_argument("--all", action="store_true", help="closed and withdrawn cases too")
    command("show", "a case: summary, documents, clocks, history", _show)
    rm = command("request-material", "request the missing material, once, in full (一次性告知)", _request)
    rm.add_argument("--items", nargs="+", required=True, choices=[k.value for k in EvidenceKind], metavar="KIND")
    rm.add_argument("--note", default="")
    command("first-review", "record the township's first review (recognition cases)", _first_review)
    decide = command("decide", "approve (with the payment month) or reject (reason code and text)", _decide)
    group = decide.add_mutually_exclusive_group(required=True)
    group.add_argument("--approve", action="store_true")
    group.add_argument("--reject", action="store_true")
    decide.add_argument("--payment-month", metavar="YYYY-MM")
    decide.add_argument("--reason", metavar="CODE")
    decide.add_argument("--text", default="")
    ret = command("return", "return the case to the accepting place", _return)
    ret.add_argument("--reason", required=True, metavar="CODE")
    ret.add_argument("--text", default="退回")
    resubmit = command("resubmit", "send the requested material", _resubmit)
    resubmit.add_argument("--document", nargs="+", required=True, metavar="ID:KIND:FILE")
    transfer = command("transfer", "转办: the child's 户籍 moved; hand the case to that registration node", _transfer)
    transfer.add_argument(
        "--to-division",
        required=True,
        metavar="CODE",
        help="the child's new registration division",
    )
    transfer.add_argument("--reason", default=TRANSFER_REASON, metavar="CODE", help="default: %(default)s")
    command("notify", "the applicant has been told the result", _notify)
    command("close", "close (archive) a case", _close)
    command("withdraw", "withdraw at the applicant's request", _withdraw)
    overdue = command("overdue", "督办: record and list overdue steps this node answers for", _overdue, case=False)
    overdue.add_argument("--today", type=date.fromisoformat, metavar="YYYY-MM-DD", help="default: today (CST)")
    help_supervision = "督办 at a supervising node: overdue alerts received, by county (no personal data)"
    command("supervision", help_supervision, _supervision, case=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _today() -> date:
    return datetime.now(CHINA).date()


def read_draft(path: Path) -> tuple[Draft, dict[str, bytes]]:
    """An application file of the documented layout (``accept FILE``; the demo's county system reads
    the same files) as a :class:`Draft` and its documents' bytes by document id (``InputError``)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        child, application = raw["child"], raw["application"]
        files: dict[str, bytes] = {}
        evidence = []
        for item in application.get("evidence", []):
            data = (path.parent / item["file"]).read_bytes()
            files[str(item["document_id"])] = data
            evidence.append({**item, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
        application = {**application, "evidence": evidence}
        draft = Draft(
            codec.application_from_json(application),
            codec.ChildIdentity(str(child["id_number"]), str(child["name"])),
            str(child["registration_division"]),
            str(child["ref"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError("the application file is not readable JSON of the documented layout") from None
    return draft, files


def _accept(args: argparse.Namespace) -> int:
    draft, files = read_draft(args.file)
    with open_service(args) as service:
        case_id = service.accept(draft, files, _now())
        row = service.store.load(case_id).row
    print(f"accepted {case_id} ({row.programme}); pushed to {row.registration_node} ({row.registration_division})")
    return 0


def _inbox(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        items = service.inbox(_today(), open_only=not args.all)
    print(f"{'case':<36}  {'side':<12} {'type':<20} {'state':<18} {'due':<10}  {'申请人所在地':<6} flag")
    for i in items:
        due = i.due.isoformat() if i.due else "-"
        mark = "  OVERDUE" if i.overdue else ""
        print(
            f"{i.case_id:<36}  {i.side.value:<12} {i.programme.value:<20} {i.status.value:<18} {due:<10}  "
            f"{i.accepting_division:<12} {i.flag or ''}{mark}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        view = service.show(args.case_id)
        custody = service.custody.view(args.case_id) if isinstance(service.custody, CustodyService) else None
        with service.store.engine.begin() as conn:
            audit.append(
                conn, actor=service.node_id, action=audit.Action.READ, purpose="case_show", reference=args.case_id
            )
    case, row = view.case, view.stored.row
    print(f"case {case.case_id}  {case.programme.label_zh} ({case.programme.value})  state {row.status.value}")
    print(f"accepted {case.accepted_on} at {case.accepting_node} ({case.accepting_division})")
    print(f"registration {view.stored.state.registration_node} ({view.stored.state.registration_division})")
    if custody is not None:
        # Who may act now: the decision and the custody handback travel as separate messages, so
        # a case can show its new state a moment before this node holds it again.
        may_act = custody.holder == service.node_id and custody.pending is None and not custody.closed
        print(f"custody {describe_holder(custody)}{' (this node may act)' if may_act else ''}")
    print(f"child {view.stored.file.child.name}  ref {case.child_ref}")
    if row.flag:
        print(f"flag {row.flag}")
    if view.eligibility is not None:
        verdict = "eligible" if view.eligibility.eligible else "not eligible: " + ", ".join(view.eligibility.reasons)
        print(f"eligibility {verdict}")
    print("documents:")
    for d in view.stored.documents:
        print(f"  {d.document.document_id:<24} {d.document.kind.value:<24} {d.document.size:>9} B  {d.state.value}")
    print("clock:")
    for step, c in view.clocks.items():
        status = "late" if c.late else ("done" if c.completed else ("running" if c.running else "-"))
        print(f"  {step.value:<13} limit {c.limit:>2}  start {c.started_on or '-'}  due {c.due or '-'}  {status}")
    print("history:")
    for e in view.stored.state.history:
        print(f"  {e.at.astimezone(CHINA):%Y-%m-%d %H:%M}  {e.role.value:<18} {e.action.value:<17} -> {e.target.value}")
    return 0


def _request(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        state = service.request_material(args.case_id, [EvidenceKind(i) for i in args.items], _now(), note=args.note)
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _first_review(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        state = service.first_review(args.case_id, _now())
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        if args.approve:
            if not args.payment_month:
                raise InvalidCase("--approve needs --payment-month YYYY-MM")
            try:
                month = date.fromisoformat(args.payment_month + "-01")
            except ValueError:
                raise InvalidCase("--payment-month is YYYY-MM") from None
            state = service.approve(args.case_id, month, _now())
        else:
            if not args.reason or not args.text:
                raise InvalidCase("--reject needs --reason CODE and --text")
            state = service.reject(args.case_id, args.reason, args.text, _now())
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _return(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        state = service.return_case(args.case_id, args.reason, args.text, _now())
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        state = service.transfer(args.case_id, args.to_division, _now(), reason=args.reason)
    print(f"{args.case_id}: {state.status.value} to {state.registration_node} ({state.registration_division})")
    return 0


def _resubmit(args: argparse.Namespace) -> int:
    documents = []
    for spec in args.document:
        try:
            document_id, kind, file = spec.split(":", 2)
            data = Path(file).read_bytes()
            documents.append(
                (EvidenceDocument(document_id, EvidenceKind(kind), hashlib.sha256(data).hexdigest(), len(data)), data)
            )
        except (OSError, ValueError):
            raise InputError("--document is ID:KIND:FILE with a readable file") from None
    with open_service(args) as service:
        state = service.resubmit(args.case_id, documents, _now())
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _notify(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        state = service.notify_applicant(args.case_id, _now())
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _close(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        state = service.close(args.case_id, _now())
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _withdraw(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        state = service.withdraw(args.case_id, _now())
    print(f"{args.case_id}: {state.status.value}")
    return 0


def _overdue(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        alerts = service.overdue(args.today or _today(), _now())
    if not alerts:
        print("no overdue steps")
    for a in alerts:
        state = "new alert" if a.new else "raised before"
        print(f"{a.case_id}  {a.step.value:<13} due {a.due}  province {a.province}  {state}")
    supervisor = service.supervisor()
    if any(a.new for a in alerts):
        print(f"new alerts queued to supervising node {supervisor}" if supervisor else "no supervising node configured")
    return 0


def _supervision(args: argparse.Namespace) -> int:
    with open_service(args) as service:
        alerts = service.supervision()
    if not alerts:
        print("no overdue alerts received")
    county = None
    for a in alerts:
        if a.division != county:
            county = a.division
            print(f"county {county}:")
        print(f"  {a.case_id}  {a.programme:<22} {a.step:<13} due {a.due}  node {a.responsible_node}")
    return 0
