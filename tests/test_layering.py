"""The dependency arrows of STYLE habit 10, checked on the source (not on what happens to be imported).

* the pure domain (gateway/domain) imports no grpc, sqlalchemy, alembic, cryptography or protobuf;
* gateway never imports keys or adapters (they depend on gateway, not the other way round);
* only gateway/wire.py, gateway/server.py, gateway/demo.py, the county API's converter and edges and the
  exchange layer touch the generated wire code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IO_LIBRARIES = {
    "grpc",
    "grpc_health",
    "sqlalchemy",
    "alembic",
    "cryptography",
    "google",
    "tongban",
    "psycopg",
}
# gateway/cases/handoff.py is the cases' one wire module (seals and opens case messages, converts them).
# gateway/county/wire.py is the county API's converter; its servicer and gateway/client.py are its edges.
WIRE_USERS = {
    "gateway/wire.py",
    "gateway/server.py",
    "gateway/demo.py",
    "gateway/cases/handoff.py",
    "gateway/county/wire.py",
    "gateway/county/servicer.py",
    "gateway/client.py",
}
# The exchange layer works on signed envelope bytes and payload messages by design (STYLE habit 1:
# verify the exact bytes, parse only after): it sits at the wire edge like the servicers.
WIRE_PACKAGES = ("gateway/exchange/",)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _sources("gateway/domain"), ids=lambda p: p.name)
def test_domain_is_pure(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in IO_LIBRARIES}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _sources("gateway"), ids=lambda p: str(p.relative_to(ROOT)))
def test_gateway_never_imports_keys_or_adapters(path: Path) -> None:
    bad = {m for m in _imports(path) if m.split(".")[0] in {"keys", "adapters"}}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _sources("gateway"), ids=lambda p: str(p.relative_to(ROOT)))
def test_wire_types_stay_at_the_edge(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    if rel in WIRE_USERS or rel.startswith(WIRE_PACKAGES):
        return
    bad = {m for m in _imports(path) if m.split(".")[0] == "tongban"}
    assert not bad, f"{rel} uses generated wire code; convert with gateway.wire instead"
