"""The non-universal baseline: k-means (scalar) quantization of the kept weights with Huffman
coding of the cluster indices (Deep Compression, Han et al. 2016; Choi et al. 2017 use the
same coding after entropy-constrained scalar quantization), and fine-tuning of the shared
centroids.

Its size is counted from the same parts as a .udnc file's, per weight tensor: the pruning
mask (the same bitmap, compressed by the same coder: the caller passes its bytes), the
Huffman-coded indices, the code table (one byte per symbol: its code length, as canonical
Huffman codes need) and the centroids (float32); plus the biases. No container header is
counted, which favours the baseline.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import torch
from torch import nn

KMEANS_ITERATIONS = 50


def huffman_lengths(counts: np.ndarray) -> np.ndarray:
    """Code lengths of an optimal prefix code for symbol ``counts`` (0 for unused symbols; a
    single used symbol gets 1 bit).

    >>> huffman_lengths(np.array([5, 1, 1, 2])).tolist()
    [1, 3, 3, 2]
    """
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = [int(i) for i in np.flatnonzero(counts)]
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    order = itertools.count()  # ties broken by insertion order: deterministic
    heap = [(int(counts[i]), next(order), [i]) for i in used]
    heapq.heapify(heap)
    while len(heap) > 1:
        weight_a, _, symbols_a = heapq.heappop(heap)
        weight_b, _, symbols_b = heapq.heappop(heap)
        lengths[symbols_a + symbols_b] += 1  # every merge adds one bit to the merged symbols
        heapq.heappush(heap, (weight_a + weight_b, next(order), symbols_a + symbols_b))
    return lengths


def huffman_bytes(indices: np.ndarray, clusters: int) -> int:
    """Bytes of the Huffman-coded ``indices`` plus the code table (one byte per symbol)."""
    counts = np.bincount(indices, minlength=clusters)
    bits = int(np.dot(counts, huffman_lengths(counts)))
    return -(-bits // 8) + clusters


def kmeans(values: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """1-D k-means (Lloyd) with linear initialisation between min and max (the best of Deep
    Compression's three): (centroids float32, indices)."""
    x = values.astype(np.float64)
    centroids = np.linspace(x.min(), x.max(), clusters)
    for _ in range(KMEANS_ITERATIONS):
        edges = (centroids[1:] + centroids[:-1]) / 2
        indices = np.searchsorted(edges, x)
        sums = np.bincount(indices, weights=x, minlength=clusters)
        counts = np.bincount(indices, minlength=clusters)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    edges = (centroids[1:] + centroids[:-1]) / 2
    return centroids.astype(np.float32), np.searchsorted(edges, x)


class SharedWeights(nn.Module):
    """A model whose pruned weight tensors are k-means centroids gathered by index; the
    centroids and the model's other parameters (biases) train, with the average gradient per
    centroid (Deep Compression's shared-weight fine-tuning)."""

    def __init__(self, model: nn.Module, state: dict[str, np.ndarray], clusters: int) -> None:
        super().__init__()
        self.model = model
        self.clusters = clusters
        self.centroids = nn.ParameterDict()
        self.layout: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Size]] = {}
        for name, param in model.named_parameters():
            if not name.endswith("weight"):
                continue
            array = state[name].reshape(-1)
            kept = np.flatnonzero(array)
            centroids, indices = kmeans(array[kept], clusters)
            key = name.replace(".", "_")
            self.centroids[key] = nn.Parameter(torch.from_numpy(centroids))
            counts = np.maximum(np.bincount(indices, minlength=clusters), 1)
            self.register_buffer(f"{key}_counts", torch.from_numpy(counts.astype(np.float32)))
            self.layout[name] = (torch.from_numpy(kept), torch.from_numpy(indices), param.shape)

    def weights(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, (kept, indices, shape) in self.layout.items():
            key = name.replace(".", "_")
            centroids = self.centroids[key].clone()
            if centroids.requires_grad:  # the average, not the sum, of the weights' gradients
                counts = getattr(self, f"{key}_counts")
                centroids.register_hook(lambda grad, counts=counts: grad / counts)
            values = torch.index_select(centroids, 0, indices)
            flat = values.new_zeros(shape.numel()).index_put((kept,), values)
            out[name] = flat.reshape(shape)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tensors = self.weights()
        tensors.update(
            (name, p) for name, p in self.model.named_parameters() if name not in self.layout
        )
        return torch.func.functional_call(self.model, tensors, (x,))

    def trainable(self) -> list[nn.Parameter]:
        others = [p for name, p in self.model.named_parameters() if name not in self.layout]
        return [*self.centroids.values(), *others]

    @torch.no_grad()
    def state(self) -> dict[str, np.ndarray]:
        """The model's state with the shared weights (what the baseline decodes to)."""
        tensors = {name: t.numpy().copy() for name, t in self.weights().items()}
        return {
            name: tensors[name] if name in tensors else t.detach().numpy().copy()
            for name, t in self.model.state_dict().items()
        }

    def coded_bytes(self) -> dict[str, int]:
        """Per weight tensor: Huffman-coded indices + code table + float32 centroids."""
        return {
            name: huffman_bytes(indices.numpy(), self.clusters) + 4 * self.clusters
            for name, (_, indices, _) in self.layout.items()
        }
