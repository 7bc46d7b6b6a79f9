"""Benchmark: the offline matching pipeline on ledgers with known truth (issue 5).

    python -m bench.matching [--quick] [--sizes 10000,50000,100000] [--overlaps 0.5,0.9]
                             [--repeats 3] [--seed 2026] [--results-dir DIR] [--keep DIR]
                             [--feedback PATH] [--single-births]

For every size × overlap, :mod:`gateway.synth.ledgers` generates a registration ledger and a
residence ledger of that many rows each (untimed), written as the national CSV export; then
``tongban match REGISTRATION RESIDENCE --out LINKS.csv`` runs in this process, end to end (read
both files, encode, match, write the links). Its links are scored by
:func:`gateway.matching.evaluate.evaluate`: precision, recall and F1 of the automatic links
overall, per stage (exact: both rows carry a valid ID; fuzzy: the rest) and recall per kind of
corruption (the single kinds, ``stacked`` for two in one row, the ID kinds; see
:mod:`gateway.synth.ledgers` for the rates); the review band (true and false links); twins and
siblings linked automatically, including lone twins (the co-twin alone in the other ledger).

Time is the median of ``--repeats`` runs; memory the ``tracemalloc`` peak of one more run (Python
allocations above what was allocated before it; numpy's buffers are included, since numpy
reports them to tracemalloc) and the process's max RSS. Reference in the same run: an ID-only join
(read both files, link equal valid ID numbers) — its time is the floor of reading the files, its
recall what the fuzzy stage has to add.

Goal, printed as met / NOT met: F1 ≥ 0.99 overall, recall ≥ 0.95 on every kind of corruption
(lunar birthdays included), no twin ever linked automatically to its sibling. When it is not met
the failing kinds and the worst misses and false links of each are printed — row numbers and
kinds only, never a name or a number (``--keep DIR`` keeps the ledgers so the rows can be looked
at; the same seed regenerates them byte for byte). Results go to ``bench/results/matching.json``.

``--single-births`` also measures, apart from the goal, the matcher's single-birth rule
(:mod:`gateway.matching.matcher`, "Single births"): the registration side's edit masks
(``Encoder.name_edits``) and which of its children are single births, known two ways —

* ``household``: from the registration county's **household register**, the way a county would
  run it: ``tongban match REGISTRATION RESIDENCE --out LINKS.csv --household-register
  register.csv``, in this process, end to end (the generator writes the register beside the
  ledgers: :func:`gateway.synth.ledgers.write_register`; :mod:`adapters.household` reads it);
* ``ledger``: from the registration ledger alone (no other row with the same guardian, county and
  birth date: all the file can tell), with the matcher called in this process — kept to show why
  that is unsafe: a co-twin may live elsewhere, and is then auto-linked.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from adapters.calibrate_cli import (
    GOAL_F1,
    GOAL_KIND_RECALL,
    MatcherUnavailable,
    goal_met,
    run_match,
    score_links,
)
from adapters.household import BirthCounts
from adapters.match_cli import entries_of
from adapters.tabular import read_table
from bench.common import format_table, machine_info, max_rss_bytes, measure, mib, si, traced_peak, write_result
from gateway.domain import idnumber
from gateway.matching import Encoder, match
from gateway.matching.evaluate import Evaluation, Link, evaluate
from gateway.synth.export import CSV_HEADER
from gateway.synth.ledgers import (
    COL_BIRTH,
    COL_ID,
    ID_KINDS,
    KINDS,
    TWIN,
    LedgerFiles,
    LedgerPair,
    LedgerSpec,
    generate_ledgers,
    iter_rows,
    write_ledger_files,
)

SIZES = (10_000, 50_000, 100_000)
OVERLAPS = (0.5, 0.9)
QUICK_ROWS = 2_000
QUICK_OVERLAP = 0.7
EXAMPLES = 5  # per kind, in the results file and the printed report


# --- the reference: an ID-only join -------------------------------------------------------------------


def _valid_ids(path: Path) -> dict[str, int]:
    """Valid ID number → its row (the first one), read from a ledger CSV."""
    out: dict[str, int] = {}
    with path.open(encoding="utf-8-sig", newline="") as stream:
        reader = csv.reader(stream)
        next(reader)
        for row, cells in enumerate(reader, start=1):
            number = idnumber.normalise(cells[COL_ID]) if len(cells) > COL_ID else ""
            if len(number) == 18 and number[:17].isdigit() and idnumber.check_character(number[:17]) == number[17]:
                out.setdefault(number, row)
    return out


def id_join(files: LedgerFiles) -> list[Link]:
    reg, res = _valid_ids(files.registration), _valid_ids(files.residence)
    return [Link(row, res[number], "matched", 1.0) for number, row in reg.items() if number in res]


# --- what if the registration node knew its single births ---------------------------------------------

#: Where the registration node's knowledge of single births comes from (module docstring).
SINGLE_BIRTH_SOURCES = ("ledger", "household")
# A household as the registration ledger shows it: registration county and guardian (name, phone).
_HOUSEHOLD_COLUMNS = (*(CSV_HEADER.index(c) for c in ("户籍地", "监护人姓名", "监护人联系电话")), COL_BIRTH)


def single_births(pair: LedgerPair, source: str) -> list[bool]:
    """Per registration row: whether it counts as a single birth under ``source``, from the ledger
    and the generator's truth (no file, no command).

    ``ledger``: no other registration row has the same registration county, guardian (name and
    phone) and birth date; a row without a guardian never counts. ``household``: also not the
    registration side of a twin sibling link (the co-twin is in the residence ledger). The benchmark
    uses ``ledger`` only; ``household`` is the reference the generated register is checked against
    (tests/test_household_register.py: the register says the same, but for rows the truth cannot
    see — a row without a guardian, a co-twin in neither ledger)."""
    keys = [tuple(cells[c] for c in _HOUSEHOLD_COLUMNS) for cells in iter_rows(pair.registration_lines)]
    seen = Counter(keys)
    single = [bool(key[1]) and seen[key] == 1 for key in keys]
    if source == "household":
        for link in pair.siblings:
            if link.relation == TWIN:
                single[link.registration_row - 1] = False
    elif source != "ledger":
        raise ValueError(f"unknown source of single births: {source}")
    return single


_SINGLE_BIRTHS_LINE = re.compile(
    r"^single births: +(\d+) registration rows \((\d+) with a sibling born within a day, "
    r"(\d+) not found, (\d+) undecided\)$",
    re.MULTILINE,
)


def register_counts(printed: str) -> BirthCounts:
    """The single-birth counts ``tongban match --household-register`` printed (its summary line)."""
    m = _SINGLE_BIRTHS_LINE.search(printed)
    if m is None:
        raise MatcherUnavailable("`tongban match --household-register` printed no single-births line")
    return BirthCounts(*(int(x) for x in m.groups()))


def _scored(scored: Evaluation) -> dict[str, Any]:
    return {
        "evaluation": scored.to_json(examples=False),
        "failing_kinds": scored.failing_kinds(GOAL_KIND_RECALL),
        "goal_met": goal_met(scored),
    }


def single_birth_runs(pair: LedgerPair, files: LedgerFiles, links: Path) -> dict[str, Any]:
    """The single-birth rule with each source of :data:`SINGLE_BIRTH_SOURCES` (module docstring),
    the links scored as the pipeline's are. ``household``: the whole command, with the register;
    ``ledger``: the matcher in this process, with the ledger's own guess."""
    out: dict[str, Any] = {}
    started = time.perf_counter()
    printed = run_match(files.registration, files.residence, links, household_register=files.register)
    seconds = time.perf_counter() - started
    counts = register_counts(printed)
    out["household"] = {
        "single_births": counts.single,
        "not_single": {"sibling": counts.sibling, "not_found": counts.not_found, "undecided": counts.undecided},
        "truth_single_births": sum(single_births(pair, "household")),
        "pipeline": "tongban match REGISTRATION RESIDENCE --out LINKS.csv --household-register REGISTER (in process)",
        "match_s": seconds,  # the whole command: read the three files, encode, match, write
        **_scored(score_links(pair, links)),
    }

    key = hashlib.sha256(b"bench.matching: single births").digest()  # fixed: the figures repeat
    encoder = Encoder(key)
    registration = read_table(files.registration)
    left, _ = entries_of(registration, key, encoder)
    right, _ = entries_of(read_table(files.residence), key, encoder)
    edits = [encoder.name_edits(row.get("name", "")) for _, row in registration.rows()]
    single = single_births(pair, "ledger")
    entries = [replace(e, single_birth=s, name_edits=x) for e, s, x in zip(left, single, edits, strict=True)]
    started = time.perf_counter()
    result = match(entries, right)
    seconds = time.perf_counter() - started
    scored = evaluate(
        pair.truth,
        [Link(int(x.left), int(x.right), x.band.value, x.score) for x in result.links],
        registration_valid_id=_valid_rows(pair.registration_valid_id),
        residence_valid_id=_valid_rows(pair.residence_valid_id),
        siblings=pair.siblings,
        kinds_order=KINDS,
        context_kinds=ID_KINDS,
    )
    out["ledger"] = {
        "single_births": sum(single),
        "pipeline": "the matcher in this process, single births guessed from the registration ledger",
        "match_s": seconds,  # the matcher only
        **_scored(scored),
    }
    return {source: out[source] for source in SINGLE_BIRTH_SOURCES}


