"""Prometheus metrics of one node (SPEC §7, operators): read from the node's own state at scrape time.

An operator needs to see, without opening any record: is the outbox draining, are peers refusing
what this node sends (or this node refusing what peers send), how many cases stand in which state
and how many are overdue, how the last reconciliation came out, and how long the directory has
left. Almost all of it is already in the node's database and files, so :class:`NodeCollector`
reads it there when Prometheus scrapes — through the same store functions the CLI uses — and no
hot path carries a metrics hook:

==============================================  ========  ==================================================
metric                                          source    labels (besides ``node``)
==============================================  ========  ==================================================
``tongban_node_info``                           config    ``division``, ``version`` (the software's)
``tongban_outbox_messages``                     database  ``peer``, ``status`` (queued, delivered, dead)
``tongban_outbox_oldest_queued_age_seconds``    database  ``peer`` (only peers with queued messages)
``tongban_delivery_outcomes_total``             process   ``outcome`` (delivered, retried, dead)
``tongban_delivery_failures_total``             process   ``reason`` (a retry/refusal reason code)
``tongban_receive_refusals_total``              process   ``reason`` (the receiver's error code)
``tongban_cases``                               database  ``side``, ``programme``, ``status``
``tongban_cases_overdue``                       database  ``side``, ``programme``
``tongban_case_overdue_alerts_total``           database  —
``tongban_reconcile_findings``                  database  ``period``, ``code`` (latest reconciled period)
``tongban_match_outcomes``                      database  ``period``, ``band`` (matched, review)
``tongban_directory_version``                   files     —
``tongban_directory_age_seconds``               files     —
``tongban_directory_expiry_seconds``            files     —
``tongban_metrics_up``                          —         ``part``: 1 if that part was read, 0 if it failed
==============================================  ========  ==================================================

*Database* metrics describe the whole node: several gateway processes sharing one PostgreSQL report
the same values (aggregate them with ``max by (node)``). *Process* counters count what this process
did since it started (``sum by (node)`` across processes): the delivery worker's outcomes
(:class:`~gateway.exchange.delivery.Metrics`) and the receiver's refusals
(:meth:`~gateway.exchange.receiver.Receiver.refusal_counts`) — a refused envelope leaves no row
anywhere, by design, so those are the only counters kept in memory.

**No personal data.** Label values are node ids, division codes, period labels, purposes, states,
programmes and reason codes — never a name, an ID number or a free text. A part that fails to read
(the database down, a tampered case row) is logged by error type only, reported as
``tongban_metrics_up{part=…} 0`` and skipped; the scrape itself still answers.

**Cost.** Each part is one or two aggregate queries, except overdue cases: deciding that a step is
overdue needs the case's history replayed on the holiday calendar (:func:`gateway.cases.service.inbox`,
the function the county API's inbox uses), so that count is recomputed at most every
``overdue_every`` seconds (60 by default) and cached in between. The directory's manifest is
re-read only when the last good bundle file changes.

:class:`MetricsServer` serves ``/metrics`` over plain HTTP on ``[metrics] listen`` with a registry
of its own (never the process-wide default), so several nodes can run in one process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from gateway.cases.lifecycle import china_date
from gateway.cases.service import inbox
from gateway.cases.store import CaseStore
from gateway.errors import ConfigError, GatewayError
from gateway.exchange import outbox
from gateway.node import Node
from gateway.reconcile import store as findings
from gateway.reconcile.findings import Code
from gateway.store.schema import case_alerts, cases, reconcile_findings
from gateway.store.schema import outbox as outbox_table
from gateway.trust.documents import Bundle, Manifest

log = logging.getLogger("tongban.metrics")

PATH = "/metrics"
DELIVERY_OUTCOMES = ("delivered", "retried", "dead")
MATCH_BANDS = (Code.MATCHED, Code.REVIEW)  # the matcher's bands, as reconciliation records them


class Counts(Protocol):
    """In-memory counters (:class:`gateway.exchange.delivery.Metrics`)."""

    def snapshot(self) -> dict[str, int]: ...


class DeliveryCounts(Protocol):
    """What the collector reads of a :class:`~gateway.exchange.delivery.DeliveryWorker`."""

    @property
    def metrics(self) -> Counts: ...


class RefusalCounts(Protocol):
    """What the collector reads of a :class:`~gateway.exchange.receiver.Receiver`."""

    def refusal_counts(self) -> dict[str, int]: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _utc(at: datetime) -> datetime:
    # SQLite gives back naive datetimes (stored as UTC); PostgreSQL gives aware ones.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


Part = Callable[[datetime], Iterable[Metric]]


class NodeCollector(Collector):
    """Every metric of the module docstring for ``node``, read at each :meth:`collect`.

    ``delivery`` and ``receiver`` are the running server's delivery worker and receiver (their
    process counters are left out when ``None``, e.g. on a node that is not enrolled); ``clock``
    gives the time ages are measured against (and "today" for overdue steps).
    """

    def __init__(
        self,
        node: Node,
        *,
        delivery: DeliveryCounts | None = None,
        receiver: RefusalCounts | None = None,
        clock: Callable[[], datetime] = _utc_now,
        overdue_every: float = 60.0,
    ) -> None:
        self._node = node
        self._delivery = delivery
        self._receiver = receiver
        self._clock = clock
        self._overdue_every = overdue_every
        self._lock = threading.Lock()  # guards the two caches below (scrapes may overlap)
        self._overdue: tuple[float, dict[tuple[str, str], int]] | None = None
        self._manifest: tuple[tuple[int, int], Manifest] | None = None
        self._parts: tuple[tuple[str, Part], ...] = (
            ("outbox", self._outbox),
            ("delivery", self._delivery_counts),
            ("receiver", self._refusals),
            ("cases", self._cases),
            ("overdue", self._overdue_cases),
            ("reconcile", self._reconcile),
            ("directory", self._directory),
        )

    @property
    def node_id(self) -> str:
        return self._node.config.node_id

    def _gauge(self, name: str, documentation: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=["node", *labels])

    def _counter(self, name: str, documentation: str, *labels: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, documentation, labels=["node", *labels])

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        d = self._node.description
        info = self._gauge("tongban_node_info", "This node: its division and software version.", "division", "version")
        info.add_metric([self.node_id, d.division_code, d.software_version], 1)
        yield info
        up = self._gauge(
            "tongban_metrics_up", "1 if this part of the metrics was read, 0 if reading it failed.", "part"
        )
        for part, read in self._parts:
            try:
                families = list(read(now))
            except Exception as exc:  # noqa: BLE001 - a scrape must still answer; logged by type only
                code = exc.code if isinstance(exc, GatewayError) else type(exc).__name__
                log.warning("metrics: reading %s failed (%s)", part, code)
                up.add_metric([self.node_id, part], 0)
                continue
            up.add_metric([self.node_id, part], 1)
            yield from families
        yield up

    # --- parts ------------------------------------------------------------------------------------

    def _outbox(self, now: datetime) -> Iterable[Metric]:
        messages = self._gauge(
            "tongban_outbox_messages", "Outbox messages by peer and status (queued, delivered, dead).", "peer", "status"
        )
        for (peer, status), n in sorted(outbox.counts(self._node.engine).items()):
            messages.add_metric([self.node_id, peer, status.value], n)
        oldest = self._gauge(
            "tongban_outbox_oldest_queued_age_seconds",
            "Age of the oldest message still queued for a peer (peers with queued messages only).",
            "peer",
        )
        query = (
            select(outbox_table.c.peer, func.min(outbox_table.c.created_at))
            .where(outbox_table.c.status == outbox.Status.QUEUED.value)
            .group_by(outbox_table.c.peer)
            .order_by(outbox_table.c.peer)
        )
        with self._node.engine.connect() as conn:
            for peer, created in conn.execute(query):
                oldest.add_metric([self.node_id, peer], max(0.0, (now - _utc(created)).total_seconds()))
        return [messages, oldest]

    def _delivery_counts(self, now: datetime) -> Iterable[Metric]:
        if self._delivery is None:
            return []
        snapshot = self._delivery.metrics.snapshot()
        outcomes = self._counter(
            "tongban_delivery_outcomes",
            "Delivery attempts by this process since it started, by outcome (delivered, retried, dead).",
            "outcome",
        )
        for outcome in DELIVERY_OUTCOMES:
            outcomes.add_metric([self.node_id, outcome], snapshot.get(outcome, 0))
        failures = self._counter(
            "tongban_delivery_failures",
            "Failed delivery attempts by this process since it started, by reason code.",
            "reason",
        )
        for name, n in sorted(snapshot.items()):
            if name.startswith("failed."):
                failures.add_metric([self.node_id, name.removeprefix("failed.")], n)
        return [outcomes, failures]

    def _refusals(self, now: datetime) -> Iterable[Metric]:
        if self._receiver is None:
            return []
        refusals = self._counter(
            "tongban_receive_refusals",
            "Envelopes this process refused since it started, by the receiver's error code.",
            "reason",
        )
        for code, n in sorted(self._receiver.refusal_counts().items()):
            refusals.add_metric([self.node_id, code], n)
        return [refusals]

    def _cases(self, now: datetime) -> Iterable[Metric]:
        by_state = self._gauge(
            "tongban_cases",
            "Cross-province cases by this node's side, programme and state.",
            "side",
            "programme",
            "status",
        )
        query = (
            select(cases.c.side, cases.c.programme, cases.c.status, func.count())
            .group_by(cases.c.side, cases.c.programme, cases.c.status)
            .order_by(cases.c.side, cases.c.programme, cases.c.status)
        )
        with self._node.engine.connect() as conn:
            for side, programme, status, n in conn.execute(query):
                by_state.add_metric([self.node_id, side, programme, status], n)
            alerts = conn.execute(select(func.count()).select_from(case_alerts)).scalar_one()
        raised = self._counter(
            "tongban_case_overdue_alerts",
            "Overdue steps (督办) this node has recorded, once per case, step and due day.",
        )
        raised.add_metric([self.node_id], alerts)
        return [by_state, raised]

    def _overdue_cases(self, now: datetime) -> Iterable[Metric]:
        overdue = self._gauge(
            "tongban_cases_overdue",
            "Open cases with at least one overdue step, by side and programme.",
            "side",
            "programme",
        )
        for (side, programme), n in sorted(self._overdue_counts(now).items()):
            overdue.add_metric([self.node_id, side, programme], n)
        return [overdue]

    def _overdue_counts(self, now: datetime) -> dict[tuple[str, str], int]:
        with self._lock:
            cached = self._overdue
        if cached is not None and time.monotonic() - cached[0] < self._overdue_every:
            return cached[1]
        counts: dict[tuple[str, str], int] = {}
        for item in inbox(CaseStore(self._node.engine, self._node.keyring), china_date(now)):
            key = (item.side.value, item.programme.value)
            counts[key] = counts.get(key, 0) + (1 if item.overdue else 0)
        with self._lock:
            self._overdue = (time.monotonic(), counts)
        return counts

    def _reconcile(self, now: datetime) -> Iterable[Metric]:
        with self._node.engine.connect() as conn:
            period = conn.execute(
                select(reconcile_findings.c.period).order_by(reconcile_findings.c.created_at.desc()).limit(1)
            ).scalar()
        if period is None:
            return []
        by_code: dict[str, int] = {}
        for (code, _peer), n in findings.counts(self._node.engine, period).items():
            by_code[code] = by_code.get(code, 0) + n
        found = self._gauge(
            "tongban_reconcile_findings", "Findings of the latest reconciled period, by finding code.", "period", "code"
        )
        for code, n in sorted(by_code.items()):
            found.add_metric([self.node_id, period, code], n)
        bands = self._gauge(
            "tongban_match_outcomes",
            "Children linked in the latest reconciled period, by match band.",
            "period",
            "band",
        )
        for band in MATCH_BANDS:
            bands.add_metric([self.node_id, period, band.value], by_code.get(band.value, 0))
        return [found, bands]

    def _directory(self, now: datetime) -> Iterable[Metric]:
        """From the last good bundle (``[trust] last_good``), which the trust store writes only after
        verifying it: its manifest is read, not verified again (the node re-verifies it whenever it
        loads it; a metric only reports). Its modification time is when the node adopted it."""
        path = self._node.config.last_good_directory
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []  # not enrolled, or no directory accepted yet
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._manifest
        if cached is None or cached[0] != key:
            cached = (key, Manifest.from_payload(Bundle.parse(path.read_bytes()).manifest.payload))
            with self._lock:
                self._manifest = cached
        manifest = cached[1]
        adopted = datetime.fromtimestamp(stat.st_mtime, UTC)
        version = self._gauge("tongban_directory_version", "Version of the directory this node holds.")
        version.add_metric([self.node_id], manifest.version)
        age = self._gauge("tongban_directory_age_seconds", "Seconds since this node adopted the directory it holds.")
        age.add_metric([self.node_id], max(0.0, (now - adopted).total_seconds()))
        expiry = self._gauge(
            "tongban_directory_expiry_seconds",
            "Seconds until the directory this node holds expires (negative once it has).",
        )
        expiry.add_metric([self.node_id], (manifest.expires - now).total_seconds())
        return [version, age, expiry]


# --- the HTTP endpoint ------------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never keeps the process alive


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the node's log is for its own events (and a scraper's address is not ours)."""


