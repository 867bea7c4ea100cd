"""Every single-bit flip of a valid .udnc file, classified: what a decoder reports for it.

A flip lands in one field of the file (spec §2 to §4: a preamble field, a field of the header
body, the header CRC, the stored bytes of a chunk, or data-region bytes no chunk covers). Each
flipped file is decoded (every tensor) and classified:

- ``rejected:<kind>``: a ``UDNCError`` of that kind (spec §10);
- ``ignored``: decoded identically (names, order, metadata and every tensor's bits), and the
  flipped field is one the spec says a decoder ignores (``IGNORED`` names the clause);
- ``different``: decoded to other tensors or metadata without an error;
- ``identical-unexplained``: decoded identically, in a field the spec does not say is ignored;
- ``crash:<exception>``: any other exception;

and, only where the CRCs are recomputed after the flip (``repair=True``):

- ``undone``: recomputing the CRCs restored the original file (the flip was in a CRC field);
- ``equivalent``: decoded identically from a file that differs, in a field the spec does not
  ignore: another encoding of the same tensors (``chunk_vectors`` beyond the vector count, a
  low bit of ``scale`` lost in the rounding to the output dtype, bits a coder does not use).

With the checksums in place (``repair=False``) every flip must be ``rejected`` or ``ignored``:
CRC-32 detects every single-bit error, and what it does not cover is ignored by the spec.
``repair=True`` recomputes the CRCs after each flip (as a deliberate forger, or a fuzzer, would),
so that the flip reaches the checks behind them; a ``different`` outcome is then expected where a
flipped bit makes another valid file (a weight, a scale, a seed), and only ``crash`` is a defect.

    python -m udnc_conformance.bitflip conformance/vectors/mixed-lattices/input.udnc [--repair]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import udnc_format
from udnc_format.format.constants import HEADER_CRC_SIZE, PREAMBLE_SIZE, Coder, Encoding

from .surgery import chunk_spans, header_length, refresh_chunk_crcs, with_header_crc

# Fields whose content the spec tells a decoder to ignore, with the clause that says so.
IGNORED = {
    "data.uncovered": "spec §2: bytes of the data region that no chunk covers are ignored",
    "section.flags.reserved": "spec §3.3: section flag bits 1-7 MUST be ignored",
    "section.payload.optional": "spec §3.3: an optional section is skipped",
    "preamble.minor": "spec §2.1: a decoder accepts any minor version",
}
MUST_BE_ZERO = ("identical-unexplained", "different", "crash")


@dataclass(frozen=True)
class Field:
    """Bytes ``start .. end - 1`` of the file hold field ``name`` (a dotted path such as
    ``tensor.shape`` or ``chunk.stored:zstd``); ``owner`` names the tensor or entry."""

    name: str
    start: int
    end: int
    owner: str = ""


class _Walker:
    """Walks a header body by spec §3 and §4, recording every field's span."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, PREAMBLE_SIZE
        self.fields: list[Field] = []
        self.end = PREAMBLE_SIZE + header_length(data)
        self.owner = ""
        self.streams: list[tuple[str, str, int]] = []  # (owner, stream kind, coder)

    def take(self, name: str, size: int) -> int:
        start, self.position = self.position, self.position + size
        if self.position > self.end:
            raise ValueError(f"the header body ends inside {name}")
        self.fields.append(Field(name, start, self.position, self.owner))
        return int.from_bytes(self.data[start : self.position], "little")

    def stream(self, kind: str) -> None:
        coder = self.take(f"{kind}.coder", 1)
        for _ in range(self.take(f"{kind}.chunk_count", 4)):
            for field, size in (("offset", 8), ("stored_length", 8), ("raw_length", 8)):
                self.take(f"chunk.{field}", size)
            self.take("chunk.crc32", 4)
            self.streams.append((self.owner, kind, coder))

    def body(self) -> None:
        for _ in range(self.take("metadata.count", 4)):
            self.owner = "metadata"
            self.take("metadata.key", self.take("metadata.key_length", 4))
            self.take("metadata.value", self.take("metadata.value_length", 4))
        for _ in range(self.take("tensor.count", 4)):
            name_length = int.from_bytes(self.data[self.position : self.position + 2], "little")
            self.owner = self.data[self.position + 2 : self.position + 2 + name_length].decode()
            self.take("tensor.name", self.take("tensor.name_length", 2))
            self.take("tensor.dtype", 1)
            encoding = self.take("tensor.encoding", 1)
            for _ in range(self.take("tensor.ndim", 1)):
                self.take("tensor.shape", 8)
            self.take("tensor.body_length", 4)
            if encoding == Encoding.PASSTHROUGH:
                self.stream("passthrough")
                continue
            self.take("lattice.lattice", 1)
            self.take("lattice.prng", 1)
            self.take("lattice.serialization", 1)
            flags = self.take("lattice.flags", 1)
            for name, size in (("scale", 8), ("seed", 8), ("dither_stream", 4)):
                self.take(f"lattice.{name}", size)
            self.take("lattice.chunk_vectors", 4)
            self.take("lattice.codebook_size", 4)
            for bit, kind in ((1, "mask"), (2, "codebook")):
                if flags & bit:
                    self.stream(kind)
            self.stream("symbols")
        for _ in range(self.take("section.count", 4)):
            self.owner = "section"
            self.take("section.tag", 4)
            flags = self.take("section.flags", 1)
            optional = "optional" if not flags & 1 else "critical"
            self.take(f"section.payload.{optional}", self.take("section.payload_length", 4))


