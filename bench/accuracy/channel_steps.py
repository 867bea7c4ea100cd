"""bench/accuracy/channel_steps.py: would per-column quantization steps (a step per input column of
a weight matrix, Δ_j ∝ h_j^(-α/2), h_j the column's input second moment from calibration data)
gain accuracy at equal size? Measured by emulation with today's encoder, before any format change.

Method. For each weight with column moments h (collect_importance's ``NAME``: the columns of
``weight.reshape(out, -1)``), t_j = (h_j / geomean(h))^(-α/2), clipped to [1/64, 64] (h floored at
1e-12 × max h first, so that a dead column gets a finite, clipped t); W' = W / t (column j divided
by t_j); W' is encoded by the unchanged encoder at the ``--bits`` target (importance_ab's rate
search on the real coded size), decoded, and the columns multiplied back by t_j before the model
is scored. A uniform step on W' is a step Δ·t_j on column j of W, so this is the accuracy a format
with a per-column scale vector would give (the same lattice points are reachable); the scale
vector's own cost (a few bytes per column) is ignored. The statistics the encoder sees are
transformed consistently: column moments h·t², Hessian T H T (T = diag t), the embeddings' row
frequencies unchanged (their rows are not scaled), and the measured sensitivity s (output
distortion per unit of uniform weight noise) becomes s · Σ h t² / Σ h (noise of variance σ² on W'
is σ² t_j² on column j of W, weighted by the column's moment). α = 0 is today's encoder; α = 1
minimizes the layer-output proxy Σ_j h_j |e_j|² at high rate.

Arms are importance_ab's (read its docstring): ``plain``, ``proxy``, ``sensitivity``, ``full``,
``feedback``. Models and data are importance_ab's loaders (MNIST CNN: 1,000 calibration digits,
4,000 scored; MiniLM: 50 calibration sentences, 70 scored by the cosine to the float model's
embedding).

Diagnostics written beside the scores: per tensor, the columns whose moment is below 1e-6 of the
largest (dead inputs: a ReLU that never fires, an image border), the spread of the live columns'
moments (10th to 90th percentile, dB), the share of columns whose t is clipped; per encoded
file, each tensor's layer-output SQNR by the diagonal proxy, 10·log10(Σ_j h_j|w_j|² /
Σ_j h_j|w_j - ŵ_j|²) with the original h; with ``--ablate`` (at the largest α and the first
arm) the scaling applied to one tensor at a time; with ``--zero-dead`` every point again with the
decoded columns that were dead on calibration set to zero (what a format could do for them).

    python bench/accuracy/channel_steps.py --model mnist --bits 0.75 1.0 --alphas 0 0.25 0.5 1 \\
        --arms plain full --ablate --out bench/accuracy

Runs add to ``--out``/channel_steps.json (rows of the same model, lattice, bits, α, arm and
variant are replaced; an earlier run of the model is dropped from the list when every row of it
was) and render channel_steps.md from all of them; ``--conclusion FILE --out DIR`` alone sets the
conclusion shown under the runs and renders again. In process.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # bench/: the shared helpers
sys.path.insert(0, str(HERE.parent / "minilm"))

import importance_ab as ab  # noqa: E402
from lenet5_mnist import environment, log  # noqa: E402

import udnc_format  # noqa: E402
from udnc_format.codec.importance import (  # noqa: E402
    HESSIAN_SUFFIX,
    ROWS_SUFFIX,
    SENSITIVITY_SUFFIX,
)

COMMAND = "python bench/accuracy/channel_steps.py"
T_RANGE = (1 / 64, 64.0)
H_FLOOR = 1e-12  # of the largest moment, before the geometric mean
DEAD = 1e-6  # a column whose moment is below this share of the largest is counted dead
LOADERS = {"mnist": ab.mnist, "minilm": ab.minilm}
METRICS = ("accuracy", "min_cosine", "mean_cosine")
SUFFIXES = (HESSIAN_SUFFIX, ROWS_SUFFIX, SENSITIVITY_SUFFIX)


def column_scales(
    stats: dict[str, np.ndarray], alpha: float, only: str | None = None
) -> dict[str, np.ndarray]:
    """t of every tensor with column moments (of ``only`` alone when given)."""
    scales = {}
    for key, h in stats.items():
        if key.endswith(SUFFIXES) or (only is not None and key != only):
            continue
        floored = np.maximum(h.astype(np.float64), H_FLOOR * max(float(h.max()), 1e-30))
        geomean = np.exp(np.log(floored).mean())
        scales[key] = np.clip((floored / geomean) ** (-alpha / 2), *T_RANGE)
    return scales


def scale_columns(array: np.ndarray, t: np.ndarray, inverse: bool) -> np.ndarray:
    matrix = np.asarray(array, np.float64).reshape(array.shape[0], -1)
    matrix = matrix / t if inverse else matrix * t
    return matrix.astype(array.dtype).reshape(array.shape)


def transform(
    state: dict[str, np.ndarray], stats: dict[str, np.ndarray], scales: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """W' = W / t and the statistics W' has (module docstring)."""
    scaled = dict(state)
    for name, t in scales.items():
        scaled[name] = scale_columns(state[name], t, inverse=True)
    seen: dict[str, np.ndarray] = {}
    for key, value in stats.items():
        if key.endswith(HESSIAN_SUFFIX):
            t = scales.get(key.removesuffix(HESSIAN_SUFFIX))
            seen[key] = value if t is None else value * t[:, None] * t[None, :]
        elif key.endswith(SENSITIVITY_SUFFIX):
            name = key.removesuffix(SENSITIVITY_SUFFIX)
            t, h = scales.get(name), stats.get(name)
            factor = 1.0 if t is None or h is None else float((h * t * t).sum() / h.sum())
            seen[key] = value * factor
        elif key.endswith(ROWS_SUFFIX):
            seen[key] = value
        else:
            t = scales.get(key)
            seen[key] = value if t is None else value * t * t
    return scaled, seen


def proxy_sqnr(
    state: dict[str, np.ndarray], decoded: dict[str, np.ndarray], stats: dict[str, np.ndarray]
) -> dict[str, float]:
    """Each tensor's layer-output SQNR (dB) by the diagonal proxy, with the original moments."""
    out = {}
    for key, h in stats.items():
        if key.endswith(SUFFIXES):
            continue
        w = np.asarray(state[key], np.float64).reshape(state[key].shape[0], -1)
        error = w - np.asarray(decoded[key], np.float64).reshape(w.shape)
        signal, noise = float((h * (w * w).sum(0)).sum()), float((h * (error**2).sum(0)).sum())
        out[key] = 10 * np.log10(signal / noise) if noise > 0 else float("inf")
    return out


