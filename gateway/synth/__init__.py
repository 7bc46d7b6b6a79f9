"""Seeded synthetic child records for demos, tests and benchmarks (``tongban synth``).

Nothing produced here is a real person. See :mod:`gateway.synth.generator` for what the data
looks like and :mod:`gateway.synth.names` for the names.
"""

from gateway.domain.codec import record_from_json, record_to_json
from gateway.synth.export import CSV_HEADER, write_csv, write_jsonl
from gateway.synth.generator import (
    Household,
    SynthSpec,
    facts_of,
    generate,
    generate_households,
    roster_for,
)

__all__ = [
    "CSV_HEADER",
    "Household",
    "SynthSpec",
    "facts_of",
    "generate",
    "generate_households",
    "record_from_json",
    "record_to_json",
    "roster_for",
    "write_csv",
    "write_jsonl",
]
