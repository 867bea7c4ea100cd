"""What every benchmark records and writes: the run's command, date and machine; its document
as <stem>.json and its report as <stem>.md in ``--out`` (nothing without it), the report
printed in any case."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def run_record(script: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """The command (``script`` and its arguments), UTC date, machine and load of this run."""
    return {
        "command": " ".join([f"python {script}", *(argv or sys.argv[1:])]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}",
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }


def publish(out: Path | None, stem: str, document: dict[str, Any], text: str) -> None:
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n")
        (out / f"{stem}.md").write_text(text)
    print(text)
