"""The conformance runner (``udnc conformance``): it passes the reference decoder and encoder, and
it catches broken implementations, each a small script wrapping the reference.

The runner runs in-process (its ``main``); the implementations it drives are subprocesses. The
decoder tests use a small vector set of their own, built here in a temporary directory, so they
do not depend on the committed vectors; those are run too, when present.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import textwrap
import time
import zlib
from pathlib import Path

import jsonschema
import ml_dtypes
import numpy as np
import pytest
from udnc_conformance import SCHEMA, VECTORS, reference, runner

import udnc_format
from udnc_format.format import layout
from udnc_format.format.dtypes import dtype_of

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(, (\d+) skipped)?$")
JOBS = ["-j", str(min(4, os.cpu_count() or 1))]
COMMITTED_SAMPLE = 16  # committed vectors run here (each a process start)


# ---------------------------------------------------------------------------------------------
# A vector set of our own


def write_case(
    root: Path,
    case_id: str,
    data: bytes,
    *,
    error: str | None = None,
    profiles: tuple[str, ...] = ("baseline", "full"),
    features: tuple[str, ...] = (),
) -> Path:
    """A case directory (conformance/schema): ``data`` as input.udnc and, for a valid case
    (``error`` None), the reference decoder's output as expected.safetensors."""
    directory = root / case_id
    directory.mkdir(parents=True)
    (directory / "input.udnc").write_bytes(data)
    doc: dict = {
        "id": case_id,
        "description": f"test case {case_id}",
        "features": list(features),
        "profiles": list(profiles),
        "result": "valid" if error is None else "invalid",
        "input": "input.udnc",
        "input_sha256": hashlib.sha256(data).hexdigest(),
    }
    if error is None:
        reference.decode(directory / "input.udnc", directory / "expected.safetensors")
        expected = (directory / "expected.safetensors").read_bytes()
        doc.update(
            expected="expected.safetensors", expected_sha256=hashlib.sha256(expected).hexdigest()
        )
    else:
        doc["error"] = error
    jsonschema.validate(doc, json.loads(SCHEMA.read_text(encoding="utf-8")))
    (directory / "case.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return directory


def header_crc(data: bytes) -> bytes:
    """``data`` with its header CRC recomputed."""
    end = 16 + int.from_bytes(data[12:16], "little")
    return data[:end] + zlib.crc32(data[:end]).to_bytes(4, "little") + data[end + 4 :]


def first_chunk_crc_flipped(data: bytes) -> bytes:
    """``data`` whose first chunk's stored CRC is wrong (and whose header CRC is right)."""
    length = int.from_bytes(data[12:16], "little")
    body = layout.HeaderBody.parse(data[16 : 16 + length])
    tensor = next(t for t in body.tensors if t.encoding == 1)
    tensor.body.symbols.chunks[0].crc32 ^= 0x00010000
    rebuilt = layout.HeaderBody.build(body)
    assert len(rebuilt) == length
    return header_crc(data[:16] + rebuilt + data[16 + length :])


@pytest.fixture(scope="session")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven cases: two valid (one only in the full profile), five invalid."""
    root = tmp_path_factory.mktemp("vectors")
    rng = np.random.default_rng(5)
    basic = udnc_format.save(
        {
            "w": rng.normal(size=(16, 32)).astype(np.float32),
            "b": np.arange(5, dtype=np.int16),
        },
        lattice="E8",
        step=0.1,
        seed=3,
        min_elements=1,
        metadata={"license": "MIT"},
    )
    fancy = udnc_format.save(
        {"e": rng.normal(size=(12, 20)).astype(ml_dtypes.bfloat16)},
        lattice="Z2",
        step=0.2,
        prune=0.25,
        codebook=True,
        coder="lzma",
        min_elements=1,
    )
    write_case(root, "valid-basic", basic, features=("lattice:e8",))
    write_case(root, "valid-codebook-mask", fancy, profiles=("full",), features=("codebook",))
    write_case(root, "bad-magic", b"\x88" + basic[1:], error="bad-magic")
    crc_at = 16 + int.from_bytes(basic[12:16], "little")
    damaged_crc = basic[:crc_at] + bytes([basic[crc_at] ^ 0xFF]) + basic[crc_at + 1 :]
    write_case(root, "header-checksum", damaged_crc, error="checksum")
    write_case(
        root, "chunk-checksum", first_chunk_crc_flipped(basic), error="checksum", profiles=("full",)
    )
    future = header_crc(basic[:8] + b"\x02\x00" + basic[10:])
    write_case(root, "future-version", future, error="unsupported-version")
    write_case(root, "truncated", basic[:12], error="truncated", profiles=("full",))
    return root


ALL_CASES = {
    "valid-basic",
    "valid-codebook-mask",
    "bad-magic",
    "header-checksum",
    "chunk-checksum",
    "future-version",
    "truncated",
}
BASELINE = {"valid-basic", "bad-magic", "header-checksum", "future-version"}


def conformance(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """Run the runner in-process: exit code, stdout, stderr."""
    code = runner.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary(out: str) -> tuple[int, int]:
    """(passed, failed) from the summary line, which must be a line of its own."""
    lines = [line for line in out.splitlines() if SUMMARY.match(line)]
    assert len(lines) == 1, out
    match = SUMMARY.match(lines[0])
    assert match is not None
    return int(match.group(1)), int(match.group(2))


def failing(out: str) -> set[str]:
    return {line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("FAIL ")}


def script(tmp_path: Path, name: str, body: str) -> str:
    """A command running the Python script ``body``, which may call the reference's ``main``."""
    path = tmp_path / f"{name}.py"
    prelude = "from udnc_conformance.reference import main\n"
    path.write_text(prelude + textwrap.dedent(body), encoding="utf-8")
    return f"{sys.executable} {path}"


# ---------------------------------------------------------------------------------------------
# The reference passes


def test_reference_decoder_passes_every_case_and_results_record_them(vectors, tmp_path, capsys):
    results = tmp_path / "results.json"
    code, out, _ = conformance(
        capsys, "--decoder", "reference", "--vectors", vectors, "--results", results, *JOBS
    )
    assert code == 0, out
    assert summary(out) == (len(ALL_CASES), 0)
    assert out.splitlines()[-1] == f"{len(ALL_CASES)} passed, 0 failed"
    document = json.loads(results.read_text(encoding="utf-8"))
    assert document["mode"] == "decoder" and document["implementation"] == "reference"
    assert document["profile"] == "full"
    assert document["command"][-3:] == ["-m", "udnc_conformance.reference", "decode"]
    assert document["summary"] == {"passed": 7, "failed": 0, "skipped": 0, "total": 7}
    assert document["suite"]["udnc_version"] == udnc_format.__version__
    assert re.fullmatch(r"[0-9a-f]{64}", document["suite"]["vectors_digest"])
    cases = {case["id"]: case for case in document["cases"]}
    assert set(cases) == ALL_CASES
    for case in cases.values():
        assert case["passed"] is True and case["reason"] == ""
        assert isinstance(case["seconds"], float) and case["seconds"] > 0
        assert {"result", "exit_code", "stderr_tail", "expected_error", "reported_error"} <= set(
            case
        )
        if case["result"] == "valid":
            assert case["exit_code"] == 0 and case["reported_error"] is None
        else:  # the reference reports the kind of spec §10 that the case names
            assert case["exit_code"] == 1
            assert case["reported_error"] == case["expected_error"]
            assert case["stderr_tail"].startswith(f"error: {case['expected_error']}: ")


def test_profile_baseline_runs_only_baseline_cases(vectors, tmp_path, capsys):
    results = tmp_path / "results.json"
    args = ["--decoder", "reference", "--vectors", vectors, "--results", results]
    code, out, _ = conformance(capsys, *args, "--profile", "baseline", "-q", *JOBS)
    assert code == 0
    assert out.splitlines() == [f"{len(BASELINE)} passed, 0 failed"]  # -q: the summary alone
    document = json.loads(results.read_text(encoding="utf-8"))
    assert document["profile"] == "baseline"
    assert {case["id"] for case in document["cases"]} == BASELINE


def test_committed_vectors_pass_the_reference_decoder(capsys):
    """A sample of the committed vectors, every n-th case (all of them with
    UDNC_CONFORMANCE_ALL=1): a decoder run costs a process start, and
    tests/test_conformance_vectors.py checks every vector against the reference in-process.
    Cases that record a known reference decoder bug (the vector follows the spec) must fail."""
    cases = {
        path.parent.name: json.loads(path.read_text(encoding="utf-8"))
        for path in VECTORS.glob("*/case.json")
    }
    if not cases:
        pytest.skip("no committed vectors yet")
    known_bugs = {
        case_id
        for case_id, doc in cases.items()
        if "Known reference decoder bug" in doc.get("comment", "")
    }
    ids = sorted(cases)
    if not os.environ.get("UDNC_CONFORMANCE_ALL"):
        ids = ids[:: max(1, len(ids) // COMMITTED_SAMPLE)]
    chosen = set(ids) | known_bugs
    selection = [arg for case_id in sorted(chosen) for arg in ("--case", case_id)]
    code, out, _ = conformance(capsys, "--decoder", "reference", "-q", *selection, *JOBS)
    assert failing(out) == known_bugs, out
    assert code == (1 if known_bugs else 0)
    assert summary(out) == (len(chosen - known_bugs), len(known_bugs))


def test_reference_encoder_passes_every_option_set(tmp_path, capsys):
    results = tmp_path / "results.json"
    code, out, _ = conformance(capsys, "--encoder", "reference", "--results", results, *JOBS)
    assert code == 0, out
    cases = runner.encoder_cases()
    assert summary(out) == (len(cases), 0)
    document = json.loads(results.read_text(encoding="utf-8"))
    assert document["mode"] == "encoder"
    assert [case["id"] for case in document["cases"]] == [case.id for case in cases]
    assert all(case["options"] for case in document["cases"])


def test_encoder_option_sets_cover_every_lattice_coder_and_feature():
    cases = runner.encoder_cases()
    options = [case.options for case in cases]
    assert {o.get("lattice", "Z1") for o in options} == set(runner.LATTICE_DIMENSION)
    coders = {o.get("coder", "zstd") for o in options}
    assert coders == {"raw", "zstd", "lzma", "bz2", "deflate", "rans"}
    assert {o.get("dither", True) for o in options} == {True, False}
    assert any("sqnr" in o for o in options) and any("step" in o for o in options)
    assert any(o.get("prune") for o in options) and any(o.get("codebook") for o in options)
    baseline = {case.id for case in runner.select_encoder_cases("baseline")}
    assert baseline < {case.id for case in cases}
    tensors, roles, _ = runner.encoder_inputs()
    dtypes = {str(a.dtype) for n, a in tensors.items() if roles[n] == runner.QUANTIZED}
    assert {"float16", "bfloat16", "float32", "float64"} <= dtypes
    assert min(a.size for n, a in tensors.items() if roles[n] == runner.QUANTIZED) < 8
    # The roles are what the reference encoder does with the options every case starts from.
    options = udnc_format.EncodeOptions.from_kwargs(**cases[0].options)
    for name, array in tensors.items():
        quantized = options.quantizes(name, array, dtype_of(array, name))
        assert quantized == (roles[name] == runner.QUANTIZED), name


# ---------------------------------------------------------------------------------------------
# Broken decoders are caught


def test_a_flipped_output_bit_fails_the_valid_cases(vectors, tmp_path, capsys):
    command = script(
        tmp_path,
        "flip",
        """
        import sys
        code = main(["decode", sys.argv[1], sys.argv[2]])
        if code == 0:
            data = bytearray(open(sys.argv[2], "rb").read())
            data[-1] ^= 0x01  # the last byte of the last tensor's data
            open(sys.argv[2], "wb").write(data)
        sys.exit(code)
        """,
    )
    code, out, _ = conformance(capsys, "--decoder", command, "--vectors", vectors, *JOBS)
    assert code == 1
    assert failing(out) == {"valid-basic", "valid-codebook-mask"}
    assert "elements differ" in out
    assert summary(out) == (len(ALL_CASES) - 2, 2)


def test_a_decoder_ignoring_checksums_fails_the_checksum_cases(vectors, tmp_path, capsys):
    # Ignoring the CRCs, honestly simulated: the stored CRCs are made to match before decoding.
    command = script(
        tmp_path,
        "nocrc",
        """
        import sys, zlib
        from udnc_format.format import layout
        data = open(sys.argv[1], "rb").read()
        try:
            length = int.from_bytes(data[12:16], "little")
            body = layout.HeaderBody.parse(data[16 : 16 + length])
            for tensor in body.tensors:
                if tensor.encoding == 0:
                    streams = [tensor.body]
                else:
                    streams = [tensor.body[k] for k in ("mask", "codebook", "symbols")]
                for stream in filter(None, streams):
                    for chunk in stream.chunks:
                        stored = data[chunk.offset : chunk.offset + chunk.stored_length]
                        chunk.crc32 = zlib.crc32(stored)
            head = data[:16] + layout.HeaderBody.build(body)
            data = head + zlib.crc32(head).to_bytes(4, "little") + data[20 + length :]
        except Exception:
            pass
        open("patched.udnc", "wb").write(data)  # in the working directory the runner made
        sys.exit(main(["decode", "patched.udnc", sys.argv[2]]))
        """,
    )
    code, out, _ = conformance(
        capsys, "--decoder", command, "--vectors", vectors, "--case", "*checksum", *JOBS
    )
    assert code == 1
    assert failing(out) == {"header-checksum", "chunk-checksum"}
    assert "accepted an invalid file (expected error checksum)" in out


def test_a_decoder_accepting_a_future_major_version_fails(vectors, tmp_path, capsys):
    command = script(
        tmp_path,
        "future",
        """
        import sys, zlib
        data = open(sys.argv[1], "rb").read()
        end = 16 + int.from_bytes(data[12:16], "little")
        if len(data) >= end + 4 and data[8:10] != b"\\x01\\x00":
            head = data[:8] + b"\\x01\\x00" + data[10:end]
            data = head + zlib.crc32(head).to_bytes(4, "little") + data[end + 4 :]
        open("patched.udnc", "wb").write(data)
        sys.exit(main(["decode", "patched.udnc", sys.argv[2]]))
        """,
    )
    code, out, _ = conformance(capsys, "--decoder", command, "--vectors", vectors, *JOBS)
    assert code == 1
    assert failing(out) == {"future-version"}
    assert "FAIL future-version: accepted an invalid file (expected error unsupported-version)" in (
        out
    )


def test_a_decoder_leaving_a_partial_output_fails_the_invalid_cases(vectors, tmp_path, capsys):
    command = script(
        tmp_path,
        "partial",
        """
        import sys
        code = main(["decode", sys.argv[1], sys.argv[2]])
        if code != 0:
            open(sys.argv[2], "wb").write(b"\\x10\\x00\\x00")  # what a crash mid-write leaves
        sys.exit(code)
        """,
    )
    args = ["--decoder", command, "--vectors", vectors, "--case", "bad-magic", "--case", "trunc*"]
    code, out, _ = conformance(capsys, *args, *JOBS)
    assert code == 1
    assert failing(out) == {"bad-magic", "truncated"}
    assert "left output.safetensors in the output directory" in out


def test_a_decoder_exiting_0_without_output_fails_every_case(vectors, tmp_path, capsys):
    command = script(tmp_path, "silent", "import sys\nsys.exit(0)\n")
    args = ["--decoder", command, "--vectors", vectors, "--case", "valid-basic", "--case", "bad-*"]
    code, out, _ = conformance(capsys, *args, *JOBS)
    assert code == 1
    assert failing(out) == {"valid-basic", "bad-magic"}
    assert "FAIL valid-basic: exit code 0 but no output file" in out
    assert "FAIL bad-magic: accepted an invalid file (expected error bad-magic)" in out
    assert summary(out) == (0, 2)


def test_a_hanging_decoder_times_out_and_is_killed(vectors, tmp_path, capsys, monkeypatch):
    pids = tmp_path / "pids"
    monkeypatch.setenv("UDNC_TEST_PIDS", str(pids))
    command = script(
        tmp_path,
        "hang",
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(os.environ["UDNC_TEST_PIDS"], "w") as f:
            f.write(f"{os.getpid()} {child.pid}")
        time.sleep(60)
        """,
    )
    results = tmp_path / "results.json"
    start = time.monotonic()
    code, out, _ = conformance(
        capsys, "--decoder", command, "--vectors", vectors, "--case", "valid-basic",
        "--timeout", "5", "--results", results,
    )  # fmt: skip
    # 5 s: time for the hanging script to start its child and record both pids on a loaded
    # machine (with 1.5 s the runner sometimes killed it before it wrote them).
    assert time.monotonic() - start < 20
    assert code == 1
    assert "FAIL valid-basic: timed out after 5 s" in out
    case = json.loads(results.read_text(encoding="utf-8"))["cases"][0]
    assert case["exit_code"] is None and case["passed"] is False
    for pid in map(int, pids.read_text().split()):  # the whole process group is gone
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"process {pid} survived the timeout")


def test_a_decoder_that_crashes_on_invalid_input_fails(vectors, tmp_path, capsys):
    command = script(
        tmp_path,
        "crash",
        """
        import os, signal, sys
        code = main(["decode", sys.argv[1], sys.argv[2]])
        if code != 0:
            os.kill(os.getpid(), signal.SIGSEGV)
        sys.exit(code)
        """,
    )
    code, out, _ = conformance(
        capsys, "--decoder", command, "--vectors", vectors, "--case", "bad-magic"
    )
    assert code == 1
    assert f"killed by signal {int(__import__('signal').SIGSEGV)}" in out


# ---------------------------------------------------------------------------------------------
# Broken encoders are caught


def test_an_encoder_ignoring_the_lattice_fails(tmp_path, capsys):
    command = script(
        tmp_path,
        "z1only",
        """
        import json, sys
        options = json.load(open(sys.argv[3]))
        options["lattice"] = "Z1"
        json.dump(options, open("options.json", "w"))
        sys.exit(main(["encode", sys.argv[1], sys.argv[2], "options.json"]))
        """,
    )
    args = ["--encoder", command, "--case", "lattice-z1", "--case", "lattice-e8", "--case", "*a2"]
    code, out, _ = conformance(capsys, *args, *JOBS)
    assert code == 1
    assert failing(out) == {"lattice-e8", "lattice-a2"}, out
    assert "lattice Z1, asked E8" in out


def test_an_encoder_exceeding_the_error_bound_fails(tmp_path, capsys):
    command = script(
        tmp_path,
        "loose",
        """
        import sys
        from udnc_format.safetensors_io import iter_checkpoint, write_safetensors
        specs, metadata, tensors = iter_checkpoint(sys.argv[1])
        floats = {"F16", "BF16", "F32", "F64"}
        scaled = [
            (a.astype("f8") * 1.1).astype(a.dtype) if a.ndim >= 2 and s.dtype.name in floats else a
            for s, (_, a) in zip(specs, tensors)
        ]
        write_safetensors("scaled.safetensors", specs, scaled, metadata)
        sys.exit(main(["encode", "scaled.safetensors", sys.argv[2], sys.argv[3]]))
        """,
    )
    args = ["--encoder", command, "--case", "lattice-e8", "--case", "sqnr-z1-30"]
    code, out, _ = conformance(capsys, *args, "--case", "codebook-e8", *JOBS)
    assert code == 1
    # With a codebook the bound does not apply: that case checks decoding and declarations.
    assert failing(out) == {"lattice-e8", "sqnr-z1-30"}, out
    assert "exceed the error bound" in out


def test_error_bound_accepts_the_quantizer_and_rejects_a_larger_error():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(64, 40)).astype(np.float32)
    for lattice in runner.LATTICE_DIMENSION:
        data = udnc_format.save({"w": weights}, lattice=lattice, step=0.05, dither=True, seed=2)
        with udnc_format.UDNCFile(data) as handle:
            info, decoded = handle.info("w"), handle.get_tensor("w")
        assert runner.error_bound_violation(weights, decoded, lattice, info.scale, "F32") == ""
        worse = decoded + np.float32(0.6 * info.scale * runner.COVERING_RADIUS[lattice])
        assert "exceed the error bound" in runner.error_bound_violation(
            weights, worse, lattice, info.scale, "F32"
        )


# ---------------------------------------------------------------------------------------------
# Usage


def test_usage_errors_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = conformance(capsys, "--decoder", "reference", "--vectors", empty)
    assert code == 2 and "no decoder cases" in err
    code, _, err = conformance(capsys, "--decoder", "no-such-decoder-here", "--vectors", empty)
    assert code == 2 and "not an executable command" in err
    code, _, err = conformance(capsys, "--encoder", "reference", "--case", "nothing-matches")
    assert code == 2
    with pytest.raises(SystemExit) as raised:
        runner.main(["--decoder", "reference", "--encoder", "reference"])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        runner.main(["--decoder", "reference", "--timeout", "0"])
    assert raised.value.code == 2


def test_a_damaged_vector_is_a_usage_error(vectors, tmp_path, capsys):
    copy = tmp_path / "vectors" / "valid-basic"
    copy.mkdir(parents=True)
    for path in (vectors / "valid-basic").iterdir():
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    data = bytearray((copy / "input.udnc").read_bytes())
    data[-1] ^= 1
    (copy / "input.udnc").write_bytes(bytes(data))
    code, _, err = conformance(capsys, "--decoder", "reference", "--vectors", copy.parent)
    assert code == 2 and "does not match its sha256" in err


def test_relative_paths_in_the_command_are_made_absolute(vectors, tmp_path, capsys, monkeypatch):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dec.py").write_text(
        "import sys\nfrom udnc_conformance.reference import main\nsys.exit(main(['decode', "
        "*sys.argv[1:]]))\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)  # each case runs elsewhere, in its own temporary directory
    args = ["--decoder", f"{sys.executable} bin/dec.py", "--vectors", vectors, "--case", "valid-*"]
    code, out, _ = conformance(capsys, *args, "-q")
    assert (code, out) == (0, "2 passed, 0 failed\n")


def test_the_cli_subcommand_runs_the_suite(vectors, tmp_path):
    import subprocess

    done = subprocess.run(
        ["udnc", "conformance", "--decoder", "reference", "--vectors", str(vectors),
         "--case", "bad-magic", "-q"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1 passed, 0 failed\n"
