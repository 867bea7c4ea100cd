"""One conformance case as the ``CASES`` table declares it: its id, description, features,
builder and expected error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .mini_encoder import Built


@dataclass(frozen=True)
class Case:
    """One conformance case. ``error`` is None for a valid case. ``build`` returns the input
    file, or (input, tensors) for a valid case whose decoded tensors (some or all, by name) are
    known independently of the reference decoder. ``profiles`` None: derived from features."""

    id: str
    description: str
    build: Callable[[], Built]
    features: tuple[str, ...] = ()
    error: str | None = None
    comment: str | None = None
    profiles: tuple[str, ...] | None = None
    # Set when the reference decoder disagrees with the spec on this case (a reported bug):
    # the vector follows the spec; a valid case then takes its expected tensors from ``build``.
    reference_deviation: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


def valid(
    id: str, description: str, build: Callable[[], Built], *features: str, **extra: Any
) -> Case:
    return Case(id, description, build, tuple(features), **extra)


def invalid(
    id: str, error: str, description: str, build: Callable[[], Built], *features: str, **extra: Any
) -> Case:
    return Case(id, description, build, tuple(features), error=error, **extra)
