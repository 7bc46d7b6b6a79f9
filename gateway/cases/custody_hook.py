"""Cases joined to custody (SPEC §6): the lifecycle says whose turn it is, the chain proves who holds.

:class:`CaseCustody` is the node's :class:`~gateway.custody.service.CustodyService` that is also the
:class:`~gateway.cases.service.CustodyHook` of its :class:`~gateway.cases.service.CaseService`. It
signs custody events **inside the transaction of the case change** that makes them due, so a
lifecycle step and the custody event it implies are durable together (and leave together: the
chain is queued in the same outbox transaction as the ``CaseSteps``).

**The rule** (:func:`turn`, :func:`owed` — pure, a table test in ``tests/test_cases_custody.py``).
Each lifecycle state names the node whose turn it is; custody follows the turn by offer → accept:

=====================================  =================  ==========================================
case state                             turn               custody
=====================================  =================  ==========================================
pushed (受理 + 推送, one step)           registration node  genesis by the residence node (naming the
                                       (in transit)       registration node), then offer to it
received                               registration node  the registration node accepts
material requested (一次性告知)         residence node     registration offers back; residence accepts
resubmitted (补正)                      registration node  residence offers; registration accepts
first reviewed                         registration node  (kept)
decided + result delivered             residence node     registration offers back with the decision
                                                          (one step: delivered means queued);
                                                          residence accepts when it applies it
applicant notified                     residence node     (kept)
returned (退回)                         residence node     registration offers back; residence accepts
transferred (转办)                      new registration   old registration node offers onward; the
                                       node (in transit)  new one accepts once it has received it
withdrawn                              residence node     (kept: withdrawing needs the case in hand)
closed (归档)                           nobody             the holder closes the chain
=====================================  =================  ==========================================

A node *accepts* only once the case has reached it in its own history (for the registration node:
received, i.e. every document complete and checked); the offering node can no longer act from the
moment it signs the offer. So at any moment at most one node can act — the one whose turn it is, and
only once it has signed the acceptance — and :meth:`CaseCustody.check_may_act` refuses every case
action (``NotPermitted``, nothing changes) of a node that is not the holder in its own chain.
Consequences: the residence node cannot withdraw a case the registration node holds (it asks for a
return); a case whose chain is declined or recalled back is offered again by the rule.

**Catching up.** Case messages and custody messages travel as separate envelopes: a custody offer can
arrive after the case steps it belongs to. :meth:`CaseCustody.settle` takes whatever custody action
the rule says is owed on every open case; the node server runs it after each periodic case sync,
and every ``tongban case`` command after its own sync. Settling is idempotent: an action already
signed is not owed any more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from gateway.cases import lifecycle as lc
from gateway.cases.store import CaseStore, Step
from gateway.cases.types import Programme
from gateway.custody import store as custody_store
from gateway.custody.chain import CustodyState, can_act
from gateway.custody.events import Accept, Action, CaseType, Close, Genesis, Offer
from gateway.custody.service import CustodyService
from gateway.errors import GatewayError, NotPermitted, StorageError
from gateway.exchange.purposes import Profiles
from gateway.store.keyring import DataKeyring
from gateway.trust.documents import NodeStatus
from gateway.trust.signing import Signer
from gateway.trust.verifier import Directory

log = logging.getLogger("tongban.custody")

CASE_TYPES: dict[Programme, CaseType] = {
    Programme.ORPHAN: CaseType.ORPHAN,
    Programme.DE_FACTO_UNSUPPORTED: CaseType.DE_FACTO_UNSUPPORTED,
    Programme.LIVING_SUBSIDY: CaseType.DISABILITY_LIVING,
    Programme.NURSING_SUBSIDY: CaseType.DISABILITY_NURSING,
}

_S = lc.Status
#: Whose turn each state is: the residence node's, or the (current) registration node's.
RESIDENCE_TURN = frozenset(
    {_S.NEW, _S.ACCEPTED, _S.MATERIAL_REQUESTED, _S.RESULT_DELIVERED, _S.APPLICANT_NOTIFIED, _S.RETURNED, _S.WITHDRAWN}
)
REGISTRATION_TURN = frozenset({_S.PUSHED, _S.TRANSFERRED, _S.RECEIVED, _S.RESUBMITTED, _S.FIRST_REVIEWED, _S.DECIDED})
#: The registration node's turn, but the case has not reached it yet (documents still arriving).
IN_TRANSIT = frozenset({_S.PUSHED, _S.TRANSFERRED})


class Duty(StrEnum):
    OPEN = "genesis"
    OFFER = "offer"
    ACCEPT = "accept"
    CLOSE = "close"


@dataclass(frozen=True)
class Owed:
    duty: Duty
    to: str | None = None  # the offer's target


def turn(case: lc.CaseState) -> tuple[str | None, bool]:
    """The node whose turn it is to act on ``case`` (``None``: closed) and whether the case has
    reached that node (false while pushed or transferred: the registration node has not received it)."""
    if case.status in RESIDENCE_TURN:
        return case.case.accepting_node, True
    if case.status in REGISTRATION_TURN:
        return case.registration_node, case.status not in IN_TRANSIT
    return None, False


def owed(node_id: str, case: lc.CaseState, custody: CustodyState | None) -> Owed | None:
    """The custody action ``node_id`` owes now, from its own view of the case and of the chain.

    No chain: the accepting node owes the genesis. Closed case: its holder owes the close. Otherwise
    the node whose turn it is accepts an offer pending for it once the case has reached it, and a
    holder whose turn it is not offers the case to the node whose turn it is. Nothing else: in
    particular a node never declines or takes anything back on its own.
    """
    if custody is None:
        return Owed(Duty.OPEN) if node_id == case.case.accepting_node else None
    if custody.closed:
        return None
    if case.status is lc.Status.CLOSED:
        return Owed(Duty.CLOSE) if can_act(custody, node_id) else None
    who, arrived = turn(case)
    if who is None:  # pragma: no cover - every open status has a turn
        return None
    if who == node_id:
        pending = custody.pending
        if arrived and pending is not None and pending.to_node == node_id:
            return Owed(Duty.ACCEPT)
        return None
    if can_act(custody, node_id):
        return Owed(Duty.OFFER, who)
    return None


def _active(directory: Directory, node_id: str) -> bool:
    try:
        return directory.entry(node_id).status is NodeStatus.ACTIVE
    except GatewayError:
        return False


class CaseCustody(CustodyService):
    """The custody service of a node that also runs cases: the :class:`CustodyHook` of its
    :class:`~gateway.cases.service.CaseService` (see the module docstring)."""

    def __init__(
        self,
        *,
        cases: CaseStore,
        node_id: str,
        engine: Engine,
        keyring: DataKeyring,
        signer: Signer,
        directory: Callable[[], Directory],
        profiles: Profiles,
        clock: Callable[[], datetime],
        supervisors: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            node_id=node_id,
            engine=engine,
            keyring=keyring,
            signer=signer,
            directory=directory,
            profiles=profiles,
            clock=clock,
            supervisors=supervisors,
        )
        self._cases = cases

    # --- the hook --------------------------------------------------------------------------------

    def check_may_act(self, conn: Connection, case_id: str, action: lc.ActionKind) -> None:
        """Refuse (``NotPermitted``) unless this node holds the case in its chain with nothing
        pending: the case's custody row is locked until the change commits."""
        state = custody_store.locked_state(conn, case_id, self._directory())
        if state is None or not can_act(state, self.node_id):
            raise NotPermitted(f"case {case_id}: this node does not hold the case, so it may not {action.value}")

    def after_steps(self, conn: Connection, case_id: str, steps: Sequence[Step], peer: str) -> None:
        """Sign whatever custody the new steps make due, in the same transaction."""
        self._settle_in(conn, case_id)

    # --- catching up -----------------------------------------------------------------------------

    def settle(self) -> dict[str, int]:
        """Take the custody action owed on every open case of this node (one transaction each).

        Returns counts by duty. A case that fails (a concurrent append by another process on the
        same database, a directory not usable) is logged by case id and error code and left for
        the next round."""
        done: dict[str, int] = {}
        for row in self._cases.rows(open_only=True):
            try:
                with self._engine.begin() as conn:
                    for duty in self._settle_in(conn, row.case_id):
                        done[duty.value] = done.get(duty.value, 0) + 1
            except GatewayError as exc:
                log.warning("custody: case %s not settled this round (%s)", row.case_id, exc.code)
            except SQLAlchemyError:
                log.warning("custody: case %s not settled this round (%s)", row.case_id, StorageError.code)
        return done

    def _settle_in(self, conn: Connection, case_id: str) -> list[Duty]:
        taken: list[Duty] = []
        for _ in range(len(Duty)):  # at most genesis then offer; bounded all the same
            case = self._cases.load(case_id, conn).state
            directory = self._directory()
            custody = custody_store.locked_state(conn, case_id, directory)
            due = owed(self.node_id, case, custody)
            if due is None:
                break
            action: Action
            if due.duty is Duty.OPEN:
                action = Genesis(
                    CASE_TYPES[case.case.programme], self.node_id, case.case.accepted_on, case.case.registration_node
                )
            elif due.duty is Duty.OFFER:
                if not _active(directory, str(due.to)):
                    # Never hand a case to a suspended or revoked node: it stays here (or with the
                    # operator's override) until the case moves on another way.
                    log.warning("custody: case %s not offered to %s (not active)", case_id, due.to)
                    break
                action = Offer(str(due.to))
            elif due.duty is Duty.ACCEPT:
                action = Accept()
            else:
                action = Close()
            self.sign_within(conn, case_id, action)
            taken.append(due.duty)
        return taken
