"""Coverage-guided fuzzing of the .udnc decoder (atheris, libFuzzer).

Every input goes through the public API as an untrusted file would: ``udnc_format.UDNCFile`` on
the bytes (every tensor decoded, as ``udnc_format.load`` does), then, when the header passed its
checks (otherwise every path stops in the same checks), ``udnc_format.open`` on a file (lazy
reads: ``keys``, ``metadata``, ``info`` and ``get_quantized`` of every tensor, in reverse order)
and the ``udnc info`` (text and JSON) and ``udnc verify`` commands (every tensor decoded from
the file).
Each input is also decoded with its CRCs recomputed, so that mutations reach the checks behind
the checksums. Any exception that is not a ``UDNCError`` is a crash, an input running
longer than ``-timeout`` a hang, and one going over ``-rss_limit_mb`` an out-of-memory: libFuzzer
stops and writes the input to ``crash-*``/``timeout-*``/``oom-*``.

    python fuzz/fuzz_decoder.py -runs=5000                     # seeded with conformance/vectors
    nice -n 10 python fuzz/fuzz_decoder.py -runs=1000000 -print_final_stats=1 fuzz/corpus
    python fuzz/fuzz_decoder.py --replay crash-1234abcd fuzz/corpus  # each input once, no fuzzing

Seeds: every ``input.udnc`` of conformance/vectors, copied into the first corpus directory (a
temporary one when none is given); libFuzzer flags (``-runs``, ``-max_total_time``,
``-timeout``, ...) pass through. Decoding is limited to ``MAX_TENSOR_BYTES`` per tensor, as a
server opening untrusted files should (SECURITY.md): inside the limit every tensor is decoded.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports(include=["udnc_format"]):
    from udnc_conformance.surgery import refresh_chunk_crcs, with_header_crc

    import udnc_format
    from udnc_format import cli

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "conformance" / "vectors"
DICTIONARY = Path(__file__).resolve().parent / "udnc.dict"
MAX_TENSOR_BYTES = 64 << 20  # declared decoded bytes of one tensor: bounds memory and time
PARSER = cli.build_parser()
DEFAULT_FLAGS = ("-timeout=20", "-rss_limit_mb=3072", "-max_len=16384")


def _inspect_lazily(path: str) -> None:
    with udnc_format.open(path, max_tensor_bytes=MAX_TENSOR_BYTES) as handle:
        handle.metadata()
        for name in reversed(handle.keys()):
            handle.info(name)
            with contextlib.suppress(udnc_format.UDNCError):
                handle.get_quantized(name)


def _run_command(*argv: str) -> None:
    """A ``udnc`` command as ``cli.main`` runs it, its output captured; a UDNCError is its
    exit status 1."""
    args = PARSER.parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(udnc_format.UDNCError):
        args.run(args)


def with_crcs_repaired(data: bytes) -> bytes:
    """``data`` with every CRC-32 recomputed where the header allows, so that a mutation
    reaches the checks behind the checksums (as libpng's fuzzers skip its CRCs)."""
    try:
        return refresh_chunk_crcs(data)
    except Exception:  # the header does not parse: the header CRC alone
        return with_header_crc(data) if len(data) >= 16 else data


def test_one_input(data: bytes) -> None:
    """Decode ``data``, and ``data`` with its CRCs repaired, every way the API allows; anything
    but a UDNCError propagates."""
    decode_every_way(data)
    repaired = with_crcs_repaired(data)
    if repaired != data:
        decode_every_way(repaired)


def decode_every_way(data: bytes) -> None:
    """``UDNCFile`` on the bytes, every tensor decoded (as ``udnc_format.load`` does); then, if
    the header passed its checks, the file paths too (otherwise they stop in the same checks)."""
    with np.errstate(all="ignore"):  # binary16 overflow to infinity is valid (spec §11)
        try:
            handle = udnc_format.UDNCFile(data, max_tensor_bytes=MAX_TENSOR_BYTES)
        except udnc_format.UDNCError:
            return
        with handle, contextlib.suppress(udnc_format.UDNCError):  # as udnc_format.load does
            for name in handle:
                handle.get_tensor(name)
        descriptor = os.memfd_create("fuzz.udnc")
        try:
            os.write(descriptor, data)
            path = f"/proc/self/fd/{descriptor}"
            with contextlib.suppress(udnc_format.UDNCError):
                _inspect_lazily(path)
            _run_command("info", "--json", path)
            _run_command("info", path)
            _run_command("verify", "--max-tensor-bytes", str(MAX_TENSOR_BYTES), path)
        finally:
            os.close(descriptor)


def seed_corpus(directory: Path) -> int:
    """Copy every conformance input into ``directory``; return how many."""
    directory.mkdir(parents=True, exist_ok=True)
    inputs = sorted(VECTORS.glob("*/input.udnc"))
    for path in inputs:
        shutil.copyfile(path, directory / f"seed-{path.parent.name}")
    return len(inputs)


def replay(paths: list[str]) -> int:
    """Run every file under ``paths`` once, without the fuzzer (for coverage.py, or to check a
    finding); return how many."""
    files = [
        p for path in map(Path, paths) for p in ([path] if path.is_file() else path.rglob("*"))
    ]
    for path in sorted(f for f in files if f.is_file()):
        test_one_input(path.read_bytes())
    return len(files)


def main(argv: list[str]) -> None:
    if argv[1:2] == ["--replay"]:
        print(f"replayed {replay(argv[2:])} inputs")
        return
    flags = [arg for arg in argv[1:] if arg.startswith("-")]
    corpora = [arg for arg in argv[1:] if not arg.startswith("-")]
    with tempfile.TemporaryDirectory() as scratch:
        if not corpora:
            corpora = [scratch]
        seed_corpus(Path(corpora[0]))
        defaults = [
            f for f in DEFAULT_FLAGS if not any(a.startswith(f.split("=")[0]) for a in flags)
        ]
        arguments = [argv[0], *defaults, f"-dict={DICTIONARY}", *flags, *corpora]
        atheris.Setup(arguments, test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
