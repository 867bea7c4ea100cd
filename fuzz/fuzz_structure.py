"""Structure-aware, coverage-guided fuzzing of the .udnc decoder: libFuzzer (atheris) with a
custom mutator that edits files as the spec lays them out and recomputes every CRC.

    python fuzz/fuzz_structure.py -runs=2000                          # a short run
    nice -n 15 python fuzz/fuzz_structure.py -max_total_time=1800 --findings=F CORPUS
    python fuzz/fuzz_structure.py --replay F/crash-*.udnc                # re-check findings
    python fuzz/fuzz_structure.py --minimize=OUT F                       # shrink each finding
    python bench/fuzz/run.py --structure --workers 2 --runs 500000 --corpus C   # the campaign

Why a second harness rather than the byte-level one (fuzz_decoder.py) with a custom mutator:
that harness's mutations are bytes, so nearly every mutation ends in a CRC check (1,000,000
executions found nothing); here libFuzzer's byte mutation is only one operator among many
(fuzz/structure.py), and the checks are not only "no exception other than UDNCError": time
and memory are measured against what the header declares, commands are checked for their
contract, and decoding paths are compared, so a finding does not stop the run. Each finding
is recorded (fuzz/oracle.py) and fuzzing goes on; libFuzzer's coverage guidance (udnc_format
instrumented) still decides which inputs join the corpus.

Mutations (fuzz/structure.py): enumerations (dtype, encoding, lattice, prng, serialization,
flags, coder) to defined and undefined values; shapes (zero and huge dimensions, ndim 0 to
33), counts, scale, seed, chunk_vectors, codebook_size to boundary values, usually with the
tensor's streams re-synthesized to agree; names and metadata keys (empty, duplicate, NUL,
long, invalid UTF-8); tensors added, duplicated, sharing chunks, removed; sections; chunk
offsets, stored and raw lengths; chunk contents decoded, edited per spec §6.2 (escape-heavy
fields, symbols at and over 2^24, padding bits) and re-encoded; streams re-encoded with another
coder (one-lane rANS, zstd RLE frames, bombs); libFuzzer's byte mutation of one chunk or of the
header body, with the CRCs recomputed.

Findings (fuzz/oracle.py): ``crash`` (an exception other than UDNCError from load, open,
info, get_tensor, get_quantized or the commands), ``slow`` (decoding below 20 MB/s of declared
decoded output, after a floor of 0.05 s plus 10 µs per header byte), ``oom`` (peak memory
over output + 4 × largest chunk +
32 MiB), ``cli`` (exit status, stderr, JSON, escaping, partial output), ``default-limits``,
``mismatch``. Each distinct (class, code site) is written once to the findings directory
(``--findings``, default ./findings) as ``<class>-<site>.udnc`` (the smallest input seen) and
``.txt`` (one line), with counts and the execution that first found it in ``stats-<pid>.json``.

Seeds: every conformance vector's ``input.udnc`` and the shapes of the known bug reports
(fuzz/seeds.py); ``--seeds=vectors`` leaves the latter out (to measure how soon the mutator
finds those classes on its own). Other flags are libFuzzer's; the defaults below apply unless
given.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parent.parent
# Fuzz the tree this harness is in, whichever udnc_format is installed (an editable install
# may point at another checkout).
sys.path[1:1] = [str(ROOT), str(ROOT / "conformance")]

with atheris.instrument_imports(include=["udnc_format"]):
    import udnc_format  # noqa: F401 - instrumented here, before oracle imports it
    from udnc_format import cli  # noqa: F401

import oracle  # noqa: E402 - after the path and the instrumented imports
import seeds  # noqa: E402
import structure  # noqa: E402

VECTORS = ROOT / "conformance" / "vectors"
DEFAULT_FLAGS = ("-timeout=120", "-rss_limit_mb=4096", "-max_len=131072", "-len_control=0")
SAVE_EVERY = 25  # executions between two writes of the statistics

STORE = oracle.FindingStore(Path("findings"))
SCRATCH: Path | None = None


def test_one_input(data: bytes) -> None:
    """Every check of fuzz/oracle.py on ``data``; findings are recorded, never raised."""
    global SCRATCH
    if SCRATCH is None:
        SCRATCH = oracle.scratch_directory()
    STORE.executions += 1
    for finding in oracle.check(data, SCRATCH):
        if STORE.record(finding, data):
            print(
                f"#{STORE.executions} NEW {finding.line(STORE.executions, len(data))}",
                file=sys.stderr,
                flush=True,
            )
    if STORE.executions % SAVE_EVERY == 0:
        STORE.save()


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    return structure.mutate(data, max_size, seed, atheris.Mutate)


def custom_crossover(first: bytes, second: bytes, max_size: int, seed: int) -> bytes:
    return structure.crossover(first, second, max_size, seed)


def seed_corpus(directory: Path, which: str) -> int:
    """Write the seeds into ``directory``; return how many."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(VECTORS.glob("*/input.udnc")):
        shutil.copyfile(path, directory / f"seed-{path.parent.name}")
        count += 1
    if which == "all":
        for name, data in seeds.build_seeds().items():
            (directory / f"seed-report-{name}").write_bytes(data)
            count += 1
    return count


