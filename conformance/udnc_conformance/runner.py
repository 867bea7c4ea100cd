"""The conformance runner: drives a third-party decoder over the test vectors, or a third-party
encoder over built-in inputs and option sets, and says which cases pass (spec/IMPLEMENTERS.md).

    udnc conformance --decoder "CMD" [--profile baseline|full] [--results out.json] ...
    udnc conformance --encoder "CMD" [--profile baseline|full] [--results out.json] ...

A decoder is run as ``CMD INPUT.udnc OUTPUT.safetensors``, an encoder as
``CMD INPUT.safetensors OUTPUT.udnc OPTIONS.json`` (CMD split with shlex, the paths appended),
each case in a fresh temporary directory (also the working directory) and under a timeout.
``reference`` names the reference implementation (udnc_conformance.reference).

Exit codes: 0 every case passed, 1 some case failed, 2 usage error (or a damaged suite).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from . import VECTORS

EXIT_PASSED, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROFILES = ("baseline", "full")
DEFAULT_PROFILE = "full"
DEFAULT_TIMEOUT = 60.0
REFERENCE = "reference"
RESULTS_FORMAT = "udnc-conformance-results"
RESULTS_VERSION = 1
STDERR_TAIL = 2000  # characters of a command's stderr kept in the results

# spec §10: the error kinds a decoder reports (conformance vectors name one per invalid case).
ERROR_KINDS = (
    "bad-magic",
    "truncated",
    "unsupported-version",
    "unsupported-feature",
    "checksum",
    "layout",
    "limit",
    "corrupt-stream",
    "duplicate-name",
)
# A third-party decoder MAY report the kind as a line "error: <kind>[: message]" on stderr.
_REPORTED_KIND = re.compile(r"^\s*error:\s*([a-z][a-z0-9-]*)", re.MULTILINE)


class UsageError(Exception):
    """The suite cannot run as asked: bad arguments, no cases, a damaged vector."""


@dataclass
class Outcome:
    """What happened to one case; one entry of the results JSON."""

    id: str
    result: str  # what the case expects: "valid" or "invalid"
    passed: bool
    reason: str  # "" when passed, else what went wrong
    seconds: float
    exit_code: int | None  # None when the command timed out or could not start
    stderr_tail: str
    features: list[str] = field(default_factory=list)
    expected_error: str | None = None  # invalid decoder cases: the kind of spec §10
    reported_error: str | None = None  # the kind the implementation printed, if any
    options: dict[str, Any] | None = None  # encoder cases: OPTIONS.json

    @classmethod
    def of(cls, case: Any, result: str, done: Completed, reason: str, **extra: Any) -> Outcome:
        """The outcome of running ``case`` (``reason`` empty when it passed)."""
        return cls(
            id=case.id,
            result=result,
            passed=not reason,
            reason=reason,
            seconds=round(done.seconds, 3),
            exit_code=done.exit_code,
            stderr_tail=done.stderr,
            features=list(case.features),
            reported_error=reported_error(done.stderr),
            **extra,
        )


# ---------------------------------------------------------------------------------------------
# Running a command


@dataclass(frozen=True)
class Completed:
    exit_code: int | None
    timed_out: bool
    stderr: str
    seconds: float
    failure: str = ""  # why the command could not start


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    except (ProcessLookupError, PermissionError):
        pass


def run_command(argv: Sequence[str], workdir: Path, timeout: float) -> Completed:
    """Run ``argv`` in ``workdir`` with no stdin; stdout and stderr go to files there (no pipe
    can stall), and on timeout the whole process group is killed."""
    stdout_path, stderr_path = workdir / ".stdout", workdir / ".stderr"
    start = time.monotonic()
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        try:
            process = subprocess.Popen(
                list(argv),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=os.name == "posix",
            )
        except OSError as exc:
            return Completed(None, False, "", time.monotonic() - start, f"cannot run: {exc}")
        timed_out = False
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out, code = True, None
            _kill_group(process)
            process.wait()
        else:
            _kill_group(process)  # what it left running in the background
    seconds = time.monotonic() - start
    text = stderr_path.read_bytes()[-4 * STDERR_TAIL :].decode("utf-8", "replace")
    return Completed(code, timed_out, text[-STDERR_TAIL:], seconds)


def reported_error(stderr: str) -> str | None:
    """The error kind a command reported as ``error: <kind>`` on stderr, if it did."""
    match = _REPORTED_KIND.search(stderr)
    return match.group(1) if match else None


def _exit_reason(done: Completed, timeout: float) -> str:
    if done.failure:
        return done.failure
    if done.timed_out:
        return f"timed out after {timeout:g} s"
    assert done.exit_code is not None
    if done.exit_code < 0:
        return f"killed by signal {-done.exit_code}"
    return f"exit code {done.exit_code}"


def _stderr_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f" ({lines[-1][:200]})" if lines else ""


def _command(spec: str, mode: str) -> list[str]:
    """The argv prefix of an implementation: ``reference`` or a shell-like command line."""
    if spec == REFERENCE:
        return [sys.executable, "-m", "udnc_conformance.reference", mode]
    try:
        argv = shlex.split(spec)
    except ValueError as exc:
        raise UsageError(f"--{mode}r {spec!r}: {exc}") from None
    if not argv:
        raise UsageError(f"--{mode}r: empty command")
    program = argv[0]
    if shutil.which(program) is None and not (os.sep in program and os.path.exists(program)):
        raise UsageError(f"--{mode}r: {program!r} is not an executable command")
    # Each case runs in a temporary directory: relative paths (to existing files, such as
    # ./mydecoder or build/udnc.jar) are made absolute.
    return [
        os.path.abspath(arg)
        if os.sep in arg and not os.path.isabs(arg) and os.path.exists(arg)
        else arg
        for arg in argv
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# ---------------------------------------------------------------------------------------------
# safetensors, read independently of udnc_format so that a wrong writer there cannot hide a
# wrong output here

_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "U16": 2,
    "I16": 2,
    "U32": 4,
    "I32": 4,
    "U64": 8,
    "I64": 8,
    "F16": 2,
    "BF16": 2,
    "F32": 4,
    "F64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
}
_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
}


@dataclass(frozen=True)
class RawTensor:
    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=_NUMPY[self.dtype]).reshape(self.shape)


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, RawTensor]]:
    """Metadata and tensors (dtype name, shape, raw little-endian bytes) of a safetensors file;
    ValueError says what is malformed."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, shorter than the 8-byte header length")
    length = int.from_bytes(data[:8], "little")
    if length > len(data) - 8:
        raise ValueError(f"header length {length} runs past the end of the file")
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError("__metadata__ is not a map of strings to strings")
    body = data[8 + length :]
    tensors = {}
    for name, info in header.items():
        try:
            dtype, shape = info["dtype"], tuple(info["shape"])
            begin, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {name!r}: malformed entry {info!r}") from None
        if dtype not in _ITEMSIZE:
            raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise ValueError(f"tensor {name!r}: bad shape {list(shape)}")
        size = math.prod(shape) * _ITEMSIZE[dtype]
        if not (isinstance(begin, int) and isinstance(end, int)) or not (
            0 <= begin <= end <= len(body) and end - begin == size
        ):
            raise ValueError(f"tensor {name!r}: data_offsets {[begin, end]} do not fit")
        tensors[name] = RawTensor(dtype, shape, body[begin:end])
    return metadata, tensors


