"""``tongban bench``: run the benchmarks of a source checkout and regenerate the README's table.

The benchmarks are the repository's ``bench/`` package (``bench.store``, ``bench.directory``,
``bench.exchange``, ``bench.matching``; bench/README.md says what each measures). They are not part
of the installed software — they build throwaway PKIs with the tests' helpers and write into the
checkout's ``bench/results/`` and ``README.md`` — so this command looks for a checkout: ``--source``,
else the one this ``gateway`` package was imported from (an editable install, ``make demo``), else
the current directory; with none it stops with ``benchmarks_unavailable`` (exit 78).

Each benchmark runs as ``python -m bench.<name>`` in a child process of this interpreter, one after
the other (they time themselves; running them side by side would time each other), with its output
shown as it comes. Then ``python -m bench.readme_table`` regenerates the README's performance table
from the results. Elapsed time per benchmark and in total is printed at the end. The first benchmark
that fails stops the run, and its exit code is this command's (the table is then left alone).

With ``--results-dir`` elsewhere than the checkout's ``bench/results/`` the README is regenerated
only if ``--readme`` names one, so a trial run never rewrites the committed table.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import gateway
from gateway.errors import BenchmarksUnavailable

BENCHMARKS = ("store", "directory", "exchange", "matching")  # the order `make bench` has always used
TABLE = "readme_table"


@dataclass(frozen=True)
class Step:
    """One child process: a label and the ``python -m`` arguments after the interpreter."""

    name: str
    argv: tuple[str, ...]


def is_checkout(path: Path) -> bool:
    bench = path / "bench"
    return (bench / "__init__.py").is_file() and all((bench / f"{n}.py").is_file() for n in (*BENCHMARKS, TABLE))


def find_checkout(source: Path | None) -> Path:
    """The source checkout holding ``bench/`` (see the module docstring); ``BenchmarksUnavailable``."""
    if source is not None:
        if not is_checkout(source):
            raise BenchmarksUnavailable(f"{source} holds no bench/ package with the benchmarks")
        return source.resolve()
    for candidate in (Path(gateway.__file__).resolve().parent.parent, Path.cwd()):
        if is_checkout(candidate):
            return candidate.resolve()
    raise BenchmarksUnavailable(
        "the installed package has no bench/ beside it and neither has the current directory; "
        "clone the repository and run `make bench` there, or pass --source CHECKOUT"
    )


def plan(
    names: Sequence[str],
    *,
    quick: bool,
    results_dir: Path | None,
    extra: Mapping[str, Sequence[str]],
    readme: Path | None,
) -> list[Step]:
    """The child processes to run, in order: each benchmark (``--quick`` and ``--results-dir``
    passed through, then its own extra arguments), then the README table when ``readme`` is set."""
    steps = []
    for name in names:
        argv = [f"bench.{name}"]
        if quick:
            argv.append("--quick")
        if results_dir is not None:
            argv += ["--results-dir", str(results_dir)]
        argv += extra.get(name, ())
        steps.append(Step(name, ("-m", *argv)))
    if readme is not None:
        table = ["-m", f"bench.{TABLE}", "--readme", str(readme)]
        if results_dir is not None:
            table += ["--results-dir", str(results_dir)]
        steps.append(Step(TABLE, tuple(table)))
    return steps


def _seconds(value: float) -> str:
    return f"{value:8.1f} s"


def _bench(args: argparse.Namespace) -> int:
    checkout = find_checkout(Path(args.source) if args.source else None)
    default_results = checkout / "bench" / "results"
    results_dir = Path(args.results_dir).resolve() if args.results_dir else None
    if args.no_readme:
        readme = None
    elif args.readme:
        readme = Path(args.readme).resolve()
    elif results_dir is None or results_dir == default_results:
        readme = checkout / "README.md"
    else:
        readme = None  # a trial run elsewhere never rewrites the committed table
    names = [n for n in BENCHMARKS if n in (args.only or BENCHMARKS)]
    extra = {name: shlex.split(getattr(args, f"{name}_args") or "") for name in BENCHMARKS}
    steps = plan(names, quick=args.quick, results_dir=results_dir, extra=extra, readme=readme)

    print(f"tongban bench: {', '.join(names)} from {checkout / 'bench'}; results in {results_dir or default_results}")
    elapsed: list[tuple[str, float]] = []
    started = time.monotonic()
    for i, step in enumerate(steps, 1):
        print(f"== [{i}/{len(steps)}] python {shlex.join(step.argv)}", flush=True)
        t0 = time.monotonic()
        # The same interpreter, in the checkout (``-m`` finds ``bench`` there); output passes through.
        done = subprocess.run([sys.executable, *step.argv], cwd=checkout, check=False)  # noqa: S603 - fixed argv
        elapsed.append((step.name, time.monotonic() - t0))
        if done.returncode != 0:
            print(f"tongban bench: bench.{step.name} failed (exit {done.returncode}); stopping", file=sys.stderr)
            return done.returncode
        print(f"== bench.{step.name}: {elapsed[-1][1]:.1f} s", flush=True)
    print()
    print("elapsed")
    for name, seconds in elapsed:
        print(f"  {name:<14}{_seconds(seconds)}")
    print(f"  {'total':<14}{_seconds(time.monotonic() - started)}")
    if readme is None:
        print("README table not regenerated (results outside bench/results/; pass --readme PATH to write one)")
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser(
        "bench",
        help="run the benchmarks of a source checkout (bench/) and regenerate the README's performance table",
        description=(
            "Run bench.store, bench.directory, bench.exchange and bench.matching of a source checkout "
            "one after the other, each in a child process of this interpreter, then regenerate the "
            "README's performance table from bench/results/*.json (python -m bench.readme_table); print "
            "the time each took (bench/README.md: what each measures, how long it takes). Exit codes: "
            "0 done, 78 no bench/ found, else the exit code of the benchmark that failed."
        ),
    )
    p.add_argument("--quick", action="store_true", help="CI-sized runs: pass --quick to every benchmark")
    p.add_argument(
        "--only",
        nargs="+",
        action="extend",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only these benchmarks ({', '.join(BENCHMARKS)}; repeatable)",
    )
    p.add_argument(
        "--results-dir",
        metavar="DIR",
        help="where the benchmarks write their JSON (default: the checkout's bench/results/)",
    )
    table = p.add_mutually_exclusive_group()
    table.add_argument(
        "--readme",
        metavar="PATH",
        help="the README whose table to regenerate (default: the checkout's README.md, "
        "unless --results-dir points elsewhere)",
    )
    table.add_argument("--no-readme", action="store_true", help="do not regenerate the README table")
    for name in BENCHMARKS:
        p.add_argument(
            f"--{name}-args",
            metavar="ARGS",
            help=f"more arguments for bench.{name}, one shell-quoted string (`python -m bench.{name} --help`)",
        )
    p.add_argument(
        "--source",
        metavar="DIR",
        help="the source checkout holding bench/ (default: the one this gateway was imported from, else .)",
    )
    p.set_defaults(handler=_bench)
