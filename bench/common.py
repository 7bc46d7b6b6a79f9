"""Shared harness for the ``bench/`` benchmarks.

Speed and memory are measured here, never asserted by timed tests. Each benchmark times its
figures with :func:`measure` (``time.perf_counter``, the median of a few repeats), reports peak
memory with :func:`traced_peak` (``tracemalloc``: Python allocations only) and
:func:`max_rss_bytes` (the whole process), describes the machine with :func:`machine_info`, prints
a table with :func:`format_table` and writes ``bench/results/<name>.json`` with :func:`write_result`.

PostgreSQL is found as the test suite finds it (``TONGBAN_TEST_POSTGRES_URL``, else a local server
on 127.0.0.1:5432 with a database ``test``); benchmarks work in a throwaway database created and
dropped by :func:`throwaway_database`, never in an existing database's tables.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import platform
import re
import resource
import secrets
import sqlite3
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from psycopg import sql
from sqlalchemy import Column, Engine, Index, MetaData, Table, UniqueConstraint, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ENV_PG = "TONGBAN_TEST_POSTGRES_URL"
LOCAL_PG = "postgresql://127.0.0.1:5432/test"
PACKAGES = ("cryptography", "SQLAlchemy", "grpcio", "psycopg", "alembic")

T = TypeVar("T")


# --- timing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """``items`` processed per run, the wall-clock seconds of each run, and the unit of the rate."""

    items: int
    seconds: tuple[float, ...]
    unit: str

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        """Items per second of the median run."""
        return self.items / self.median_s

    def to_json(self) -> dict[str, Any]:
        return {
            "per_s": self.rate,
            "unit": self.unit,
            "items": self.items,
            "median_s": self.median_s,
            "samples_s": list(self.seconds),
        }


@dataclass(frozen=True)
class Case:
    """One thing to time: ``run`` returns how many items it processed (the same every time);
    ``setup`` runs untimed before each run (emptying a table, say)."""

    run: Callable[[], int]
    setup: Callable[[], None] | None = None
    unit: str = "ops/s"


def _once(case: Case) -> tuple[float, int]:
    if case.setup is not None:
        case.setup()
    gc.collect()
    start = time.perf_counter()
    done = case.run()
    return time.perf_counter() - start, done


def measure_interleaved(cases: Mapping[str, Case], *, repeats: int = 3) -> dict[str, Timing]:
    """Time several cases taking turns: round *r* runs every case once, in order, before round
    *r* + 1. A slow spell of a shared machine then falls on a figure and its reference alike
    instead of on whichever happened to run during it.

    The garbage collector stays on while timing — real work pays for it — but a collection runs
    before each run so one run's garbage is not billed to the next (call :func:`freeze_heap` once
    the long-lived inputs are built, or each of these collections walks all of them).
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    samples: dict[str, list[float]] = {name: [] for name in cases}
    items: dict[str, int] = {}
    for _ in range(repeats):
        for name, case in cases.items():
            seconds, done = _once(case)
            if items.setdefault(name, done) != done:
                raise RuntimeError(f"{name}: a run processed {done} items, an earlier one {items[name]}")
            if done <= 0:
                raise RuntimeError(f"{name}: the timed function processed nothing")
            samples[name].append(seconds)
    return {name: Timing(items[name], tuple(samples[name]), case.unit) for name, case in cases.items()}


def measure(
    run: Callable[[], int],
    *,
    repeats: int = 3,
    setup: Callable[[], None] | None = None,
    unit: str = "ops/s",
) -> Timing:
    """Time ``run`` ``repeats`` times and keep every sample (see :func:`measure_interleaved`)."""
    return measure_interleaved({"run": Case(run, setup, unit)}, repeats=repeats)["run"]


def freeze_heap() -> None:
    """Collect garbage, then move every object alive now (loaded tables, pre-generated records)
    out of the collector's sight (``gc.freeze``), so later collections do not walk them again."""
    gc.collect()
    gc.freeze()


# --- memory -----------------------------------------------------------------------------------------


