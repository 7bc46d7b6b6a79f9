"""Generate the Python code for the wire contract, or check that the committed code matches.

    python proto/gen.py          # regenerate proto/tongban/v1/*_pb2*.py[i] in place
    python proto/gen.py --check  # exit 1 if the committed files differ from a fresh generation

The generated files are committed (so installing Tongban needs no protoc) and CI runs --check so
they can never drift from the .proto sources. Versions of grpcio-tools and mypy-protobuf are
pinned in pyproject.toml's dev extra because their output is what is compared.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent
PACKAGE = Path("tongban") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> list[Path]:
    sources = sorted((ROOT / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    # The mypy-protobuf plugins are installed next to the running interpreter (the venv).
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(s.relative_to(ROOT)) for s in sources),
    ]
    # protoc resolves relative source names against the include path, so run from ROOT.
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    return sorted(p for p in (out / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def committed() -> list[Path]:
    return sorted(p for p in (ROOT / PACKAGE).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        if args.check:
            fresh_names = {p.name for p in fresh}
            have_names = {p.name for p in committed()}
            problems = sorted(fresh_names ^ have_names)
            problems += [
                p.name
                for p in fresh
                if p.name in have_names and not filecmp.cmp(p, ROOT / PACKAGE / p.name, shallow=False)
            ]
            if problems:
                print("generated wire code is out of date: " + ", ".join(problems), file=sys.stderr)
                print("run `make proto` and commit the result", file=sys.stderr)
                return 1
            print(f"generated wire code matches the .proto sources ({len(fresh)} files)")
            return 0
        for old in committed():
            old.unlink()
        for p in fresh:
            shutil.copy2(p, ROOT / PACKAGE / p.name)
        print(f"wrote {len(fresh)} files into {ROOT / PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