def diagnostics(stats: dict[str, np.ndarray], alpha: float) -> dict[str, dict[str, float]]:
    scales = column_scales(stats, alpha)
    out = {}
    for name, t in scales.items():
        h = stats[name].astype(np.float64)
        live = h[h >= DEAD * h.max()]
        p10, p90 = np.percentile(live, [10, 90])
        out[name] = {
            "columns": int(h.size),
            "dead": int(h.size - live.size),
            "spread_db": float(10 * np.log10(p90 / p10)),
            "t_at_max": float(np.mean(t >= T_RANGE[1])),
            "t_at_min": float(np.mean(t <= T_RANGE[0])),
            "t_live_min": float(t[h >= DEAD * h.max()].min()),
            "t_live_max": float(t[h >= DEAD * h.max()].max()),
        }
    return out


def measure(
    model: str,
    state: dict[str, np.ndarray],
    stats: dict[str, np.ndarray],
    score: Callable[[dict[str, np.ndarray]], dict[str, float]],
    lattice: str,
    bits: float,
    alpha: float,
    arm: str,
    only: str | None = None,
    zero_dead: bool = False,
) -> dict[str, Any]:
    start = time.perf_counter()
    scales = column_scales(stats, alpha, only)
    scaled, seen = transform(state, stats, scales)
    options = ab.arm_options(arm, scaled, seen, lattice=lattice)
    data, reached = ab.encode(scaled, options, bits)
    decoded = dict(udnc_format.load(data))
    for name, t in scales.items():
        decoded[name] = scale_columns(np.asarray(decoded[name]), t, inverse=False)
        if zero_dead:  # the columns dead on calibration decoded as zeros
            h = stats[name]
            matrix = decoded[name].reshape(decoded[name].shape[0], -1).copy()
            matrix[:, h < DEAD * h.max()] = 0
            decoded[name] = matrix.reshape(decoded[name].shape)
    seconds = time.perf_counter() - start
    row = {
        "model": model,
        "lattice": lattice,
        "bits_target": bits,
        "alpha": alpha,
        "arm": arm,
        "only": only,
        "zero_dead": zero_dead,
        "bits_per_weight": reached,
        "file_bytes": len(data),
        "ratio": sum(a.nbytes for a in state.values()) / len(data),
        "seconds": seconds,
        **score(decoded),
        "proxy_sqnr_db": proxy_sqnr(state, decoded, stats),
    }
    scores = ", ".join(f"{k} {row[k]:.4f}" for k in METRICS if k in row)
    log(
        f"{model} {lattice} {bits:g} bits α {alpha:g} {arm}"
        + (f" ({only} only)" if only else "")
        + (" (dead columns zeroed)" if zero_dead else "")
        + f": {reached:.3f} bits/weight, {scores} ({seconds:.0f} s)"
    )
    return row


