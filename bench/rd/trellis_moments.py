"""The trellis lattices' error per step² against the SQNR target, for the encoder's rate control
(``TrellisLattice.error_moments`` in udnc_format/coding/lattices/trellis.py).

A dithered lattice quantizer's error is G(Λ)·Δ² at any rate, so one quantization at the
predicted step lands on an SQNR target. A trellis search's error per Δ² moves with the rate (its
levels are chosen for error plus rate), so a constant moment misses by up to a few tenths of a
dB and the encoder quantizes the tensor a second time. This measures, for each trellis, the
moment that lands on each target: on synthetic Gaussian and Student-t(4) weights (147,456 of
each, as an attention matrix of MiniLM, seeds fixed), quantized at the step the constant moment
predicts, the achieved SQNR gives the real moment; the table is their mean. Then, held out, on
all-MiniLM-L6-v2's matrices at the default role targets: the miss of the first quantization
with the constant and with the table, and how many matrices then land within 0.1 dB at once.

    python bench/rd/trellis_moments.py [--out bench/rd]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from udnc_format.codec.encoder import (
    SQNR_TOLERANCE_DB,
    EncodeOptions,
    dither_stream_for,
    sqnr_db,
)
from udnc_format.codec.quantizer import step_for_sqnr, sum_of_squares
from udnc_format.coding.lattices import get_lattice
from udnc_format.format.constants import TRELLIS_DELAYS, Dtype, Lattice

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "minilm"))
from report import publish, run_record  # noqa: E402

TARGETS_DB = tuple(range(12, 56, 4))
WEIGHTS = 147_456


def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {
        "gaussian": rng.standard_normal(WEIGHTS),
        "student-t(4)": rng.standard_t(4, size=WEIGHTS),
    }


def achieved(lattice: Lattice, values: np.ndarray, target: float, moment: float) -> float:
    """The SQNR of one quantization at the step that ``moment`` predicts for ``target``."""
    options = EncodeOptions(lattice=lattice)
    unit = float(np.max(np.abs(values)))
    energy = sum_of_squares(values, unit)
    step = step_for_sqnr(energy, values.size, unit, target, get_lattice(lattice), moment)
    quantize = options.quantizer("w", Dtype.F32, values.shape, dither_stream_for("w"), unit)
    return sqnr_db(energy, quantize(values, step=step, mask=None).squared_error)


def fit(lattice: Lattice) -> list[tuple[float, float]]:
    """(target dB, moment) pairs: the mean over the synthetic sets of the moment that lands."""
    constant = get_lattice(lattice).second_moment
    sets = synthetic().values()
    table = []
    for target in TARGETS_DB:
        # the error is 10^(−miss/10) times what the constant moment predicts
        moments = [
            constant * 10.0 ** ((target - achieved(lattice, values, target, constant)) / 10.0)
            for values in sets
        ]
        table.append((float(target), round(float(np.mean(moments)), 4)))
    return table


def held_out(lattice: Lattice) -> dict[str, Any]:
    """MiniLM's matrices at the default targets: first-quantization misses, constant and table."""
    import roundtrip
    from safetensors.numpy import load_file

    codec = get_lattice(lattice)
    options = EncodeOptions(lattice=lattice)
    state = load_file(str(roundtrip.model_dir() / roundtrip.WEIGHTS))
    rows = []
    for name, array in state.items():
        if array.ndim < 2 or array.size < options.min_elements:
            continue
        values = array.reshape(-1).astype(np.float64)
        target = options.sqnr_for(name)
        rows.append(
            {
                "tensor": name,
                "weights": int(values.size),
                "target_db": target,
                "miss_constant": achieved(lattice, values, target, codec.second_moment) - target,
                "miss_table": achieved(lattice, values, target, codec.error_moment(target))
                - target,
            }
        )
    return {
        "tensors": rows,
        "within_constant": sum(abs(r["miss_constant"]) <= SQNR_TOLERANCE_DB for r in rows),
        "within_table": sum(abs(r["miss_table"]) <= SQNR_TOLERANCE_DB for r in rows),
    }


def render(document: dict[str, Any]) -> str:
    lines = [
        "# The trellis lattices' error per step² against the SQNR target",
        "",
        f"- command: `{document['command']}`",
        f"- date: {document['date']}; {document['machine']}",
        "- fitted on synthetic Gaussian and Student-t(4) weights (147,456 each); held out: "
        "all-MiniLM-L6-v2's matrices at the default role targets; dither on (the default)",
        "",
        "| lattice | " + " | ".join(f"{t} dB" for t in TARGETS_DB) + " |",
        "|---|" + "---:|" * len(TARGETS_DB),
    ]
    for lattice, table in document["tables"].items():
        lines.append(f"| {lattice} | " + " | ".join(f"{m:.4f}" for _, m in table) + " |")
    for lattice, check in document["held_out"].items():
        total = len(check["tensors"])
        misses = [abs(r["miss_table"]) for r in check["tensors"]]
        constant = [abs(r["miss_constant"]) for r in check["tensors"]]
        lines += [
            "",
            f"{lattice} on MiniLM: {check['within_constant']} of {total} matrices land within "
            f"{SQNR_TOLERANCE_DB} dB at the first quantization with the constant moment "
            f"(largest miss {max(constant):.3f} dB), {check['within_table']} with the table "
            f"(largest miss {max(misses):.3f} dB).",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="where trellis_moments.json and .md go")
    parser.add_argument(
        "--held-out", action="store_true", help="also check the installed tables on MiniLM"
    )
    args = parser.parse_args(argv)
    document: dict[str, Any] = {
        **run_record("bench/rd/trellis_moments.py", argv),
        "tables": {lattice.name: fit(lattice) for lattice in TRELLIS_DELAYS},
        "held_out": {},
    }
    if args.held_out:
        document["held_out"] = {lattice.name: held_out(lattice) for lattice in TRELLIS_DELAYS}
    publish(args.out, "trellis_moments", document, render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
