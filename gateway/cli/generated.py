"""Documents generated from data (``docs/purposes.md``, ``docs/case-lifecycle.md``,
``docs/county-permissions.md``): one way to write them, and one way to check them for drift."""

from __future__ import annotations

import sys
from pathlib import Path


def docs_path(name: str) -> Path:
    """``docs/NAME`` in a source checkout (the docs are not installed with the package)."""
    return Path(__file__).resolve().parents[2] / "docs" / name


def write_or_check(out: Path, text: str, *, check: bool, command: str, source: str) -> int:
    """Write ``text`` to ``out``; with ``check``, write nothing and return 1 if ``out`` differs
    (naming ``command`` to run), 0 if it matches ``source``."""
    if check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            print(f"{out} is out of date: run `{command}` and commit the result", file=sys.stderr)
            return 1
        print(f"{out} matches {source}")
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0