def _first_difference(expected: RawTensor, actual: RawTensor) -> str:
    size = _ITEMSIZE[expected.dtype]
    left = np.frombuffer(expected.data, np.uint8).reshape(-1, size)
    right = np.frombuffer(actual.data, np.uint8).reshape(-1, size)
    differ = np.flatnonzero((left != right).any(axis=1))
    first = int(differ[0])
    return (
        f"{differ.size} of {left.shape[0]} elements differ, first at index {first}: "
        f"expected {left[first][::-1].tobytes().hex()}, got {right[first][::-1].tobytes().hex()}"
    )


def compare_outputs(expected: Path, actual: Path) -> str:
    """'' when ``actual`` holds bit for bit the tensors and metadata of ``expected``."""
    want_meta, want = read_safetensors(expected)
    try:
        got_meta, got = read_safetensors(actual)
    except ValueError as exc:
        return f"the output is not a valid safetensors file: {exc}"
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        return f"tensor names differ: missing {missing}, unexpected {extra}"
    for name, tensor in want.items():
        other = got[name]
        if other.dtype != tensor.dtype:
            return f"tensor {name!r}: dtype {other.dtype}, expected {tensor.dtype}"
        if other.shape != tensor.shape:
            return f"tensor {name!r}: shape {list(other.shape)}, expected {list(tensor.shape)}"
        if other.data != tensor.data:
            return f"tensor {name!r}: {_first_difference(tensor, other)}"
    if got_meta != want_meta:
        return f"metadata {got_meta!r}, expected {want_meta!r}"
    return ""


# ---------------------------------------------------------------------------------------------
# Decoder cases: the test vectors


@dataclass(frozen=True)
class Case:
    """One test vector: conformance/vectors/<id>/case.json (conformance/schema)."""

    id: str
    directory: Path
    description: str
    features: tuple[str, ...]
    profiles: tuple[str, ...]
    result: str
    input: str
    input_sha256: str
    error: str | None = None
    expected: str | None = None
    expected_sha256: str | None = None


def _parse_case(path: Path) -> Case:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    where = str(path)
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: not a JSON object")
    for key in ("id", "description", "result", "input", "input_sha256"):
        if not isinstance(doc.get(key), str):
            raise UsageError(f"{where}: {key!r} missing or not a string")
    profiles = doc.get("profiles")
    if not isinstance(profiles, list) or not profiles or not set(profiles) <= set(PROFILES):
        raise UsageError(f"{where}: 'profiles' must list some of {', '.join(PROFILES)}")
    if doc["id"] != path.parent.name:
        raise UsageError(f"{where}: id {doc['id']!r} differs from its directory's name")
    result = doc["result"]
    if result == "valid":
        if not isinstance(doc.get("expected"), str) or not isinstance(
            doc.get("expected_sha256"), str
        ):
            raise UsageError(f"{where}: a valid case needs 'expected' and 'expected_sha256'")
    elif result == "invalid":
        if doc.get("error") not in ERROR_KINDS:
            raise UsageError(f"{where}: an invalid case needs 'error', one of spec §10's kinds")
    else:
        raise UsageError(f"{where}: 'result' must be 'valid' or 'invalid'")
    return Case(
        id=doc["id"],
        directory=path.parent,
        description=doc["description"],
        features=tuple(doc.get("features") or ()),
        profiles=tuple(profiles),
        result=result,
        input=doc["input"],
        input_sha256=doc["input_sha256"],
        error=doc.get("error"),
        expected=doc.get("expected"),
        expected_sha256=doc.get("expected_sha256"),
    )


