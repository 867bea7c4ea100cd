"""What counts as a finding when the decoder opens an untrusted file, and how it is recorded.

Each input is opened and decoded every way a user can (``check``):

- ``load`` (every tensor), ``open`` on a file with ``keys``, ``metadata``, ``info``,
  ``get_tensor`` and ``get_quantized`` of every tensor, ``load`` on two threads, the commands
  ``udnc info``, ``udnc info --json``, ``udnc verify`` and ``udnc decompress``, and, for some
  inputs, ``udnc info``/``verify`` on a sharded index naming the file. Decoding runs under the
  tensor limit ``TENSOR_LIMIT`` (as SECURITY.md tells servers to), on one thread where time is
  measured.

Findings, by class (the prefix of the file written):

- ``crash``: any exception other than ``udnc_format.UDNCError`` out of any of these.
- ``cli``: a command that exits with a status other than 0 or 1, that fails (1) without
  exactly one line on stderr, writes to stderr on success, prints JSON that is not valid
  JSON (``Infinity``, ``NaN``), prints unescaped control characters, or leaves a partial
  output or a temporary file behind when ``decompress`` fails.
- ``slow``: decoding (``load``, one thread) takes more CPU time than
  ``START_SECONDS + header_bytes × HEADER_SECONDS_PER_BYTE + declared / SPEED``, SPEED = 20 MB/s
  of *declared decoded output*: the sum, over the tensors within the limit, of
  max(elements × itemsize, Σ raw_length of its chunks), the figure ``max_tensor_bytes`` is
  checked against. The floor below which start-up dominates: START_SECONDS = 0.05 s of CPU
  (opening a small file and decoding a few chunks takes 1 to 5 ms here) plus 10 µs per header
  byte (parsing costs about 6 µs per byte, SECURITY.md, and every chunk entry is 28 bytes of
  header: 0.28 ms per chunk for its fixed costs). So a 1 MB file with a small header is judged
  on 0.1 s, a 128 KiB header alone on 1.4 s. CPU time, not wall time, so that a loaded machine
  does not make findings. Each candidate is measured twice, the second time under a sampling
  profiler that names the code site (the function of udnc_format where most samples fall).
- ``oom``: peak memory while decoding (``load``, one thread; tracemalloc, which sees numpy's
  buffers and every Python object) above ``output + MEMORY_CHUNKS × largest_chunk +
  MEMORY_SLACK``: output = Σ elements × itemsize of the tensors within the limit (what
  ``load`` returns), largest_chunk = the largest raw_length of any of their chunks,
  MEMORY_CHUNKS = 4, MEMORY_SLACK = 32 MiB (a decoding block's temporaries, a few MiB,
  and the interpreter's own allocations). The code site is where the traced memory
  peaked: the innermost udnc_format frame at the largest traced size seen between calls.
- ``default-limits``: ``load`` with its default arguments starts to allocate more than
  ``DEFAULT_PROBE_BYTES`` for a file that declares more than this machine's memory, which the
  default limits refuse (udnc_format/format/limits.py, SECURITY.md): a file that makes a default
  decoder allocate beyond what the machine holds. Probed only for such files, stopped as soon
  as the allocation is seen.
- ``mismatch``: two ways of decoding disagree: ``load`` against ``open``/``get_tensor``, one
  thread against two, ``udnc verify`` against ``load``, a sharded index against its file, an
  index that should be rejected (names a missing tensor, a shard outside its directory, an
  unknown index version) and is not.

Findings are de-duplicated by class and code site (for a crash, the exception type and the
innermost udnc_format frame); each distinct one is a file ``<class>-<site>.udnc`` (the
smallest input seen) with ``<class>-<site>.txt``, its one-line classification, and every
process adds its counts and the execution at which it first saw each to ``stats-<pid>.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import linecache
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

import udnc_format
from udnc_format import cli
from udnc_format.format import limits

SPEED = 20e6  # bytes of declared decoded output per CPU second
START_SECONDS = 0.05
HEADER_SECONDS_PER_BYTE = 10e-6
MEMORY_CHUNKS = 4
MEMORY_SLACK = 32 << 20
TENSOR_LIMIT = 64 << 20  # max_tensor_bytes of every checked path
LAZY_DECODE_BYTES = 4 << 20  # the second and third decodes (open, two threads) up to this
CLI_DECODE_BYTES = 1 << 20  # udnc verify and decompress up to this
DEFAULT_PROBE_BYTES = 32 << 20
INDEX_EVERY = 8  # one input in eight that opens is also read through a sharded index
PACKAGE = str(Path(udnc_format.__file__).resolve().parent)
# cli.main builds its argument parser on every call (12 ms, more than most decodes): the
# commands below run cli.main with the parser built once.
_PARSER = cli.build_parser()
cli.build_parser = lambda: _PARSER


@dataclass(frozen=True)
class Finding:
    """One finding: its class, code site, the API path that showed it, and what happened."""

    kind: str
    site: str
    path: str
    detail: str
    # A sharded index that goes with the input (index findings): written as <name>.index.json
    attachment: bytes | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """``crash-ValueError-decoder-py-111-lambda``: class and site, as a file name."""
        return f"{self.kind}-" + re.sub(r"[^A-Za-z0-9]+", "-", self.site).strip("-")

    def line(self, executions: int, size: int) -> str:
        return (
            f"{self.kind} at {self.site} via {self.path}: {self.detail} "
            f"(execution {executions}, {size} bytes)"
        )


class Deadline(BaseException):
    """CPU time ran out (a BaseException, so that no ``except Exception`` swallows it)."""


class AllocationProbe(BaseException):
    """The default-limits probe saw the decoder allocate past its bound."""

    def __init__(self, site: str) -> None:
        super().__init__(site)
        self.site = site


# ---------------------------------------------------------------------------------------------
# Code sites


def _in_package(filename: str) -> bool:
    return filename.startswith(PACKAGE)


def _short(filename: str) -> str:
    return os.path.relpath(filename, PACKAGE)


def frame_site(frame: FrameType | None, line: bool = True) -> str | None:
    """The innermost udnc_format frame at or above ``frame``: ``file.py:line:function``."""
    while frame is not None and not _in_package(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return None
    where = f"{_short(frame.f_code.co_filename)}"
    return (
        f"{where}:{frame.f_lineno}:{frame.f_code.co_name}"
        if line
        else (f"{where}:{frame.f_code.co_name}")
    )


def exception_site(exc: BaseException) -> str:
    """``Type@file.py:line:function`` of the innermost udnc_format frame of the traceback."""
    tb, site = exc.__traceback__, None
    while tb is not None:
        if _in_package(tb.tb_frame.f_code.co_filename):
            code = tb.tb_frame.f_code
            site = f"{_short(code.co_filename)}:{tb.tb_lineno}:{code.co_name}"
        tb = tb.tb_next
    return f"{type(exc).__name__}@{site or 'outside-udnc_format'}"


# ---------------------------------------------------------------------------------------------
# Measurement


@contextlib.contextmanager
def cpu_deadline(seconds: float) -> Iterator[None]:
    """Raise Deadline where the code is once this process has used ``seconds`` of CPU."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise Deadline(frame_site(frame, line=False))

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def sampled_site(run: Callable[[], Any], seconds: float) -> tuple[float, str | None]:
    """Run ``run`` for up to ``seconds`` of CPU, sampling the udnc_format function it is in
    every 5 ms; return the CPU seconds used and the most sampled function."""
    samples: Counter[str] = Counter()
    start = time.process_time()

    def sample(signum: int, frame: FrameType | None) -> None:
        site = frame_site(frame, line=False)
        if site:
            samples[site] += 1
        if time.process_time() - start > seconds:
            raise Deadline(site)

    previous = signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, 0.005, 0.005)
    try:
        with contextlib.suppress(Exception, Deadline):
            run()
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    used = time.process_time() - start
    return used, samples.most_common(1)[0][0] if samples else None


