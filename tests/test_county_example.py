"""The runnable examples of docs/county-integration.md run, as a county developer would run them.

The examples read the demo's summary (``tongban demo --serve --json``) for a node's county API
address and the period, and take their tokens from the environment: the first, a ``county_system``
and a ``registration_staff`` token of 南部县; the second, a ``case_officer`` token of 两江新区, which
opens a case. Here real ``cq-liangjiang`` and ``sc-nanbu`` nodes serve their county APIs on
127.0.0.1 (with a case waiting in 南部县's inbox and match results stored for the first), the
summary is written in the demo's shape, and each block is run in a fresh interpreter, unchanged.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.county import auth
from gateway.county.permissions import Role
from gateway.reconcile import store as findings_store
from gateway.trust.store import utc_now
from tests.test_cases_service import FILES, orphan_draft
from tests.test_county_calls import DIVISIONS, LJ, NB, PERIOD, Pair, _findings, pair, second_db

__all__ = ["pair", "second_db"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "county-integration.md"
MARKER = "<!-- example: county_example.py"
OPEN_CASE_MARKER = "<!-- example: open_case_example.py"


def example_code(marker: str = MARKER) -> str:
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(marker) :]
    block = re.search(r"```python\n(.*?)```", after, flags=re.S)
    assert block is not None, "the example block follows its marker"
    return block.group(1)


def _summary(pair: Pair, path: Path) -> Path:
    nodes = [{"id": node_id, "division": DIVISIONS[node_id], "county": n.address} for node_id, n in pair.nodes.items()]
    path.write_text(json.dumps({"period": PERIOD, "nodes": nodes}), encoding="utf-8")
    return path


def _run(code: str, tmp_path: Path, name: str, env: dict[str, str]) -> str:
    script = tmp_path / name
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_integration_example_runs_against_a_node(pair: Pair, tmp_path: Path) -> None:
    nb, lj = pair.nodes[NB], pair.nodes["cq-liangjiang"]
    case_id = lj.parts.service().accept(orphan_draft(51, FILES), FILES, utc_now())
    pair.settle()
    with nb.node.engine.begin() as conn:
        findings_store.replace(conn, PERIOD, _findings(), now=datetime.now(UTC))
    summary = _summary(pair, tmp_path / "summary.json")
    system, _ = auth.create(nb.node.engine, role=Role.COUNTY_SYSTEM, label="example")
    staff, _ = auth.create(nb.node.engine, role=Role.REGISTRATION_STAFF, label="example")
    env = {"DEMO_SUMMARY": str(summary), "COUNTY_SYSTEM_TOKEN": system, "STAFF_TOKEN": staff}
    out = _run(example_code(), tmp_path, "county_example.py", env)
    assert out.startswith("sc-nanbu 511321 南部县\n")
    assert f"{PERIOD}: 4 links, 2 for a person to review" in out
    assert "findings: {'matched': 2, 'review': 2, 'gone_but_absent': 1}" in out
    assert f"case {case_id[:8]} orphan received" in out
    assert "holder sc-nanbu" in out
    assert system not in out
    assert staff not in out


def test_the_open_case_example_runs_against_a_node_and_opens_one_case(pair: Pair, tmp_path: Path) -> None:
    lj, nb = pair.nodes[LJ], pair.nodes[NB]
    summary = _summary(pair, tmp_path / "summary.json")
    officer, _ = auth.create(lj.node.engine, role=Role.CASE_OFFICER, label="example")
    env = {"DEMO_SUMMARY": str(summary), "CASE_OFFICER_TOKEN": officer}
    code = example_code(OPEN_CASE_MARKER)
    out = _run(code, tmp_path, "open_case_example.py", env)
    [row] = lj.parts.store.rows()
    short = row.case_id[:8]
    assert out == (
        f"case {short} pushed, registration node sc-nanbu (511321), replayed=False\nagain: case {short} replayed=True\n"
    )
    pair.settle()
    assert nb.parts.store.load(row.case_id).state.status.value == "received"
    # Run again, as the docs say: the same request id, the same case.
    again = _run(code, tmp_path, "open_case_example.py", env)
    assert again.splitlines()[0] == f"case {short} received, registration node sc-nanbu (511321), replayed=True"
    assert len(lj.parts.store.rows()) == 1
    assert officer not in out + again
