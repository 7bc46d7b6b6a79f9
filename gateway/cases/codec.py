"""The one JSON form of a case's personal content: at rest (sealed) and inside the handoff (HPKE).

* :class:`CaseFile` — the case, its application and the child's identity (ID number and name, which
  :class:`~gateway.cases.types.Case` deliberately does not carry): what the accepting node seals at
  rest and sends, and what the registration node decrypts and seals at rest again;
* :func:`action_to_json` / :func:`action_from_json` — the facts of a lifecycle action (material
  items, payment month, reason code and text), so a stored or received event can be re-applied with
  :func:`gateway.cases.lifecycle.apply`.

Decoding re-runs every check of the dataclasses (``InvalidCase``, ``InvalidIdNumber``); anything
malformed is :class:`~gateway.errors.InvalidCase` naming the field, never its value. Pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gateway.cases import lifecycle as lc
from gateway.cases.types import (
    Application,
    Carer,
    Case,
    EvidenceDocument,
    EvidenceKind,
    Hardship,
    PaymentAccount,
    Programme,
    ProgrammeFamily,
    RecognitionApplication,
    SubsidyApplication,
)
from gateway.domain import idnumber
from gateway.domain.records import Disability, DisabilityCategory, ParentSituation, ParentStatus
from gateway.errors import GatewayError, InvalidCase

FORMAT = 1


@dataclass(frozen=True)
class ChildIdentity:
    """Who the application is for. Personal data: never in ``repr``, logs or errors."""

    id_number: str = field(repr=False)
    name: str = field(repr=False)

    def __post_init__(self) -> None:
        idnumber.parse(self.id_number)  # InvalidIdNumber names the rule, never the number
        if not self.name.strip() or len(self.name) > 64:
            raise InvalidCase("the child's name must be 1-64 characters")


@dataclass(frozen=True)
class CaseFile:
    """A case with everything personal about it."""

    case: Case
    child: ChildIdentity

    @property
    def case_id(self) -> str:
        return self.case.case_id


def dumps(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidCase(f"{what} is not JSON") from None


def _date(text: object, what: str) -> date:
    if not isinstance(text, str):
        raise InvalidCase(f"{what} must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidCase(f"{what} must be a date YYYY-MM-DD") from None


# --- documents ------------------------------------------------------------------------------------


def document_to_json(d: EvidenceDocument) -> dict[str, Any]:
    return {"document_id": d.document_id, "kind": d.kind.value, "sha256": d.sha256, "size": d.size}


def document_from_json(raw: Any) -> EvidenceDocument:
    try:
        return EvidenceDocument(
            str(raw["document_id"]), EvidenceKind(raw["kind"]), str(raw["sha256"]), int(raw["size"])
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidCase("an evidence document is malformed") from None


# --- applications --------------------------------------------------------------------------------


def _parent(p: ParentStatus) -> dict[str, Any]:
    return {"situation": p.situation.value, "since": p.since.isoformat() if p.since else None}


def _parent_from(raw: Any, what: str) -> ParentStatus:
    try:
        since = raw.get("since")
        return ParentStatus(ParentSituation(raw["situation"]), _date(since, f"{what}.since") if since else None)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InvalidCase(f"{what} is malformed") from None


def application_to_json(a: Application) -> dict[str, Any]:
    evidence = [document_to_json(d) for d in a.evidence]
    if isinstance(a, RecognitionApplication):
        return {
            "programme": a.programme.value,
            "father": _parent(a.father),
            "mother": _parent(a.mother),
            "carer": {"name": a.carer.name, "relation": a.carer.relation, "phone": a.carer.phone},
            "evidence": evidence,
        }
    return {
        "programme": a.programme.value,
        "certificate_number": a.certificate_number,
        "disability": {"category": int(a.disability.category), "level": a.disability.level},
        "hardship": a.hardship.value,
        "payment_account": {
            "bank": a.payment_account.bank,
            "account_number": a.payment_account.account_number,
            "holder_name": a.payment_account.holder_name,
        },
        "evidence": evidence,
    }


def application_from_json(raw: Any) -> Application:
    """The application of :func:`application_to_json` (or of a staff's JSON file, same layout)."""
    if not isinstance(raw, dict):
        raise InvalidCase("the application must be a JSON object")
    try:
        programme = Programme(raw["programme"])
        evidence = tuple(document_from_json(d) for d in raw.get("evidence", []))
        if programme.family is ProgrammeFamily.RECOGNITION:
            carer = raw["carer"]
            return RecognitionApplication(
                programme=programme,
                father=_parent_from(raw["father"], "father"),
                mother=_parent_from(raw["mother"], "mother"),
                carer=Carer(str(carer["name"]), str(carer["relation"]), str(carer["phone"])),
                evidence=evidence,
            )
        account, disability = raw["payment_account"], raw["disability"]
        return SubsidyApplication(
            programme=programme,
            certificate_number=str(raw["certificate_number"]),
            disability=Disability(DisabilityCategory(int(disability["category"])), int(disability["level"])),
            hardship=Hardship(raw["hardship"]),
            payment_account=PaymentAccount(
                str(account["bank"]), str(account["account_number"]), str(account["holder_name"])
            ),
            evidence=evidence,
        )
    except GatewayError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InvalidCase("the application is malformed (a field is missing or of the wrong type)") from None


# --- case files -----------------------------------------------------------------------------------


def case_file_to_json(f: CaseFile) -> bytes:
    c = f.case
    return dumps(
        {
            "format": FORMAT,
            "case_id": c.case_id,
            "accepting_node": c.accepting_node,
            "accepting_division": c.accepting_division,
            "registration_node": c.registration_node,
            "registration_division": c.registration_division,
            "child_ref": c.child_ref,
            "accepted_on": c.accepted_on.isoformat(),
            "child": {"id_number": f.child.id_number, "name": f.child.name},
            "application": application_to_json(c.application),
        }
    )


def case_file_from_json(data: bytes) -> CaseFile:
    raw = _loads(data, "the case file")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InvalidCase(f"the case file is not format {FORMAT}")
    try:
        case = Case(
            case_id=str(raw["case_id"]),
            application=application_from_json(raw["application"]),
            accepting_node=str(raw["accepting_node"]),
            accepting_division=str(raw["accepting_division"]),
            registration_node=str(raw["registration_node"]),
            registration_division=str(raw["registration_division"]),
            child_ref=str(raw["child_ref"]),
            accepted_on=_date(raw["accepted_on"], "accepted_on"),
        )
        child = ChildIdentity(str(raw["child"]["id_number"]), str(raw["child"]["name"]))
    except (KeyError, TypeError):
        raise InvalidCase("the case file is malformed") from None
    return CaseFile(case, child)


# --- actions --------------------------------------------------------------------------------------

_PLAIN: dict[lc.ActionKind, lc.Action] = {
    cls.kind: cls()
    for cls in (
        lc.Accept,
        lc.Push,
        lc.Receive,
        lc.Resubmit,
        lc.FirstReview,
        lc.DeliverResult,
        lc.NotifyApplicant,
        lc.Withdraw,
        lc.Close,
    )
}


def action_to_json(action: lc.Action) -> bytes:
    """The facts of ``action`` (``{}`` for an action without any)."""
    match action:
        case lc.RequestMaterial(items=items, note=note):
            return dumps({"items": [i.value for i in items], "note": note})
        case lc.Approve(payment_from=month):
            return dumps({"payment_from": month.isoformat()})
        case lc.Reject(reason_code=code, text=text) | lc.Return(reason_code=code, text=text):
            return dumps({"reason_code": code, "text": text})
        case lc.Transfer(to_node=node, to_division=division):
            return dumps({"to_node": node, "to_division": division})
        case _:
            return dumps({})


def action_from_json(kind: lc.ActionKind, data: bytes) -> lc.Action:
    """The action of ``kind`` with the facts of :func:`action_to_json`."""
    raw = _loads(data, "an action's facts")
    if not isinstance(raw, dict):
        raise InvalidCase("an action's facts must be a JSON object")
    try:
        match kind:
            case lc.ActionKind.REQUEST_MATERIAL:
                return lc.RequestMaterial(tuple(EvidenceKind(i) for i in raw["items"]), str(raw.get("note", "")))
            case lc.ActionKind.APPROVE:
                return lc.Approve(_date(raw["payment_from"], "payment_from"))
            case lc.ActionKind.REJECT:
                return lc.Reject(str(raw["reason_code"]), str(raw["text"]))
            case lc.ActionKind.RETURN:
                return lc.Return(str(raw["reason_code"]), str(raw["text"]))
            case lc.ActionKind.TRANSFER:
                return lc.Transfer(str(raw["to_node"]), str(raw["to_division"]))
            case _:
                if raw:
                    raise InvalidCase(f"a {kind.value} action carries no facts")
                return _PLAIN[kind]
    except (KeyError, TypeError, ValueError):
        raise InvalidCase(f"the facts of a {kind.value} action are malformed") from None
