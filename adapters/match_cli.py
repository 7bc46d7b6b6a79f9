"""Placeholder while `tongban match` is being built (replaced in this change)."""

from __future__ import annotations

import argparse


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    groups.add_parser("match", help="(being built)")
