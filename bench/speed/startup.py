"""Start-up cost of the command line, whole process, against importing safetensors' numpy API.

    python bench/speed/startup.py                       # writes startup.json and startup.md here
    python bench/speed/startup.py --compare OTHER_CHECKOUT

Each row is a fresh Python process (``python -c ...`` or ``python -m udnc_format.cli ...``) run
with this checkout first on PYTHONPATH (from an empty folder, bytecode cached as in an install,
after one warm-up run of each), timed by wall clock, the median and the best of the
repeats; the rows run in turn, repeat after repeat, so that a change of the machine's load
falls on all of them alike. ``import`` is ``python -X importtime``'s cumulative time of
``udnc_format.cli`` (in process). ``--compare`` measures another checkout (an older commit, say)
the same way in the same run. Peers: an empty interpreter, ``import numpy``, and ``import
safetensors.numpy``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from ml_dtypes import bfloat16

import udnc_format

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REPEATS = 11


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def environment(checkout: Path) -> dict[str, str]:
    """The checkout first on the path; bytecode cached as an installed package has it."""
    paths = [checkout, checkout / "conformance", checkout / "adapters"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}


# Processes start in an empty folder: with ``-c``, the current folder comes first on the path.
NEUTRAL = Path(tempfile.mkdtemp(prefix="udnc-startup-"))


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=NEUTRAL, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def import_seconds(env: dict[str, str]) -> float:
    """``udnc_format.cli``'s cumulative import time, from ``python -X importtime``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import udnc_format.cli"],
        env=env,
        cwd=NEUTRAL,
        check=True,
        capture_output=True,
        text=True,
    )
    line = next(x for x in done.stderr.splitlines() if x.rstrip().endswith("| udnc_format.cli"))
    return int(line.split("|")[1]) / 1e6


def commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    dirty = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "udnc_format"],
        capture_output=True,
        text=True,
    )
    name = done.stdout.strip() or checkout.name
    return name + (" + uncommitted changes" if dirty.stdout.strip() else "")


def measure(checkouts: dict[str, Path], sample: Path) -> dict[str, Any]:
    python = sys.executable
    rows: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([python, "-c", "pass"], environment(ROOT)),
        "import numpy": ([python, "-c", "import numpy"], environment(ROOT)),
        "import safetensors.numpy": ([python, "-c", "import safetensors.numpy"], environment(ROOT)),
    }
    for label, checkout in checkouts.items():
        env = environment(checkout)
        cli = [python, "-m", "udnc_format.cli"]
        rows[f"{label}: udnc --help"] = ([*cli, "--help"], env)
        rows[f"{label}: udnc info (F32 + BF16 file)"] = ([*cli, "info", str(sample)], env)
    for command, env in rows.values():  # warm-up: bytecode written, files in the page cache
        wall(command, env)
    times: dict[str, list[float]] = {name: [] for name in rows}
    imports: dict[str, list[float]] = {label: [] for label in checkouts}
    for _ in range(REPEATS):
        for name, (command, env) in rows.items():
            times[name].append(wall(command, env))
        for label, checkout in checkouts.items():
            imports[label].append(import_seconds(environment(checkout)))
    return {
        "wall_seconds": {
            name: {"median": statistics.median(v), "best": min(v)} for name, v in times.items()
        },
        "import_udnc_format_cli_seconds": {
            label: {"median": statistics.median(v), "best": min(v)} for label, v in imports.items()
        },
    }


def render(result: dict[str, Any]) -> str:
    peer = result["wall_seconds"]["import safetensors.numpy"]["median"]
    lines = [
        "# Start-up of the command line",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}; load average at start {result['load_start']}, "
        f"at end {result['load_end']} (2 cores, shared)",
        f"- checkouts: {', '.join(f'{k} = {v}' for k, v in result['commits'].items())}",
        f"- {REPEATS} repeats each, rows interleaved; whole process (fresh interpreter), wall "
        "clock; `import` rows in process (`python -X importtime`, cumulative)",
        "",
        "| what | median s | best s | median / import safetensors.numpy |",
        "|---|---:|---:|---:|",
    ]
    for name, t in result["wall_seconds"].items():
        lines.append(f"| {name} | {t['median']:.3f} | {t['best']:.3f} | {t['median'] / peer:.2f} |")
    for label, t in result["import_udnc_format_cli_seconds"].items():
        lines.append(
            f"| {label}: import udnc_format.cli (in process) | {t['median']:.3f} | "
            f"{t['best']:.3f} | {t['median'] / peer:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, help="another checkout, measured the same way")
    parser.add_argument("--out", type=Path, default=HERE, help="where the results go")
    args = parser.parse_args()
    checkouts = {"this checkout": ROOT}
    if args.compare is not None:
        checkouts["compared"] = args.compare.resolve()
    rng = np.random.default_rng(0)
    tensors = {
        "w": rng.normal(size=(256, 256)).astype(np.float32),
        "b": rng.normal(size=(256, 256)).astype(bfloat16),
    }
    load_start = load_average()
    with tempfile.TemporaryDirectory() as folder:
        sample = Path(folder) / "sample.udnc"
        udnc_format.save_file(tensors, sample)
        result = measure(checkouts, sample)
    result.update(
        command="python bench/speed/startup.py"
        + (f" --compare {args.compare}" if args.compare else ""),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        load_start=load_start,
        load_end=load_average(),
        commits={label: commit(path) for label, path in checkouts.items()},
        python=platform.python_version(),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "startup.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
