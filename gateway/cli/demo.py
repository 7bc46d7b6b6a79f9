"""``tongban demo``: run the project's end-to-end story on this machine."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gateway import demo


def _run(args: argparse.Namespace) -> int:
    if not args.verbose:
        logging.getLogger("tongban").setLevel(logging.WARNING)  # the story, not the nodes' chatter
    summary = demo.run(
        out=sys.stdout,
        workdir=Path(args.workdir) if args.workdir else None,
        seed=args.seed,
        households=args.households,
        period_label=args.period,
        serve=args.serve,
        json_path=Path(args.json) if args.json else None,
    )
    if args.json:
        print(f"\nsummary written to {args.json}")
    elif args.verbose:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = groups.add_parser("demo", help="run the whole story: county nodes on loopback, rosters imported")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    p.add_argument("--serve", action="store_true", help="keep the nodes running until Ctrl-C")
    p.add_argument("--workdir", metavar="DIR", help="keep node data here (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=2026, help="synthetic data seed (default: %(default)s)")
    p.add_argument("--households", type=int, default=400, help="synthetic households (default: %(default)s)")
    p.add_argument("--period", help="monitoring period label, e.g. 2026Q3 (default: the latest completed quarter)")
    p.set_defaults(handler=_run)
