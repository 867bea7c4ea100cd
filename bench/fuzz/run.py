"""The long fuzzing runs of the decoder and their figures: the byte-level harness
(fuzz/fuzz_decoder.py) and the structure-aware one (fuzz/fuzz_structure.py, ``--structure``).

    python bench/fuzz/run.py --workers 2 --runs 500000 --corpus /tmp/udnc-corpus
    python bench/fuzz/run.py --structure --workers 2 --runs 500000 --corpus /tmp/udnc-structure

Runs ``--workers`` libFuzzer processes (each ``nice -n 10``, ``-runs`` executions or
``--max-total-time`` seconds, its own ``-seed``) on one shared corpus directory, seeded with
every conformance input (and, for the structure-aware harness, the shapes of the known bug
reports unless ``--seeds vectors``); then replays the final corpus once under coverage.py for
the line coverage of the decoding modules; writes its section of results.json and renders
results.md beside this script (each harness keeps its own section).

Byte-level findings (``crash-*``, ``timeout-*``, ``oom-*``, ``leak-*``) are kept in
``--corpus``/../artifacts. The structure-aware harness records its findings without stopping,
one file per class and code site, in ``--corpus``/../artifacts/findings (fuzz/oracle.py); the
results list them by class with the execution at which each worker first found each. Each
finding becomes a regression test or conformance vector once fixed.
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
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
HARNESS = ROOT / "fuzz" / "fuzz_decoder.py"
STRUCTURE_HARNESS = ROOT / "fuzz" / "fuzz_structure.py"
SECTIONS = {"byte-level": HARNESS, "structure-aware": STRUCTURE_HARNESS}
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
    "rans",
    "reader",
    "symbols",
    "trellis",
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
    harness = STRUCTURE_HARNESS if args.structure else HARNESS
    processes = []
    for worker in range(args.workers):
        log = artifacts.parent / f"worker-{worker}.log"
        command = [
            "nice",
            "-n",
            str(args.nice),
            sys.executable,
            str(harness),
            f"-runs={args.runs}",
            f"-seed={worker + 1}",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
        ]
        if args.max_total_time:
            command.append(f"-max_total_time={args.max_total_time}")
        if args.structure:
            command += [f"--findings={artifacts / 'findings'}", f"--seeds={args.seeds}"]
        command.append(str(args.corpus))
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
        result = {
            "worker": worker,
            "pid": process.pid,
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
        if args.structure:  # the harness's own count, which -runs and a crash do not cut
            stats = artifacts / "findings" / f"stats-{process.pid}.json"
            if stats.exists():
                own = json.loads(stats.read_text())
                result["findings"] = own["findings"]
                result["seconds"] = own["seconds"]
                result["executions"] = max(result["executions"], own["executions"])
                if not result["exec_per_second"] and own["seconds"]:
                    result["exec_per_second"] = round(own["executions"] / own["seconds"], 1)
        results.append(result)
    return results


def findings_by_class(workers: list[dict], directory: Path) -> list[dict]:
    """The structure-aware harness's distinct findings across workers: class, site, how often,
    the execution (and seconds) at which each worker first found it, the reproducer kept."""
    merged: dict[str, dict] = {}
    for worker in workers:
        for name, info in worker.get("findings", {}).items():
            entry = merged.setdefault(
                name,
                {
                    "name": name,
                    "kind": info["kind"],
                    "site": info["site"],
                    "path": info["path"],
                    "count": 0,
                    "first_execution": {},
                    "first_seconds": {},
                },
            )
            entry["count"] += info["count"]
            entry["first_execution"][str(worker["worker"])] = info["first_execution"]
            entry["first_seconds"][str(worker["worker"])] = info["first_seconds"]
    for name, entry in merged.items():
        note = directory / f"{name}.txt"
        entry["line"] = note.read_text().strip() if note.exists() else ""
        reproducer = directory / f"{name}.udnc"
        entry["reproducer_bytes"] = reproducer.stat().st_size if reproducer.exists() else None
    return sorted(merged.values(), key=lambda e: (e["kind"], min(e["first_execution"].values())))


def line_coverage(corpus: Path, harness: Path) -> dict[str, dict[str, int]]:
    """Replay the corpus once under coverage.py; statements and covered lines per decoding
    module."""
    data_file, report = corpus.parent / "coverage.data", corpus.parent / "coverage.json"
    coverage = [sys.executable, "-m", "coverage"]
    replay = [str(harness), "--replay", str(corpus)]
    include = f"--include={ROOT / 'udnc_format'}/*"
    done = subprocess.run(
        [*coverage, "run", f"--data-file={data_file}", include, *replay],
        capture_output=True,
        text=True,
    )
    # The structure-aware replay exits 1 when the corpus holds findings; coverage is still good.
    if not data_file.exists():
        raise SystemExit(f"coverage replay failed: {done.stderr[-2000:]}")
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


def load_document() -> dict:
    """results.json: one section per harness (a file of the single-harness days is the
    byte-level section)."""
    path = HERE / "results.json"
    if not path.exists():
        return {}
    document = json.loads(path.read_text())
    return {"byte-level": document} if "executions" in document else document


def render(document: dict) -> str:
    """results.md from the figures of results.json, a section per harness."""
    lines = ["# Fuzzing the decoder", ""]
    if "structure-aware" in document:
        lines += [*render_structure(document["structure-aware"]), ""]
    if "byte-level" in document:
        lines += render_byte(document["byte-level"])
    return "\n".join(lines).rstrip() + "\n"


def render_byte(result: dict) -> list[str]:
    """The byte-level section."""
    coverage = result["line_coverage"]
    workers = result["workers"]
    lines = [
        "## Byte-level harness",
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
    return lines


def _coverage_lines(coverage: dict) -> list[str]:
    lines = ["| module | statements | covered |", "|---|---:|---:|"]
    for name, module in coverage["modules"].items():
        lines.append(
            f"| `udnc_format/{name}.py` | {module['statements']} | {module['covered']} "
            f"({module['covered'] / module['statements']:.0%}) |"
        )
    return lines


def render_structure(result: dict) -> list[str]:
    """The structure-aware section: figures, findings by class, coverage, workers."""
    coverage = result["line_coverage"]
    workers = result["workers"]
    findings = result["findings"]
    by_class = Counter(f["kind"] for f in findings)
    rates = ", ".join(f"{w['exec_per_second']}" for w in workers)
    lines = [
        "## Structure-aware harness",
        "",
        f"Command: `{result['command']}` ({result['date']}, {result['machine']}, load average "
        f"{result['load_average']} at the start, commit {result['commit']}, atheris "
        f"{result['atheris']}, Python {result['python']}; seeds: {result['seeds']}).",
        "",
        "Harness: [`fuzz/fuzz_structure.py`](../../fuzz/fuzz_structure.py): libFuzzer through "
        "atheris (the `udnc_format` modules instrumented for coverage) with a custom mutator "
        "that edits files as the spec lays them out and recomputes every CRC "
        "([`fuzz/structure.py`](../../fuzz/structure.py)). A finding "
        "([`fuzz/oracle.py`](../../fuzz/oracle.py)) is an exception other than `UDNCError`, "
        "a decode below 20 MB/s of declared output (CPU time, after a floor of 0.05 s plus "
        "10 µs per header byte), a peak memory over output + 4 × largest chunk + 32 MiB, a "
        "command breaking its contract (exit status, one line on stderr, valid JSON, "
        "escaping, no partial output), a default decoder allocating without limit, or two "
        "decoding paths disagreeing; findings are recorded without stopping the run, one per "
        "class and code site.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| executions | **{result['executions']:,}** ({len(workers)} worker"
        + ("s" if len(workers) > 1 else "")
        + ") |",
        f"| wall time | {result['wall_seconds'] / 60:.0f} min |",
        f"| executions per second, per worker | {rates} |",
        f"| distinct findings (class, code site) | **{len(findings)}**: "
        + ", ".join(f"{kind} {count}" for kind, count in sorted(by_class.items()))
        + " |",
        f"| corpus at the end | {result['corpus_files']} inputs, "
        f"{result['corpus_bytes']:,} bytes |",
        "| libFuzzer coverage at the end (edges `cov`, features `ft`), per worker | "
        + "; ".join(f"cov {w['cov']}, ft {w['ft']}" for w in workers)
        + " |",
        "| peak RSS, per worker | " + "; ".join(f"{w['peak_rss_mb']} MB" for w in workers) + " |",
        f"| line coverage of the decoding modules by the final corpus (coverage.py) | "
        f"{coverage['covered']} of {coverage['statements']} statements "
        f"({coverage['covered'] / max(coverage['statements'], 1):.0%}) |",
        "",
        "Findings, by class and code site (the reproducer is the smallest input seen, kept in "
        "the run's artifacts/findings as `<name>.udnc` with its one-line `<name>.txt`):",
        "",
        "| class | code site | via | occurrences | first found at execution (per worker) "
        "| seconds | reproducer bytes |",
        "|---|---|---|---:|---|---|---:|",
    ]
    for f in findings:
        first = ", ".join(f"{v:,}" for v in f["first_execution"].values())
        seconds = ", ".join(f"{v:g}" for v in f["first_seconds"].values())
        lines.append(
            f"| {f['kind']} | `{f['site']}` | {f['path']} | {f['count']:,} | {first} | "
            f"{seconds} | {f['reproducer_bytes']} |"
        )
    lines += ["", *_coverage_lines(coverage), ""]
    lines += ["Per worker:", "", "| worker | executions | exec/s | new inputs | exit code |"]
    lines.append("|---|---:|---:|---:|---:|")
    for w in workers:
        lines.append(
            f"| {w['worker']} | {w['executions']:,} | {w['exec_per_second']} | "
            f"{w['new_units']} | {w['exit_code']} |"
        )
    notes = result.get("notes", [])
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structure", action="store_true", help="the structure-aware harness")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=500_000, help="executions per worker")
    parser.add_argument("--max-total-time", type=int, help="seconds per worker (libFuzzer's)")
    parser.add_argument("--corpus", type=Path, help="the shared corpus directory")
    parser.add_argument(
        "--seeds",
        choices=["all", "vectors"],
        default="all",
        help="structure-aware: seed with the conformance vectors and the known bug reports' "
        "shapes, or the vectors alone",
    )
    parser.add_argument("--nice", type=int, default=10, help="niceness of the workers")
    parser.add_argument("--note", action="append", help="a note for results.md (repeatable)")
    parser.add_argument(
        "--markdown", action="store_true", help="only rewrite results.md from results.json"
    )
    args = parser.parse_args()
    if args.markdown:
        (HERE / "results.md").write_text(render(load_document()))
        return
    if args.corpus is None:
        parser.error("--corpus is required")
    args.corpus.mkdir(parents=True, exist_ok=True)
    artifacts = args.corpus.parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    started = time.monotonic()
    workers = run_workers(args, artifacts)
    wall = time.monotonic() - started
    harness = STRUCTURE_HARNESS if args.structure else HARNESS
    coverage = line_coverage(args.corpus, harness)
    statements = sum(m["statements"] for m in coverage.values())
    covered = sum(m["covered"] for m in coverage.values())
    command = f"python bench/fuzz/run.py --workers {args.workers} --runs {args.runs}"
    if args.structure:
        command = command.replace("run.py", "run.py --structure")
        command += f" --seeds {args.seeds}"
    if args.max_total_time:
        command += f" --max-total-time {args.max_total_time}"
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared, nice -n {args.nice})",
        "load_average": load_average,
        "commit": commit(),
        "command": command + " --corpus CORPUS",
        "atheris": importlib.metadata.version("atheris"),
        "python": platform.python_version(),
        "executions": sum(w["executions"] for w in workers),
        "wall_seconds": round(wall),
        "corpus_files": sum(1 for p in args.corpus.iterdir() if p.is_file()),
        "corpus_bytes": sum(p.stat().st_size for p in args.corpus.iterdir() if p.is_file()),
        "workers": workers,
        "line_coverage": {"statements": statements, "covered": covered, "modules": coverage},
        "notes": args.note or [],
    }
    if args.structure:
        result["seeds"] = (
            "conformance vectors and the known reports' shapes"
            if args.seeds == "all"
            else "conformance vectors only"
        )
        result["findings"] = findings_by_class(workers, artifacts / "findings")
        for worker in workers:
            worker.pop("findings", None)
    else:
        result["findings"] = sorted(p.name for p in artifacts.iterdir() if FINDING.match(p.name))
    document = load_document()
    document["structure-aware" if args.structure else "byte-level"] = result
    (HERE / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (HERE / "results.md").write_text(render(document))
    summary = {k: v for k, v in result.items() if k not in ("workers", "line_coverage")}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