def _check_file(case: Case, name: str, sha256: str) -> None:
    path = case.directory / name
    if Path(name).name != name or not path.is_file():
        raise UsageError(f"case {case.id}: file {name!r} is missing from {case.directory}")
    if _sha256(path) != sha256:
        raise UsageError(
            f"case {case.id}: {name} does not match its sha256 in case.json (a damaged suite: "
            "check out the vectors again)"
        )


def load_cases(
    vectors: Path, profile: str = DEFAULT_PROFILE, patterns: Sequence[str] = ()
) -> list[Case]:
    """The cases of ``profile`` in ``vectors`` (sorted by id), their files checked against
    their sha256; ``patterns`` (globs) select case ids."""
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    if not vectors.is_dir():
        raise UsageError(f"{vectors}: not a directory of test vectors")
    cases = [_parse_case(path) for path in sorted(vectors.glob("*/case.json"))]
    chosen = [
        case
        for case in cases
        if profile in case.profiles
        and (not patterns or any(fnmatch.fnmatchcase(case.id, p) for p in patterns))
    ]
    for case in chosen:
        _check_file(case, case.input, case.input_sha256)
        if case.expected is not None and case.expected_sha256 is not None:
            _check_file(case, case.expected, case.expected_sha256)
    return chosen


def run_decoder_case(case: Case, command: Sequence[str], timeout: float) -> Outcome:
    """Run the decoder on one vector in a fresh temporary directory and judge the result."""
    with tempfile.TemporaryDirectory(prefix=f"udnc-{case.id}-") as temp:
        work = Path(temp)
        inputs, outputs = work / "input", work / "output"
        inputs.mkdir()
        outputs.mkdir()
        source = inputs / case.input
        shutil.copyfile(case.directory / case.input, source)
        before = _sha256(source)
        target = outputs / "output.safetensors"
        done = run_command([*command, str(source), str(target)], work, timeout)
        left = _listing(outputs)
        reason = _judge_decoder(case, done, timeout, target, left)
        if not reason and _sha256(source) != before:
            reason = "the decoder modified its input file"
    return Outcome.of(case, case.result, done, reason, expected_error=case.error)


def _judge_decoder(
    case: Case, done: Completed, timeout: float, target: Path, left: list[str]
) -> str:
    if done.failure or done.timed_out:
        return _exit_reason(done, timeout)
    if case.result == "invalid":
        if done.exit_code == 0:
            return f"accepted an invalid file (expected error {case.error}), exit code 0"
        if done.exit_code is not None and done.exit_code < 0:
            return f"{_exit_reason(done, timeout)} on an invalid file: a crash is not a rejection"
        if left:
            return (
                f"rejected the file ({_exit_reason(done, timeout)}) but left "
                f"{', '.join(left)} in the output directory"
            )
        return ""
    if done.exit_code != 0:
        return f"rejected a valid file: {_exit_reason(done, timeout)}{_stderr_line(done.stderr)}"
    if not target.is_file():
        return "exit code 0 but no output file"
    assert case.expected is not None
    return compare_outputs(case.directory / case.expected, target)


# ---------------------------------------------------------------------------------------------
# Encoder cases: built-in inputs and option sets

LOSSLESS, QUANTIZED = "lossless", "quantized"
# Every option set quantizes tensors of >= 2 dimensions whatever their size, and keeps the rest.
_BASE_OPTIONS: dict[str, Any] = {"min_elements": 1, "min_ndim": 2}
# spec §6.1: native cell volume V, dimension n and covering radius of each lattice; written out
# here (not read from udnc_format) so that a wrong constant there cannot hide a wrong encoder.
_H = float.fromhex("0x1.bb67ae8584caap-1")
TRELLIS_LATTICES = ("TCQ4", "TCQ16", "TCQ64", "TCQ256")  # spec §6.8 (format 1.2)
LATTICE_DIMENSION = {
    **{f"Z{n}": n for n in range(1, 9)},
    "A2": 2,
    "D4": 4,
    "E8": 8,
    **{name: 1 for name in TRELLIS_LATTICES},
}
CELL_VOLUME = {
    **{f"Z{n}": 1.0 for n in range(1, 9)},
    "A2": _H,
    "D4": 2.0,
    "E8": 1.0,
    **{name: 1.0 for name in TRELLIS_LATTICES},
}
# The trellis lattices' bound is not a covering radius: the trellis state picks a weight's
# quantizer, whose levels lie at most 2 apart, so the nearest level is within 1 and the nearest
# on the other side of the target within 2; an encoder searching rate and distortion together
# (the reference's Viterbi search, spec §6.8) takes the second one where it saves bits (it
# stays within 1.72 on these inputs).
COVERING_RADIUS = {
    **{f"Z{n}": math.sqrt(n) / 2 for n in range(1, 9)},
    "A2": 1 / math.sqrt(3),
    "D4": 1.0,
    "E8": 1.0,
    **{name: 2.0 for name in TRELLIS_LATTICES},
}
# Slack for the final rounding to the output dtype (spec §6.5), relative to the vector's norm:
# twice the unit roundoff (bfloat16 keeps 8 significant bits, binary16 11, binary32 24), and
# per coordinate, absolute, the spacing of the subnormals (binary16 and bfloat16 go through
# binary32).
ROUNDING_SLACK = {"F64": 2.0**-40, "F32": 2.0**-20, "F16": 2.0**-10, "BF16": 2.0**-7}
SUBNORMAL_SLACK = {"F64": 0.0, "F32": 2.0**-149, "F16": 2.0**-24, "BF16": 2.0**-133}
SQNR_TOLERANCE_DB = 0.5
SQNR_MIN_ELEMENTS = 1024  # smaller tensors cannot land on an SQNR target reliably
STEP_TOLERANCE = 1e-9


