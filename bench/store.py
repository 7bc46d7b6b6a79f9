"""Storage and synthetic-data throughput, each figure beside a reference measured in the same run.

Run ``python -m bench.store [--quick] [--rows N] [--no-postgres] [--results-dir DIR]``; see
``bench/README.md`` for what each figure means. Measured (median of ``--repeats`` runs):

1. ``generate()`` of the synthetic ledger (records/s) and records per household;
2. reference primitives: AES-GCM seal of a 600-byte plaintext, HMAC-SHA256, ``json.dumps`` of
   ``record_to_json``, and our wrappers of them (``DataKeyring.seal``, ``blind_index``, the
   per-record JSON + seal + index work of ``add_many``);
3. per database (SQLite file in a temporary directory; PostgreSQL in a throwaway database): a raw
   SQLAlchemy Core insert of rows of the same shape and size into a scratch copy of
   ``child_records`` (same columns, keys and indexes), then ``SqlChildRepository.add_many``,
   ``iter_period`` and ``find_by_id_number`` beside raw reads of the scratch table, and the peak
   Python memory of one ``add_many`` of the whole set.

Records are generated into a list before any insert is timed, so generation is not billed to
the database figures. Nothing personal is printed: the output holds counts and rates only.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from random import Random
from typing import Any

import psycopg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Engine,
    Table,
    insert,
    select,
    text,
)
from sqlalchemy.exc import SQLAlchemyError

from bench.common import (
    Case,
    empty,
    find_postgres,
    format_table,
    freeze_heap,
    machine_info,
    max_rss_bytes,
    measure,
    measure_interleaved,
    mib,
    postgres_server_version,
    scratch_copy,
    si,
    throwaway_database,
    traced_peak,
    write_result,
)
from gateway.cli.synth import DEFAULT_REGISTRATION, DEFAULT_RESIDENCE
from gateway.domain.codec import record_to_json
from gateway.domain.divisions import DivisionTable
from gateway.domain.period import MonitoringPeriod
from gateway.domain.records import ChildRecord
from gateway.domain.rules import RuleBook, load_rules
from gateway.errors import StorageError
from gateway.store.db import make_engine, migrate
from gateway.store.keyring import DataKeyring
from gateway.store.repository import SqlChildRepository
from gateway.store.schema import child_records
from gateway.synth.generator import SynthSpec, generate, generate_households

NAME = "store"
DEFAULT_ROWS = 20_000
QUICK_ROWS = 2_000
MIN_ROWS = 10  # enough that some records have an ID number to look up
REPEATS = 3
BATCH = 1_000
LOOKUPS = 500
SEED = 2026
PERIOD = "2025Q4"  # fixed, so the generated set does not depend on today's date
PLAINTEXT_BYTES = 600  # about the size of one record's JSON (measured: see primitives.record_json_bytes)
INDEX_PURPOSE = b"child_records.id_number"  # as the repository's blind index
SCRATCH = "bench_raw_rows"

#: Figures for the project's 2-core reference machine (medians, ±30%). Printed beside the
#: primitives measured here only as a sanity check of the host (a busy neighbour shows up there);
#: every ratio of *our* code is against a reference measured in the same run.
EXPECTED: dict[str, float] = {
    "aes_gcm_seal": 750_000,
    "hmac_sha256": 300_000,
    "sqlite_raw_insert": 90_000,
    "postgresql_raw_insert": 35_000,
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- synthetic data ---------------------------------------------------------------------------------


MEMORY_SAMPLE = 2_000  # records whose Python memory is traced (tracing all would take too long)


@dataclass(frozen=True)
class Population:
    spec: SynthSpec  # ``households`` is the number needed for ``len(records)`` records
    records: list[ChildRecord]
    bytes_per_record: float  # Python memory a pre-generated record holds (tracemalloc, on a sample)

    @property
    def list_bytes(self) -> int:
        """About the Python memory the whole pre-generated list holds."""
        return round(self.bytes_per_record * len(self.records))


def _spec(households: int) -> SynthSpec:
    return SynthSpec(
        seed=SEED,
        period=MonitoringPeriod.parse(PERIOD),
        residence_divisions=DEFAULT_RESIDENCE,
        registration_divisions=DEFAULT_REGISTRATION,
        households=households,
    )


def _first(rows: int, table: DivisionTable, rules: RuleBook) -> tuple[list[ChildRecord], int]:
    """The first ``rows`` records, and how many households they take."""
    out: list[ChildRecord] = []
    households = 0
    # households=rows is an upper bound: every household has at least one child.
    for household in generate_households(_spec(households=rows), table, rules):
        out.extend(household.children)
        households += 1
        if len(out) >= rows:
            break
    del out[rows:]
    return out, households


def pregenerate(rows: int, table: DivisionTable, rules: RuleBook) -> Population:
    """Untimed: the records the database figures store, and the memory one record holds
    (``tracemalloc`` of a separate run of the first :data:`MEMORY_SAMPLE` records)."""
    sample = min(rows, MEMORY_SAMPLE)
    _, _, held = traced_peak(lambda: _first(sample, table, rules))
    records, households = _first(rows, table, rules)
    return Population(_spec(households), records, held / sample)


def bench_synth(pop: Population, table: DivisionTable, rules: RuleBook, repeats: int) -> dict[str, Any]:
    timing = measure(lambda: _count(generate(pop.spec, table, rules)), repeats=repeats, unit="records/s")
    return {
        "generate": timing.to_json(),
        "households": pop.spec.households,
        "records_per_household": timing.items / pop.spec.households,
    }


def _count(items: Iterable[object]) -> int:
    return sum(1 for _ in items)


# --- primitives -------------------------------------------------------------------------------------


def _record_json(record: ChildRecord) -> bytes:
    # Exactly as SqlChildRepository._row encodes a record before sealing it.
    return json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _context(period: str, record_id: str) -> bytes:
    # The shape of SqlChildRepository._context (same length, so the same AAD cost).
    return b"child_records\x00" + period.encode("utf-8") + b"\x00" + record_id.encode("utf-8")


def bench_primitives(records: Sequence[ChildRecord], keyring: DataKeyring, repeats: int) -> dict[str, Any]:
    n_ops = max(20_000, 5 * len(records))
    plaintext = secrets.token_bytes(PLAINTEXT_BYTES)
    context = _context(PERIOD, records[0].record_id)
    aad = b"tongban.at-rest.v1\x00" + keyring.active_key_id.encode("ascii") + b"\x00" + context
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    hmac_key = secrets.token_bytes(32)
    id_number = next((r.id_number for r in records if r.id_number), "110101201001010011")
    message = INDEX_PURPOSE + b"\x00" + id_number.encode("utf-8")

    def aes() -> int:
        for _ in range(n_ops):
            nonce = secrets.token_bytes(12)
            aead.encrypt(nonce, plaintext, aad)
        return n_ops

    def mac() -> int:
        for _ in range(n_ops):
            hmac.new(hmac_key, message, hashlib.sha256).digest()
        return n_ops

    def seal() -> int:
        for _ in range(n_ops):
            keyring.seal(plaintext, context=context)
        return n_ops

    def index() -> int:
        for _ in range(n_ops):
            keyring.blind_index(id_number, purpose=INDEX_PURPOSE)
        return n_ops

    def dumps() -> int:
        for record in records:
            json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":"))
        return len(records)

    def prepare() -> int:
        # The per-record work of add_many before the database: encode, seal, blind-index.
        for record in records:
            keyring.seal(_record_json(record), context=_context(PERIOD, record.record_id))
            if record.id_number:
                keyring.blind_index(record.id_number, purpose=INDEX_PURPOSE)
        return len(records)

    sizes = sorted(len(_record_json(r)) for r in records)
    figures = measure_interleaved(
        {
            "aes_gcm_seal": Case(aes),
            "keyring_seal": Case(seal),
            "hmac_sha256": Case(mac),
            "keyring_blind_index": Case(index),
            "json_dumps_record": Case(dumps),
            "row_prepare": Case(prepare, unit="records/s"),
        },
        repeats=repeats,
    )
    out: dict[str, Any] = {name: t.to_json() for name, t in figures.items()}
    # What the parts predict for row_prepare: one JSON encoding, one seal, one index per record.
    parts = (figures["json_dumps_record"], figures["keyring_seal"], figures["keyring_blind_index"])
    out["row_prepare_predicted_per_s"] = 1 / sum(1 / t.rate for t in parts)
    out["plaintext_bytes"] = PLAINTEXT_BYTES
    out["record_json_bytes"] = {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]}
    return out


# --- databases --------------------------------------------------------------------------------------


def raw_row(record: ChildRecord, period: str, key_id: str) -> dict[str, Any]:
    """A ``child_records`` row of the same shape and size as the repository writes, with random
    bytes where the repository puts the index and the ciphertext (nonce + JSON + tag)."""
    size = 12 + len(_record_json(record)) + 16
    return {
        "record_id": record.record_id,
        "period": period,
        "kind": record.kind.value,
        "registration_division": record.registration_division,
        "residence_division": record.residence_division,
        "id_index": secrets.token_bytes(32) if record.id_number else None,
        "key_id": key_id,
        "pii_sealed": secrets.token_bytes(size),
        "source": record.provenance.source[:200],
        "source_row": record.provenance.source_row,
        "imported_at": record.provenance.imported_at.astimezone(UTC),
    }


def _analyze(engine: Engine, table: Table) -> None:
    # PostgreSQL: fresh statistics now, rather than autovacuum's whenever (which could land in a
    # timed run). SQLite plans these queries from the indexes alone.
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE " + engine.dialect.identifier_preparer.format_table(table)))


def insert_raw(engine: Engine, table: Table, rows: Sequence[dict[str, Any]], batch: int) -> int:
    with engine.begin() as conn:
        for start in range(0, len(rows), batch):
            conn.execute(insert(table), rows[start : start + batch])
    return len(rows)


def _scan_raw(engine: Engine, table: Table, period: str, batch: int) -> int:
    # The same keyset pagination as SqlChildRepository.iter_period, without opening the rows.
    last, seen = "", 0
    while True:
        query = (
            select(table)
            .where(table.c.period == period, table.c.record_id > last)
            .order_by(table.c.record_id)
            .limit(batch)
        )
        with engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return seen
        seen += len(rows)
        last = rows[-1].record_id


def _point_raw(engine: Engine, table: Table, period: str, indexes: Sequence[bytes]) -> int:
    found = 0
    for index in indexes:
        query = select(table).where(table.c.period == period, table.c.id_index == index)
        with engine.connect() as conn:
            found += conn.execute(query).first() is not None
    return _all_found(found, len(indexes))


def _lookup(repo: SqlChildRepository, id_numbers: Sequence[str], period: str) -> int:
    found = sum(repo.find_by_id_number(n, period=period) is not None for n in id_numbers)
    return _all_found(found, len(id_numbers))


def _all_found(found: int, wanted: int) -> int:
    if found != wanted:
        raise RuntimeError(f"found {found} of {wanted} looked-up rows")
    return found


def _expect(done: int, wanted: int, what: str) -> int:
    if done != wanted:
        raise RuntimeError(f"{what}: {done} rows, expected {wanted}")
    return done


def bench_database(
    engine: Engine, records: list[ChildRecord], keyring: DataKeyring, *, repeats: int, lookups: int
) -> dict[str, Any]:
    """Raw references and our repository on one (empty) database; the engine is the caller's."""
    n = len(records)
    migrate(engine)
    scratch = scratch_copy(child_records, SCRATCH)
    scratch.create(engine)
    raw_rows = [raw_row(r, PERIOD, keyring.active_key_id) for r in records]
    repo = SqlChildRepository(engine, keyring, batch_size=BATCH)
    rng = Random(SEED)
    lookup_ids = rng.choices([r.id_number for r in records if r.id_number], k=lookups)
    raw_indexes = rng.choices([row["id_index"] for row in raw_rows if row["id_index"] is not None], k=lookups)

    def run_add_many() -> int:
        return _expect(repo.add_many(records, period=PERIOD), n, "add_many")

    def run_iter_period() -> int:
        return _expect(_count(repo.iter_period(PERIOD)), n, "iter_period")

    # Each figure takes turns with its reference (see measure_interleaved).
    writes = measure_interleaved(
        {
            "raw_insert": Case(
                lambda: insert_raw(engine, scratch, raw_rows, BATCH), lambda: empty(engine, scratch), "rows/s"
            ),
            "add_many": Case(run_add_many, lambda: empty(engine, child_records), "rows/s"),
        },
        repeats=repeats,
    )
    _analyze(engine, scratch)
    _analyze(engine, child_records)
    reads = measure_interleaved(
        {
            "raw_keyset_read": Case(
                lambda: _expect(_scan_raw(engine, scratch, PERIOD, BATCH), n, "raw read"), unit="rows/s"
            ),
            "iter_period": Case(run_iter_period, unit="rows/s"),
            "raw_point_select": Case(lambda: _point_raw(engine, scratch, PERIOD, raw_indexes)),
            "find_by_id_number": Case(lambda: _lookup(repo, lookup_ids, PERIOD)),
        },
        repeats=repeats,
    )

    # Memory of one add_many of the whole set, untimed (tracemalloc slows Python down).
    empty(engine, child_records)
    _, peak, held = traced_peak(run_add_many)

    return {
        "rows": n,
        "batch_size": BATCH,
        "lookups": lookups,
        **{name: t.to_json() for name, t in (writes | reads).items()},
        "ratios": {
            "add_many_to_raw_insert": writes["add_many"].rate / writes["raw_insert"].rate,
            "iter_period_to_raw_keyset_read": reads["iter_period"].rate / reads["raw_keyset_read"].rate,
            "find_by_id_number_to_raw_point_select": (reads["find_by_id_number"].rate / reads["raw_point_select"].rate),
        },
        "memory": {"add_many_peak_python_bytes": peak, "add_many_held_python_bytes": held},
    }


