"""The distribution ships everything a node needs (editable installs hide packaging mistakes)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["tool"]["setuptools"]["packages"])


def _on_disk() -> set[str]:
    found = set()
    for top in ("gateway", "adapters", "keys"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "proto" / "tongban").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT / "proto").parts))
    return found


def test_every_package_is_declared() -> None:
    assert _declared() == _on_disk()


@pytest.mark.slow
def test_wheel_contains_code_data_and_wire(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tongban-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data_files = {f"gateway/data/{p.name}" for p in (ROOT / "gateway" / "data").iterdir() if p.is_file()}
    expected = data_files | {
        "gateway/store/migrations/env.py",
        "gateway/store/migrations/script.py.mako",
        "gateway/store/migrations/versions/0001_initial.py",
        "tongban/v1/node_pb2.py",
        "tongban/v1/node_pb2_grpc.py",
        "tongban/v1/envelope.proto",
        "gateway/cli/__init__.py",
    }
    assert expected <= names, sorted(expected - names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tongban = gateway.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