def key_of(row: dict[str, Any]) -> tuple:
    names = ("model", "lattice", "bits_target", "alpha", "arm", "only", "zero_dead")
    return tuple(row.get(k, False) for k in names)


def render(document: dict[str, Any]) -> str:
    lines = [
        "# Per-column quantization steps, emulated: accuracy at equal size",
        "",
        "Method (bench/accuracy/channel_steps.py's docstring): each weight's column j divided by "
        "t_j = (h_j / geomean(h))^(-α/2), clipped to [1/64, 64], encoded by today's encoder at "
        "the `--bits` target, decoded and multiplied back: the accuracy a format with a "
        "per-column step Δ_j ∝ h_j^(-α/2) would give at the same size (its scale vector's few "
        "bytes ignored). α = 0 is today's encoder. The statistics the encoder sees are "
        "transformed with the weights (h·t², T H T, sensitivity × Σht²/Σh). In process.",
        "",
    ]
    for run in document["runs"]:
        lines += [
            f"- `{run['command']}`: {run['date']}, load average {run['load_average']} at the "
            f"start and {run['load_average_end']} at the end, commit {run['commit']}, "
            f"{run['minutes']:.1f} min.",
        ]
    lines += ["", *document.get("conclusion", []), ""]
    for model, info in document["models"].items():
        rows = [r for r in document["rows"] if r["model"] == model]
        metrics = [m for m in METRICS if m in rows[0]]
        lines += [
            f"## {model}",
            "",
            f"Float model: {info['baseline']:.4f}. Proxy SQNR: each tensor's layer-output SQNR "
            "Σh|w|²/Σh|w-ŵ|² (dB, original h); shown its minimum and median over the tensors.",
            "",
            "| lattice | bits target | arm | α | scaled | bits/weight | ratio | "
            + " | ".join(metrics)
            + " | proxy SQNR min / median dB | s |",
            "|---|---|---|---|---|---|---|" + "---|" * len(metrics) + "---|---|",
            *(
                [
                    "(scaled: the tensors whose columns were scaled; + zeroed: the columns dead on "
                    "calibration decoded as zeros)"
                ]
                if any(r.get("zero_dead") for r in rows)
                else []
            ),
        ]
        for r in sorted(
            rows,
            key=lambda r: (r["lattice"], r["bits_target"], r["arm"], r["only"] or "", r["alpha"]),
        ):
            values = " | ".join(f"{r[m]:.4f}" for m in metrics)
            proxy = np.array(list(r["proxy_sqnr_db"].values()))
            lines.append(
                f"| {r['lattice']} | {r['bits_target']:g} | {r['arm']} | {r['alpha']:g} | "
                f"{r['only'] or 'all'}{' + zeroed' if r.get('zero_dead') else ''} | "
                f"{r['bits_per_weight']:.3f} | {r['ratio']:.2f} | "
                f"{values} | {proxy.min():.1f} / {np.median(proxy):.1f} | {r['seconds']:.0f} |"
            )
        lines += [
            "",
            "Column moments per tensor (dead: moment < 1e-6 of the largest; spread: 10th to 90th "
            "percentile of the live columns; t at α = 1):",
            "",
            "| tensor | columns | dead | spread dB | t = 64 | t = 1/64 | live t min | live t max |",
            "|---|---|---|---|---|---|---|---|",
        ]
        diag = info["diagnostics"]
        names = list(diag)
        if len(names) > 12:  # MiniLM: the first block's tensors and the embeddings stand for all
            names = [n for n in names if ".layer.0." in n or "embeddings" in n] + ["… (json: all)"]
        for name in names:
            if name not in diag:
                lines.append(f"| {name} | | | | | | | |")
                continue
            d = diag[name]
            lines.append(
                f"| {name} | {d['columns']} | {d['dead']} | {d['spread_db']:.1f} | "
                f"{d['t_at_max']:.1%} | {d['t_at_min']:.1%} | {d['t_live_min']:.3g} | "
                f"{d['t_live_max']:.3g} |"
            )
        lines.append("")
        lines.append("Per-tensor proxy SQNR (dB) of every row:")
        lines.append("")
        if len(diag) <= 12:
            lines += [
                "| bits | arm | α | scaled | " + " | ".join(diag) + " |",
                "|---|---|---|---|" + "---|" * len(diag),
            ]
            for r in rows:
                cells = " | ".join(f"{r['proxy_sqnr_db'][n]:.1f}" for n in diag)
                lines.append(
                    f"| {r['bits_target']:g} | {r['arm']} | {r['alpha']:g} | "
                    f"{r['only'] or 'all'}{' + zeroed' if r.get('zero_dead') else ''} | {cells} |"
                )
        else:
            lines.append("(in channel_steps.json, `proxy_sqnr_db` of each row)")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=list(LOADERS))
    parser.add_argument("--lattice", default="Z1")
    parser.add_argument("--bits", type=float, nargs="+", default=[])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    parser.add_argument("--arms", nargs="+", default=["plain"], choices=ab.ARMS[:-1])
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="also the largest α on one tensor at a time (first arm)",
    )
    parser.add_argument(
        "--zero-dead",
        action="store_true",
        help="also each point with the columns dead on calibration decoded as zeros",
    )
    parser.add_argument(
        "--conclusion",
        type=Path,
        help="a text file: the conclusion shown under the runs (kept in the json)",
    )
    parser.add_argument("--out", type=Path, help="directory of channel_steps.{json,md}")
    args = parser.parse_args()
    if not args.conclusion and (not args.model or not args.bits):
        parser.error("--model and --bits are needed (or --conclusion and --out alone)")
    start = time.perf_counter()
    run = {
        "command": shlex.join([*COMMAND.split(), *sys.argv[1:]]),
        "load_average": Path("/proc/loadavg").read_text().strip(),
    }
    env = environment("sentence-transformers")
    run.update(date=env["date"], commit=env["commit"], machine=env["machine"])
    if args.conclusion and not args.bits:  # only the conclusion: render again
        path = args.out / "channel_steps.json"
        document = json.loads(path.read_text())
        document["conclusion"] = args.conclusion.read_text().strip().split("\n")
        (args.out / "channel_steps.md").write_text(render(document))
        path.write_text(json.dumps(document, indent=1) + "\n")
        return
    state, stats, score, baseline = LOADERS[args.model]()
    rows = []
    for bits in args.bits:
        for alpha in args.alphas:
            for arm in args.arms:
                for zero_dead in (False, True) if args.zero_dead else (False,):
                    rows.append(
                        measure(
                            args.model,
                            state,
                            stats,
                            score,
                            args.lattice,
                            bits,
                            alpha,
                            arm,
                            zero_dead=zero_dead,
                        )
                    )
        if args.ablate and max(args.alphas) > 0:
            for name in column_scales(stats, 1.0):
                rows.append(
                    measure(
                        args.model,
                        state,
                        stats,
                        score,
                        args.lattice,
                        bits,
                        max(args.alphas),
                        args.arms[0],
                        only=name,
                    )
                )
    path = args.out / "channel_steps.json" if args.out else None
    document: dict[str, Any] = (
        json.loads(path.read_text())
        if path and path.exists()
        else {"runs": [], "models": {}, "rows": []}
    )
    document["models"][args.model] = {"baseline": baseline, "diagnostics": diagnostics(stats, 1.0)}
    new = {key_of(r) for r in rows}
    if all(key_of(r) in new for r in document["rows"] if r["model"] == args.model):
        document["runs"] = [
            r for r in document["runs"] if f"--model {args.model}" not in r["command"]
        ]
    document["rows"] = [r for r in document["rows"] if key_of(r) not in new] + rows
    run["load_average_end"] = Path("/proc/loadavg").read_text().strip()
    run["minutes"] = (time.perf_counter() - start) / 60
    document["runs"].append(run)
    text = render(document)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=1) + "\n")
        (path.parent / "channel_steps.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
