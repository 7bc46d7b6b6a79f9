"""The findings table (``reconcile_findings``): a period's findings, replaced as a whole.

Rows hold codes and references only (see :class:`~gateway.reconcile.findings.Finding`). A run for a
period deletes that period's rows and inserts the new ones inside the caller's transaction, so a
reader sees either the previous run or the new one, never a mixture.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, insert, select

from gateway.reconcile.findings import Code, Finding, Role, Side
from gateway.store.schema import reconcile_findings

_CHUNK = 1000
MAX_DETAIL = 200


def replace(conn: Connection, period: str, findings: Iterable[Finding], *, now: datetime) -> int:
    """Replace ``period``'s findings with ``findings`` inside the caller's transaction; returns how many."""
    t = reconcile_findings
    conn.execute(delete(t).where(t.c.period == period))
    rows: list[dict[str, object]] = []
    n = 0
    for n, f in enumerate(findings, start=1):
        rows.append(
            {
                "period": period,
                "seq": n,
                "code": f.code.value,
                "role": f.role.value,
                "side": f.side.value,
                "peer": f.peer,
                "peer_division": f.peer_division,
                "record_ref": f.record_ref,
                "peer_ref": f.peer_ref,
                "detail": f.detail[:MAX_DETAIL],
                "created_at": now,
            }
        )
        if len(rows) >= _CHUNK:
            conn.execute(insert(t), rows)
            rows = []
    if rows:
        conn.execute(insert(t), rows)
    return n


def load(engine: Engine, period: str) -> Iterator[Finding]:
    """The stored findings of ``period``, in the order the run produced them."""
    t = reconcile_findings
    last = 0
    while True:
        query = select(t).where(t.c.period == period, t.c.seq > last).order_by(t.c.seq).limit(_CHUNK)
        with engine.connect() as conn:
            rows = list(conn.execute(query))
        if not rows:
            return
        for r in rows:
            yield Finding(
                code=Code(r.code),
                role=Role(r.role),
                side=Side(r.side),
                peer=r.peer,
                peer_division=r.peer_division,
                record_ref=r.record_ref,
                peer_ref=r.peer_ref,
                detail=r.detail,
            )
        last = rows[-1].seq


def counts(engine: Engine, period: str) -> dict[tuple[str, str], int]:
    """How many findings of ``period`` per (code, peer)."""
    t = reconcile_findings
    query = select(t.c.code, t.c.peer, func.count()).where(t.c.period == period).group_by(t.c.code, t.c.peer)
    with engine.connect() as conn:
        return {(code, peer): int(n) for code, peer, n in conn.execute(query)}