def encoder_inputs() -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
    """The built-in tensors (deterministic), their roles (lossless or quantized under every
    option set) and the input file's metadata. The names match none of the reference
    encoder's default SQNR offset patterns, so an SQNR target applies to each tensor as is."""
    rng = np.random.default_rng(20260611)
    tensors: dict[str, np.ndarray] = {
        "layer0.weight": rng.laplace(scale=0.5, size=(48, 64)).astype(np.float32),
        "layer0.bias": rng.normal(size=48).astype(np.float32),
        "layer1.weight": rng.normal(size=(40, 40)).astype(np.float32),
        "layer2.weight": rng.normal(scale=0.5, size=(32, 40)).astype(np.float16),
        "layer3.weight": rng.normal(scale=0.5, size=(32, 36)).astype(ml_dtypes.bfloat16),
        "layer4.weight": rng.normal(size=(9, 13)),  # F64; 117 weights: E8's last vector padded
        "layer5.tiny": rng.normal(size=(1, 5)).astype(np.float32),  # shorter than one vector
        "steps": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    roles = {name: QUANTIZED if array.ndim >= 2 else LOSSLESS for name, array in tensors.items()}
    roles["steps"] = LOSSLESS
    return tensors, roles, {"source": "udnc conformance", "license": "CC0-1.0"}


@dataclass(frozen=True)
class EncoderCase:
    id: str
    description: str
    options: dict[str, Any]
    profiles: tuple[str, ...] = PROFILES
    features: tuple[str, ...] = ()


def _encoder_case(
    case_id: str, description: str, profiles: tuple[str, ...] = ("full",), **options: Any
) -> EncoderCase:
    lattice, coder = options["lattice"], options.get("coder", "zstd")  # every case names one
    features = [f"lattice:{lattice.lower()}", f"coder:{coder}"]
    features.append("dither" if options.get("dither", True) else "no-dither")
    features += ["step"] if "step" in options else ["sqnr"] if "sqnr" in options else []
    features += ["prune"] if options.get("prune") else []
    features += ["codebook"] if options.get("codebook") else []
    return EncoderCase(
        case_id, description, {**_BASE_OPTIONS, **options}, profiles, tuple(features)
    )


def encoder_cases() -> list[EncoderCase]:
    """The option sets an encoder is run with; baseline: every lattice with a step, dither on
    and off, zstd and raw; full adds the other coders, SQNR targets, pruning and codebooks."""
    base = ("baseline", "full")
    lattices = [f"Z{n}" for n in range(1, 9)] + ["A2", "D4", "E8"]
    cases = [
        _encoder_case(
            f"lattice-{name.lower()}",
            f"{name}, step 0.05, dither seed {101 + i}",
            base,
            lattice=name,
            step=0.05,
            dither=True,
            seed=101 + i,
            coder="zstd",
        )
        for i, name in enumerate(lattices)
    ]
    cases += [
        _encoder_case(
            "no-dither-z1", "Z1 without dither", base, lattice="Z1", step=0.04, dither=False
        ),
        _encoder_case(
            "no-dither-e8", "E8 without dither", base, lattice="E8", step=0.1, dither=False
        ),
        _encoder_case("coder-raw", "E8, raw chunks", base, lattice="E8", step=0.05, coder="raw"),
        _encoder_case("coder-lzma", "D4, lzma", lattice="D4", step=0.05, seed=9, coder="lzma"),
        _encoder_case("coder-bz2", "A2, bz2", lattice="A2", step=0.05, seed=10, coder="bz2"),
        _encoder_case("coder-deflate", "Z4, deflate", lattice="Z4", step=0.05, coder="deflate"),
        _encoder_case(
            "seed-max", "D4, the largest seed", lattice="D4", step=0.07, seed=(1 << 64) - 1
        ),
        _encoder_case("sqnr-z1-30", "Z1 at 30 dB", lattice="Z1", sqnr=30.0, seed=3),
        _encoder_case("sqnr-e8-20", "E8 at 20 dB", lattice="E8", sqnr=20.0, seed=4),
        _encoder_case(
            "sqnr-a2-25-no-dither", "A2 at 25 dB, no dither", lattice="A2", sqnr=25.0, dither=False
        ),
        _encoder_case("prune-z1", "Z1, 30 % pruned", lattice="Z1", step=0.05, prune=0.3, seed=6),
        _encoder_case(
            "prune-e8-sqnr",
            "E8 at 24 dB with half the weights pruned, deflate",
            lattice="E8",
            sqnr=24.0,
            prune=0.5,
            seed=7,
            coder="deflate",
        ),
        _encoder_case("codebook-e8", "E8 with a codebook", lattice="E8", step=0.1, codebook=True),
        _encoder_case(
            "codebook-a2-prune",
            "A2 with a codebook and pruning, no dither, lzma",
            lattice="A2",
            step=0.1,
            codebook=True,
            prune=0.25,
            dither=False,
            coder="lzma",
        ),
        _encoder_case(
            "chunks-metadata",
            "D4 in chunks of 64 weights, with added metadata",
            lattice="D4",
            step=0.05,
            seed=8,
            chunk_weights=64,
            metadata={"note": "added by the options"},
        ),
        # Format 1.2: the trellis lattices and the rANS coder (the fewest-bits mode).
        _encoder_case("coder-rans", "Z1, rans", lattice="Z1", step=0.05, seed=12, coder="rans"),
        *(
            _encoder_case(
                f"lattice-{name.lower()}-rans",
                f"{name}, step 0.05, dither seed {13 + i}, rans",
                lattice=name,
                step=0.05,
                seed=13 + i,
                coder="rans",
            )
            for i, name in enumerate(TRELLIS_LATTICES)
        ),
        _encoder_case(
            "tcq64-no-dither-prune",
            "TCQ64 without dither, 30 % pruned (segments count kept weights), zstd",
            lattice="TCQ64",
            step=0.05,
            dither=False,
            prune=0.3,
        ),
        _encoder_case(
            "tcq256-sqnr-rans",
            "TCQ256 at 26 dB, rans",
            lattice="TCQ256",
            sqnr=26.0,
            seed=17,
            coder="rans",
        ),
    ]
    return cases


def select_encoder_cases(profile: str, patterns: Sequence[str] = ()) -> list[EncoderCase]:
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    return [
        case
        for case in encoder_cases()
        if profile in case.profiles
        and (not patterns or any(fnmatch.fnmatchcase(case.id, p) for p in patterns))
    ]


def _write_safetensors(
    path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]
) -> None:
    from udnc_format.format.dtypes import dtype_of
    from udnc_format.safetensors_io import TensorSpec, write_safetensors

    specs = [TensorSpec(n, dtype_of(a, n), tuple(a.shape)) for n, a in tensors.items()]
    write_safetensors(path, specs, tensors.values(), metadata)


