"""The reference implementation (udnc_format) as the two commands the conformance runner drives.

    python -m udnc_conformance.reference decode INPUT.udnc OUTPUT.safetensors
    python -m udnc_conformance.reference encode INPUT.safetensors OUTPUT.udnc OPTIONS.json

``decode`` decodes every tensor and writes them, with the file's metadata, to a safetensors file;
``encode`` compresses a safetensors file with the ``udnc_format.EncodeOptions`` keywords held in
OPTIONS.json (a JSON object, e.g. ``{"lattice": "E8", "step": 0.05, "coder": "lzma"}``); the
safetensors metadata is kept, and the option ``metadata`` adds to it. Outputs are written
atomically: on failure nothing is left at the output path.

Exit codes: 0 success; 1 the input was rejected, with one line ``error: <kind>: <message>`` on
stderr (``kind`` an error kind of spec §10, or ``invalid-input``/``write`` for the encoder);
2 usage error. This is the contract every implementation under test follows
(spec/IMPLEMENTERS.md).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import udnc_format
from udnc_format.format.errors import InvalidInputError, UDNCError
from udnc_format.safetensors_io import TensorSpec, iter_checkpoint, write_safetensors

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2

USAGE = (
    "usage: python -m udnc_conformance.reference decode INPUT.udnc OUTPUT.safetensors\n"
    "       python -m udnc_conformance.reference encode INPUT.safetensors OUTPUT.udnc "
    "OPTIONS.json"
)


def decode(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Decode every tensor of ``source`` into the safetensors file ``target``, atomically."""
    with udnc_format.open(source) as handle:
        entries = handle.header.tensors
        specs = [TensorSpec(e.name, e.dtype, e.shape) for e in entries]
        tensors = (handle.get_tensor(spec.name) for spec in specs)
        write_safetensors(target, specs, tensors, handle.metadata())


def read_options(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The EncodeOptions keywords of an OPTIONS.json file."""
    try:
        options = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read the options: {exc}") from None
    if not isinstance(options, dict):
        raise InvalidInputError(f"{path}: the options must be a JSON object")
    return options


def encode(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    options: dict[str, Any],
) -> None:
    """Compress the safetensors file ``source`` into ``target`` with EncodeOptions keywords."""
    _, metadata, tensors = iter_checkpoint(source)
    extra = options.get("metadata") or {}
    if not isinstance(extra, dict):
        raise InvalidInputError(f"option metadata must be a JSON object, got {extra!r}")
    udnc_format.save_file(dict(tensors), target, **{**options, "metadata": {**metadata, **extra}})


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    arity = {"decode": 3, "encode": 4}
    if not args or arity.get(args[0]) != len(args):
        print(USAGE, file=sys.stderr)
        return EXIT_USAGE
    try:
        if args[0] == "decode":
            decode(args[1], args[2])
        else:
            encode(args[1], args[2], read_options(args[3]))
    except UDNCError as exc:
        message = " ".join(str(exc).split())  # one line
        print(f"error: {exc.kind}: {message}", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
