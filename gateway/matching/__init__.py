"""Matching migrant notices against the registration ledger (SPEC §5): a pure core with no I/O."""
