"""Peak memory of `udnc compress` and `udnc decompress` on a checkpoint of at least 1 GB.

Issue target: the peak resident memory of either command is at most about the largest
tensor's float32 size times 3 plus 200 MB, whatever the checkpoint's total size.

Run:  python bench/memory/run.py [--gib 1.0] [--largest-mib 256] [--out bench/memory]
The checkpoint (Laplace weights, a few tensors of decreasing size) is written to a temporary
directory and removed afterwards. Peak memory is the maximum resident set size that
/usr/bin/time -v reports for each command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from udnc_format.format.constants import Dtype
from udnc_format.safetensors_io import TensorSpec, write_safetensors

MIB = 1 << 20


def make_checkpoint(path: Path, total_bytes: int, largest_bytes: int) -> list[TensorSpec]:
    """Tensors of float32 Laplace weights: the largest first, then halves, until the total is
    reached; written one at a time."""
    specs, remaining, size, index = [], total_bytes, largest_bytes, 0
    while remaining > 0:
        size = min(size, remaining)
        columns = 1024
        rows = max(1, size // (4 * columns))
        specs.append(TensorSpec(f"layer{index}.weight", Dtype.F32, (rows, columns)))
        remaining -= rows * columns * 4
        index += 1
        size = max(size // 2, 16 * MIB) if index > 1 else size

    def arrays():
        rng = np.random.default_rng(0)
        for spec in specs:
            yield rng.laplace(scale=0.02, size=spec.shape).astype(np.float32)

    write_safetensors(path, specs, arrays(), {"purpose": "udnc memory benchmark"})
    return specs


def peak_rss(command: list[str]) -> tuple[int, float]:
    """(maximum resident set size in bytes, wall seconds) of a command."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert match, done.stderr
    return int(match.group(1)) * 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.25, help="checkpoint size in GiB")
    parser.add_argument("--largest-mib", type=int, default=256, help="largest tensor, MiB")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        source = Path(tmp) / "model.safetensors"
        specs = make_checkpoint(source, int(args.gib * 1024 * MIB), args.largest_mib * MIB)
        largest = max(s.nbytes for s in specs)
        budget = 3 * largest + 200 * MIB
        packed, restored = Path(tmp) / "model.udnc", Path(tmp) / "restored.safetensors"
        rows = []
        for name, command in (
            ("compress", ["udnc", "-q", "compress", str(source), "-o", str(packed)]),
            ("decompress", ["udnc", "-q", "decompress", str(packed), "-o", str(restored)]),
        ):
            rss, seconds = peak_rss(command)
            rows.append({"command": name, "peak_rss_bytes": rss, "seconds": seconds})
        result = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": " ".join(["python", "bench/memory/run.py", *sys.argv[1:]]),
            "checkpoint_bytes": source.stat().st_size,
            "tensors": len(specs),
            "largest_tensor_bytes": largest,
            "budget_bytes": budget,
            "udnc_bytes": packed.stat().st_size,
            "runs": rows,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Peak memory of compress and decompress",
        "",
        f"Command: `{result['command']}` ({result['date']}, {result['machine']}).",
        "",
        f"Checkpoint: {result['checkpoint_bytes'] / MIB:,.0f} MiB of float32 Laplace weights in "
        f"{result['tensors']} tensors, the largest {largest / MIB:,.0f} MiB; compressed with the "
        f"defaults to {result['udnc_bytes'] / MIB:,.1f} MiB.",
        f"Budget (largest tensor × 3 + 200 MiB): {budget / MIB:,.0f} MiB.",
        "",
        "| command | peak RSS (MiB) | within budget | wall time (s) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        ok = "yes" if row["peak_rss_bytes"] <= budget else "**no**"
        peak = row["peak_rss_bytes"] / MIB
        lines.append(f"| {row['command']} | {peak:,.0f} | {ok} | {row['seconds']:.1f} |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
