"""The benchmarks run end to end and write the JSON they promise (bench/README.md).

Speeds are measured by ``python -m bench.store`` / ``bench.directory`` / ``bench.exchange``, never
asserted here: these tests only check that a tiny run works, that every figure is a positive
number and that the PostgreSQL part either ran or says why not; and that the README's performance
table is what ``python -m bench.readme_table`` generates from the committed results. Nothing from
a run's output is printed unless it fails (and it holds no records, only counts and rates).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench import readme_table
from gateway.cli import bench as bench_cli
from gateway.cli import main
from gateway.errors import BenchmarksUnavailable

ROOT = Path(__file__).resolve().parent.parent
ENV_PG = "TONGBAN_TEST_POSTGRES_URL"
LOCAL_PG = "postgresql://127.0.0.1:5432/test"
ROWS = 300

TOP_KEYS = {
    "benchmark",
    "timestamp",
    "machine",
    "params",
    "expected",
    "synth",
    "primitives",
    "sqlite",
    "postgresql",
    "memory",
}
PRIMITIVES = {
    "aes_gcm_seal",
    "hmac_sha256",
    "keyring_seal",
    "keyring_blind_index",
    "json_dumps_record",
    "row_prepare",
}
DB_TIMINGS = {
    "raw_insert",
    "add_many",
    "raw_keyset_read",
    "iter_period",
    "raw_point_select",
    "find_by_id_number",
}
DB_RATIOS = {
    "add_many_to_raw_insert",
    "iter_period_to_raw_keyset_read",
    "find_by_id_number_to_raw_point_select",
}


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _check_timing(timing: dict[str, Any], what: str, repeats: int) -> None:
    assert {"per_s", "unit", "items", "median_s", "samples_s"} <= timing.keys(), what
    assert _positive(timing["per_s"]), what
    assert _positive(timing["items"]), what
    assert len(timing["samples_s"]) == repeats, what
    assert all(_positive(s) for s in timing["samples_s"]), what


def _check_database(section: dict[str, Any], what: str, repeats: int) -> None:
    assert section["rows"] == ROWS
    for name in DB_TIMINGS:
        _check_timing(section[name], f"{what}.{name}", repeats)
    assert section["add_many"]["items"] == ROWS
    assert section["iter_period"]["items"] == ROWS
    assert section["find_by_id_number"]["items"] == section["lookups"]
    assert section["ratios"].keys() == DB_RATIOS
    assert all(_positive(r) for r in section["ratios"].values()), section["ratios"]
    assert _positive(section["memory"]["add_many_peak_python_bytes"])


def _leftover_databases(pid: int) -> list[str]:
    admin = os.environ.get(ENV_PG) or LOCAL_PG
    with psycopg.connect(admin, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"tongban_bench_{pid}_%",)
        ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.mark.slow
def test_quick_store_benchmark_writes_complete_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.store", "--quick", "--rows", str(ROWS), "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "figure" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["store.json"]  # no .tmp left behind

    result = json.loads((tmp_path / "store.json").read_text(encoding="utf-8"))
    assert result.keys() >= TOP_KEYS
    assert result["benchmark"] == "store"
    assert result["params"]["rows"] == ROWS
    assert result["params"]["quick"] is True
    repeats = result["params"]["repeats"]
    assert repeats == 3

    machine = result["machine"]
    assert machine["cpu_model"]
    assert _positive(machine["cpu_count"])
    assert machine["python"]
    assert machine["sqlite"]
    assert {"cryptography", "SQLAlchemy", "grpcio"} <= machine["packages"].keys()

    _check_timing(result["synth"]["generate"], "synth.generate", repeats)
    assert result["synth"]["records_per_household"] >= 1
    assert result["synth"]["generate"]["items"] >= ROWS

    primitives = result["primitives"]
    for name in PRIMITIVES:
        _check_timing(primitives[name], f"primitives.{name}", repeats)
    assert _positive(primitives["row_prepare_predicted_per_s"])

    _check_database(result["sqlite"], "sqlite", repeats)
    if result["postgresql"] is None:
        # Only allowed without a server; a configured server must be benchmarked.
        assert not os.environ.get(ENV_PG), result.get("postgresql_reason")
        assert isinstance(result["postgresql_reason"], str)
        assert result["postgresql_reason"]
    else:
        _check_database(result["postgresql"], "postgresql", repeats)
        assert machine["postgresql_server"]
        assert _leftover_databases(result["params"]["pid"]) == []

    assert _positive(result["memory"]["records_list_python_bytes"])
    assert _positive(result["memory"]["max_rss_bytes"])


@pytest.mark.slow
def test_no_postgres_records_the_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.store",
            "--rows",
            "50",
            "--repeats",
            "1",
            "--no-postgres",
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "store.json").read_text(encoding="utf-8"))
    assert result["postgresql"] is None
    assert result["postgresql_reason"] == "--no-postgres"
    assert result["sqlite"]["add_many"]["items"] == 50


@pytest.mark.slow
def test_directory_benchmark_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.directory", "--quick", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "directory.json").read_text(encoding="utf-8"))
    assert result["nodes"] == 300
    assert _positive(result["accept"]["seconds"])
    assert _positive(result["accept_peak_python_bytes"])
    assert _positive(result["reference"]["ed25519_verify"]["per_s"])


# --- bench.exchange ---------------------------------------------------------------------------------

EXCHANGE_RECORDS = 200
EXCHANGE_PARTS = {
    "ed25519_sign_envelope",
    "ed25519_verify_envelope",
    "protobuf_batch",
    "minimise_check_payload",
    "aes_gcm_seal_envelope",
    "hmac_id_token",
    "bloom_encode_name_birth",
    "grpc_mtls_stream",
}
EXCHANGE_DB_PARTS = {"outbox_insert", "inbox_insert", "sealed_record_read"}


def _check_exchange_database(section: dict[str, Any], what: str) -> None:
    e2e = section["end_to_end"]
    _check_timing(e2e, f"{what}.end_to_end", 1)
    assert e2e["items"] == EXCHANGE_RECORDS
    assert all(_positive(s) for s in e2e["queue_s"] + e2e["deliver_s"]), what
    assert section["parts"].keys() == EXCHANGE_DB_PARTS
    for name, part in section["parts"].items():
        _check_timing(part, f"{what}.{name}", 1)
        assert _positive(part["records_per_s"]), name
    _check_timing(section["iter_period"], f"{what}.iter_period", 1)
    assert section["slowest_part"]["name"] in EXCHANGE_PARTS | EXCHANGE_DB_PARTS
    assert _positive(section["ratio"])
    assert isinstance(section["goal_met"], bool)
    # One batch and the roster manifest, every one delivered with a receipt verified afterwards.
    assert section["envelopes_per_roster"] == 2
    assert section["checks"] == {"outbox_rows_with_verified_receipt": 2, "inbox_rows": 2}


@pytest.mark.slow
def test_quick_exchange_benchmark_writes_complete_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.exchange",
            "--quick",
            "--records",
            str(EXCHANGE_RECORDS),
            "--repeats",
            "1",
            "--memory-sizes",
            "100,300",
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "END TO END" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["exchange.json"]

    result = json.loads((tmp_path / "exchange.json").read_text(encoding="utf-8"))
    assert result["benchmark"] == "exchange"
    assert result["params"]["records"] == EXCHANGE_RECORDS
    assert result["params"]["batch_size"] == 1000
    assert result["envelope"]["notices"] == 1000
    assert result["parts"].keys() == EXCHANGE_PARTS
    for name, part in result["parts"].items():
        _check_timing(part, f"parts.{name}", 1)
        assert _positive(part["records_per_s"]), name
    for name, timing in result["references"].items():
        _check_timing(timing, f"references.{name}", 1)

    _check_exchange_database(result["sqlite"], "sqlite")
    if result["postgresql"] is None:
        assert not os.environ.get(ENV_PG), result.get("postgresql_reason")
        assert result["postgresql_reason"]
    else:
        _check_exchange_database(result["postgresql"], "postgresql")
        assert _leftover_databases(result["params"]["pid"]) == []

    memory = result["memory"]
    assert [r["records"] for r in memory["runs"]] == [100, 300]
    for run in memory["runs"]:
        assert _positive(run["peak_python_bytes"])
        assert run["peak_after_records"]
    assert _positive(memory["peak_growth"])
    assert isinstance(memory["flat"], bool)


# --- bench.readme_table ---------------------------------------------------------------------------

README_TEXT = "# Project\n\n## Performance\n\nProse.\n\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\n## Next\n"


def test_the_readme_table_is_generated_from_the_committed_results() -> None:
    assert readme_table.main(["--check"]) == 0, "run `python -m bench.readme_table` after `make bench`"


def test_the_readme_table_replaces_only_its_block_and_detects_drift(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / "bench" / "results").glob("*.json"):
        (results / path.name).write_bytes(path.read_bytes())
    readme = tmp_path / "README.md"
    readme.write_text(README_TEXT, encoding="utf-8")
    args = ["--readme", str(readme), "--results-dir", str(results)]

    assert readme_table.main([*args, "--check"]) == 1  # the block says "old"
    assert readme_table.main(args) == 0
    text = readme.read_text(encoding="utf-8")
    before, block, after = (
        text.partition(readme_table.BEGIN)[0],
        text[text.index(readme_table.BEGIN) : text.index(readme_table.END)],
        text.partition(readme_table.END)[2],
    )
    assert before == README_TEXT.partition(readme_table.BEGIN)[0]
    assert after == README_TEXT.partition(readme_table.END)[2]
    assert "| benchmark |" in block
    assert readme_table.main([*args, "--check"]) == 0

    store = json.loads((results / "store.json").read_text(encoding="utf-8"))
    store["sqlite"]["add_many"]["per_s"] *= 2  # a new result the table does not show yet
    (results / "store.json").write_text(json.dumps(store), encoding="utf-8")
    assert readme_table.main([*args, "--check"]) == 1

    readme.write_text("# Project without markers\n", encoding="utf-8")
    assert readme_table.main([*args, "--check"]) == 2


# --- bench.matching -------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_matching_benchmark_writes_complete_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.matching", "--quick", "--single-births", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "REFERENCE: ID-only join" in proc.stdout
    assert "GOAL" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["matching.json"]

    result = json.loads((tmp_path / "matching.json").read_text(encoding="utf-8"))
    assert result["benchmark"] == "matching"
    assert result["params"]["quick"] is True
    assert result["goal"] == {"f1": 0.99, "kind_recall": 0.95, "twins_auto_matched": 0}
    assert _positive(result["max_rss_bytes"])
    [run] = result["runs"]
    assert (run["rows"], run["overlap"]) == (2000, 0.7)
    assert run["pairs"] == 1400
    assert run["sibling_links"]["twin"] > 0
    _check_timing(run["reference"]["timing"], "reference", 1)
    assert 0 < run["reference"]["evaluation"]["overall"]["recall"] < 1
    if result["pipeline"] is None:  # `tongban match` not available: the reason is recorded
        assert result["pipeline_reason"]
        return
    _check_timing(run["match"], "match", 1)
    assert _positive(run["match_peak_python_bytes"])
    evaluation = run["evaluation"]
    assert {"overall", "stages", "kinds", "review", "sibling_auto_matched"} <= evaluation.keys()
    assert evaluation["stages"].keys() == {"exact", "fuzzy"}
    for name in ("precision", "recall", "f1"):
        assert 0 <= evaluation["overall"][name] <= 1
    assert {"clean", "homophone", "lunar_birthday", "id_mistyped"} <= evaluation["kinds"].keys()
    assert [name for name, k in evaluation["kinds"].items() if name != "non_overlap" and k["pairs"] == 0] == []
    assert isinstance(run["goal_met"], bool)
    assert isinstance(result["goal_met"], bool)
    # --single-births: `tongban match --household-register` and the ledger's own guess
    births = run["single_births"]
    assert births.keys() == {"ledger", "household"}
    register = births["household"]
    assert register["pipeline"].startswith("tongban match")
    assert register["single_births"] + sum(register["not_single"].values()) == 2000
    assert register["evaluation"]["sibling_auto_matched"].get("twin", 0) == 0
    assert register["evaluation"]["overall"]["f1"] > evaluation["overall"]["f1"]
    assert "SINGLE BIRTHS FROM THE HOUSEHOLD REGISTER" in proc.stdout


# --- tongban bench --------------------------------------------------------------------------------

# A stand-in benchmark for a fake checkout: records its name and arguments, fails when told to.
STUB = """import os, pathlib, sys
name = pathlib.Path(__file__).stem
with open("calls.txt", "a", encoding="utf-8") as f:
    f.write(" ".join([name, *sys.argv[1:]]) + "\\n")