# --- one size × overlap ---------------------------------------------------------------------------------


def _valid_rows(flags: Sequence[bool]) -> set[int]:
    return {i for i, ok in enumerate(flags, start=1) if ok}


def one_run(
    spec: LedgerSpec, workdir: Path, repeats: int, matcher: bool, *, with_single_births: bool = False
) -> dict[str, Any]:
    started = time.perf_counter()
    pair = generate_ledgers(spec)
    files = write_ledger_files(pair, workdir)
    generate_s = time.perf_counter() - started
    both = 2 * spec.rows
    out: dict[str, Any] = {
        "rows": spec.rows,
        "overlap": spec.overlap,
        "pairs": len(pair.truth),
        "households": pair.households,
        "sibling_links": {
            "twin": pair.twin_pairs(),
            "sibling": len(pair.siblings) - pair.twin_pairs(),
            "lone_twin": pair.lone_twins,  # of the twin links: a twin whose co-twin is alone in the other ledger
        },
        "exact_stage_pairs": sum(
            1
            for t in pair.truth
            if pair.registration_valid_id[t.registration_row - 1] and pair.residence_valid_id[t.residence_row - 1]
        ),
        "generate_s": generate_s,
    }
    reg_valid, res_valid = _valid_rows(pair.registration_valid_id), _valid_rows(pair.residence_valid_id)

    reference = measure(lambda: len(id_join(files)) and both, repeats=repeats, unit="rows/s")
    ref_eval = evaluate(
        pair.truth,
        id_join(files),
        registration_valid_id=reg_valid,
        residence_valid_id=res_valid,
        siblings=pair.siblings,
        kinds_order=KINDS,
    )
    out["reference"] = {
        "name": "ID-only join (read both files, link equal valid ID numbers)",
        "timing": reference.to_json(),
        "evaluation": ref_eval.to_json(examples=False),
    }
    if not matcher:
        return out

    links = workdir / "links.csv"

    def match_once() -> int:
        run_match(files.registration, files.residence, links)
        return both

    timing = measure(match_once, repeats=repeats, unit="rows/s")
    _, peak, _ = traced_peak(match_once)
    result = score_links(pair, links, examples_per_kind=EXAMPLES)
    out["match"] = timing.to_json()
    out["match_peak_python_bytes"] = peak
    out["evaluation"] = result.to_json()
    out["failing_kinds"] = result.failing_kinds(GOAL_KIND_RECALL)
    out["goal_met"] = goal_met(result)
    if with_single_births:
        out["single_births"] = single_birth_runs(pair, files, links)
    return out


