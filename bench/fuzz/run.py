"""The long fuzzing run of the decoder (fuzz/fuzz_decoder.py) and its figures.

    python bench/fuzz/run.py --workers 2 --runs 500000 --corpus /tmp/udnc-corpus

Runs ``--workers`` libFuzzer processes (each ``nice -n 10``, ``-runs`` executions, its own
``-seed``) on one shared corpus directory, seeded with every conformance input; then replays the
final corpus once under coverage.py for the line coverage of the decoding modules; writes
results.md and results.json beside this script. Findings (``crash-*``, ``timeout-*``, ``oom-*``,
``leak-*``) are kept in ``--corpus``/../artifacts and listed; each becomes a regression vector of
the conformance generator once fixed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HARNESS = ROOT / "fuzz" / "fuzz_decoder.py"
# The modules a decoder runs (the encoder's are not reachable from a file).
DECODING_MODULES = (
    "checkpoint",
    "coders",
    "decoder",
    "dtypes",
    "header",
    "lattices",
    "layout",
    "philox",
    "reader",
    "symbols",
)
FINDING = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")


def stat(log: str, name: str) -> float:
    found = re.findall(rf"^stat::{name}:\s+(\d+)", log, re.MULTILINE)
    return float(found[-1]) if found else 0.0


def last_progress(log: str) -> dict[str, int]:
    lines = re.findall(r"^#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)", log, re.MULTILINE)
    cov, ft, corp = lines[-1] if lines else ("0", "0", "0")
    return {"cov": int(cov), "ft": int(ft), "corpus": int(corp)}


def run_workers(args: argparse.Namespace, artifacts: Path) -> list[dict]:
    processes = []
    for worker in range(args.workers):
        log = artifacts.parent / f"worker-{worker}.log"
        command = [
            "nice",
            "-n",
            "10",
            sys.executable,
            str(HARNESS),
            f"-runs={args.runs}",
            f"-seed={worker + 1}",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
            str(args.corpus),
        ]
        handle = log.open("w")
        processes.append(
            (
                worker,
                command,
                log,
                handle,
                subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT),
            )
        )
    results = []
    for worker, command, log, handle, process in processes:
        code = process.wait()
        handle.close()
        text = log.read_text(errors="replace")
        results.append(
            {
                "worker": worker,
                "command": " ".join(command[:4])
                + " "
                + " ".join(
                    Path(c).relative_to(ROOT).as_posix() if c.startswith(str(ROOT)) else c
                    for c in command[4:]
                ),
                "exit_code": code,
                "executions": int(stat(text, "number_of_executed_units")),
                "exec_per_second": int(stat(text, "average_exec_per_sec")),
                "new_units": int(stat(text, "new_units_added")),
                "slowest_unit_seconds": int(stat(text, "slowest_unit_time_sec")),
                "peak_rss_mb": int(stat(text, "peak_rss_mb")),
                **last_progress(text),
            }
        )
    return results


def line_coverage(corpus: Path) -> dict[str, dict[str, int]]:
    """Replay the corpus once under coverage.py; statements and covered lines per decoding
    module."""
    data_file, report = corpus.parent / "coverage.data", corpus.parent / "coverage.json"
    coverage = [sys.executable, "-m", "coverage"]
    replay = [str(HARNESS), "--replay", str(corpus)]
    include = f"--include={ROOT / 'udnc_format'}/*"
    subprocess.run(
        [*coverage, "run", f"--data-file={data_file}", include, *replay],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*coverage, "json", f"--data-file={data_file}", "-o", str(report)],
        check=True,
        capture_output=True,
    )
    files = json.loads(report.read_text())["files"]
    return {
        Path(name).stem: {
            "statements": info["summary"]["num_statements"],
            "covered": info["summary"]["covered_lines"],
        }
        for name, info in sorted(files.items())
        if Path(name).stem in DECODING_MODULES
    }


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    return done.stdout.strip() or "unknown"


def render(result: dict) -> str:
    """results.md from the figures of results.json."""
    coverage = result["line_coverage"]
    workers = result["workers"]
    lines = [
        "# Fuzzing the decoder",
        "",
        f"Command: `{result['command']}` ({result['date']}, {result['machine']}, commit "
        f"{result['commit']}, atheris {result['atheris']}, Python {result['python']}).",
        "",
        "Harness: [`fuzz/fuzz_decoder.py`](../../fuzz/fuzz_decoder.py): coverage-guided "
        "(libFuzzer through atheris, the `udnc_format` modules instrumented), seeded with every "
        "`input.udnc` of the conformance vectors; each input is decoded through `UDNCFile` on "
        "bytes, `open` on a file (`info`, `get_quantized`), `udnc info` and `udnc verify`, as it "
        "is and with its CRCs recomputed. A finding is any exception other than `UDNCError`, a "
        "hang (`-timeout=20` s) or an out-of-memory (`-rss_limit_mb=3072`).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| executions | **{result['executions']:,}** ({len(workers)} workers) |",
        f"| wall time | {result['wall_seconds'] / 60:.0f} min |",
        f"| findings (crashes, hangs, out-of-memory, non-`UDNCError` exceptions) | "
        f"**{len(result['findings'])}** {', '.join(result['findings'])} |",
        f"| corpus at the end | {result['corpus_files']} inputs, "
        f"{result['corpus_bytes']:,} bytes |",
        "| libFuzzer coverage at the end (edges `cov`, features `ft`), per worker | "
        + "; ".join(f"cov {w['cov']}, ft {w['ft']}" for w in workers)
        + " |",
        "| slowest input, peak RSS, per worker | "
        + "; ".join(f"{w['slowest_unit_seconds']} s, {w['peak_rss_mb']} MB" for w in workers)
        + " |",
        f"| line coverage of the decoding modules by the final corpus (coverage.py) | "
        f"{coverage['covered']} of {coverage['statements']} statements "
        f"({coverage['covered'] / coverage['statements']:.0%}) |",
        "",
        "| module | statements | covered |",
        "|---|---:|---:|",
    ]
    for name, module in coverage["modules"].items():
        lines.append(
            f"| `udnc_format/{name}.py` | {module['statements']} | {module['covered']} "
            f"({module['covered'] / module['statements']:.0%}) |"
        )
    lines += ["", "Per worker:", "", "| worker | executions | exec/s | new inputs | exit code |"]
    lines.append("|---|---:|---:|---:|---:|")
    for w in workers:
        lines.append(
            f"| {w['worker']} | {w['executions']:,} | {w['exec_per_second']} | "
            f"{w['new_units']} | {w['exit_code']} |"
        )
    notes = result.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=500_000, help="executions per worker")
    parser.add_argument("--corpus", type=Path, help="the shared corpus directory")
    parser.add_argument(
        "--markdown", action="store_true", help="only rewrite results.md from results.json"
    )
    args = parser.parse_args()
    if args.markdown:
        (HERE / "results.md").write_text(render(json.loads((HERE / "results.json").read_text())))
        return
    if args.corpus is None:
        parser.error("--corpus is required")
    args.corpus.mkdir(parents=True, exist_ok=True)
    artifacts = args.corpus.parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    started = time.monotonic()
    workers = run_workers(args, artifacts)
    wall = time.monotonic() - started
    findings = sorted(p.name for p in artifacts.iterdir() if FINDING.match(p.name))
    coverage = line_coverage(args.corpus)
    statements = sum(m["statements"] for m in coverage.values())
    covered = sum(m["covered"] for m in coverage.values())
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared, nice -n 10)",
        "commit": commit(),
        "command": (
            f"python bench/fuzz/run.py --workers {args.workers} --runs {args.runs} --corpus CORPUS"
        ),
        "atheris": importlib.metadata.version("atheris"),
        "python": platform.python_version(),
        "executions": sum(w["executions"] for w in workers),
        "wall_seconds": round(wall),
        "corpus_files": sum(1 for p in args.corpus.iterdir() if p.is_file()),
        "corpus_bytes": sum(p.stat().st_size for p in args.corpus.iterdir() if p.is_file()),
        "findings": findings,
        "workers": workers,
        "line_coverage": {"statements": statements, "covered": covered, "modules": coverage},
    }
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: v for k, v in result.items() if k not in ("workers", "line_coverage")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
