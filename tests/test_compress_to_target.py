"""udnc_adapters.torch.compress_to_target on a small trained classifier with a real evaluation
(accuracy on held-out points): the file it writes decodes to a model within the tolerance, a
smaller tolerance never gives a smaller file, the caller's model is neither changed nor
evaluated, and bad arguments raise UDNCError subclasses before anything is written."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import udnc_format
from udnc_format.format.errors import (
    InvalidInputError,
    OptionError,
    TargetNotReachedError,
    WriteError,
)

torch = pytest.importorskip("torch")
from udnc_adapters import torch as udnc_torch  # noqa: E402

CLASSES, FEATURES, HIDDEN = 8, 64, 128  # both layers (8,192 and 1,024 weights) are quantized
FAST = {"sqnr_range": (2.0, 40.0), "sqnr_resolution": 1.0, "prune_grid": (0.0, 0.5)}


def points(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian mixture with overlapping classes, so that coarse weights cost accuracy."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    x = centres[labels] + 3.0 * torch.randn(count, FEATURES, generator=generator)
    return x, labels


def trained_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    )
    x, y = points(2000, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return trained_model()


HELD_OUT = points(2000, seed=2)


@torch.no_grad()
def accuracy(model: torch.nn.Module) -> float:
    x, y = HELD_OUT
    return 100.0 * float((model(x).argmax(1) == y).float().mean())


def decoded_score(model: torch.nn.Module, path: Path) -> float:
    fresh = trained_model()
    udnc_torch.load_into(fresh, path)
    return accuracy(fresh)


def test_the_file_decodes_within_tolerance(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "model.udnc"
    report = udnc_torch.compress_to_target(
        model, path, accuracy, tolerance=1.0, progress=False, **FAST
    )
    assert report.baseline == pytest.approx(accuracy(model))
    score = decoded_score(model, path)
    assert score == pytest.approx(report.score)
    assert report.baseline - score <= 1.0
    size = path.stat().st_size
    assert report.file_bytes == size
    source = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert report.source_bytes == source and report.ratio == pytest.approx(source / size)
    weights = sum(t.numel() for t in model.state_dict().values())
    assert report.bits_per_weight == pytest.approx(8 * size / weights)
    assert report.ratio > 4  # far below the float file: the search did lower the rate
    assert report.trials and all(
        t.accepted == (report.baseline - t.score <= 1.0) for t in report.trials
    )
    assert report.file_bytes == min(t.file_bytes for t in report.trials if t.accepted)
    with udnc_format.open(path) as handle:
        assert handle.info("0.weight").encoding == "lattice"
    assert not [p for p in tmp_path.iterdir() if p.name != "model.udnc"]  # no temporary left


def test_a_smaller_tolerance_never_gives_a_smaller_file(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    sizes = []
    for tolerance in (4.0, 1.0, 0.25):
        report = udnc_torch.compress_to_target(
            model, tmp_path / f"{tolerance}.udnc", accuracy, tolerance, progress=False, **FAST
        )
        assert report.baseline - decoded_score(model, tmp_path / f"{tolerance}.udnc") <= tolerance
        sizes.append(report.file_bytes)
    assert sizes == sorted(sizes)
    assert sizes[0] < sizes[-1]  # the tolerance matters on this model


def test_calibration_batches_give_importance(model: torch.nn.Module, tmp_path: Path) -> None:
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    calibration = [points(200, seed=3)[0] for _ in range(2)]
    path = tmp_path / "imp.udnc"
    report = udnc_torch.compress_to_target(
        model, path, accuracy, 1.0, batches=calibration, progress=False, **FAST
    )
    assert report.importance
    assert report.baseline - decoded_score(model, path) <= 1.0
    plain = udnc_torch.compress_to_target(
        model, tmp_path / "plain.udnc", accuracy, 1.0, progress=False, **FAST
    )
    assert not plain.importance
    assert path.read_bytes() != (tmp_path / "plain.udnc").read_bytes()  # the statistics acted
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_pruning_is_searched_and_can_be_fixed(model: torch.nn.Module, tmp_path: Path) -> None:
    report = udnc_torch.compress_to_target(
        model, tmp_path / "a.udnc", accuracy, 2.0, progress=False, **{**FAST, "prune_grid": [0.3]}
    )
    assert {t.prune for t in report.trials} == {0.3} and report.prune == 0.3
    with udnc_format.open(tmp_path / "a.udnc") as handle:
        assert handle.info("0.weight").pruned


def test_the_callers_model_is_neither_changed_nor_evaluated(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    before = {n: (t.detach().clone(), t._version) for n, t in model.state_dict().items()}
    seen = []

    def evaluate(candidate: torch.nn.Module) -> float:
        seen.append(candidate)
        with torch.no_grad():  # an evaluation that writes into what it is given
            candidate[0].weight.mul_(1.0)
        return accuracy(candidate)

    udnc_torch.compress_to_target(model, tmp_path / "m.udnc", evaluate, 1.0, progress=False, **FAST)
    assert seen and all(candidate is not model for candidate in seen)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name][0]) and tensor._version == before[name][1]


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"tolerance": -1.0}, OptionError, "tolerance"),
        ({"tolerance": math.nan}, OptionError, "tolerance"),
        ({"tolerance": "0.3"}, OptionError, "tolerance"),
        ({"sqnr": 20}, OptionError, "sqnr_range"),
        ({"step": 0.01}, OptionError, "searches 'step'"),
        ({"prune": 0.5}, OptionError, "prune_grid"),
        ({"sqnr_range": (30, 10)}, OptionError, "sqnr_range"),
        ({"sqnr_range": (0, 10)}, OptionError, "sqnr_range"),
        ({"sqnr_resolution": 0}, OptionError, "sqnr_resolution"),
        ({"prune_grid": (0.0, 1.0)}, OptionError, "prune_grid"),
        ({"prune_grid": ()}, OptionError, "prune_grid"),
        ({"lattice": "Z99"}, OptionError, "lattice"),
        ({"bits": 3}, InvalidInputError, "unknown option"),
        (
            {"batches": [torch.zeros(1, FEATURES)], "importance": {"0.weight": np.ones(FEATURES)}},
            OptionError,
            "not both",
        ),
        ({"evaluate": 3}, InvalidInputError, "evaluate must be a function"),
        ({"evaluate": lambda m: math.nan}, InvalidInputError, "finite"),
        ({"evaluate": lambda m: "good"}, InvalidInputError, "must return a number"),
        ({"model": {"w": torch.zeros(2)}}, InvalidInputError, "torch.nn.Module"),
    ],
)
def test_bad_arguments_raise_before_anything_is_written(
    model: torch.nn.Module, tmp_path: Path, arguments: dict, error: type, words: str
) -> None:
    call = {"model": model, "path": tmp_path / "x.udnc", "evaluate": accuracy, "tolerance": 1.0}
    call.update(arguments)
    with pytest.raises(error, match=words):
        udnc_torch.compress_to_target(progress=False, **call)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_reported_before_the_search(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    calls = []

    def evaluate(candidate: torch.nn.Module) -> float:
        calls.append(1)
        return accuracy(candidate)

    with pytest.raises(WriteError, match="does not exist"):
        udnc_torch.compress_to_target(model, tmp_path / "no" / "x.udnc", evaluate, 1.0)
    assert calls == []


def test_an_unreachable_target_writes_nothing(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "x.udnc"
    path.write_bytes(b"earlier output")
    with pytest.raises(TargetNotReachedError, match="no file within tolerance 0"):
        udnc_torch.compress_to_target(
            model,
            path,
            accuracy,
            0.0,
            progress=False,
            sqnr_range=(1.0, 1.0),
            prune_grid=(0.9,),
        )
    assert path.read_bytes() == b"earlier output"
    assert [p.name for p in tmp_path.iterdir()] == ["x.udnc"]