# --- printing -------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _label(run: dict[str, Any]) -> str:
    return f"{run['rows'] // 1000}k/{run['overlap']:.0%}"


def summary_table(runs: list[dict[str, Any]]) -> str:
    header = ["figure", *(_label(r) for r in runs)]
    rows: list[list[str]] = [["pairs (children in both)", *(f"{r['pairs']:,}" for r in runs)]]
    rows.append(
        [
            "twin (lone) / sibling cross-links",
            *(
                f"{links['twin']} ({links.get('lone_twin', 0)})/{links['sibling']}"
                for links in (r["sibling_links"] for r in runs)
            ),
        ]
    )
    rows.append(["generate + write ledgers", *(f"{r['generate_s']:.1f} s" for r in runs)])
    rows.append(["REFERENCE: ID-only join"])
    rows.append(["  time (median)", *(f"{r['reference']['timing']['median_s']:.2f} s" for r in runs)])
    rows.append(["  F1", *(_pct(r["reference"]["evaluation"]["overall"]["f1"]) for r in runs)])
    rows.append(["  recall", *(_pct(r["reference"]["evaluation"]["overall"]["recall"]) for r in runs)])
    matched = [r for r in runs if "evaluation" in r]
    if len(matched) == len(runs):
        rows.append(["TONGBAN MATCH"])
        rows.append(["  time (median)", *(f"{r['match']['median_s']:.2f} s" for r in runs)])
        rows.append(["  rows/s (both ledgers)", *(si(r["match"]["per_s"]) for r in runs)])
        rows.append(["  peak Python memory", *(mib(r["match_peak_python_bytes"]) for r in runs)])
        for key in ("precision", "recall", "f1"):
            rows.append([f"  {key}", *(_pct(r["evaluation"]["overall"][key]) for r in runs)])
        for stage in ("exact", "fuzzy"):
            rows.append(
                [
                    f"  {stage}: P / R",
                    *(
                        f"{r['evaluation']['stages'][stage]['precision']:.3f} / "
                        f"{r['evaluation']['stages'][stage]['recall']:.3f}"
                        for r in runs
                    ),
                ]
            )
        rows.append(
            [
                "  review band true/false",
                *(f"{r['evaluation']['review']['true']}/{r['evaluation']['review']['false']}" for r in runs),
            ]
        )
        rows.append(["  recall with review", *(_pct(r["evaluation"]["recall_with_review"]) for r in runs)])
        rows.append(
            [
                "  twins/siblings auto-linked",
                *(
                    f"{r['evaluation']['sibling_auto_matched'].get('twin', 0)}/"
                    f"{r['evaluation']['sibling_auto_matched'].get('sibling', 0)}"
                    for r in runs
                ),
            ]
        )
        rows.append(["RECALL PER KIND (fuzzy stage; the kind alone, ID kinds aside)"])
        for kind in KINDS:
            cells = []
            for r in runs:
                k = r["evaluation"]["kinds"].get(kind)
                if not k or not k["pairs"]:
                    cells.append("-")
                    continue
                mark = "" if k["recall"] >= GOAL_KIND_RECALL else " !"
                fuzzy, alone = _pct(k["fuzzy_recall"])[:5], _pct(k["solo_recall"])[:5]
                cells.append(f"{k['recall']:.3f} ({fuzzy}; {alone}) n={k['pairs']}{mark}")
            rows.append([f"  {kind}", *cells])
        rows.append(["  goal", *("met" if r["goal_met"] else "NOT met" for r in runs)])
    return format_table(header, rows)