def replay(paths: list[str]) -> int:
    """Check every file under ``paths`` once, printing each finding; return the count."""
    files = sorted(
        p
        for path in map(Path, paths)
        for p in ([path] if path.is_file() else path.rglob("*"))
        if p.is_file() and not p.name.endswith((".txt", ".json", ".md"))
    )
    scratch = oracle.scratch_directory()
    found = 0
    try:
        for path in files:
            for finding in oracle.check(path.read_bytes(), scratch, index=True):
                found += 1
                print(f"{path}: {finding.line(0, path.stat().st_size)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"replayed {len(files)} inputs, {found} findings")
    return found


def minimize(paths: list[str], target: Path) -> None:
    """Shrink each finding under ``paths`` (``<name>.udnc``) by structural reductions that keep
    the same finding (class and site), and record it in ``target``."""
    store = oracle.FindingStore(target)
    scratch = oracle.scratch_directory()
    files = sorted(
        p for path in map(Path, paths) for p in ([path] if path.is_file() else path.glob("*.udnc"))
    )
    for path in files:
        data, name = path.read_bytes(), path.stem

        def same(candidate: bytes, name: str = name) -> list[oracle.Finding]:
            return [f for f in oracle.check(candidate, scratch, index=True) if f.name == name]

        kept = same(data)
        progress = bool(kept)
        while progress:
            progress = False
            for candidate in structure.reductions(data):
                found = same(candidate)
                if found:
                    data, kept, progress = candidate, found, True
                    break
        if kept:
            store.record(kept[0], data)
            print(f"{name}: {path.stat().st_size} -> {len(data)} bytes")
        else:
            print(f"{name}: not found again (a timing finding on a quieter machine?)")
    shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str]) -> None:
    global STORE
    ours = {a.split("=")[0]: a.partition("=")[2] for a in argv[1:] if a.startswith("--")}
    rest = [a for a in argv[1:] if not a.startswith("--")]
    if "--replay" in ours:
        sys.exit(1 if replay(rest) else 0)
    if "--minimize" in ours:
        minimize(rest, Path(ours["--minimize"]))
        return
    STORE = oracle.FindingStore(Path(ours.get("--findings") or "findings").resolve())
    flags = [arg for arg in rest if arg.startswith("-")]
    corpora = [arg for arg in rest if not arg.startswith("-")]
    with tempfile.TemporaryDirectory() as scratch:
        if not corpora:
            corpora = [scratch]
        seed_corpus(Path(corpora[0]), ours.get("--seeds") or "all")
        defaults = [
            f for f in DEFAULT_FLAGS if not any(a.startswith(f.split("=")[0] + "=") for a in flags)
        ]
        arguments = [argv[0], *defaults, *flags, *corpora]
        atheris.Setup(
            arguments,
            test_one_input,
            custom_mutator=custom_mutator,
            custom_crossover=custom_crossover,
        )
        try:
            atheris.Fuzz()
        finally:
            STORE.save()
            if SCRATCH is not None:
                with contextlib.suppress(OSError):
                    shutil.rmtree(SCRATCH)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main(sys.argv)
