"""Reconciliation of a monitoring period between residence and registration nodes (SPEC §5).

* :mod:`gateway.reconcile.findings` — the rules: a pure function from match results, ledger facts
  and which rosters arrived to findings and the answers owed to each sender;
* :mod:`gateway.reconcile.rosters` — reading back from the inbox the rosters (complete or not) and
  the answers received for a period;
* :mod:`gateway.reconcile.service` — a run on one node (match, derive, store, queue answers) and
  the staff's report;
* :mod:`gateway.reconcile.store` — the ``reconcile_findings`` table.
"""
