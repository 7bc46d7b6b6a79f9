"""``tongban calibrate``: choose the matcher's thresholds on synthetic ledgers of a county's own size.

::

    tongban calibrate --rows 30000 [--overlap 0.7] [--seed S] [--candidates 0.90:0.70,0.85:0.65]

Generates a pair of ledgers with known truth (:mod:`gateway.synth.ledgers`) of ``--rows`` rows
each, runs the real offline pipeline (``tongban match REGISTRATION RESIDENCE --out LINKS.csv``, in
this process) once per candidate ``(auto, review)`` pair of thresholds, scores each run with
:func:`gateway.matching.evaluate.evaluate`, and prints precision, recall and F1 of the automatic
links, the size of the review band (true and false links a person would have to look at), the
twins and siblings linked automatically (must be none), and the suggested thresholds as the
``[matching]`` section of ``node.toml``. Only counts and rates are printed, never a row's content.

The same helpers (:func:`run_match`, :func:`score_links`) drive ``bench/matching.py``.

Exit codes: 0 done; 78 when ``tongban match`` is not available or fails; otherwise those of
``tongban``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.matching.evaluate import Evaluation, evaluate, read_links
from gateway.synth.ledgers import (
    ID_KINDS,
    KINDS,
    LedgerFiles,
    LedgerPair,
    LedgerSpec,
    generate_ledgers,
    write_ledger_files,
)

#: The goal the benchmark and the calibration hold the matcher to.
GOAL_F1 = 0.99
GOAL_KIND_RECALL = 0.95
DEFAULT_CANDIDATES: tuple[tuple[float, float], ...] = (
    (0.95, 0.75),
    (0.90, 0.70),
    (0.85, 0.65),
    (0.80, 0.60),
    (0.75, 0.55),
)


class MatcherUnavailable(ConfigError):
    """``tongban match`` is not installed yet, or failed (its own message went to standard error)."""


def run_match(
    registration: Path,
    residence: Path,
    out: Path,
    *,
    auto: float | None = None,
    review: float | None = None,
    household_register: Path | None = None,
) -> str:
    """Run ``tongban match REGISTRATION RESIDENCE --out OUT [--auto A --review R]
    [--household-register FILE]`` in this process and return the summary it printed (counts only).

    Raises :class:`MatcherUnavailable` unless it exits 0 and wrote ``out``."""
    from gateway.cli import main  # here, not at import: gateway.cli loads every command group

    argv = ["match", str(registration), str(residence), "--out", str(out)]
    if auto is not None:
        argv += ["--auto", repr(auto)]
    if review is not None:
        argv += ["--review", repr(review)]
    if household_register is not None:
        argv += ["--household-register", str(household_register)]
    out.unlink(missing_ok=True)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # its own summary: counts we print better ourselves
            code = main(argv)
    except SystemExit as exc:  # argparse: the command or an option does not exist (yet)
        code = exc.code if isinstance(exc.code, int) else 2
    if code != 0 or not out.exists():
        raise MatcherUnavailable(f"`tongban match` exited {code} without writing its links file")
    return printed.getvalue()


def score_links(pair: LedgerPair, links: Path, *, examples_per_kind: int = 10) -> Evaluation:
    """Score a ``LINKS.csv`` against the truth of ``pair``."""
    with links.open(encoding="utf-8", newline="") as stream:
        predicted = read_links(stream)
    return evaluate(
        pair.truth,
        predicted,
        registration_valid_id={i for i, ok in enumerate(pair.registration_valid_id, start=1) if ok},
        residence_valid_id={i for i, ok in enumerate(pair.residence_valid_id, start=1) if ok},
        siblings=pair.siblings,
        kinds_order=KINDS,
        context_kinds=ID_KINDS,
        examples_per_kind=examples_per_kind,
    )


def goal_met(result: Evaluation) -> bool:
    """F1 ≥ 0.99, recall ≥ 0.95 on every kind, no twin or sibling linked automatically."""
    return (
        result.overall.f1 >= GOAL_F1
        and not result.failing_kinds(GOAL_KIND_RECALL)
        and not any(result.sibling_auto_matched.values())
    )


@dataclass(frozen=True)
class CandidateResult:
    auto: float
    review: float
    evaluation: Evaluation

    @property
    def review_band(self) -> int:
        return self.evaluation.review_true + self.evaluation.review_false

    @property
    def safe(self) -> bool:
        """No twin or sibling linked automatically (a hard requirement)."""
        return not any(self.evaluation.sibling_auto_matched.values())


def suggest(results: Sequence[CandidateResult]) -> CandidateResult | None:
    """The safe candidate with the best F1; among equals (within 0.001), the smaller review band."""
    safe = [r for r in results if r.safe]
    if not safe:
        return None
    best_f1 = max(r.evaluation.overall.f1 for r in safe)
    close = [r for r in safe if r.evaluation.overall.f1 >= best_f1 - 0.001]
    return min(close, key=lambda r: (r.review_band, -r.evaluation.overall.f1))


def calibrate(
    spec: LedgerSpec, candidates: Sequence[tuple[float, float]], workdir: Path
) -> tuple[LedgerPair, LedgerFiles, list[CandidateResult]]:
    pair = generate_ledgers(spec)
    files = write_ledger_files(pair, workdir)
    results = []
    for auto, review in candidates:
        links = workdir / f"links-{auto:.3f}-{review:.3f}.csv"
        run_match(files.registration, files.residence, links, auto=auto, review=review)
        results.append(CandidateResult(auto, review, score_links(pair, links)))
    return pair, files, results


def _where() -> str:
    from gateway import config

    if "matching" in getattr(config, "_SCHEMA", {}):
        return "Put this in node.toml (keys `auto` and `review` of its [matching] section):"
    return "Put this in node.toml (the node configuration has no [matching] section yet: it must be added):"


# --- the command ------------------------------------------------------------------------------------


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser(
        "calibrate",
        help="choose the matcher's thresholds on synthetic ledgers of your county's size",
        description=(
            "Generate a synthetic pair of ledgers with known truth (--rows rows each), run `tongban match` "
            "on them for a few candidate (auto, review) thresholds, and print precision, recall, F1 and the "
            "review-band size of each, then the thresholds to put in node.toml. Prints counts only."
        ),
    )
    p.add_argument("--rows", type=_rows, required=True, help="rows in each ledger: your ledger's size")
    p.add_argument(
        "--overlap",
        type=_fraction,
        default=0.7,
        help="share of children in both ledgers, 0-1 (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=2026, help="random seed of the synthetic ledgers (default: %(default)s)")
    p.add_argument(
        "--candidates",
        type=_candidates,
        default=DEFAULT_CANDIDATES,
        metavar="AUTO:REVIEW,…",
        help="thresholds to try (default: " + ",".join(f"{a}:{r}" for a, r in DEFAULT_CANDIDATES) + ")",
    )
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the ledgers, truth and links files in DIR")
    p.set_defaults(handler=run)


def _rows(text: str) -> int:
    value = int(text)
    if value < 10:
        raise argparse.ArgumentTypeError("at least 10 rows")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError("must be above 0 and at most 1")
    return value


def _candidates(text: str) -> tuple[tuple[float, float], ...]:
    out = []
    for item in text.split(","):
        auto, sep, review = item.partition(":")
        try:
            pair = (float(auto), float(review))
        except ValueError:
            raise argparse.ArgumentTypeError("write candidates as AUTO:REVIEW,AUTO:REVIEW") from None
        if not sep or not 0.0 <= pair[1] <= pair[0] <= 1.0:
            raise argparse.ArgumentTypeError("each candidate needs 0 <= review <= auto <= 1")
        out.append(pair)
    return tuple(out)


def run(args: argparse.Namespace) -> int:
    spec = LedgerSpec(rows=args.rows, overlap=args.overlap, seed=args.seed)
    print(
        f"calibrate: two synthetic ledgers of {spec.rows:,} rows, {spec.pairs:,} children in both "
        f"(overlap {spec.overlap:.0%}, seed {spec.seed}); running `tongban match` {len(args.candidates)} times",
        file=sys.stderr,
    )
    if args.keep is not None:
        pair, _, results = calibrate(spec, args.candidates, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="tongban-calibrate-") as tmp:
            pair, _, results = calibrate(spec, args.candidates, Path(tmp))
    print(report(pair, results))
    return 0


def report(pair: LedgerPair, results: Sequence[CandidateResult]) -> str:
    lines = [
        f"{'auto':>6} {'review':>6} {'precision':>9} {'recall':>7} {'F1':>7} "
        f"{'review band':>11} {'(true/false)':>13} {'twins/siblings auto-linked':>26}  worst kind (recall)"
    ]
    for r in results:
        e = r.evaluation
        worst = min((k for k in e.kinds.values() if k.pairs), key=lambda k: k.recall, default=None)
        worst_text = f"{worst.kind} ({worst.recall:.3f})" if worst else "-"
        siblings = "/".join(str(e.sibling_auto_matched.get(rel, 0)) for rel in ("twin", "sibling"))
        lines.append(
            f"{r.auto:>6.3f} {r.review:>6.3f} {e.overall.precision:>9.4f} {e.overall.recall:>7.4f} "
            f"{e.overall.f1:>7.4f} {r.review_band:>11,} {f'({e.review_true:,}/{e.review_false:,})':>13} "
            f"{siblings:>26}  {worst_text}"
        )
    best = suggest(results)
    lines.append("")
    if best is None:
        lines.append(
            "No candidate is safe: every one links a twin or sibling automatically. Do not deploy these "
            "thresholds; raise `auto` (try --candidates 0.97:0.80,0.99:0.85)."
        )
        return "\n".join(lines)
    e = best.evaluation
    if len(results) > 1 and best.auto == min(r.auto for r in results):
        lines.append("The lowest `auto` tried is the best: try lower candidates too (--candidates).")
    verdict = "meets" if goal_met(e) else "does NOT meet"
    lines += [
        f"Suggested: auto = {best.auto}, review = {best.review} — F1 {e.overall.f1:.4f}, "
        f"{best.review_band:,} links to review per {pair.spec.rows:,}-row ledger; {verdict} the goal "
        f"(F1 ≥ {GOAL_F1}, recall ≥ {GOAL_KIND_RECALL} on every kind of corruption, no twin auto-linked).",
        _where(),
        "",
        "[matching]",
        f"auto = {best.auto}",
        f"review = {best.review}",
    ]
    return "\n".join(lines)
