"""Matching migrant notices against the registration ledger (SPEC §5): a pure core with no I/O.

The public API (everything a caller needs; no database, no gRPC, numpy only)::

    encode(key, *, name, birth_date) -> (name_encoding, birth_encoding)
        The keyed Bloom-filter encodings a notice carries (``Notice.name_encoding``,
        ``Notice.birth_encoding``), under the 32-byte pair key of ``gateway.exchange.tokens.pair_key``.
        Deterministic; fixed sizes (49 and 17 bytes); ``birth_date=None`` gives an all-zero
        (unknown) birth filter. See :mod:`gateway.matching.bloom` for the layout.

    Entry(ref, id_token=b"", name_encoding=b"", birth_encoding=b"", sex=None, birth_year_month=None,
          single_birth=False, name_edits=b"")
        One record as the matcher sees it: nothing in clear but sex and year-month. ``id_token`` is
        ``tokens.id_token(pair key, ID)`` for a valid ID, ``b""`` otherwise. ``single_birth`` and
        ``name_edits`` are the registration side's own knowledge (refused on the right, never sent):
        ``Encoder(key).name_edits(plain name)``, and ``True`` only when the household register —
        not merely the ledger — says no sibling was born within a day of the child.

    Thresholds(auto=0.85, review=0.65, margin=0.1)
    Band.MATCHED / Band.REVIEW / Band.NOT_FOUND
    Link(left, right, band, score, stage ("exact" | "fuzzy"), hints)
        hints: per-field agreement that reveals no value, e.g.
        ``{"name": "agree", "birth": "partial", "sex": "unknown"}`` (agree / partial / disagree / unknown).
    MatchResult(links, unmatched_left, unmatched_right)   # links: matched and review only

    match(left, right, thresholds=Thresholds()) -> MatchResult
        left = the registration ledger, right = the residence notices. Exact on equal non-empty
        id_token (one to one), then fuzzy on the rest; two entries with different non-empty
        id_tokens, or two different known sexes, are never linked; an automatic match needs
        score ≥ auto, a margin over the next-best candidate of either entry and names that sound
        the same (or, for a known single birth, a one-character edit of its name born the same
        day); below auto never auto-links. See
        :mod:`gateway.matching.matcher` for the score and :mod:`gateway.matching.names` for the
        normalisation of names.

Both sides must encode under the same pair key. For a whole roster, ``Encoder(key)`` (re-exported
here) caches token positions and is what :func:`encode` uses underneath.
"""

from __future__ import annotations

from datetime import date

from gateway.matching.bloom import BIRTH_ENCODING_BYTES, NAME_ENCODING_BYTES, Encoder, encoder_for
from gateway.matching.matcher import Band, Entry, Link, MatchResult, Ref, Thresholds, match
from gateway.matching.names import NormalisedName, normalise_name

__all__ = [
    "BIRTH_ENCODING_BYTES",
    "NAME_ENCODING_BYTES",
    "Band",
    "Encoder",
    "Entry",
    "Link",
    "MatchResult",
    "NormalisedName",
    "Ref",
    "Thresholds",
    "encode",
    "match",
    "normalise_name",
]


def encode(key: bytes, *, name: str, birth_date: date | None) -> tuple[bytes, bytes]:
    """``(name_encoding, birth_encoding)`` of one child under a 32-byte pair key (``ValueError``
    for another key size). Deterministic: the same key, name and date give the same bytes."""
    encoder = encoder_for(key)
    return encoder.name(name), encoder.birth(birth_date)