def single_births_table(runs: list[dict[str, Any]]) -> str:
    """The ``--single-births`` figures: per source of the knowledge, what the single-birth rule gives."""
    shown = [r for r in runs if "single_births" in r]
    if not shown:
        return ""
    rows: list[list[str]] = []
    for source in SINGLE_BIRTH_SOURCES:
        figures = [r["single_births"][source] for r in shown]
        if source == "household":
            rows.append(["SINGLE BIRTHS FROM THE HOUSEHOLD REGISTER (tongban match --household-register)"])
            rows.append(["  single births known", *(f"{f['single_births']:,}" for f in figures)])
            rows.append(
                [
                    "  not: sibling ±1 day / not found / undecided",
                    *(
                        f"{f['not_single']['sibling']:,} / {f['not_single']['not_found']:,} / "
                        f"{f['not_single']['undecided']:,}"
                        for f in figures
                    ),
                ]
            )
            rows.append(["  tongban match (whole command)", *(f"{f['match_s']:.2f} s" for f in figures)])
        else:
            rows.append(["SINGLE BIRTHS FROM THE LEDGER ALONE (matcher in process)"])
            rows.append(["  single births known", *(f"{f['single_births']:,}" for f in figures)])
            rows.append(["  match (in process)", *(f"{f['match_s']:.2f} s" for f in figures)])
        for key in ("precision", "recall", "f1"):
            rows.append([f"  {key}", *(_pct(f["evaluation"]["overall"][key]) for f in figures)])
        rows.append(
            [
                "  twins/siblings auto-linked",
                *(
                    f"{f['evaluation']['sibling_auto_matched'].get('twin', 0)}/"
                    f"{f['evaluation']['sibling_auto_matched'].get('sibling', 0)}"
                    for f in figures
                ),
            ]
        )
        for kind in ("typo", "truncated", "stacked", "id_missing", "id_mistyped"):
            rows.append([f"  {kind}", *(_pct(f["evaluation"]["kinds"][kind]["recall"]) for f in figures)])
        rows.append(["  failing kinds", *(", ".join(f["failing_kinds"]) or "none" for f in figures)])
        rows.append(["  goal", *("met" if f["goal_met"] else "NOT met" for f in figures)])
    return format_table(["what if (not the goal)", *(_label(r) for r in shown)], rows)