sys.exit(3 if os.environ.get("FAIL_AT") == name else 0)
"""


@pytest.fixture
def fake_checkout(tmp_path: Path) -> Path:
    """A checkout whose bench/ modules are stubs (the real ones are run by the slow test below)."""
    checkout = tmp_path / "checkout"
    (checkout / "bench").mkdir(parents=True)
    (checkout / "bench" / "__init__.py").write_text("", encoding="utf-8")
    for name in (*bench_cli.BENCHMARKS, bench_cli.TABLE):
        (checkout / "bench" / f"{name}.py").write_text(STUB, encoding="utf-8")
    (checkout / "README.md").write_text(README_TEXT, encoding="utf-8")
    return checkout


def calls(checkout: Path) -> list[str]:
    path = checkout / "calls.txt"
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_tongban_bench_runs_each_benchmark_in_order_then_the_table(
    fake_checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--source", str(fake_checkout), "--quick", "--exchange-args=--million --repeats 1"]
    assert main(argv) == 0
    readme = fake_checkout / "README.md"
    assert calls(fake_checkout) == [
        "store --quick",
        "directory --quick",
        "exchange --quick --million --repeats 1",
        "matching --quick",
        f"readme_table --readme {readme}",
    ]
    out = capsys.readouterr().out
    for name in (*bench_cli.BENCHMARKS, bench_cli.TABLE, "total"):
        assert re.search(rf"^  {name} +\d+\.\d s$", out, re.MULTILINE), name


def test_tongban_bench_only_and_a_scratch_results_dir_leave_the_readme_alone(
    fake_checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / "results"
    argv = ["bench", "--source", str(fake_checkout), "--only", "matching", "directory", "--results-dir", str(scratch)]
    assert main(argv) == 0
    assert calls(fake_checkout) == [f"directory --results-dir {scratch}", f"matching --results-dir {scratch}"]
    assert "README table not regenerated" in capsys.readouterr().out

    (fake_checkout / "calls.txt").unlink()
    readme = tmp_path / "trial-README.md"
    argv = ["bench", "--source", str(fake_checkout), "--only", "matching", "--results-dir", str(scratch)]
    assert main([*argv, "--readme", str(readme)]) == 0
    assert calls(fake_checkout) == [
        f"matching --results-dir {scratch}",
        f"readme_table --readme {readme} --results-dir {scratch}",
    ]


def test_tongban_bench_stops_at_the_first_failure_with_its_exit_code(
    fake_checkout: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAIL_AT", "directory")
    assert main(["bench", "--source", str(fake_checkout)]) == 3
    assert [c.split()[0] for c in calls(fake_checkout)] == ["store", "directory"]  # no table from half a run
    assert "bench.directory failed (exit 3)" in capsys.readouterr().err


def test_tongban_bench_without_bench_says_where_to_run_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--source", str(tmp_path)]) == BenchmarksUnavailable.exit_code == 78
    assert f"[{BenchmarksUnavailable.code}]" in capsys.readouterr().err
    with pytest.raises(BenchmarksUnavailable):  # an installed package without a checkout beside it
        bench_cli.find_checkout(tmp_path / "nowhere")
    assert bench_cli.find_checkout(None) == ROOT  # this checkout: gateway is imported from it


@pytest.mark.slow
def test_tongban_bench_quick_runs_a_real_benchmark_and_writes_a_table(tmp_path: Path) -> None:
    """`tongban bench --quick --only directory` from another directory: the real benchmark, its JSON
    in a scratch directory, a table in a scratch README; the committed results and README untouched."""
    committed = {p: p.read_bytes() for p in [ROOT / "README.md", *(ROOT / "bench" / "results").glob("*.json")]}
    results, readme = tmp_path / "results", tmp_path / "README.md"
    readme.write_text(README_TEXT, encoding="utf-8")
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "gateway", "bench", "--quick", "--only", "directory"),
            *("--results-dir", str(results), "--readme", str(readme)),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [p.name for p in results.iterdir()] == ["directory.json"]
    assert json.loads((results / "directory.json").read_text(encoding="utf-8"))["nodes"] == 300
    assert "| `bench.directory` | verifying a national directory of 300 nodes" in readme.read_text(encoding="utf-8")
    assert re.search(r"^  total +\d+\.\d s$", proc.stdout, re.MULTILINE)
    assert {p: p.read_bytes() for p in committed} == committed
