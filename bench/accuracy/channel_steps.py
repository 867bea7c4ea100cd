"""bench/accuracy/channel_steps.py: would a step per input column (a format change, "1.3") gain
accuracy at equal size? Measured by emulation with today's encoder, before changing the format.

A step per column j of Δ_j ∝ h_j^(-α/2), h_j the column's input second moment from calibration
data, is the least importance-weighted error at equal rate for α = 1 (the layer-output proxy of
docs/importance.md). A format with per-column scales would give exactly what this gives: divide
column j of each covered weight matrix by t_j = (h_j / geomean(h))^(-α/2) (clipped to
[1/64, 64]), encode W' with the unchanged encoder at the target bits per weight (the `--bits`
search on the real coded size), decode, and multiply the columns back by t_j. The statistics the
quantizer sees are transformed alike (column moments × t², Hessian T·H·T, sensitivities
unchanged: the noise is the same in both coordinates at equal rate only to first order, so the
arms without sensitivities are used). The scale vector's own size (4 bytes a column) is left out,
which favours the emulated format. α = 0 is today's encoder.

Arms (bench/accuracy/importance_ab.py): ``plain`` (no statistics) and, on the CNN, ``proxy``
(allocation by the proxy, GPTQ feedback), on MiniLM ``feedback`` (plain steps, GPTQ feedback).

Usage: ``python bench/accuracy/channel_steps.py [--models mnist minilm] [--out bench/accuracy]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import importance_ab as ab  # noqa: E402

import udnc_format  # noqa: E402
from udnc_format.codec.importance import HESSIAN_SUFFIX, ROWS_SUFFIX, SENSITIVITY_SUFFIX  # noqa: E402

COMMAND = "python bench/accuracy/channel_steps.py"
ALPHAS = (0.0, 0.25, 0.5, 1.0)
CLIP = 64.0
MODELS = {
    "mnist": (ab.mnist, (0.75, 1.0), ("plain", "proxy")),
    "minilm": (ab.minilm, (2.5, 3.5), ("plain", "feedback")),
}


def column_factors(stats: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """t_j of every tensor with column moments."""
    factors = {}
    for key, moments in stats.items():
        if key.endswith((ROWS_SUFFIX, HESSIAN_SUFFIX, SENSITIVITY_SUFFIX)):
            continue
        h = np.maximum(moments.astype(np.float64), 1e-12 * max(float(moments.max()), 1e-30))
        geomean = float(np.exp(np.log(h).mean()))
        factors[key] = np.clip((h / geomean) ** (-alpha / 2), 1 / CLIP, CLIP)
    return factors


def transformed(
    state: dict[str, np.ndarray], stats: dict[str, np.ndarray], factors: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """W' = W / t per column, and the statistics of W' (no sensitivities)."""
    weights = dict(state)
    for name, t in factors.items():
        w = state[name]
        weights[name] = (w.reshape(w.shape[0], -1) / t).astype(w.dtype).reshape(w.shape)
    moments = {}
    for key, value in stats.items():
        if key.endswith(SENSITIVITY_SUFFIX):
            continue
        name = key.removesuffix(HESSIAN_SUFFIX).removesuffix(ROWS_SUFFIX)
        t = factors.get(name)
        if t is None or key.endswith(ROWS_SUFFIX):
            moments[key] = value
        elif key.endswith(HESSIAN_SUFFIX):
            moments[key] = value * t[:, None] * t[None, :]
        else:
            moments[key] = value * t * t
    return weights, moments


def restored(decoded: dict[str, np.ndarray], factors: dict[str, np.ndarray]) -> dict:
    out = dict(decoded)
    for name, t in factors.items():
        d = np.asarray(decoded[name])
        columns = d.reshape(d.shape[0], -1).astype(np.float64) * t
        out[name] = columns.astype(d.dtype).reshape(d.shape)
    return out


def spread(stats: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per covered tensor: the largest h_j over the median, and the share of columns with h_j
    under 1e-6 of the largest (dead inputs, clipped to t = 64)."""
    out = {}
    for key, h in stats.items():
        if key.endswith((ROWS_SUFFIX, HESSIAN_SUFFIX, SENSITIVITY_SUFFIX)):
            continue
        median = float(np.median(h))
        out[key] = {
            "max_over_median": float(h.max() / median) if median > 0 else float("inf"),
            "dead_share": float(np.mean(h < 1e-6 * h.max())),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    document: dict[str, Any] = {
        "command": COMMAND + "".join(" " + a for a in sys.argv[1:]),
        "environment": ab.environment("sentence-transformers"),
        "load_start": Path("/proc/loadavg").read_text().strip(),
        "spread": {},
        "rows": [],
    }
    for model in args.models:
        loader, rates, arms = MODELS[model]
        state, stats, score, _ = loader()
        document["spread"][model] = spread(stats)
        source_bytes = sum(a.nbytes for a in state.values())
        for bits in rates:
            for alpha in ALPHAS:
                factors = column_factors(stats, alpha)
                weights, moments = transformed(state, stats, factors)
                for arm in arms:
                    options = ab.arm_options(arm, weights, moments, lattice="Z1")
                    data, reached = ab.encode(weights, options, bits)
                    row = {
                        "model": model, "bits_target": bits, "alpha": alpha, "arm": arm,
                        "bits_per_weight": reached, "ratio": source_bytes / len(data),
                        **score(restored(udnc_format.load(data), factors)),
                    }  # fmt: skip
                    ab.log(f"{row}")
                    document["rows"].append(row)
    document["load_end"] = Path("/proc/loadavg").read_text().strip()
    document["seconds"] = time.perf_counter() - started
    text = render(document)
    if args.out:
        (args.out / "channel_steps.json").write_text(json.dumps(document, indent=1) + "\n")
        (args.out / "channel_steps.md").write_text(text)
    print(text)


def render(document: dict[str, Any]) -> str:
    env = document["environment"]
    lines = [
        "# Per-column steps, emulated: accuracy at equal size",
        "",
        f"Command: `{document['command']}`; {env['date']}; {env['machine']}; load average "
        f"{document['load_start']} at the start, {document['load_end']} at the end; commit "
        f"{env['commit']}; {document['seconds'] / 60:.1f} min. In process.",
        "",
        "Columns scaled by t_j = (h_j / geomean h)^(-α/2) before today's encoder and back after "
        "decoding (the module docstring says why this is what a format with per-column steps "
        "would give); α = 0 is today's encoder, α = 1 the proxy's optimum. Same calibration and "
        "held-out data as importance_ab.md.",
        "",
    ]
    for model in dict.fromkeys(r["model"] for r in document["rows"]):
        rows = [r for r in document["rows"] if r["model"] == model]
        metrics = [k for k in ("accuracy", "min_cosine", "mean_cosine") if k in rows[0]]
        lines += [
            f"## {model}",
            "",
            "| bits target | arm | α | bits/weight | ratio | " + " | ".join(metrics) + " |",
            "|---|---|---|---|---|" + "---|" * len(metrics),
        ]
        for r in sorted(rows, key=lambda r: (r["bits_target"], r["arm"], r["alpha"])):
            lines.append(
                f"| {r['bits_target']:g} | {r['arm']} | {r['alpha']:g} | "
                f"{r['bits_per_weight']:.3f} | {r['ratio']:.2f} | "
                + " | ".join(f"{r[m]:.4f}" for m in metrics)
                + " |"
            )
        spread = document["spread"][model]
        worst = max(spread, key=lambda k: spread[k]["max_over_median"])
        dead = max(spread, key=lambda k: spread[k]["dead_share"])
        lines += [
            "",
            f"Spread of h_j: largest over median up to {spread[worst]['max_over_median']:.3g} "
            f"({worst}); columns under 1e-6 of the largest up to "
            f"{100 * spread[dead]['dead_share']:.1f} % ({dead}).",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