def bench_sqlite(records: list[ChildRecord], keyring: DataKeyring, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tongban-bench-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            result = bench_database(engine, records, keyring, repeats=repeats, lookups=LOOKUPS)
        finally:
            engine.dispose()
    return {"database": "SQLite file in a temporary directory (WAL, synchronous=NORMAL)", **result}


def bench_postgres(
    records: list[ChildRecord], keyring: DataKeyring, repeats: int
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(results, server version, reason it was skipped); never raises for a PostgreSQL problem."""
    admin, where = find_postgres()
    if admin is None:
        return None, None, where
    try:
        version = postgres_server_version(admin)
        with throwaway_database(admin) as url:
            engine = make_engine(url)
            try:
                result = bench_database(engine, records, keyring, repeats=repeats, lookups=LOOKUPS)
            finally:
                engine.dispose()
    except (psycopg.Error, SQLAlchemyError, StorageError) as exc:
        return None, None, f"PostgreSQL failed during the benchmark: {type(exc).__name__}"
    return {"database": f"throwaway database on the {where}", **result}, version, None


# --- report -----------------------------------------------------------------------------------------


def _rate(t: dict[str, Any]) -> str:
    return f"{si(t['per_s'])} {t['unit']}"


def _vs(label: str, t: dict[str, Any]) -> str:
    return f"{label} {si(t['per_s'])}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    synth, prim = result["synth"], result["primitives"]
    rows: list[list[str]] = [
        ["synthetic data"],
        ["generate() (iterator consumed)", _rate(synth["generate"]), "-", "-"],
        ["records per household", f"{synth['records_per_household']:.2f}", "-", "-"],
        ["primitives (this run)"],
    ]
    for key, label in (("aes_gcm_seal", "AES-GCM seal, 600 B"), ("hmac_sha256", "HMAC-SHA256")):
        value = prim[key]["per_s"]
        rows.append([label, _rate(prim[key]), f"expected ~{si(EXPECTED[key])}", f"{value / EXPECTED[key]:.2f}"])
    for key, label, ref, ref_label in (
        ("keyring_seal", "DataKeyring.seal, 600 B", "aes_gcm_seal", "AES-GCM"),
        ("keyring_blind_index", "DataKeyring.blind_index", "hmac_sha256", "HMAC"),
    ):
        ratio = prim[key]["per_s"] / prim[ref]["per_s"]
        rows.append([label, _rate(prim[key]), _vs(ref_label, prim[ref]), f"{ratio:.2f}"])
    rows.append(["json.dumps(record_to_json(r))", _rate(prim["json_dumps_record"]), "-", "-"])
    predicted = prim["row_prepare_predicted_per_s"]
    rows.append(
        [
            "row prep: JSON + seal + index",
            _rate(prim["row_prepare"]),
            f"parts predict {si(predicted)}",
            f"{prim['row_prepare']['per_s'] / predicted:.2f}",
        ]
    )
    for db in ("sqlite", "postgresql"):
        section = result[db]
        if section is None:
            rows.append([f"{db}: skipped ({result.get(f'{db}_reason')})"])
            continue
        rows.append([f"{db} ({section['rows']} rows, batches of {section['batch_size']})"])
        raw = section["raw_insert"]
        expected = EXPECTED[f"{db}_raw_insert"]
        rows.append(
            [
                "raw Core insert (reference)",
                _rate(raw),
                f"expected ~{si(expected)}",
                f"{raw['per_s'] / expected:.2f}",
            ]
        )
        ratios = section["ratios"]
        rows += [
            [
                "add_many",
                _rate(section["add_many"]),
                _vs("raw insert", raw),
                f"{ratios['add_many_to_raw_insert']:.2f}",
            ],
            [
                "iter_period (decrypts)",
                _rate(section["iter_period"]),
                _vs("raw read", section["raw_keyset_read"]),
                f"{ratios['iter_period_to_raw_keyset_read']:.2f}",
            ],
            [
                f"find_by_id_number x{section['lookups']}",
                _rate(section["find_by_id_number"]),
                _vs("raw select", section["raw_point_select"]),
                f"{ratios['find_by_id_number_to_raw_point_select']:.2f}",
            ],
        ]
        peak = section["memory"]["add_many_peak_python_bytes"]
        held = result["memory"]["records_list_python_bytes"]
        rows.append(["add_many peak Python memory", mib(peak), f"records list {mib(held)}", f"{peak / held:.2f}"])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store",
        description="Storage and synthetic-data throughput, each figure beside a same-run reference.",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} rows instead of {DEFAULT_ROWS}")
    parser.add_argument("--rows", type=_rows, metavar="N", help=f"records to generate and store (at least {MIN_ROWS})")
    parser.add_argument("--repeats", type=_positive, default=REPEATS, help="runs per figure (median)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--results-dir", type=Path, metavar="DIR", help="where to write store.json (default: bench/results)"
    )
    args = parser.parse_args(argv)
    rows = args.rows or (QUICK_ROWS if args.quick else DEFAULT_ROWS)

    _say(f"generating {rows} synthetic records ...")
    table, rules = DivisionTable.load_default(), load_rules()
    pop = pregenerate(rows, table, rules)
    keyring = DataKeyring.generate()
    freeze_heap()
    _say("timing generate() ...")
    synth = bench_synth(pop, table, rules, args.repeats)
    _say("timing primitives ...")
    primitives = bench_primitives(pop.records, keyring, args.repeats)
    _say("timing SQLite ...")
    sqlite = bench_sqlite(pop.records, keyring, args.repeats)
    postgresql: dict[str, Any] | None
    pg_version: str | None
    pg_reason: str | None
    if args.no_postgres:
        postgresql, pg_version, pg_reason = None, None, "--no-postgres"
    else:
        _say("timing PostgreSQL ...")
        postgresql, pg_version, pg_reason = bench_postgres(pop.records, keyring, args.repeats)

    result: dict[str, Any] = {
        "machine": machine_info(postgresql_server=pg_version),
        "params": {
            "rows": rows,
            "quick": args.quick,
            "repeats": args.repeats,
            "batch_size": BATCH,
            "lookups": LOOKUPS,
            "seed": SEED,
            "period": PERIOD,
            "pid": os.getpid(),
        },
        "expected": EXPECTED,
        "synth": synth,
        "primitives": primitives,
        "sqlite": sqlite,
        "postgresql": postgresql,
    }
    if pg_reason is not None:
        result["postgresql_reason"] = pg_reason
    result["memory"] = {
        "records_list_python_bytes": pop.list_bytes,
        "record_python_bytes": pop.bytes_per_record,
        "record_bytes_sample": min(rows, MEMORY_SAMPLE),
        "max_rss_bytes": max_rss_bytes(),
    }

    path = write_result(NAME, result, results_dir=args.results_dir)
    m = result["machine"]
    print(
        f"bench.store: {rows} records, median of {args.repeats} | {m['cpu_model']}, {m['cpus_usable']} CPUs | "
        f"{m['python']} | SQLite {m['sqlite']} | PostgreSQL {m['postgresql_server'] or '-'}"
    )
    print(format_table(("figure", "value", "reference (same run)", "ratio"), table_rows(result)))
    print(f"max RSS {mib(result['memory']['max_rss_bytes'])}; results: {path}")
    return 0


def _rows(value: str) -> int:
    n = int(value)
    if n < MIN_ROWS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_ROWS}")
    return n


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


if __name__ == "__main__":
    raise SystemExit(main())
