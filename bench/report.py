"""What every benchmark writes: its document as <stem>.json and its report as <stem>.md in
``--out`` (nothing without it), the report printed in any case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def publish(out: Path | None, stem: str, document: dict[str, Any], text: str) -> None:
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(document, indent=1) + "\n")
        (out / f"{stem}.md").write_text(text)
    print(text)