def error_bound_violation(
    original: np.ndarray,
    decoded: np.ndarray,
    lattice: str,
    scale: float,
    dtype: str,
    kept: np.ndarray | None = None,
) -> str:
    """'' when every lattice vector of kept weights is decoded within the quantizer's bound:
    ||w − ŵ|| ≤ covering radius × scale, plus the final rounding to ``dtype`` (spec §6.5);
    else what exceeds it. ``kept`` is the mask of kept weights (None: all kept)."""
    w = np.asarray(original, dtype=np.float64).reshape(-1)
    w_hat = np.asarray(decoded, dtype=np.float64).reshape(-1)
    if kept is not None:
        w, w_hat = w[kept], w_hat[kept]
    n = LATTICE_DIMENSION[lattice]
    pad = -w.size % n
    error = np.linalg.norm(np.pad(w - w_hat, (0, pad)).reshape(-1, n), axis=1)
    size = np.maximum(
        np.linalg.norm(np.pad(w, (0, pad)).reshape(-1, n), axis=1),
        np.linalg.norm(np.pad(np.abs(w_hat), (0, pad)).reshape(-1, n), axis=1),
    )
    radius = COVERING_RADIUS[lattice] * scale * (1 + 1e-9)
    with np.errstate(invalid="ignore", over="ignore"):
        bound = radius + ROUNDING_SLACK[dtype] * size + math.sqrt(n) * SUBNORMAL_SLACK[dtype]
        over = ~(error <= bound)  # NaN or infinity count as over
    if not over.any():
        return ""
    worst = int(np.argmax(np.where(over, error / np.maximum(bound, 1e-300), 0)))
    return (
        f"{int(over.sum())} of {error.size} vectors exceed the error bound of {lattice} at "
        f"scale {scale:g}; vector {worst}: |w − ŵ| = {error[worst]:.6g} > {bound[worst]:.6g}"
    )


