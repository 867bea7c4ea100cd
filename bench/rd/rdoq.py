"""bench/rd/rdoq.py: does a λ·rate term help the dithered cubic quantizer (Z1)?

The encoder may pick any lattice point (spec §8.2). Rate-distortion optimized quantization
(RDOQ) picks, for each target t = w/Δ + u, the point p of least (t − p)² + λ·bits(p) of the two
integers around it (floor, floor + 1), bits(p) from a zeroth-order model of the
symbols refitted over three passes. This compares its (entropy, MSE) points with plain rounding
over a sweep of steps, on real weights (all-MiniLM-L6-v2's matrices, the MNIST CNN's), at rates
from about 1 to 6 bits per weight. Entropy is the zeroth-order entropy of the symbols (what rANS
approaches); MSE in units of the weights' mean square, so 10·log10(1/MSE) is the SQNR.

Usage: ``python bench/rd/rdoq.py [--out bench/rd]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "minilm"))

from lenet5_mnist import ROOT, environment  # noqa: E402

COMMAND = "python bench/rd/rdoq.py"
TENSORS = {
    "minilm": (
        "encoder.layer.2.intermediate.dense.weight",
        "encoder.layer.5.attention.self.value.weight",
    ),
    "mnist_cnn": ("classifier.0.weight", "features.3.weight"),
}
STEPS = (0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.5)  # Δ in units of the tensor's RMS
PLAIN_STEPS = tuple(np.geomspace(0.02, 6.0, 60))  # the plain curve, wider than every RDOQ point
LAMBDAS = (0.05, 0.1, 0.2, 0.4)


def entropy(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def rdoq(targets: np.ndarray, lam: float) -> np.ndarray:
    symbols = np.rint(targets)
    floor = np.floor(targets)
    candidates = np.stack([floor, floor + 1])
    for _ in range(3):
        values, counts = np.unique(symbols, return_counts=True)
        bits = -np.log2(counts / counts.sum())
        index = np.searchsorted(values, candidates).clip(0, values.size - 1)
        known = values[index] == candidates
        cost = (candidates - targets) ** 2 + lam * np.where(known, bits[index], bits.max() + 2)
        symbols = np.take_along_axis(candidates, cost.argmin(axis=0)[None], axis=0)[0]
    return symbols


def point(weights: np.ndarray, dither: np.ndarray, step: float, lam: float | None) -> dict:
    targets = weights / step + dither
    symbols = np.rint(targets) if lam is None else rdoq(targets, lam)
    error = (symbols - targets) * step
    return {
        "entropy": entropy(symbols),
        "sqnr_db": float(10 * np.log10(np.mean(weights**2) / np.mean(error**2))),
    }


def load(model: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    if model == "minilm":
        import roundtrip

        path = roundtrip.model_dir() / "model.safetensors"
    else:
        path = ROOT / "examples" / "mnist_cnn.safetensors"
    state = load_file(str(path))
    return {name: state[name].astype(np.float64).ravel() for name in TENSORS[model]}


def at_equal_sqnr(curve: list[dict], sqnr: float) -> float | None:
    """Entropy interpolated at ``sqnr`` on a curve sorted by SQNR (None outside it)."""
    xs = [p["sqnr_db"] for p in curve]
    ys = [p["entropy"] for p in curve]
    if not xs[0] <= sqnr <= xs[-1]:
        return None
    return float(np.interp(sqnr, xs, ys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    start_load = Path("/proc/loadavg").read_text().strip()
    started = time.perf_counter()
    rows = []
    for model in TENSORS:
        for name, weights in load(model).items():
            dither = np.random.default_rng(0).random(weights.size) - 0.5
            rms = float(np.sqrt(np.mean(weights**2)))
            plain = sorted(
                (point(weights, dither, k * rms, None) for k in PLAIN_STEPS),
                key=lambda p: p["sqnr_db"],
            )
            for lam in LAMBDAS:
                for k in STEPS:
                    found = point(weights, dither, k * rms, lam)
                    equal = at_equal_sqnr(plain, found["sqnr_db"])
                    saved = None if equal is None else equal - found["entropy"]
                    rows.append(
                        {"model": model, "tensor": name, "lambda": lam, "step_rms": k, **found,
                         "bits_saved": saved}
                    )  # fmt: skip
    document = {
        "command": COMMAND + "".join(" " + a for a in sys.argv[1:]),
        "environment": environment(),
        "load_average": [start_load, Path("/proc/loadavg").read_text().strip()],
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    text = render(document)
    if args.out:
        (args.out / "rdoq.json").write_text(json.dumps(document, indent=1) + "\n")
        (args.out / "rdoq.md").write_text(text)
    print(text)


def render(document: dict) -> str:
    env = document["environment"]
    rows = document["rows"]
    best = max(r["bits_saved"] for r in rows if r["bits_saved"] is not None)
    lines = [
        "# RDOQ on the dithered cubic quantizer",
        "",
        f"Command: `{document['command']}`; {env['date']}; {env['machine']}; load average "
        f"{document['load_average'][0]} at the start, {document['load_average'][1]} at the end; "
        f"commit {env['commit']}; {document['seconds']:.0f} s. In process, numpy.",
        "",
        "Bits saved = entropy of plain rounding interpolated at the RDOQ point's SQNR, minus the "
        "RDOQ point's entropy (positive: RDOQ is better at equal SQNR).",
        "",
        f"Largest saving over every tensor, λ and step: {best:.4f} bit per weight.",
        "",
        "| model | tensor | λ | Δ / RMS | entropy | SQNR dB | bits saved |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['tensor']} | {r['lambda']:g} | {r['step_rms']:g} | "
            f"{r['entropy']:.3f} | {r['sqnr_db']:.2f} | "
            + ("—" if r["bits_saved"] is None else f"{r['bits_saved']:+.4f}")
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