def failures_report(runs: list[dict[str, Any]]) -> str:
    """Failing kinds and the worst examples of each, per run: rows and kinds only."""
    lines: list[str] = []
    for r in runs:
        if "evaluation" not in r or r["goal_met"]:
            continue
        e = r["evaluation"]
        lines.append(f"## {r['rows']:,} rows, overlap {r['overlap']:.0%}: goal NOT met")
        overall = e["overall"]
        lines.append(
            f"- overall F1 {overall['f1']:.4f} (goal ≥ {GOAL_F1}): precision {overall['precision']:.4f}, "
            f"recall {overall['recall']:.4f}; {overall['false_positives']} false automatic links, "
            f"{overall['false_negatives']} misses"
        )
        twins = e["sibling_auto_matched"]
        lines.append(
            f"- twins / siblings linked automatically: {twins.get('twin', 0)} / {twins.get('sibling', 0)} (goal 0)"
        )
        failing = r["failing_kinds"]
        lines.append(
            "- kinds below recall "
            f"{GOAL_KIND_RECALL}: "
            + (
                ", ".join(
                    f"{k} {e['kinds'][k]['recall']:.3f} (fuzzy {_pct(e['kinds'][k]['fuzzy_recall'])})" for k in failing
                )
                or "none"
            )
        )
        for kind in failing:
            lines.append(
                f"- worst misses, {kind} (registration row → residence row: band, score; all kinds of the pair):"
            )
            for m in e.get("misses", {}).get(kind, [])[:EXAMPLES]:
                wrong = ""
                if "registration_row_auto_linked_to" in m:
                    wrong += f"; registration row auto-linked to residence row {m['registration_row_auto_linked_to']}"
                if "residence_row_auto_linked_to" in m:
                    wrong += f"; residence row auto-linked to registration row {m['residence_row_auto_linked_to']}"
                score = "-" if m["score"] is None else f"{m['score']:.3f}"
                lines.append(
                    f"    {m['registration_row']} → {m['residence_row']}: {m['band'] or 'not linked'}, {score}; "
                    f"{'+'.join(m['kinds'])}{wrong}"
                )
        worst_false = sorted(
            {
                (f["registration_row"], f["residence_row"]): f for v in e.get("false_matches", {}).values() for f in v
            }.values(),
            key=lambda f: -f["score"],
        )[:10]
        if worst_false:
            lines.append(
                "- worst false automatic links (registration row → residence row: score; kinds of their true pairs):"
            )
            for f in worst_false:
                rel = f" [{f['relation']}]" if "relation" in f else ""
                lines.append(
                    f"    {f['registration_row']} → {f['residence_row']}: {f['score']:.3f}; {'+'.join(f['kinds'])}{rel}"
                )
    return "\n".join(lines)