def _split(listen: str) -> tuple[str, str, int]:
    """``HOST:PORT`` → (host as written, host to bind, port); ``ConfigError`` if it is not that."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"metrics.listen must be HOST:PORT, not {listen!r}")
    return host, host.strip("[]"), int(port)


class MetricsServer:
    """``/metrics`` of ``node`` over HTTP on ``listen`` (``HOST:PORT``; port 0 picks a free one).

    The socket is bound here, so a bad or busy address fails before anything serves
    (``ConfigError``); :meth:`start` serves in a background thread and :meth:`stop` closes (both
    idempotent). :attr:`address` is the bound ``HOST:PORT``; :attr:`registry` holds this node's
    collector and the process collector (CPU, memory, open files), never the global registry.
    Other paths answer 404. ``delivery``, ``receiver``, ``clock`` and ``overdue_every``: see
    :class:`NodeCollector`.
    """

    def __init__(
        self,
        node: Node,
        listen: str,
        *,
        delivery: DeliveryCounts | None = None,
        receiver: RefusalCounts | None = None,
        clock: Callable[[], datetime] = _utc_now,
        overdue_every: float = 60.0,
    ) -> None:
        shown, host, port = _split(listen)
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = NodeCollector(
            node, delivery=delivery, receiver=receiver, clock=clock, overdue_every=overdue_every
        )
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        metrics_app = make_wsgi_app(self.registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == PATH:
                response: Iterable[bytes] = metrics_app(environ, start_response)
                return response
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"not found: the metrics are at {PATH}\n".encode()]

        server_class = _Server6 if ":" in host else _Server
        try:
            self._httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        except (OSError, OverflowError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise ConfigError(f"cannot listen on {listen} (metrics.listen): {detail}") from None
        self.address = f"{shown}:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="tongban-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics of node %s on http://%s%s", self.collector.node_id, self.address, PATH)

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()
