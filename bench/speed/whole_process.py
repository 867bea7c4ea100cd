"""Whole process, file to file: ``udnc compress`` / ``udnc decompress`` of all-MiniLM-L6-v2 at each
candidate setting against gguf-py's Q4_0 (and NNCodec where its environment exists), each run a
fresh interpreter (start-up, reading and writing the files included), and the choice of the
default by the rule of issue 18: the fewest bits at equal SQNR among the settings that decode at
least as fast as gguf-py Q4_0, whole process.

    python bench/speed/whole_process.py [--repeat 3] [--out bench/speed]

Each setting encodes the model at the default SQNR targets (38 dB plus the role offsets; every
setting lands each tensor within 0.1 dB of its target, so their SQNRs agree), decodes it, and
reports the whole file's bits per weight and the global SQNR of the floating tensors of 2+
dimensions. To
compare bits at equal SQNR the bits are moved to the defaults' SQNR at 6.02 dB per bit (the
SQNRs differ by hundredths of a dB). Runs of the settings and peers alternate, repeat after
repeat, so that a change of the machine's load falls on all of them alike; the best and the
median wall time are reported, and the CPU time of the child (user + system, all its threads),
which the load barely moves. MB/s are MB of float32 weights (90,852,864 bytes) per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from run import _CLI, PEERS_PYTHON, git_commit, minilm_path  # noqa: E402

COMMAND = "python bench/speed/whole_process.py"
PEER_CLI = HERE / "peer_cli.py"
DB_PER_BIT = 20 * np.log10(2.0)
# (label, udnc compress options); the first is the defaults.
SETTINGS = (
    ("Z1 + zstd (defaults)", ()),
    ("Z1 + rans", ("--coder", "rans")),
    ("E8 + zstd", ("--lattice", "E8")),
    ("TCQ64 + rans, no dither", ("--lattice", "TCQ64", "--no-dither", "--coder", "rans")),
    ("TCQ256 + zstd, no dither", ("--lattice", "TCQ256", "--no-dither")),
    ("TCQ256 + rans, no dither", ("--lattice", "TCQ256", "--no-dither", "--coder", "rans")),
)
NNCODEC_QP = "-38"  # about udnc's default SQNR (bench/rd)


def run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def udnc(*argv: str) -> list[str]:
    """The installed command line, as a user runs it."""
    script = shutil.which("udnc")
    if script is None:
        return [sys.executable, "-c", _CLI, *argv]
    return [script, *argv]


def global_sqnr(original: dict[str, np.ndarray], decoded: Path) -> float:
    restored = load_file(str(decoded))
    signal = noise = 0.0
    for name, array in original.items():
        if array.ndim < 2 or array.dtype.kind != "f":
            continue  # SQNR of the floating weight matrices (an integer tensor stays exact)
        a = array.astype(np.float64)
        signal += float(np.square(a).sum())
        noise += float(np.square(restored[name].astype(np.float64) - a).sum())
    return 10 * np.log10(signal / noise)


def has_nncodec() -> bool:
    """Whether the peers' environment (bench/rd/setup_peers.sh) holds NNCodec."""
    if not PEERS_PYTHON.exists():
        return False
    probe = subprocess.run([str(PEERS_PYTHON), "-c", "import nncodec"], capture_output=True)
    return probe.returncode == 0


def jobs(model: Path, work: Path) -> dict[str, dict[str, list[str]]]:
    """Per tool: its encode and decode command lines, file to file."""
    out: dict[str, dict[str, list[str]]] = {}
    for index, (label, options) in enumerate(SETTINGS):
        packed, restored = work / f"s{index}.udnc", work / f"s{index}.safetensors"
        out[f"udnc {label}"] = {
            "encode": udnc("compress", str(model), "-o", str(packed), "-f", "-q", *options),
            "decode": udnc("decompress", str(packed), "-o", str(restored), "-f", "-q"),
            "coded": [str(packed)],
            "decoded": [str(restored)],
        }
    python = sys.executable  # gguf-py with this environment's numpy, as a user would run it
    packed, restored = work / "q4_0.npz", work / "q4_0.safetensors"
    out["gguf-py Q4_0"] = {
        "encode": [python, str(PEER_CLI), "gguf-quantize", "Q4_0", str(model), str(packed)],
        "decode": [python, str(PEER_CLI), "gguf-dequantize", "Q4_0", str(packed), str(restored)],
        "coded": [str(packed)],
        "decoded": [str(restored)],
    }
    if has_nncodec():
        packed, restored = work / "nncodec.nnc", work / "nncodec.safetensors"
        cli = [str(PEERS_PYTHON), str(PEER_CLI)]
        out[f"NNCodec qp {NNCODEC_QP}"] = {
            "encode": [*cli, "nncodec-encode", NNCODEC_QP, str(model), str(packed)],
            "decode": [*cli, "nncodec-decode", NNCODEC_QP, str(packed), str(restored)],
            "coded": [str(packed)],
            "decoded": [str(restored)],
        }
    return out