def feedback(runs: list[dict[str, Any]], seed: int) -> str:
    head = [
        "# Matching benchmark feedback (bench/matching.py)",
        "",
        f"Ledgers: `gateway.synth.ledgers.generate_ledgers(LedgerSpec(rows=N, overlap=F, seed={seed}))` — "
        "the same spec regenerates them byte for byte (`python -m bench.matching --keep DIR` writes them). "
        "Rows are numbered from 1, header excluded. Row numbers and kinds only below.",
        "",
    ]
    body = []
    for r in runs:
        if "evaluation" not in r:
            continue
        e = r["evaluation"]
        body.append(
            f"- {r['rows']:,} rows, overlap {r['overlap']:.0%}: F1 {e['overall']['f1']:.4f}, "
            f"P {e['overall']['precision']:.4f}, R {e['overall']['recall']:.4f}; "
            f"goal {'met' if r['goal_met'] else 'NOT met'}; failing kinds: {', '.join(r['failing_kinds']) or 'none'}"
        )
    report = failures_report(runs)
    return "\n".join([*head, *body, "", report or "Every run meets the goal.", ""])


# --- main ----------------------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.matching", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_ROWS:,} rows, overlap {QUICK_OVERLAP}, one repeat"
    )
    parser.add_argument(
        "--sizes", type=_ints, default=SIZES, metavar="N,N", help="rows per ledger (default 10k,50k,100k)"
    )
    parser.add_argument("--overlaps", type=_floats, default=OVERLAPS, metavar="F,F", help="default 0.5,0.9")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure, median reported (default 3)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep each run's ledgers, truth and links in DIR")
    parser.add_argument("--feedback", type=Path, metavar="PATH", help="also write the failure report as Markdown")
    parser.add_argument(
        "--single-births",
        action="store_true",
        help="also measure the single-birth rule: tongban match --household-register, and single births "
        "guessed from the ledger alone (not the goal)",
    )
    args = parser.parse_args(argv)
    sizes = (QUICK_ROWS,) if args.quick else args.sizes
    overlaps = (QUICK_OVERLAP,) if args.quick else args.overlaps
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1 or any(n < 10 for n in sizes) or any(not 0 < f <= 1 for f in overlaps):
        parser.error("need repeats ≥ 1, sizes ≥ 10 and overlaps in (0, 1]")

    started = time.perf_counter()
    matcher, matcher_reason = True, None
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tongban-bench-matching-") as tmp:
        for rows in sizes:
            for overlap in overlaps:
                spec = LedgerSpec(rows=rows, overlap=overlap, seed=args.seed)
                workdir = (args.keep or Path(tmp)) / f"{rows}-{round(overlap * 100)}"
                print(f"bench.matching: {rows:,} rows × 2 ledgers, overlap {overlap:.0%} …", file=sys.stderr)
                try:
                    runs.append(one_run(spec, workdir, repeats, matcher, with_single_births=args.single_births))
                except MatcherUnavailable as exc:
                    matcher, matcher_reason = False, str(exc)
                    print(f"bench.matching: {exc}; measuring the reference only", file=sys.stderr)
                    runs.append(one_run(spec, workdir, repeats, matcher))
                gc.collect()

    met = matcher and all(r["goal_met"] for r in runs)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "params": {
            "sizes": list(sizes),
            "overlaps": list(overlaps),
            "repeats": repeats,
            "seed": args.seed,
            "quick": args.quick,
            "examples_per_kind": EXAMPLES,
            "single_births": args.single_births,
        },
        "goal": {"f1": GOAL_F1, "kind_recall": GOAL_KIND_RECALL, "twins_auto_matched": 0},
        "pipeline": "tongban match REGISTRATION RESIDENCE --out LINKS.csv (in process)" if matcher else None,
        "pipeline_reason": matcher_reason,
        "runs": runs,
        "goal_met": met,
        "max_rss_bytes": max_rss_bytes(),
        "elapsed_s": time.perf_counter() - started,
    }
    path = write_result("matching", result, results_dir=args.results_dir)
    print(summary_table(runs))
    print()
    if not matcher:
        print(f"GOAL: not measured — {matcher_reason}")
    else:
        print(
            f"GOAL (F1 ≥ {GOAL_F1}, recall ≥ {GOAL_KIND_RECALL} on every kind, no twin auto-linked): "
            + ("met" if met else "NOT met")
        )
        table = single_births_table(runs)
        if table:
            print()
            print(table)
        report = failures_report(runs)
        if report:
            print()
            print(report)
        if args.feedback is not None:
            args.feedback.write_text(feedback(runs, args.seed), encoding="utf-8")
    print(f"max RSS {mib(result['max_rss_bytes'])}; results: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