def traced_peak(run: Callable[[], Any]) -> int:
    """Peak traced memory (bytes above the start) while ``run`` runs."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    try:
        run()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak - base


def peak_site(
    run: Callable[[], Any], stop_above: int | None = None, snapshot_above: int | None = None
) -> tuple[int, str | None, list[tuple[str, int]]]:
    """The largest traced memory seen at a call or return while ``run`` runs and the innermost
    udnc_format function there; with ``snapshot_above``, also the udnc_format functions that
    allocated the memory alive when it first exceeded that (largest first); with
    ``stop_above``, AllocationProbe is raised once the traced memory exceeds it."""
    best: list[Any] = [0, None]
    owners: list[tuple[str, int]] = []
    tracemalloc.start(16)
    base = tracemalloc.get_traced_memory()[0]

    def watch(frame: FrameType, event: str, arg: Any) -> None:
        current = tracemalloc.get_traced_memory()[0] - base
        if current <= best[0]:
            return
        best[0], best[1] = current, frame_site(frame, line=False)
        if stop_above is not None and current > stop_above:
            sys.setprofile(None)
            raise AllocationProbe(best[1] or "outside-udnc_format")
        if snapshot_above is not None and current > snapshot_above and not owners:
            owners.extend(_owners(tracemalloc.take_snapshot()))

    sys.setprofile(watch)
    try:
        run()
    finally:
        sys.setprofile(None)
        tracemalloc.stop()
    return best[0], best[1], owners


def _owners(snapshot: tracemalloc.Snapshot) -> list[tuple[str, int]]:
    """Live bytes by the innermost udnc_format function that allocated them."""
    sizes: Counter[str] = Counter()
    for trace in snapshot.traces:
        frames = [f for f in trace.traceback if _in_package(f.filename)]
        if frames:  # tracemalloc lists the oldest frame first
            sizes[f"{_short(frames[-1].filename)}:{_function_at(frames[-1])}"] += trace.size
    return sizes.most_common(4)


def _function_at(frame: tracemalloc.Frame) -> str:
    """The name of the function holding line ``frame.lineno`` of ``frame.filename``."""
    lines = linecache.getlines(frame.filename)
    for number in range(min(frame.lineno, len(lines)) - 1, -1, -1):
        match = re.match(r"\s*(?:async\s+)?def\s+(\w+)", lines[number])
        if match:
            return match.group(1)
    return f"line{frame.lineno}"


@dataclass(frozen=True)
class Declared:
    """What a file's header declares, for the tensors within TENSOR_LIMIT (``work``: decoded
    bytes, the larger of output and chunks per tensor; ``output``: the returned tensors'
    bytes; ``largest_chunk``: the largest raw_length) and for every tensor (``all_work``)."""

    work: int
    output: int
    largest_chunk: int
    all_work: int
    header_bytes: int

    @classmethod
    def of(cls, handle: udnc_format.UDNCFile) -> Declared:
        work = output = largest = every = 0
        for entry in handle.header.tensors:
            raws = [c.raw_length for s in entry.streams() for c in s.chunks]
            tensor = max(entry.source_bytes, sum(raws))
            every += tensor
            if tensor <= TENSOR_LIMIT:
                work += tensor
                output += entry.source_bytes
                largest = max([largest, *raws])
        header = handle.data_start - 20
        return cls(work, output, largest, every, header)

    @property
    def seconds(self) -> float:
        """The CPU time ``load`` may take (the floor, the header, the declared output)."""
        return START_SECONDS + self.header_bytes * HEADER_SECONDS_PER_BYTE + self.work / SPEED

    @property
    def memory_bound(self) -> int:
        return self.output + MEMORY_CHUNKS * self.largest_chunk + MEMORY_SLACK


# ---------------------------------------------------------------------------------------------
# The checks


def _decoded(handle_or_result: dict[str, np.ndarray]) -> dict[str, tuple[Any, ...]]:
    return {
        name: (array.dtype.str, array.shape, zlib.crc32(np.ascontiguousarray(array).view(np.uint8)))
        for name, array in handle_or_result.items()
    }


def _outcome(run: Callable[[], dict[str, np.ndarray]]) -> tuple[str, Any]:
    """("ok", decoded summary) or ("error", kind); other exceptions propagate."""
    try:
        return "ok", _decoded(run())
    except udnc_format.UDNCError as exc:
        return "error", exc.kind


@dataclass
class Checker:
    """Runs every check on one input; ``findings`` collects what it found."""

    data: bytes
    scratch: Path
    findings: list[Finding] = field(default_factory=list)
    sample_index: bool = False

    def found(self, kind: str, site: str, path: str, detail: str) -> None:
        self.findings.append(Finding(kind, site, path, detail))

    def guarded(self, path: str, run: Callable[[], Any], seconds: float = 60.0) -> Any:
        """``run()``; an exception other than UDNCError is a crash, running out of CPU a slow
        finding; returns run's value, or None after a finding or a UDNCError."""
        try:
            with np.errstate(all="ignore"), cpu_deadline(seconds):
                return run()
        except udnc_format.UDNCError:
            return None
        except Deadline as exc:
            self.found("slow", str(exc.args[0]), path, f"over {seconds:.1f} s of CPU")
        except Exception as exc:  # the finding itself
            self.found("crash", exception_site(exc), path, f"{type(exc).__name__}: {exc}"[:300])
        return None

    def run(self) -> list[Finding]:
        with np.errstate(all="ignore"):
            try:
                handle = udnc_format.UDNCFile(self.data, max_tensor_bytes=TENSOR_LIMIT, threads=1)
            except udnc_format.UDNCError:
                handle = None
            except Exception as exc:
                self.found("crash", exception_site(exc), "UDNCFile", f"{type(exc).__name__}: {exc}")
                return self.findings
        with self.file() as path:
            if handle is None:  # the header is rejected: so must the command be
                self.command(["info", path], expect_failure=True)
                return self.findings
            with handle:
                declared = Declared.of(handle)
            self.check_decoding(path, declared)
        return self.findings

    @contextlib.contextmanager
    def file(self) -> Iterator[str]:
        path = self.scratch / "input.udnc"
        path.write_bytes(self.data)
        try:
            yield str(path)
        finally:
            path.unlink(missing_ok=True)

    def load(self, threads: int = 1) -> dict[str, np.ndarray]:
        return udnc_format.load(self.data, max_tensor_bytes=TENSOR_LIMIT, threads=threads)

    def check_decoding(self, path: str, declared: Declared) -> None:
        outcome = self.timed_load(declared)
        if outcome is None:  # crashed or slow: the other paths would say the same
            return
        self.memory(declared)
        small = declared.work <= LAZY_DECODE_BYTES
        if small:
            lazy = self.guarded("open", lambda: self.lazily(path), 10 * declared.seconds + 2)
            if lazy is not None and outcome[0] == "ok":
                for name, summary in outcome[1].items():
                    if summary != lazy.get(name):
                        self.found(
                            "mismatch",
                            "reader.py:get_tensor",
                            "open.get_tensor",
                            f"tensor {name!r}: {lazy.get(name)} where load() gave {summary}",
                        )
            two = self.guarded(
                "load threads=2", lambda: _outcome(lambda: self.load(2)), 10 * declared.seconds + 2
            )
            if two is not None and two != outcome:
                self.found(
                    "mismatch",
                    "parallel.py:Workers",
                    "load threads=2",
                    f"{two[0]} {two[1] if two[0] == 'error' else ''} against {outcome[0]}",
                )
        self.command(["info", path])
        self.command(["info", "--json", path], json_output=True)
        if declared.work <= CLI_DECODE_BYTES:
            limit = ["--max-tensor-bytes", str(TENSOR_LIMIT), "-j", "1"]
            verified = self.command(["verify", *limit, path])
            if verified is not None and (verified == 0) != (outcome[0] == "ok"):
                self.found(
                    "mismatch",
                    "cli.py:cmd_verify",
                    "cli verify",
                    f"exit {verified} where load() gave {outcome[0]} {outcome[1]!r}"[:200],
                )
            self.decompress(path, limit, outcome[0] == "ok")
            if self.sample_index:
                self.index(path, verified)
        if declared.all_work > (limits.MACHINE_MEMORY or 0):
            self.default_limits(declared)

    def timed_load(self, declared: Declared) -> tuple[str, Any] | None:
        """``load`` on one thread within its CPU allowance; a candidate over it is measured
        again under the sampling profiler, which names the site."""
        allowance = declared.seconds
        start = time.process_time()
        try:
            with np.errstate(all="ignore"), cpu_deadline(allowance):
                outcome = _outcome(self.load)
        except Deadline:
            outcome = None
        except Exception as exc:
            self.found("crash", exception_site(exc), "load", f"{type(exc).__name__}: {exc}"[:300])
            return None
        used = time.process_time() - start
        if outcome is not None and used <= allowance:
            return outcome
        with np.errstate(all="ignore"):
            again, site = sampled_site(self.load, 2 * allowance)
        if again > allowance:
            rate = declared.work / again / 1e6
            self.found(
                "slow",
                site or "outside-udnc_format",
                "load",
                f"{declared.work} declared bytes: over {again:.2f} s of CPU "
                f"(at most {rate:.2f} MB/s), allowed {allowance:.2f} s",
            )
            return None
        # Not slow the second time (the first was disturbed): decode untimed for the outcome.
        return self.guarded("load", lambda: _outcome(self.load), 10 * allowance + 2)

    def memory(self, declared: Declared) -> None:
        def run() -> None:
            with contextlib.suppress(udnc_format.UDNCError), np.errstate(all="ignore"):
                self.load()

        try:
            with cpu_deadline(20 * declared.seconds + 5):
                peak = traced_peak(run)
        except (Deadline, Exception):
            return  # timed_load judged time and exceptions
        if peak <= declared.memory_bound:
            return
        with cpu_deadline(60 * declared.seconds + 20):
            _, site, owners = peak_site(run, snapshot_above=declared.memory_bound)
        # The site: the function that allocated most of what was alive when the bound was
        # crossed, the output array itself (decoder._allocate) aside.
        others = [name for name, _ in owners if name != "decoder.py:_allocate"]
        site = (others or [site or "outside-udnc_format"])[0]
        held = ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in owners)
        self.found(
            "oom",
            site,
            "load",
            f"peak {peak / 2**20:.1f} MiB over the bound {declared.memory_bound / 2**20:.1f} "
            f"MiB (output {declared.output / 2**20:.1f} MiB, largest chunk "
            f"{declared.largest_chunk / 2**20:.2f} MiB); alive at the bound: {held}",
        )

    def lazily(self, path: str) -> dict[str, tuple[Any, ...]]:
        decoded = {}
        with udnc_format.open(path, max_tensor_bytes=TENSOR_LIMIT, threads=1) as handle:
            handle.metadata()
            for name in handle:
                handle.info(name)
                with contextlib.suppress(udnc_format.UDNCError):
                    handle.get_quantized(name)
                with contextlib.suppress(udnc_format.UDNCError):
                    decoded.update(_decoded({name: handle.get_tensor(name)}))
        return decoded

    def command(
        self,
        argv: list[str],
        *,
        json_output: bool = False,
        expect_failure: bool = False,
        label: str | None = None,
    ) -> int | None:
        """Run ``udnc ARGV`` as ``cli.main`` does and check its contract; its exit status."""
        out, err = io.StringIO(), io.StringIO()
        what = label or "cli " + " ".join(a for a in argv if not a.startswith("/"))

        def run() -> int:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                return cli.main(argv)

        code = self.guarded(what, run)
        if code is None:
            return None
        site = f"cli.py:cmd_{argv[0]}" + ("(json)" if json_output else "")
        stdout, stderr = out.getvalue(), err.getvalue()
        if code not in (0, 1):
            self.found("cli", site, what, f"exit status {code}")
        elif code == 1 and (stderr.count("\n") != 1 or not stderr.endswith("\n") or stdout):
            self.found(
                "cli",
                site + "(stderr)",
                what,
                f"exit 1 with {stderr.count(chr(10))} lines on stderr: {stderr[:120]!r}",
            )
        elif code == 0 and stderr:
            self.found("cli", site + "(stderr)", what, f"success with stderr {stderr[:120]!r}")
        elif code == 0 and json_output:
            try:
                json.loads(stdout, parse_constant=_reject_constant)
            except ValueError as exc:
                self.found("cli", site, what, f"not JSON: {exc}"[:200])
        elif code == 0 and not all(c.isprintable() or c == "\n" for c in stdout):
            bad = next(c for c in stdout if not (c.isprintable() or c == "\n"))
            self.found("cli", site + "(escape)", what, f"unescaped {bad!r} in the output")
        if expect_failure and code == 0:
            self.found("mismatch", site, what, "succeeds on a file whose header is rejected")
        return code

    def decompress(self, path: str, limit: list[str], decodes: bool) -> None:
        directory = Path(tempfile.mkdtemp(dir=self.scratch))
        target = directory / "out.safetensors"
        try:
            code = self.command(["decompress", *limit, "-q", path, "-o", str(target)])
            left = sorted(p.name for p in directory.iterdir())
            if code == 1 and left:
                self.found(
                    "cli",
                    "cli.py:cmd_decompress(partial)",
                    "cli decompress",
                    f"failed and left {left}",
                )
            if code == 0 and left != ["out.safetensors"]:
                self.found(
                    "cli",
                    "cli.py:cmd_decompress(output)",
                    "cli decompress",
                    f"succeeded and left {left}",
                )
            if code is not None and (code == 0) != decodes:
                self.found(
                    "mismatch",
                    "cli.py:cmd_decompress",
                    "cli decompress",
                    f"exit {code} where load() {'decodes' if decodes else 'fails'}",
                )
        finally:
            for leftover in directory.iterdir():
                leftover.unlink()
            directory.rmdir()

    def index(self, path: str, verified: int | None) -> None:
        """The file as the one shard of a sharded checkpoint, through each index variant."""
        with udnc_format.open(path) as handle:
            names = handle.keys()
        directory = Path(tempfile.mkdtemp(dir=self.scratch))
        shard = directory / "m.udnc"
        shard.write_bytes(self.data)
        try:
            for variant, (make, valid) in INDEX_VARIANTS.items():
                index = directory / "m.udnc.index.json"
                index.write_bytes(make(names, shard.name))
                before = len(self.findings)
                argv = ["verify", "--max-tensor-bytes", str(TENSOR_LIMIT), "-j", "1", str(index)]
                code = self.command(argv, label=f"cli verify INDEX ({variant} index)")
                expected = verified if valid else 1
                if code is not None and code != expected:
                    self.found(
                        "mismatch",
                        f"checkpoint.py:index({variant})",
                        "cli verify INDEX",
                        f"exit {code} on the {variant} index, expected {expected}",
                    )
                # The reproducer: this input as the shard, with the index naming it.
                for position in range(before, len(self.findings)):
                    finding = self.findings[position]
                    attachment = make(names, f"{finding.name}.udnc")
                    self.findings[position] = replace(finding, attachment=attachment)
        finally:
            for leftover in directory.iterdir():
                leftover.unlink()
            directory.rmdir()

    def default_limits(self, declared: Declared) -> None:
        """``load`` with its default arguments on a file that declares more than this machine's
        memory: a finding if it allocates more than DEFAULT_PROBE_BYTES before rejecting it."""

        def run() -> None:
            with np.errstate(all="ignore"):
                udnc_format.load(self.data, threads=1)

        try:
            with cpu_deadline(60):
                peak_site(run, stop_above=DEFAULT_PROBE_BYTES)
        except AllocationProbe as probe:
            self.found(
                "default-limits",
                probe.site,
                "load (default limits)",
                f"a {len(self.data)}-byte file declaring {declared.all_work} decoded "
                f"bytes: allocated over {DEFAULT_PROBE_BYTES >> 20} MiB before any check",
            )
        except (udnc_format.UDNCError, Deadline, MemoryError):
            pass
        except Exception as exc:
            self.found("crash", exception_site(exc), "load (default limits)", repr(exc)[:300])


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _index(
    weight_map: Any, fmt: str = "udnc-index", version: int = 1
) -> Callable[[list[str], str], bytes]:
    def make(names: list[str], shard: str) -> bytes:
        mapping = weight_map(names, shard) if callable(weight_map) else weight_map
        document = {"format": fmt, "version": version, "metadata": {}, "weight_map": mapping}
        return json.dumps(document).encode()

    return make


