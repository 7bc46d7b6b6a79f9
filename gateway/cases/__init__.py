"""Cross-province cases (跨省通办, SPEC §6): pure cores, no transport or storage yet.

* :mod:`gateway.cases.types` — the case and its applications (recognition, the two disability
  subsidies), validation of form, and :func:`~gateway.cases.types.eligibility`;
* :mod:`gateway.cases.reasons` — reason codes for "not approved" and returns (data:
  ``gateway/data/case_reasons.toml``);
* :mod:`gateway.cases.lifecycle` — the state machine as a table of transitions per role,
  :func:`~gateway.cases.lifecycle.apply`, :func:`~gateway.cases.lifecycle.route_registration` and
  the rendering of ``docs/case-lifecycle.md``;
* :mod:`gateway.cases.clock` — working-day calendar (data: ``gateway/data/holidays.toml``) and the
  statutory clocks, :func:`~gateway.cases.clock.due_dates` and :func:`~gateway.cases.clock.overdue`.
"""
