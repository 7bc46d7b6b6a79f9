"""The runnable example of docs/county-integration.md runs, as a county developer would run it.

The example reads the demo's summary (``tongban demo --serve --json``) for 南部县's county API
address and the period, and takes a ``county_system`` and a ``registration_staff`` token from the
environment. Here a real ``sc-nanbu`` node serves its county API on 127.0.0.1 with a case waiting
in its inbox and match results stored, the summary is written in the demo's shape, and the block is
run in a fresh interpreter, unchanged.
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
from tests.test_county_calls import NB, PERIOD, Pair, _findings, pair, second_db

__all__ = ["pair", "second_db"]

DOC = Path(__file__).resolve().parents[1] / "docs" / "county-integration.md"
MARKER = "<!-- example: county_example.py"


def example_code() -> str:
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(MARKER) :]
    block = re.search(r"```python\n(.*?)```", after, flags=re.S)
    assert block is not None, "the example block follows its marker"
    return block.group(1)


def test_the_integration_example_runs_against_a_node(pair: Pair, tmp_path: Path) -> None:
    nb, lj = pair.nodes[NB], pair.nodes["cq-liangjiang"]
    case_id = lj.parts.service().accept(orphan_draft(51, FILES), FILES, utc_now())
    pair.settle()
    with nb.node.engine.begin() as conn:
        findings_store.replace(conn, PERIOD, _findings(), now=datetime.now(UTC))
    summary = tmp_path / "summary.json"
    demo_shape = {"period": PERIOD, "nodes": [{"id": NB, "division": "511321", "county": nb.address}]}
    summary.write_text(json.dumps(demo_shape), encoding="utf-8")
    system, _ = auth.create(nb.node.engine, role=Role.COUNTY_SYSTEM, label="example")
    staff, _ = auth.create(nb.node.engine, role=Role.REGISTRATION_STAFF, label="example")
    script = tmp_path / "county_example.py"
    script.write_text(example_code(), encoding="utf-8")
    env = {**os.environ, "DEMO_SUMMARY": str(summary), "COUNTY_SYSTEM_TOKEN": system, "STAFF_TOKEN": staff}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.startswith("sc-nanbu 511321 南部县\n")
    assert f"{PERIOD}: 4 links, 2 for a person to review" in out
    assert "findings: {'matched': 2, 'review': 2, 'gone_but_absent': 1}" in out
    assert f"case {case_id[:8]} orphan received" in out
    assert "holder sc-nanbu" in out
    assert system not in out
    assert staff not in out
