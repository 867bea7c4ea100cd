"""Magnitude pruning of LeNet-5 with retraining, at two granularities.

At about 125x everything in the file must fit in ~0.26 bit per weight, and a pruning mask coded
as a bitmap costs about H(p) bits per weight (0.11 bit at 1.5 % kept, 7 KB for fc1 alone after
a universal coder), so unstructured pruning cannot reach the target. Here each round first
keeps the largest *units* (conv1 and conv2 channels, fc1's hidden neurons), scored by the
magnitude of the weights that go in and out of them (the product of the two L2 norms), then the
largest weights inside the rows and columns of the units kept. Dead units leave whole rows and
columns of zeros in the bitmap, which LZ and BWT coders store in a few bytes; inside the live
block the bitmap costs its entropy. Rounds shrink geometrically from the dense model to the
final counts, each followed by retraining of the weights kept (Han et al. 2015).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# The four weight tensors of lenet5_mnist.lenet5(), by state_dict name.
CONV1, CONV2, FC1, FC2 = "0.weight", "2.weight", "5.weight", "7.weight"
WEIGHTS = (CONV1, CONV2, FC1, FC2)
FC1_INPUTS_PER_CHANNEL = 16  # conv2's 4x4 output map per channel, flattened into fc1's inputs
DENSE_UNITS = {"conv1": 20, "conv2": 50, "hidden": 500}


@dataclass(frozen=True)
class PruneTarget:
    """Units kept (conv1 and conv2 channels, fc1 hidden neurons) and, per weight tensor, the
    fraction of the weights among the live units' rows and columns that is kept."""

    units: dict[str, int]
    inside: dict[str, float]

    def at(self, fraction: float) -> PruneTarget:
        """The target ``fraction`` of the way from the dense model, geometrically."""
        units = {
            k: round(dense * (self.units[k] / dense) ** fraction)
            for k, dense in DENSE_UNITS.items()
        }
        return PruneTarget(units, {k: v**fraction for k, v in self.inside.items()})


def _largest(score: torch.Tensor, count: int) -> torch.Tensor:
    keep = torch.zeros(score.numel(), dtype=torch.bool)
    keep[torch.topk(score.reshape(-1), count).indices] = True
    return keep.reshape(score.shape)


def masks_for(model: nn.Module, target: PruneTarget) -> dict[str, torch.Tensor]:
    """Boolean masks (True: kept) of the four weight tensors for ``target``, from the model's
    current weights."""
    w = {name: p.detach() for name, p in model.named_parameters() if name in WEIGHTS}
    hidden = _largest(w[FC1].norm(dim=1) * w[FC2].norm(dim=0), target.units["hidden"])
    into_fc1 = w[FC1][hidden].reshape(-1, w[CONV2].shape[0], FC1_INPUTS_PER_CHANNEL)
    conv2 = _largest(
        w[CONV2].flatten(1).norm(dim=1) * into_fc1.transpose(0, 1).flatten(1).norm(dim=1),
        target.units["conv2"],
    )
    conv1 = _largest(
        w[CONV1].flatten(1).norm(dim=1) * w[CONV2][conv2].transpose(0, 1).flatten(1).norm(dim=1),
        target.units["conv1"],
    )
    live = {
        CONV1: conv1[:, None, None, None].expand_as(w[CONV1]),
        CONV2: (conv2[:, None] & conv1[None, :])[:, :, None, None].expand_as(w[CONV2]),
        FC1: hidden[:, None] & conv2.repeat_interleave(FC1_INPUTS_PER_CHANNEL)[None, :],
        FC2: hidden[None, :].expand_as(w[FC2]),
    }
    masks = {}
    for name, block in live.items():
        count = max(1, round(target.inside[name] * int(block.sum())))
        score = torch.where(block, w[name].abs(), torch.full_like(w[name], -1.0))
        masks[name] = _largest(score, count)
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def prune(
    model: nn.Module,
    target: PruneTarget,
    rounds: int,
    retrain: Callable[[Callable[[], None]], None],
    report: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place in ``rounds`` steps to ``target``; after each step
    ``retrain(after_step)`` trains it, ``after_step`` re-applying the masks after every
    optimizer step so that pruned weights stay zero. Returns the final masks."""
    masks: dict[str, torch.Tensor] = {}
    for step in range(1, rounds + 1):
        masks = masks_for(model, target.at(step / rounds))
        apply_masks(model, masks)
        retrain(lambda masks=masks: apply_masks(model, masks))
        if report is not None:
            report(step, masks)
    return masks


def zero_dead_biases(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of ``state`` where the bias of every unit whose outgoing weights are all pruned is
    0: such a unit adds a constant that no later layer sees, so the output does not change and
    the zeros cost almost nothing to store."""
    out = {name: array.copy() for name, array in state.items()}
    channels = out[CONV2].shape[0]
    out["0.bias"][~np.any(out[CONV2], axis=(0, 2, 3))] = 0
    out["2.bias"][~np.any(out[FC1].reshape(-1, channels, FC1_INPUTS_PER_CHANNEL), axis=(0, 2))] = 0
    out["5.bias"][~np.any(out[FC2], axis=0)] = 0
    return out