def sqnr_db(original: np.ndarray, decoded: np.ndarray) -> float:
    w = np.asarray(original, dtype=np.float64).reshape(-1)
    noise = float(np.sum((w - np.asarray(decoded, dtype=np.float64).reshape(-1)) ** 2))
    signal_ = float(np.sum(w**2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal_ / noise) if signal_ else -math.inf


def kept_mask(data: bytes, entry: Any) -> np.ndarray | None:
    """The mask of kept weights of ``entry`` (a header TensorEntry) read from the file's mask
    stream with the coders alone, not with the tensor decoder (None without one); the chunks
    must be known sound (the file decoded already)."""
    from udnc_format.coding.coders import decompress

    q = entry.quantized
    if q is None or q.mask is None:
        return None
    raw = b"".join(
        decompress(q.mask.coder, data[c.offset : c.offset + c.stored_length], c.raw_length)
        for c in q.mask.chunks
    )
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
    return bits[: math.prod(entry.shape)].astype(bool)


def check_encoder_output(
    output: Path,
    options: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    roles: Mapping[str, str],
    metadata: Mapping[str, str],
) -> str:
    """'' when ``output`` is what an encoder asked for ``options`` may produce from
    ``tensors``; else the first problem found."""
    import udnc_format

    if not output.is_file():
        return "exit code 0 but no output file"
    data = output.read_bytes()
    try:
        with udnc_format.UDNCFile(data) as handle:
            entries = {entry.name: entry for entry in handle.header.tensors}
            decoded = {name: handle.get_tensor(name) for name in handle}
            infos = {name: handle.info(name) for name in handle}
            got_metadata = handle.metadata()
    except udnc_format.UDNCError as exc:
        return f"the reference decoder rejects the output: {exc.kind}: {exc}"
    missing, extra = sorted(set(tensors) - set(decoded)), sorted(set(decoded) - set(tensors))
    if missing or extra:
        return f"tensor names differ: missing {missing}, unexpected {extra}"
    wanted_metadata = {**metadata, **(options.get("metadata") or {})}
    if got_metadata != wanted_metadata:
        return f"metadata {got_metadata!r}, expected {wanted_metadata!r}"
    for name, original in tensors.items():
        reason = _check_tensor(
            name, original, decoded[name], infos[name], entries[name], data, roles[name], options
        )
        if reason:
            return f"tensor {name!r}: {reason}"
    return ""


def _check_tensor(
    name: str,
    original: np.ndarray,
    decoded: np.ndarray,
    info: Any,
    entry: Any,
    data: bytes,
    role: str,
    options: Mapping[str, Any],
) -> str:
    if decoded.dtype != original.dtype or decoded.shape != original.shape:
        return (
            f"decodes to {info.dtype} {list(decoded.shape)}, the input is "
            f"{original.dtype} {list(original.shape)}"
        )
    if role == LOSSLESS:
        if decoded.tobytes() != np.ascontiguousarray(original).tobytes():
            return "must stay lossless but does not decode to the input's bytes"
        return ""
    if info.encoding != "lattice":
        return f"must be lattice-coded but is stored {info.encoding}"
    problems = _declaration_problems(name, info, options)
    if problems:
        return "; ".join(problems)
    kept = kept_mask(data, entry)
    size = original.size
    prune = float(options.get("prune") or 0.0)
    most_pruned = math.floor(prune * size)
    if kept is None:
        if most_pruned >= 1:
            return f"prune {prune:g} asked but the tensor is not pruned (no mask)"
    else:
        pruned = size - int(np.count_nonzero(kept))
        if pruned > most_pruned:
            return f"{pruned} of {size} weights pruned, prune {prune:g} allows {most_pruned}"
        zeros = decoded.reshape(-1)[~kept].astype(np.float64)
        if np.any(zeros != 0) or np.any(np.signbit(zeros)):
            return "pruned weights do not all decode to +0.0"
    if not options.get("codebook"):
        bound = error_bound_violation(original, decoded, info.lattice, info.scale, info.dtype, kept)
        if bound:
            return bound
    target = options.get("sqnr")
    if target is not None and options.get("step") is None and not options.get("codebook"):
        kept_original = original.reshape(-1) if kept is None else original.reshape(-1)[kept]
        kept_decoded = decoded.reshape(-1) if kept is None else decoded.reshape(-1)[kept]
        if kept_original.size >= SQNR_MIN_ELEMENTS:
            achieved = sqnr_db(kept_original, kept_decoded)
            if not abs(achieved - float(target)) <= SQNR_TOLERANCE_DB:
                return (
                    f"SQNR {achieved:.2f} dB, asked {float(target):g} dB (± {SQNR_TOLERANCE_DB} dB)"
                )
    return ""


def _declaration_problems(name: str, info: Any, options: Mapping[str, Any]) -> list[str]:
    """What the file declares for a quantized tensor against what the options asked."""
    problems = []
    lattice = str(options["lattice"]).upper()
    if info.lattice != lattice:
        problems.append(f"lattice {info.lattice}, asked {lattice}")
    dither = bool(options.get("dither", True))
    if info.dither != dither:
        problems.append(f"dither {'on' if info.dither else 'off'}, asked {dither}")
    elif dither and info.seed != int(options.get("seed", 0)):
        problems.append(f"seed {info.seed}, asked {options.get('seed', 0)}")
    coder = str(options.get("coder", "zstd")).lower()
    if info.coder != coder:
        problems.append(f"symbols coded with {info.coder}, asked {coder}")
    step = options.get("step")
    if isinstance(step, Mapping):
        step = step.get(name)
    if step is not None and info.lattice in CELL_VOLUME:
        n = LATTICE_DIMENSION[info.lattice]
        declared = info.scale * CELL_VOLUME[info.lattice] ** (1 / n)  # Δ = s·V^(1/n), §6.1
        if not abs(declared - step) <= STEP_TOLERANCE * step:
            problems.append(f"step {declared!r}, asked {step!r}")
    if bool(options.get("codebook")) != bool(info.codebook_size):
        problems.append(
            f"codebook of {info.codebook_size} codewords, asked codebook={options.get('codebook')}"
        )
    return problems


def run_encoder_case(case: EncoderCase, command: Sequence[str], timeout: float) -> Outcome:
    """Run the encoder on the built-in inputs with one option set and judge its output."""
    tensors, roles, metadata = encoder_inputs()
    with tempfile.TemporaryDirectory(prefix=f"udnc-{case.id}-") as temp:
        work = Path(temp)
        (work / "input").mkdir()
        (work / "output").mkdir()
        source, options_path = work / "input" / "input.safetensors", work / "input" / "options.json"
        _write_safetensors(source, tensors, metadata)
        options_path.write_text(json.dumps(case.options, indent=2) + "\n", encoding="utf-8")
        target = work / "output" / "output.udnc"
        done = run_command([*command, str(source), str(target), str(options_path)], work, timeout)
        if done.failure or done.timed_out or done.exit_code != 0:
            reason = f"{_exit_reason(done, timeout)}{_stderr_line(done.stderr)}"
        else:
            reason = check_encoder_output(target, case.options, tensors, roles, metadata)
    return Outcome.of(case, "valid", done, reason, options=case.options)


# ---------------------------------------------------------------------------------------------
# The run


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def suite_identity(vectors: Path | None, cases: Iterable[Case]) -> dict[str, Any]:
    """What identifies the suite a report was made with: udnc's version and commit, and a
    digest of the cases run (their case.json, which holds the sha256 of every file)."""
    import udnc_format

    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for case in cases:
        digest.update((case.directory / "case.json").read_bytes())
    identity: dict[str, Any] = {
        "udnc_version": udnc_format.__version__,
        "format_version": "{}.{}".format(*udnc_format.FORMAT_VERSION),
        "udnc_commit": _git(here, "rev-parse", "HEAD"),
    }
    if vectors is not None:
        status = _git(vectors, "status", "--porcelain", "--", ".")
        vectors_commit = _git(vectors, "log", "-1", "--format=%H", "--", ".")
        identity.update(
            vectors=str(vectors),
            vectors_commit=vectors_commit,
            vectors_modified=None if status is None and vectors_commit is None else bool(status),
            vectors_digest=digest.hexdigest(),
        )
    return identity


class Progress:
    """How far a run is, on stderr: a progress bar on a terminal; elsewhere (a CI log) with
    ``-q``, which prints no line per case, a line at each quarter of the cases."""

    def __init__(self, total: int, mode: str, quiet: bool) -> None:
        from tqdm import tqdm

        self.total, self.done, self.mode, self.quiet = total, 0, mode, quiet
        terminal = sys.stderr.isatty()
        self._bar = tqdm(
            total=total, desc=f"{mode} cases", unit="case", file=sys.stderr, leave=False,
            disable=not terminal,
        )  # fmt: skip
        self._lines = quiet and not terminal

    def write(self, line: str, stream: IO[str]) -> None:
        """A result line, printed around the bar."""
        self._bar.clear()
        print(line, file=stream, flush=True)
        self._bar.refresh()

    def advance(self) -> None:
        self.done += 1
        self._bar.update(1)
        quarter = -(-self.total // 4)
        if self._lines and self.done < self.total and self.done % quarter == 0:
            print(f"{self.done} of {self.total} {self.mode} cases run", file=sys.stderr)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


def _summary(passed: int, failed: int, skipped: int = 0) -> str:
    return f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")


def _run_all(
    items: Sequence[Any],
    job: Callable[[Any], Outcome],
    jobs: int,
    report: Callable[[Outcome], None],
) -> list[Outcome]:
    if jobs <= 1:
        outcomes = []
        for item in items:
            outcomes.append(job(item))
            report(outcomes[-1])
        return outcomes
    by_id: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(job, item) for item in items]
        for future in as_completed(futures):
            outcome = future.result()
            by_id[outcome.id] = outcome
            report(outcome)
    return [by_id[item.id] for item in items]


def run(
    *,
    decoder: str | None = None,
    encoder: str | None = None,
    profile: str = DEFAULT_PROFILE,
    vectors: str | os.PathLike[str] | None = None,
    results: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    cases: Sequence[str] = (),
    jobs: int = 1,
    quiet: bool = False,
    out: IO[str] | None = None,
) -> int:
    """Run the suite against a decoder or an encoder; print one line per failing case (and,
    unless ``quiet``, per passing one) and the summary; return the exit code. Raises
    UsageError when the suite cannot run as asked."""
    stream = sys.stdout if out is None else out
    if (decoder is None) == (encoder is None):
        raise UsageError("give exactly one of --decoder CMD and --encoder CMD")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    results_path = Path(results) if results is not None else None
    if results_path is not None and not results_path.resolve().parent.is_dir():
        raise UsageError(f"--results {results_path}: its directory does not exist")
    mode, spec = ("decoder", decoder) if decoder is not None else ("encoder", encoder)
    assert spec is not None
    command = _command(spec, mode[:-1])
    vector_dir: Path | None = None
    selected: Sequence[Any]
    chosen_cases: list[Case] = []
    if mode == "decoder":
        vector_dir = Path(vectors).resolve() if vectors is not None else VECTORS
        chosen_cases = load_cases(vector_dir, profile, cases)
        selected = chosen_cases
        where = str(vector_dir)

        def job(case: Any) -> Outcome:
            return run_decoder_case(case, command, timeout)

    else:
        selected = select_encoder_cases(profile, cases)
        where = "the built-in inputs"

        def job(case: Any) -> Outcome:
            return run_encoder_case(case, command, timeout)

    if not selected:
        raise UsageError(
            f"no {mode} cases of profile {profile}"
            + (f" match {', '.join(cases)}" if cases else "")
            + f" in {where}"
        )
    if not quiet:
        print(
            f"udnc conformance: {mode} {spec!r}, profile {profile}, {len(selected)} cases "
            f"from {where}",
            file=stream,
        )

    progress = Progress(len(selected), mode, quiet)

    def report(outcome: Outcome) -> None:
        if not outcome.passed:
            progress.write(f"FAIL {outcome.id}: {outcome.reason}", stream)
        elif not quiet:
            progress.write(f"ok   {outcome.id} ({outcome.seconds:.2f} s)", stream)
        progress.advance()

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with progress:
        outcomes = _run_all(selected, job, jobs, report)
    passed = sum(o.passed for o in outcomes)
    failed = len(outcomes) - passed
    print(_summary(passed, failed), file=stream, flush=True)
    if results_path is not None:
        document = {
            "format": RESULTS_FORMAT,
            "format_version": RESULTS_VERSION,
            "mode": mode,
            "implementation": spec,
            "command": command,
            "profile": profile,
            "case_patterns": list(cases),
            "timeout": timeout,
            "started": started,
            "platform": (
                f"{platform.system()} {platform.machine()} python {platform.python_version()}"
            ),
            "suite": suite_identity(vector_dir, chosen_cases),
            "summary": {"passed": passed, "failed": failed, "skipped": 0, "total": len(outcomes)},
            "cases": [asdict(o) for o in outcomes],
        }
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        try:
            results_path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--results {results_path}: cannot write: {exc}") from None
    return EXIT_PASSED if failed == 0 else EXIT_FAILED


def _number(kind: Callable[[str], float], least: float, what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, finite and at least ``least``, else a usage error."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not (value >= least and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def build_parser(prog: str = "udnc conformance") -> argparse.ArgumentParser:
    """The runner's command line, the same as ``udnc conformance`` (which delegates to it)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the .udnc conformance suite (spec/IMPLEMENTERS.md). Exit codes: 0 every "
        "case passed, 1 some case failed, 2 usage error.",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only the failing cases and the summary"
    )
    implementation = parser.add_mutually_exclusive_group(required=True)
    implementation.add_argument(
        "--decoder",
        metavar="CMD",
        help="decoder run as: CMD INPUT.udnc OUTPUT.safetensors ('reference': udnc_format)",
    )
    implementation.add_argument(
        "--encoder",
        metavar="CMD",
        help="encoder run as: CMD INPUT.safetensors OUTPUT.udnc OPTIONS.json ('reference')",
    )
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        choices=PROFILES,
        help=f"the cases to run (default: {DEFAULT_PROFILE})",
    )
    parser.add_argument(
        "--vectors", metavar="DIR", help="test vectors (default: the suite's conformance/vectors)"
    )
    parser.add_argument("--results", metavar="FILE", help="write per-case results as JSON")
    parser.add_argument(
        "--timeout",
        type=_number(float, math.ulp(0.0), "a positive number of seconds"),
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds per case (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--case", action="append", metavar="GLOB", help="run only matching case ids (repeatable)"
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_number(int, 1, "a positive integer"),
        default=1,
        metavar="N",
        help="cases run at once (default: 1)",
    )
    return parser


def run_args(args: argparse.Namespace) -> int:
    """Run from the parsed command line (:func:`build_parser`); usage errors exit 2."""
    try:
        return run(
            decoder=args.decoder,
            encoder=args.encoder,
            profile=args.profile,
            vectors=args.vectors,
            results=args.results,
            timeout=args.timeout,
            cases=tuple(args.case or ()),
            jobs=args.jobs,
            quiet=bool(getattr(args, "quiet", False)),
        )
    except UsageError as exc:
        print(f"udnc conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE


def main(argv: Sequence[str] | None = None, prog: str = "udnc conformance") -> int:
    """``python -m udnc_conformance.runner ARGS``, and ``udnc conformance ARGS``: a bad option
    exits 2 (SystemExit), as argparse does."""
    return run_args(build_parser(prog).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
