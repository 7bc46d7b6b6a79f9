"""`tongban demo` runs the whole story as a newcomer would (real processes, real gRPC on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_tells_the_story_and_writes_json(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "demo",
            "--households",
            "120",
            "--json",
            str(summary_path),
            "--workdir",
            str(tmp_path / "nodes"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    nodes = summary["nodes"]
    assert [n["id"] for n in nodes] == ["cq-liangjiang", "sc-nanbu", "gz-zhijin"]
    assert {n["province"] for n in nodes} == {"50", "51", "52"}, "nodes in different provinces"
    for n in nodes:
        assert set(n) >= {"id", "division", "province", "address"}
        assert n["address"].startswith("127.0.0.1:")
        assert n["county"].startswith("127.0.0.1:"), "each node's county API (docs/county-integration.md)"
        assert n["tls"] is True, "enrolled nodes serve mutual TLS only"
    for node_id, roster in summary["rosters"].items():
        assert roster["accepted"] > 0, node_id
        assert roster["rejected"] == 0, node_id
        assert roster["encryption"]["found_in_clear"] == 0
        assert roster["encryption"]["values_checked"] > 0
    # A migrant child is owned by the residence node, a left-behind child by the registration node.
    assert summary["rosters"]["cq-liangjiang"]["stored"]["migrant"] > 0
    assert summary["rosters"]["sc-nanbu"]["stored"]["left_behind"] > 0
    # Node-to-node calls over mutual TLS; a rogue CA and, after the refresh, the revoked node refused.
    calls = summary["mtls"]
    assert [c["result"].split(":")[0] for c in calls[:3]] == ["ok", "ok", "ok"]
    assert calls[3]["from"].startswith("rogue")
    assert calls[3]["result"].startswith("refused")
    assert calls[4] == {
        "from": "gz-zhijin",
        "to": "cq-liangjiang",
        "result": calls[4]["result"],
        "after": "revocation",
    }
    assert "PERMISSION_DENIED" in calls[4]["result"]
    # Exchange: every queued envelope delivered exactly once with a receipt, despite a receiver
    # killed (SIGKILL) and restarted mid-run.
    exchange = summary["exchange"]
    expected = {f"{r['from']}→{r['to']}": r["envelopes"] for r in exchange["rosters"]}
    assert set(expected) == {
        "cq-liangjiang→sc-nanbu",
        "cq-liangjiang→gz-zhijin",
        "sc-nanbu→cq-liangjiang",
        "sc-nanbu→gz-zhijin",
    }
    assert exchange["delivered"] == expected
    assert exchange["receipts"] == sum(expected.values())
    assert exchange["received"]["gz-zhijin"] == expected["cq-liangjiang→gz-zhijin"] + expected["sc-nanbu→gz-zhijin"]
    assert exchange["received"]["sc-nanbu"] == expected["cq-liangjiang→sc-nanbu"]
    assert exchange["attempts"]["cq-liangjiang→gz-zhijin"] >= 2, "the restarted receiver was retried"
    found = summary["reconciliation"]["findings"]
    assert set(found) == {"cq-liangjiang", "sc-nanbu", "gz-zhijin"}
    assert all(f.get("matched", 0) > 0 for f in found.values()), found
    # The mistakes planted in 南部县's ledger are each found, by both sides where both are concerned.
    assert found["sc-nanbu"]["living_here_recorded_left_behind"] == 2
    assert found["cq-liangjiang"]["living_here_recorded_left_behind"] == 2
    assert found["sc-nanbu"]["gone_but_absent"] == 1
    assert found["sc-nanbu"]["not_in_ledger"] == 2
    assert found["cq-liangjiang"]["not_in_ledger"] == 2
    # 3 IDs blanked in 南部县's ledger but carried by the notices, and 1 name 两江新区 typed with one wrong
    # character and without the ID: linked automatically thanks to 南部县's household register.
    assert found["sc-nanbu"]["inconsistent_identifier"] == 4
    assert "review" not in found["sc-nanbu"]
    assert summary["reconciliation"]["register_typo"] == "inconsistent_identifier"
    assert "review" not in found["gz-zhijin"]
    assert "not_in_ledger" not in found["gz-zhijin"]
    # Cases: decided before the revocation, closed, custody back at the residence node, each chain
    # verified offline after every step and still verifying from its file in a fresh process.
    cases = summary["cases"]
    assert [(c["type"], c["state"], c["holder"], c["chain_verified"]) for c in cases] == [
        ("orphan", "closed", "cq-liangjiang", True),
        ("living_subsidy", "closed", "cq-liangjiang", True),
    ]
    assert all(set(c) == {"id", "type", "state", "holder", "chain_verified"} for c in cases)
    kept = summary_path.parent / "summary-custody"
    for case in cases:
        chain = Path(summary["custody_chains"][case["id"]])
        assert chain.parent == kept
        verified = subprocess.run(
            [
                sys.executable, "-m", "gateway", "custody", "verify", str(chain),
                "--directory", str(kept / "directory.json"), "--root", str(kept / "root.json"),
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr[-500:]
        assert "closed (last holder cq-liangjiang)" in verified.stdout
    assert "holder: sc-nanbu (verified offline: yes)" in done.stdout
    assert "holder: gz-zhijin (verified offline: yes)" in done.stdout
    assert done.stdout.index("6. Cases") < done.stdout.index("7. Revocation")
    # The web inbox: the registration county's staff find the new case there (checked over HTTP).
    inbox = summary["inbox"]
    assert inbox["url"].startswith("http://127.0.0.1:")
    assert inbox["user"] == "nb.zhang"
    assert inbox["case"] in inbox["listed"]
    assert "code" not in inbox, "the one-time code is printed for the reader, never kept in the JSON"
    assert summary["trust"]["directory_version"] == 2
    assert summary["trust"]["root"] == {"version": 1, "keys": 3, "threshold": 2}
    assert "mutual TLS" in done.stdout
    assert "stopped gracefully" in done.stdout
