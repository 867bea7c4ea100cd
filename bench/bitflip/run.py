"""Every single-bit flip of small valid files, classified (udnc_conformance.bitflip).

    python bench/bitflip/run.py

Writes results.md and results.json beside this script. The main file is the conformance vector
``mixed-lattices`` (six tensors: Z3, A2 with a codebook, D4 with a mask, E8, a passthrough I16;
every coder); two more vectors add the regions the spec says are ignored (uncovered data bytes,
an optional section). Two tables per file: the flipped file as it is (every flip must be
rejected or land in an ignored field), and with its CRCs recomputed after the flip (the checks
behind the checksums; no crash allowed).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from udnc_conformance import VECTORS, bitflip

HERE = Path(__file__).resolve().parent
FILES = ("mixed-lattices", "data-unreferenced-bytes", "section-optional")
COMMAND = "python bench/bitflip/run.py"


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    runs = []
    for case in FILES:
        data = (VECTORS / case / "input.udnc").read_bytes()
        for repair in (False, True):
            started = time.perf_counter()
            table = bitflip.flip_table(data, repair=repair)
            runs.append(
                {
                    "vector": case,
                    "bytes": len(data),
                    "crcs_recomputed": repair,
                    "flips": sum(bitflip.totals(table).values()),
                    "breaking_the_property": bitflip.problems(table, repair),
                    "seconds": round(time.perf_counter() - started, 1),
                    "totals": dict(sorted(bitflip.totals(table).items())),
                    "fields": {name: dict(sorted(c.items())) for name, c in sorted(table.items())},
                    "markdown": bitflip.markdown(table),
                }
            )
            print(case, "repaired" if repair else "as flipped", runs[-1]["totals"])
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "commit": commit(),
        "command": COMMAND,
        "ignored_fields": bitflip.IGNORED,
        "runs": runs,
    }
    (HERE / "results.json").write_text(
        json.dumps(
            {**result, "runs": [{k: v for k, v in r.items() if k != "markdown"} for r in runs]},
            indent=2,
        )
        + "\n"
    )
    (HERE / "results.md").write_text(render(result))


def render(result: dict) -> str:
    lines = [
        "# Single-bit flips of valid files",
        "",
        f"Command: `{result['command']}` ({result['date']}, {result['machine']}, commit "
        f"{result['commit']}). Classification: `udnc_conformance.bitflip` (module docstring).",
        "",
        "Every bit of each file (preamble, header body, header CRC, every chunk's stored bytes, "
        "uncovered data bytes) is flipped once and the file decoded by the reference decoder "
        "(every tensor). With the checksums as they are, a flip must be *rejected* (error kind of "
        "spec §10) or land in a field the spec says is ignored; with the CRCs recomputed after "
        "the flip (what a forger or a fuzzer does), it must never crash.",
        "",
        "| vector | bytes | CRCs | flips | rejected | ignored | other outcomes "
        "| breaking the property |",
        "|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for run in result["runs"]:
        totals = run["totals"]
        rejected = sum(v for k, v in totals.items() if k.startswith("rejected:"))
        other = ", ".join(
            f"{k} {v}"
            for k, v in totals.items()
            if not k.startswith("rejected:") and k != "ignored"
        )
        crcs = "recomputed" if run["crcs_recomputed"] else "as stored"
        lines.append(
            f"| {run['vector']} | {run['bytes']} | {crcs} "
            f"| {run['flips']} | {rejected} | {totals.get('ignored', 0)} | {other or '–'} "
            f"| **{run['breaking_the_property']}** |"
        )
    lines += ["", "Fields the spec says a decoder ignores:", ""]
    lines += [f"- `{name}`: {clause}" for name, clause in result["ignored_fields"].items()]
    for run in result["runs"]:
        crcs = "CRCs recomputed after the flip" if run["crcs_recomputed"] else "CRCs as stored"
        lines += ["", f"## {run['vector']}, {crcs}", "", run["markdown"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