def file_fields(data: bytes) -> list[Field]:
    """Every field of a valid file, in file order, covering every byte exactly once."""
    walker = _Walker(data)
    fields = [
        Field("preamble.magic", 0, 8),
        Field("preamble.major", 8, 10),
        Field("preamble.minor", 10, 12),
        Field("preamble.header_length", 12, 16),
    ]
    walker.body()
    fields += walker.fields
    fields.append(Field("header_crc", walker.end, walker.end + HEADER_CRC_SIZE))
    spans = chunk_spans(data)
    chunks = [
        Field(f"chunk.stored:{Coder(coder).name.lower()}", start, end, f"{owner} {kind}")
        for (start, end), (owner, kind, coder) in zip(spans, walker.streams, strict=True)
        if end > start
    ]
    covered = walker.end + HEADER_CRC_SIZE
    for chunk in sorted(chunks, key=lambda field: field.start):
        if chunk.start > covered:
            fields.append(Field("data.uncovered", covered, chunk.start))
        fields.append(chunk)
        covered = max(covered, chunk.end)
    if covered < len(data):
        fields.append(Field("data.uncovered", covered, len(data)))
    return fields


def field_bits(field: Field) -> Iterator[tuple[int, str]]:
    """(bit index in the file, field name) of every bit of ``field``; the reserved bits of a
    section's flags byte are named apart from its critical bit."""
    for position in range(field.start, field.end):
        for bit in range(8):
            name = field.name
            if name == "section.flags" and bit:
                name = "section.flags.reserved"
            yield position * 8 + bit, name


Decoded = tuple[list[str], dict[str, str], list[tuple[str, tuple[int, ...], bytes]]]


def decode(data: bytes) -> Decoded:
    """Names in order, metadata and every tensor (dtype, shape, bytes) of a file."""
    # One thread: np.errstate (binary16 overflow is valid, spec §11) holds in this thread only.
    with udnc_format.UDNCFile(data, threads=1) as handle, np.errstate(all="ignore"):
        tensors = []
        for name in handle:
            array = handle.get_tensor(name)
            tensors.append((array.dtype.str, array.shape, array.tobytes()))
        return handle.keys(), handle.metadata(), tensors  # type: ignore[return-value]


def classify(flipped: bytes, reference: Decoded, field: str, repaired: bool = False) -> str:
    """The outcome of decoding ``flipped`` (see the module docstring); ``repaired``: its CRCs
    were recomputed after the flip."""
    try:
        result = decode(flipped)
    except udnc_format.UDNCError as exc:
        return f"rejected:{exc.kind}"
    except Exception as exc:
        return f"crash:{type(exc).__name__}"
    if result != reference:
        return "different"
    if field in IGNORED:
        return "ignored"
    return "equivalent" if repaired else "identical-unexplained"


def flip_table(data: bytes, repair: bool = False) -> dict[str, Counter[str]]:
    """For every field name, how many flips of its bits led to each outcome."""
    reference = decode(data)
    table: dict[str, Counter[str]] = {}
    for field in file_fields(data):
        for index, name in field_bits(field):
            flipped = bytearray(data)
            flipped[index // 8] ^= 1 << (index % 8)
            candidate = bytes(flipped)
            if repair:
                candidate = _repaired(candidate)
            outcome = (
                "undone" if candidate == data else classify(candidate, reference, name, repair)
            )
            table.setdefault(name, Counter())[outcome] += 1
    return table


def _repaired(data: bytes) -> bytes:
    try:
        return refresh_chunk_crcs(data)
    except Exception:  # the flip broke the header's structure: its CRC alone
        return with_header_crc(data)


def problems(table: dict[str, Counter[str]], repair: bool) -> int:
    """Flips that break the property: with checksums, anything but rejected or ignored; with
    repaired checksums, crashes."""
    bad = ("crash",) if repair else MUST_BE_ZERO
    return sum(
        count
        for outcomes in table.values()
        for outcome, count in outcomes.items()
        if outcome.startswith(bad)
    )


def totals(table: dict[str, Counter[str]]) -> Counter[str]:
    out: Counter[str] = Counter()
    for outcomes in table.values():
        out.update(outcomes)
    return out


def markdown(table: dict[str, Counter[str]]) -> str:
    """The table as Markdown: one row per field, one column per outcome."""
    columns = sorted(totals(table))
    lines = [
        "| field | bits | " + " | ".join(f"`{c}`" for c in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for name in sorted(table):
        counts = table[name]
        cells = " | ".join(str(counts.get(c, "")) for c in columns)
        lines.append(f"| `{name}` | {sum(counts.values())} | {cells} |")
    all_counts = totals(table)
    cells = " | ".join(f"**{all_counts[c]}**" for c in columns)
    lines.append(f"| **all** | **{sum(all_counts.values())}** | {cells} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m udnc_conformance.bitflip", description=__doc__.splitlines()[0]
    )
    parser.add_argument("input", type=Path, help="a valid .udnc file")
    parser.add_argument("--repair", action="store_true", help="recompute the CRCs after a flip")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    data = args.input.read_bytes()
    table = flip_table(data, repair=args.repair)
    if args.json:
        print(json.dumps({name: dict(counts) for name, counts in table.items()}, indent=2))
    else:
        print(markdown(table))
    bad = problems(table, args.repair)
    print(f"{sum(totals(table).values())} flips, {bad} breaking the property", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
