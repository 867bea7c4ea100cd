"""bench/paper's own pieces: the Huffman code lengths of the k-means baseline, and the pruning
of LeNet-5 (units, then weights inside them; dead units' biases zeroed without changing the
output). The benchmark's results rest on them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

BENCH = Path(__file__).resolve().parents[1] / "bench"
for path in (BENCH, BENCH / "paper"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import baseline  # noqa: E402
import pruning  # noqa: E402
from lenet5_mnist import float_state, lenet5, model_from  # noqa: E402


@pytest.mark.parametrize(
    "counts",
    [[5, 1, 1, 2], [1, 1], [7], [0, 3, 0, 3], [100, 50, 25, 12, 6, 3, 2, 1, 1], [1] * 33],
)
def test_huffman_lengths_are_a_complete_optimal_prefix_code(counts: list[int]) -> None:
    counts_array = np.array(counts)
    lengths = baseline.huffman_lengths(counts_array)
    used = counts_array > 0
    assert np.all(lengths[~used] == 0) and np.all(lengths[used] >= 1)
    if used.sum() > 1:  # Kraft equality: a full binary tree
        assert math.isclose(sum(2.0 ** -int(n) for n in lengths[used]), 1.0)
    # Within one bit per symbol of the entropy, and no worse than a fixed-length code.
    p = counts_array[used] / counts_array.sum()
    entropy = float(-(p * np.log2(p)).sum())
    mean = float(np.dot(p, lengths[used]))
    assert entropy - 1e-9 <= mean <= entropy + 1
    assert mean <= max(1, math.ceil(math.log2(used.sum())))


def test_huffman_bytes_counts_the_table() -> None:
    indices = np.array([0, 0, 0, 1])  # lengths 1, 1: 4 bits -> 1 byte, + 2 table bytes
    assert baseline.huffman_bytes(indices, 2) == 3


def test_kmeans_recovers_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(m, 0.01, 200) for m in (-1.0, 0.0, 2.0)])
    centroids, indices = baseline.kmeans(values, 3)
    np.testing.assert_allclose(np.sort(centroids), [-1.0, 0.0, 2.0], atol=0.01)
    assert np.bincount(indices).tolist() == [200, 200, 200]


def _random_lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return lenet5()


def test_masks_keep_the_target_units_and_fractions() -> None:
    target = pruning.PruneTarget(
        units={"conv1": 10, "conv2": 20, "hidden": 30},
        inside={pruning.CONV1: 1.0, pruning.CONV2: 0.5, pruning.FC1: 0.25, pruning.FC2: 1.0},
    )
    masks = pruning.masks_for(_random_lenet(), target)
    fc1, fc2 = masks[pruning.FC1], masks[pruning.FC2]
    assert int(fc2.any(dim=0).sum()) == 30  # hidden neurons kept: fc2 keeps all of them
    assert int(fc1.any(dim=1).sum()) <= 30 and not fc1[~fc2.any(dim=0)].any()
    live_inputs = fc1.reshape(500, 50, 16).any(dim=(0, 2))
    assert int(live_inputs.sum()) <= 20
    assert int(fc1.sum()) == round(0.25 * 30 * 20 * 16)
    assert int(masks[pruning.CONV2].sum()) == round(0.5 * 20 * 10 * 25)
    assert int(masks[pruning.CONV1].any(dim=(1, 2, 3)).sum()) == 10


def test_target_at_zero_is_dense_and_at_one_is_the_target() -> None:
    target = pruning.PruneTarget({"conv1": 5, "conv2": 5, "hidden": 5}, {pruning.FC1: 0.1})
    assert target.at(0.0).units == pruning.DENSE_UNITS
    assert target.at(1.0).units == target.units
    assert target.at(0.5).inside[pruning.FC1] == pytest.approx(0.1**0.5)


def test_zero_dead_biases_keeps_the_output() -> None:
    model = _random_lenet()
    target = pruning.PruneTarget(
        units={"conv1": 8, "conv2": 12, "hidden": 16},
        inside={pruning.CONV1: 1.0, pruning.CONV2: 0.6, pruning.FC1: 0.5, pruning.FC2: 1.0},
    )
    pruning.apply_masks(model, pruning.masks_for(model, target))
    state = float_state(model)
    cleaned = pruning.zero_dead_biases(state)
    assert int(np.count_nonzero(cleaned["5.bias"])) <= 16
    assert int(np.count_nonzero(cleaned["2.bias"])) <= 12
    assert int(np.count_nonzero(cleaned["0.bias"])) <= 8
    assert np.array_equal(state["5.bias"], float_state(model)["5.bias"])  # input untouched
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model_from(cleaned)(x), model(x), rtol=1e-5, atol=1e-5)