# Sharded indexes of one shard (udnc_format.checkpoint): (builder, whether the index is valid,
# in which case a command on it must end as on the file itself; otherwise it must fail).
INDEX_VARIANTS: dict[str, tuple[Callable[[list[str], str], bytes], bool]] = {
    "valid": (_index(lambda names, shard: dict.fromkeys(names, shard)), True),
    "weight-map-list": (_index(lambda names, shard: [shard]), False),
    "weight-map-string": (_index(lambda names, shard: shard), False),
    "names-a-missing-tensor": (
        _index(lambda names, shard: {**dict.fromkeys(names, shard), "\x00ghost": shard}),
        False,
    ),
    "shard-in-parent": (
        _index(lambda names, shard: dict.fromkeys(names or ["w"], f"../{shard}")),
        False,
    ),
    "shard-dotdot": (_index(lambda names, shard: dict.fromkeys(names or ["w"], "..")), False),
    "shard-is-index": (
        _index(lambda names, shard: dict.fromkeys(names or ["w"], f"{shard}.index.json")),
        False,
    ),
    "shard-number": (_index(lambda names, shard: dict.fromkeys(names or ["w"], 7)), False),
    "unknown-version": (_index(lambda names, shard: dict.fromkeys(names, shard), version=2), False),
    "other-format": (_index(lambda names, shard: dict.fromkeys(names, shard), fmt="x"), False),
    "deeply-nested": (lambda names, shard: b"[" * 5_000 + b"]" * 5_000, False),
    "not-utf8": (lambda names, shard: b'{"format": "\xff"}', False),
    "top-level-list": (lambda names, shard: b"[]", False),
}


