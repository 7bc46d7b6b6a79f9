"""Weighted choice with precomputed cumulative weights: one ``random()`` and a bisection per draw.

Every draw takes the caller's :class:`random.Random`, so sequences are reproducible from a seed.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from random import Random
from typing import Generic, TypeVar

from gateway.errors import ConfigError

T = TypeVar("T")


class Weighted(Generic[T]):
    """A fixed population with fixed weights."""

    __slots__ = ("_cum", "_items", "_total")

    def __init__(self, pairs: Sequence[tuple[T, float]]) -> None:
        if not pairs or any(weight < 0 for _, weight in pairs):
            raise ConfigError("a weighted choice needs at least one item and no negative weight")
        self._items = tuple(item for item, _ in pairs)
        self._cum = tuple(itertools.accumulate(weight for _, weight in pairs))
        self._total = self._cum[-1]
        if self._total <= 0:
            raise ConfigError("a weighted choice needs a positive total weight")

    @classmethod
    def zipf(cls, ranked: Sequence[T], exponent: float = 1.0) -> Weighted[T]:
        """Items ordered most popular first, weighted 1 / rank ** exponent (duplicates dropped)."""
        unique = list(dict.fromkeys(ranked))
        return cls([(item, 1.0 / rank**exponent) for rank, item in enumerate(unique, start=1)])

    def pick(self, rng: Random) -> T:
        index = bisect.bisect_right(self._cum, rng.random() * self._total)
        return self._items[min(index, len(self._items) - 1)]

    @property
    def items(self) -> tuple[T, ...]:
        return self._items

    def __len__(self) -> int:
        return len(self._items)
