"""Reconciliation of a monitoring period between residence and registration nodes (SPEC §5)."""