def scratch_directory() -> Path:
    """This process's directory for the files the checks write: in memory where the machine
    has /dev/shm (``decompress`` calls fsync). Those of processes that are gone are removed
    (libFuzzer ends a run with exit(), before Python could clean up)."""
    base = Path("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir())
    for stale in base.glob("udnc-fuzz-*"):
        pid = stale.name.removeprefix("udnc-fuzz-")
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    path = base / f"udnc-fuzz-{os.getpid()}"
    path.mkdir(exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# Recording


@dataclass
class FindingStore:
    """Writes each distinct finding (class, site) once as ``<name>.udnc`` plus ``<name>.txt``,
    keeping the smallest input; counts every occurrence and the execution that first showed
    it in ``stats-<pid>.json``."""

    directory: Path
    executions: int = 0
    started: float = field(default_factory=time.monotonic)
    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, finding: Finding, data: bytes) -> bool:
        """Count ``finding``; write its input if it is new or smaller. True when new here."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = finding.name
        self.counts[name] += 1
        new = name not in self.first
        if new:
            self.first[name] = {
                "kind": finding.kind,
                "site": finding.site,
                "path": finding.path,
                "detail": finding.detail,
                "first_execution": self.executions,
                "first_seconds": round(time.monotonic() - self.started, 1),
            }
        target = self.directory / f"{name}.udnc"
        if not target.exists() or len(data) < target.stat().st_size:
            temporary = self.directory / f".{name}.{os.getpid()}.tmp"
            temporary.write_bytes(data)
            note = temporary.with_suffix(".txt-tmp")
            note.write_text(finding.line(self.executions, len(data)) + "\n")
            if finding.attachment is not None:
                index = temporary.with_suffix(".index-tmp")
                index.write_bytes(finding.attachment)
                os.replace(index, self.directory / f"{name}.index.json")
            os.replace(temporary, target)
            os.replace(note, self.directory / f"{name}.txt")
        if new:
            self.save()
        return new

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stats = {
            "pid": os.getpid(),
            "executions": self.executions,
            "seconds": round(time.monotonic() - self.started, 1),
            "findings": {
                name: {**info, "count": self.counts[name]} for name, info in self.first.items()
            },
        }
        path = self.directory / f"stats-{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(stats, indent=2) + "\n")
        os.replace(temporary, path)


def check(data: bytes, scratch: Path, index: bool | None = None) -> list[Finding]:
    """Every finding on ``data`` (the checks of this module's docstring); the sharded index
    variants for one input in INDEX_EVERY (by its CRC-32), or as ``index`` says."""
    sample_index = zlib.crc32(data) % INDEX_EVERY == 0 if index is None else index
    return Checker(data, scratch, sample_index=sample_index).run()