def measure(model: Path, work: Path, repeat: int) -> dict[str, Any]:
    source = load_file(str(model))
    source_bytes = sum(a.size * 4 for a in source.values())
    weights = sum(a.size for a in source.values())
    tools = jobs(model, work)
    times: dict[str, dict[str, list[tuple[float, float]]]] = {t: {} for t in tools}
    for tool, job in tools.items():  # the first encode also makes the file the decodes read
        times[tool]["encode"] = [run(job["encode"])]
        run(job["decode"])  # warm-up: the page cache holds the input
    for round_ in range(repeat):
        for tool, job in tools.items():
            times[tool]["decode"] = [*times[tool].get("decode", []), run(job["decode"])]
            # The slow encodes (NNCodec) run once; the others as often as the decodes.
            if round_ + 1 < repeat and not tool.startswith("NNCodec"):
                times[tool]["encode"].append(run(job["encode"]))
    rows = {}
    for tool, job in tools.items():
        coded = sum(Path(p).stat().st_size for p in job["coded"])
        row: dict[str, Any] = {
            "coded_bytes": coded,
            "bits_per_weight": 8 * coded / weights,
            "sqnr_db": global_sqnr(source, Path(job["decoded"][0])),
        }
        for kind, runs in times[tool].items():
            walls = [w for w, _ in runs]
            row[kind] = {
                "best_s": min(walls),
                "median_s": statistics.median(walls),
                "cpu_s": min(c for _, c in runs),
                "mb_s": source_bytes / min(walls) / 1e6,
                "runs": len(runs),
            }
        rows[tool] = row
    return {"source_bytes": source_bytes, "weights": weights, "rows": rows}


def choose_default(rows: dict[str, Any]) -> dict[str, Any]:
    """The rule of issue 18 on the measured rows."""
    peer = rows["gguf-py Q4_0"]["decode"]["best_s"]
    reference = rows[f"udnc {SETTINGS[0][0]}"]["sqnr_db"]
    candidates = {}
    for tool, row in rows.items():
        if not tool.startswith("udnc"):
            continue
        at_equal = row["bits_per_weight"] + (reference - row["sqnr_db"]) / DB_PER_BIT
        row["bits_at_default_sqnr"] = at_equal
        row["decode_vs_gguf_q4_0"] = peer / row["decode"]["best_s"]
        row["encode_vs_gguf_q4_0"] = (
            rows["gguf-py Q4_0"]["encode"]["best_s"] / row["encode"]["best_s"]
        )
        if row["decode"]["best_s"] <= peer:
            candidates[tool] = at_equal
    chosen = min(candidates, key=candidates.get) if candidates else None  # type: ignore[arg-type]
    return {"qualifying": sorted(candidates), "chosen": chosen}


def render(document: dict[str, Any]) -> str:
    result, rows = document["result"], document["result"]["rows"]
    lines = [
        "# Whole process, file to file: udnc's settings against gguf-py Q4_0 and NNCodec",
        "",
        f"Command: `{document['command']}`. Date {document['date']}; {document['machine']}; "
        f"commit {document['commit']}; load average {document['load_start']} at the start, "
        f"{document['load_end']} at the end; {document['seconds']:.0f} s in all.",
        "",
        "Every figure is whole process: a fresh interpreter per run, start-up, reading the input "
        "file and writing the output file included (`udnc compress` / `udnc decompress` on every "
        "core; the peers' scripts in bench/speed/peer_cli.py). all-MiniLM-L6-v2, "
        f"{result['source_bytes']:,} bytes of float32 weights; MB/s per wall second, best of "
        "the runs; CPU s is the child's user + system time (all threads), least of the runs.",
        "",
        "| tool | bits/weight | SQNR dB | bits at the defaults' SQNR | decode s (best / median) "
        "| decode CPU s | decode MB/s | decode × gguf Q4_0 | encode s (best) | encode MB/s | "
        "encode × gguf Q4_0 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tool, row in rows.items():
        d, e = row["decode"], row["encode"]
        lines.append(
            f"| {tool} | {row['bits_per_weight']:.3f} | {row['sqnr_db']:.2f} | "
            + (f"{row['bits_at_default_sqnr']:.3f}" if "bits_at_default_sqnr" in row else "–")
            + f" | {d['best_s']:.2f} / {d['median_s']:.2f} | {d['cpu_s']:.2f} | {d['mb_s']:.0f} | "
            + (f"{row['decode_vs_gguf_q4_0']:.2f}" if "decode_vs_gguf_q4_0" in row else "–")
            + f" | {e['best_s']:.2f} | {e['mb_s']:.1f} | "
            + (f"{row['encode_vs_gguf_q4_0']:.2f}" if "encode_vs_gguf_q4_0" in row else "–")
            + " |"
        )
    choice = document["default"]
    lines += [
        "",
        "Settings that decode at least as fast as gguf-py Q4_0, whole process: "
        + (", ".join(choice["qualifying"]) or "none")
        + ".",
        "",
        "Fewest bits at equal SQNR among them: " + (choice["chosen"] or "none") + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    document: dict[str, Any] = {
        "command": COMMAND + "".join(" " + a for a in (argv or sys.argv[1:])),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "commit": git_commit(),
        "load_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    with tempfile.TemporaryDirectory() as work:
        document["result"] = measure(minilm_path(), Path(work), args.repeat)
    document["default"] = choose_default(document["result"]["rows"])
    document["load_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    document["seconds"] = time.perf_counter() - started
    text = render(document)
    if args.out:
        (args.out / "whole_process.json").write_text(json.dumps(document, indent=1) + "\n")
        (args.out / "whole_process.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
