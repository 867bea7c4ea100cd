"""The .udnc conformance suite: test vectors, the runner that validates third-party encoders and
decoders, and hypothesis strategies for property tests (see spec/IMPLEMENTERS.md)."""

from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SCHEMA = Path(__file__).resolve().parent.parent / "schema" / "case.schema.json"
