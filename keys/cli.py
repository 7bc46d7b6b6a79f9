"""``tongban keys``: the provincial operators' and nodes' key tool (placeholder being built)."""

from __future__ import annotations

import argparse


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    groups.add_parser("keys", help="root, province, node and directory keys (SPEC §2)")