def traced_peak(fn: Callable[[], T]) -> tuple[T, int, int]:
    """Run ``fn`` under ``tracemalloc``; returns its result, the peak of Python memory allocated
    during the call above what was allocated when it started, and what it still held at the end
    (both bytes). Allocations made before the call (a pre-built list, say) are not counted."""
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        gc.collect()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        result = fn()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        if started_here:
            tracemalloc.stop()
    return result, max(0, peak - base), max(0, current - base)


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes; Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


# --- the machine --------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _openssl_version() -> str:
    return str(openssl_backend.openssl_version_text())


def machine_info(*, postgresql_server: str | None = None) -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, OS, Python, databases, library versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "postgresql_server": postgresql_server,
        "openssl (cryptography)": _openssl_version(),
        "packages": {name: _package_version(name) for name in PACKAGES},
    }


# --- PostgreSQL -------------------------------------------------------------------------------------


def redact(url: str) -> str:
    """A database URL with its password hidden (safe to print and to store in results)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable URL>"


def find_postgres() -> tuple[str | None, str]:
    """The admin URL of a PostgreSQL server to benchmark on, or ``None`` and why not."""
    url = os.environ.get(ENV_PG) or LOCAL_PG
    try:
        with psycopg.connect(url, connect_timeout=2):
            return url, f"server at {redact(url)}"
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        origin = ENV_PG if os.environ.get(ENV_PG) else "the local default"
        return None, f"no PostgreSQL at {redact(url)} ({origin}): {type(exc).__name__}: {first}"


def postgres_server_version(url: str) -> str:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def _with_db(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


@contextmanager
def throwaway_database(admin_url: str, prefix: str = "tongban_bench") -> Iterator[str]:
    """Create a fresh database on the server of ``admin_url``, yield its URL, drop it afterwards
    (``WITH (FORCE)``, so leftover connections do not keep it alive)."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_db(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- output -----------------------------------------------------------------------------------------


def scratch_copy(table: Table, name: str) -> Table:
    """A copy of ``table`` under ``name`` for raw-speed parts: the same columns, primary key, unique
    constraints and indexes (under names of their own: PostgreSQL names are per schema)."""
    columns = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable) for c in table.columns]
    extras: list[Any] = []
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            names = [c.name for c in constraint.columns]
            extras.append(UniqueConstraint(*names, name=f"uq_{name}_{'_'.join(names)}"))
    for index in table.indexes:
        names = [c.name for c in index.columns]
        extras.append(Index(f"ix_{name}_{'_'.join(names)}", *names, unique=bool(index.unique)))
    return Table(name, MetaData(), *columns, *extras)


def empty(engine: Engine, *tables: Table) -> None:
    """Delete every row of ``tables`` in one transaction (``TRUNCATE`` on PostgreSQL)."""
    with engine.begin() as conn:
        for table in tables:
            if engine.dialect.name == "postgresql":
                conn.execute(text("TRUNCATE TABLE " + engine.dialect.identifier_preparer.format_table(table)))
            else:
                conn.execute(delete(table))


def si(value: float, unit: str = "") -> str:
    """``14300 -> '14.3k'``: three significant figures with a k/M suffix."""
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}{unit}"
    return f"{value:.3g}{unit}"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f} MiB"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; a row of one cell is a section title."""
    width = [len(h) for h in header]
    for row in rows:
        if len(row) > 1:
            width = [max(w, len(cell)) for w, cell in zip(width, row, strict=True)]
    rule = "  ".join("-" * w for w in width)
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, width, strict=True)), rule]
    for row in rows:
        if len(row) == 1:
            lines.append(f"[{row[0]}]")
        else:
            cells = [row[0].ljust(width[0])] + [c.rjust(w) for c, w in zip(row[1:], width[1:], strict=True)]
            lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def write_result(name: str, data: dict[str, Any], *, results_dir: Path | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` (default ``bench/results``) with a UTC timestamp.

    Written to a ``.tmp`` file beside it and renamed into place, so a reader never sees half a file.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise ValueError(f"not a usable result name: {name!r}")
    directory = RESULTS_DIR if results_dir is None else results_dir
    directory.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), **data}
    path = directory / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
