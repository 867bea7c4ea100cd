"""bench/accuracy's own pieces: the MiniLM calibration sentences are kept apart from the
held-out ones, and the ratio at equal accuracy is the smallest file that passes on the
criterion (validation for the CNN, never its test split)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "bench"
for path in (BENCH / "accuracy", BENCH / "minilm"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import roundtrip  # noqa: E402
import sentences  # noqa: E402

# bench/accuracy/run.py by its path: bench/paper has a run.py too.
_spec = importlib.util.spec_from_file_location("accuracy_run", BENCH / "accuracy" / "run.py")
assert _spec is not None and _spec.loader is not None
accuracy = importlib.util.module_from_spec(_spec)
sys.modules["accuracy_run"] = accuracy
_spec.loader.exec_module(accuracy)


def test_calibration_sentences_are_not_held_out_sentences() -> None:
    calibration = {s.strip().lower() for s in sentences.CALIBRATION}
    held_out = {s.strip().lower() for s in roundtrip.SENTENCES}
    assert len(calibration) == len(sentences.CALIBRATION) >= 50
    assert not calibration & held_out


def row(tool: str, size: int, **scores: float) -> dict:
    return {"tool": tool, "coded_bytes": size, "bits_per_weight": size / 10, "scores": scores}


def test_equal_accuracy_is_the_smallest_passing_file_on_the_criterion() -> None:
    reference = {"validation": 99.0, "test": 99.0}
    rows = [
        row("a", 100, validation=98.9, test=90.0),  # passes on validation: test is not looked at
        row("a", 80, validation=98.6, test=99.0),  # fails on validation
        row("a", 120, validation=99.0, test=99.0),
        row("b", 50, validation=98.0, test=99.0),
    ]
    equal = {e["tool"]: e["row"] for e in accuracy.at_equal_accuracy("cnn", rows, reference)}
    assert equal["a"]["coded_bytes"] == 100 and equal["b"] is None
    cosines = [
        row("c", 10, min_cos=0.994, mean_cos=1.0),
        row("c", 20, min_cos=0.9951, mean_cos=1.0),
    ]
    equal = accuracy.at_equal_accuracy("minilm", cosines, {"min_cos": 1.0, "mean_cos": 1.0})
    assert equal[0]["row"]["coded_bytes"] == 20


def test_interpolation_between_neighbouring_points() -> None:
    rows = [row("z", 30, min_cos=0.97), row("z", 40, min_cos=0.99), row("z", 50, min_cos=0.999)]
    assert accuracy.interpolate_at_bits(rows, "z", "min_cos", 3.5) == pytest.approx(0.98)
    assert accuracy.interpolate_at_bits(rows, "z", "min_cos", 6.0) is None
