"""The committed conformance vectors (conformance/vectors): well-formed, reproduced exactly by
their generator, decoded by the reference decoder as they say, and also by a small decoder
written here from the spec text alone (so that a reference bug cannot hide in a vector)."""

from __future__ import annotations

import bz2
import hashlib
import json
import lzma
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import jsonschema
import ml_dtypes
import numpy as np
import pytest
import zstandard
from udnc_conformance import SCHEMA, VECTORS, generate

import udnc_format

CASE_DIRS = sorted(p for p in VECTORS.iterdir() if p.is_dir()) if VECTORS.is_dir() else []
CASES = {p.name: json.loads((p / "case.json").read_text(encoding="utf-8")) for p in CASE_DIRS}
VALID = sorted(i for i, c in CASES.items() if c["result"] == "valid")
INVALID = sorted(i for i, c in CASES.items() if c["result"] == "invalid")
DEVIATIONS = {c.id: c.reference_deviation for c in generate.CASES if c.reference_deviation}


def with_deviations(case_ids: list[str]) -> list[Any]:
    """Cases on which the reference decoder has a known bug are strict xfails: fixing the bug
    makes the test fail until the case's reference_deviation is removed."""
    return [
        pytest.param(
            i, marks=pytest.mark.xfail(strict=True, reason=f"reference bug: {DEVIATIONS[i]}")
        )
        if i in DEVIATIONS
        else i
        for i in case_ids
    ]


LATTICES = ["Z1", "Z2", "Z3", "Z4", "Z5", "Z6", "Z7", "Z8", "A2", "D4", "E8"]
LATTICES += ["TCQ4", "TCQ16", "TCQ64", "TCQ256"]
CODERS = ["raw", "zstd", "lzma", "bz2", "deflate"]
DTYPES = [
    "BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64",
    "F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0",
]  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def input_of(case_id: str) -> bytes:
    return (VECTORS / case_id / CASES[case_id]["input"]).read_bytes()


def read_safetensors(data: bytes) -> tuple[dict[str, str], list[tuple[str, str, tuple, bytes]]]:
    """Metadata and (name, dtype, shape, bytes) in header order, read directly."""
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.pop("__metadata__", {})
    payload = data[8 + length :]
    tensors = [
        (name, info["dtype"], tuple(info["shape"]), payload[slice(*info["data_offsets"])])
        for name, info in header.items()
    ]
    return metadata, tensors


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, bytes]]:
    return generate.build_all()


# ---------------------------------------------------------------------------------------------
# The files


def test_vectors_exist() -> None:
    assert CASE_DIRS, "run: python -m udnc_conformance.generate --write"


def test_case_files_validate_against_the_schema() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    for case_id, case in CASES.items():
        errors = [e.message for e in validator.iter_errors(case)]
        assert not errors, (case_id, errors)


def test_ids_are_directory_names() -> None:
    for case_id, case in CASES.items():
        assert case["id"] == case_id


def test_sha256_of_files() -> None:
    for case_id, case in CASES.items():
        directory = VECTORS / case_id
        assert sha256((directory / case["input"]).read_bytes()) == case["input_sha256"]
        if case["result"] == "valid":
            assert sha256((directory / case["expected"]).read_bytes()) == case["expected_sha256"]
        expected_files = {"case.json", case["input"]} | (
            {case["expected"]} if "expected" in case else set()
        )
        assert {p.name for p in directory.iterdir()} == expected_files, case_id


def test_generator_reproduces_the_committed_files(built: dict[str, dict[str, bytes]]) -> None:
    problems = generate.differences(built, VECTORS)
    assert not problems, "run: python -m udnc_conformance.generate --write\n" + "\n".join(problems)


def test_generator_write_and_check(built, tmp_path: Path, monkeypatch, capsys) -> None:
    """--write creates the cases and removes stale directories and files; --check lists every
    difference and fails."""
    monkeypatch.setattr(generate, "build_all", lambda: built)
    (tmp_path / "stale-case").mkdir()
    assert generate.main(["--write", "--vectors", str(tmp_path)]) == 0
    assert not (tmp_path / "stale-case").exists()
    assert generate.main(["--check", "--vectors", str(tmp_path)]) == 0
    first, second = sorted(built)[:2]
    (tmp_path / first / "input.udnc").write_bytes(b"changed")
    (tmp_path / second / "case.json").unlink()
    (tmp_path / second / "extra.bin").write_bytes(b"")
    (tmp_path / "extra-case").mkdir()
    capsys.readouterr()
    assert generate.main(["--check", "--vectors", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    for expected in (
        f"{first}/input.udnc: differs",
        f"{second}/case.json: missing",
        f"{second}/extra.bin: extra file",
        "extra-case: case directory not defined",
    ):
        assert expected in out


def test_total_size_is_small() -> None:
    total = sum(p.stat().st_size for p in VECTORS.rglob("*") if p.is_file())
    assert total < 1 << 20


# ---------------------------------------------------------------------------------------------
# Coverage and profiles


def test_counts() -> None:
    assert len(VALID) >= 40
    assert len(INVALID) >= 25
    assert {case.id for case in generate.CASES} == set(CASES)


def test_coverage_of_valid_cases() -> None:
    features = {f for i in VALID for f in CASES[i]["features"]}
    wanted = (
        [f"lattice:{name}" for name in LATTICES]
        + [f"coder:{name}" for name in CODERS]
        + [f"passthrough:{name}" for name in DTYPES]
        + [f"serialization:{bits}" for bits in (1, 2, 4, 8)]
        + ["dither", "no-dither", "codebook", "mask", "escape:byte", "escape:word"]
        + ["edge:empty-tensor", "edge:0d-tensor", "edge:short-tensor", "section:optional"]
        + ["edge:unicode-name", "edge:normalization", "metadata", "chunks:out-of-order"]
        + ["edge:unreferenced-bytes", "edge:big-endian-source", "chunks:mid-row"]
    )
    assert not [f for f in wanted if f not in features]


def test_quantized_dtypes() -> None:
    """Lattice-coded tensors of every dtype that may be lattice-coded (spec §4.2)."""
    features = {f for i in VALID for f in CASES[i]["features"]}
    assert {f"quantized:{name}" for name in ("F16", "BF16", "F32", "F64")} <= features


def test_error_kinds_cover_spec() -> None:
    kinds = {CASES[i]["error"] for i in INVALID}
    assert kinds == {
        "bad-magic", "truncated", "unsupported-version", "unsupported-feature", "checksum",
        "layout", "limit", "corrupt-stream", "duplicate-name",
    }  # fmt: skip


def test_profiles() -> None:
    """Every baseline case is in full; a baseline case uses baseline features only."""
    for case_id, case in CASES.items():
        assert "full" in case["profiles"], case_id
        if "baseline" in case["profiles"]:
            assert not set(case["features"]) & generate.FULL_ONLY_FEATURES, case_id
        else:
            assert set(case["features"]) & generate.FULL_ONLY_FEATURES, case_id
    baseline = [i for i in CASES if "baseline" in CASES[i]["profiles"]]
    assert sum(CASES[i]["result"] == "valid" for i in baseline) >= 20
    assert sum(CASES[i]["result"] == "invalid" for i in baseline) >= 20


# ---------------------------------------------------------------------------------------------
# The reference decoder


def reference_outputs(data: bytes) -> tuple[dict[str, str], list[tuple[str, str, tuple, bytes]]]:
    with udnc_format.UDNCFile(data) as handle, np.errstate(over="ignore"):
        tensors = [
            (name, handle.info(name).dtype, tuple(handle.info(name).shape), handle.get_tensor(name))
            for name in handle
        ]
        return handle.metadata(), [(n, d, s, a.tobytes()) for n, d, s, a in tensors]


@pytest.mark.parametrize("case_id", with_deviations(VALID))
def test_reference_decodes_valid_vectors(case_id: str) -> None:
    case = CASES[case_id]
    expected = read_safetensors((VECTORS / case_id / case["expected"]).read_bytes())
    metadata, tensors = reference_outputs(input_of(case_id))
    assert metadata == expected[0]
    assert [t[:3] for t in tensors] == [t[:3] for t in expected[1]]
    for (name, _, _, data), (_, _, _, want) in zip(tensors, expected[1], strict=True):
        assert data == want, name


@pytest.mark.parametrize("case_id", with_deviations(INVALID))
def test_reference_rejects_invalid_vectors(case_id: str) -> None:
    with pytest.raises(udnc_format.UDNCError) as caught:
        reference_outputs(input_of(case_id))
    assert caught.value.kind == CASES[case_id]["error"]


# ---------------------------------------------------------------------------------------------
# A decoder of valid files written from spec/udnc-v1.md alone (no udnc_format code): its
# output must equal every expected.safetensors bit for bit.

H = float.fromhex("0x1.bb67ae8584caap-1")  # spec §6.1
DIMENSIONS = {**{v: v for v in range(1, 9)}, 16: 2, 17: 4, 18: 8, 34: 1, 36: 1, 38: 1, 40: 1}
# spec §6.8: lattice value -> (ν, the delays J) of each trellis; the trellis restarts every
# SEGMENT kept weights.
TRELLISES = {34: (2, (1,)), 36: (4, (1, 2, 3)), 38: (6, (1, 4, 5)), 40: (8, (1, 2, 4, 6, 7))}
SEGMENT = 4096
DTYPE_NAMES = {i + 1: name for i, name in enumerate(DTYPES)}
ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4, "U64": 8, "I64": 8,
    "F16": 2, "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
}  # fmt: skip
M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
# spec Appendix B: c(0 .. 3) of Philox4x64-10 (prng 2), seed 0x0123456789ABCDEF, stream 7.
APPENDIX_B_4X64 = [
    "0x1.fc3ec00000000p-4", "0x1.f48fc80000000p-2", "-0x1.6b30a00000000p-4",
    "0x1.a252440000000p-2",
]  # fmt: skip


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        out = self.data[self.pos : self.pos + size]
        assert len(out) == size
        self.pos += size
        return out

    def u(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def text(self, size: int) -> str:
        return self.take(self.u(size)).decode("utf-8")

    def stream(self) -> tuple[int, list[tuple[int, int, int, int]]]:
        coder, count = self.u(1), self.u(4)
        return coder, [(self.u(8), self.u(8), self.u(8), self.u(4)) for _ in range(count)]


def spec_rans(stored: bytes, raw_length: int) -> bytes:
    """§7.1, one byte at a time on Python integers."""
    if raw_length == 0:
        assert stored == b""
        return b""
    lanes, last = int.from_bytes(stored[0:2], "little"), stored[2]
    freq = [int.from_bytes(stored[3 + 2 * b : 5 + 2 * b], "little") for b in range(last + 1)]
    assert 1 <= lanes <= 1 << 15 and lanes << 16 >= raw_length and sum(freq) == 1 << 15
    at = 3 + 2 * (last + 1)
    state = [int.from_bytes(stored[at + 4 * k : at + 4 * k + 4], "little") for k in range(lanes)]
    assert min(state) >= 1 << 16
    at += 4 * lanes
    starts = [sum(freq[:b]) for b in range(last + 1)]
    out = bytearray()
    for i in range(raw_length):
        k = i % lanes
        slot = state[k] % (1 << 15)
        b = max(v for v in range(last + 1) if starts[v] <= slot and freq[v])
        out.append(b)
        state[k] = freq[b] * (state[k] >> 15) + slot - starts[b]
        if state[k] < 1 << 16:
            state[k] = (state[k] << 16) + int.from_bytes(stored[at : at + 2], "little")
            at += 2
    assert at == len(stored) and all(x == 1 << 16 for x in state)
    return bytes(out)


def spec_chunks(file: bytes, stream: tuple[int, list]) -> list[bytes]:
    """§4.3, §7: each chunk's stored bytes, CRC-checked and decompressed."""
    coder, chunks = stream
    out = []
    for offset, stored_length, raw_length, crc in chunks:
        stored = file[offset : offset + stored_length]
        assert len(stored) == stored_length and zlib.crc32(stored) == crc
        if coder == 0:
            raw = stored
        elif coder == 1:
            assert zstandard.frame_content_size(stored) == raw_length
            raw = zstandard.ZstdDecompressor().decompress(stored)
        elif coder == 2:
            raw = lzma.decompress(stored, format=lzma.FORMAT_XZ)
        elif coder == 3:
            raw = bz2.decompress(stored)
        elif coder == 5:
            raw = spec_rans(stored, raw_length)
        else:
            raw = zlib.decompress(stored)
        assert len(raw) == raw_length
        out.append(raw)
    return out


def philox_rounds(counter: list[int], key: list[int], bits: int, m: list[int], w: list[int]):
    """§5.1 (32-bit words) and §5.4 (64-bit words), on Python integers."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    mask = (1 << bits) - 1
    for round_index in range(10):
        if round_index:
            k0, k1 = (k0 + w[0]) & mask, (k1 + w[1]) & mask
        p0, p1 = m[0] * c0, m[1] * c2
        c0, c1, c2, c3 = (p1 >> bits) ^ c1 ^ k0, p1 & mask, (p0 >> bits) ^ c3 ^ k1, p0 & mask
    return [c0, c1, c2, c3]


def philox(counter: list[int], key: list[int]) -> list[int]:
    return philox_rounds(counter, key, 32, [0xD2511F53, 0xCD9E8D57], [0x9E3779B9, 0xBB67AE85])


def philox4x64(counter: list[int], key: list[int]) -> list[int]:
    m = [0xD2E7470EE14C6C93, 0xCA5A826395121157]
    return philox_rounds(counter, key, 64, m, [0x9E3779B97F4A7C15, 0xBB67AE8584CAA73B])


def centred(seed: int, stream: int, count: int, prng: int = 1) -> list[float]:
    """§5.2, §5.3: c(t) for t = 0 .. count - 1."""
    words = []
    if prng == 1:
        for block in range((count + 3) // 4):
            words += philox([block & M32, block >> 32, stream, 0], [seed & M32, seed >> 32])
    else:
        for block in range((count + 7) // 8):
            for word in philox4x64([block, 0, 0, 0], [seed, stream]):
                words += [word & M32, word >> 32]
    return [(w >> 8) * 2.0**-24 - 0.5 for w in words[:count]]


def unpack_values(raw: bytes, start: int, count: int, bits: int) -> list[int]:
    """§6.2: ``count`` values in fields of ``bits`` bits from ``start``, their escapes after,
    to the end of the chunk exactly."""
    top = (1 << bits) - 1
    fields = [(raw[start + j * bits // 8] >> (j * bits % 8)) & top for j in range(count)]
    position = start + (count * bits + 7) // 8
    values = []
    words_at = position + sum(f == top for f in fields)
    for f in fields:
        if f < top:
            values.append(f)
            continue
        e = raw[position]
        position += 1
        if e < 255:
            values.append(top + e)
        else:
            values.append(top + 255 + int.from_bytes(raw[words_at : words_at + 4], "little"))
            words_at += 4
    assert words_at == len(raw)
    return values


def u_of(lattice: int, c: list[float]) -> list[float]:
    """§6.4: the dither vector u = c · G."""
    if lattice <= 8:
        return c
    if lattice == 16:
        return [c[0] + c[1] / 2, c[1] * H]
    if lattice == 17:
        return [-c[0] + c[1], -c[0] - c[1] + c[2], -c[2] + c[3], -c[3]]
    half = c[7] / 2
    return [2 * c[0] - c[1] + half, *(c[k] - c[k + 1] + half for k in range(1, 6)), c[6] + half,
            half]  # fmt: skip


def point_minus_dither(lattice: int, sigma: list[int], beta: int, c: list[float]) -> list[float]:
    """§6.3 and §6.4: x = p − u, in binary64."""
    if lattice <= 8:
        return [s - ck for s, ck in zip(sigma, c, strict=True)]
    if lattice == 16:
        big_x, big_y = sigma[0], 2 * sigma[1] + sigma[0] % 2
        return [big_x / 2 - (c[0] + c[1] / 2), (big_y - c[1]) * H]
    if lattice == 17:
        p = [*sigma[:3], 2 * sigma[3] + sum(sigma[:3]) % 2]
    else:
        p = [*sigma[:7], 2 * sigma[7] + sum(sigma[:7]) % 2]
        p = [pk + beta / 2 for pk in p]
    return [pk - uk for pk, uk in zip(p, u_of(lattice, c), strict=True)]


class Trellis:
    """§6.8, the plain way: the levels of a tensor's symbols in order, weight by weight."""

    def __init__(self, lattice: int) -> None:
        self.memory, self.delays = TRELLISES[lattice]
        self.q: list[int] = []  # q_t of every weight so far
        self.parity: list[int] = []  # π_t = σ_t mod 2

    def level(self, sigma: int) -> int:
        t = len(self.q)
        start = t - t % SEGMENT  # terms before the segment's start are 0
        q = self.q[t - self.memory] if t - self.memory >= start else 0
        for j in self.delays:
            if t - j >= start:
                q ^= self.parity[t - j]
        self.q.append(q)
        self.parity.append(sigma % 2)
        sign = (sigma > 0) - (sigma < 0)
        return 2 * sigma - sign if q else 2 * sigma


def spec_round(values: list[float], dtype: str) -> bytes:
    """§6.5: binary64, or binary32 first, then 16 bits."""
    y = np.array(values, np.float64)
    if dtype == "F64":
        return y.astype("<f8").tobytes()
    single = y.astype(np.float32)
    if dtype == "F32":
        return single.astype("<f4").tobytes()
    return single.astype({"F16": "<f2", "BF16": ml_dtypes.bfloat16}[dtype]).tobytes()


def spec_lattice(file: bytes, dtype: str, elements: int, body: Reader) -> bytes:
    lattice, prng, bits, flags = (body.u(1) for _ in range(4))
    (scale,) = struct.unpack("<d", body.take(8))
    seed, stream, chunk_vectors, codebook_size = body.u(8), body.u(4), body.u(4), body.u(4)
    mask_stream = body.stream() if flags & 1 else None
    codebook_stream = body.stream() if flags & 2 else None
    symbols = spec_chunks(file, body.stream())
    assert body.pos == len(body.data) and scale > 0 and bits in (1, 2, 4, 8)
    n = DIMENSIONS[lattice]
    keep = [True] * elements
    if mask_stream is not None:
        bitmap = b"".join(spec_chunks(file, mask_stream))
        keep = [bool(bitmap[e // 8] >> (e % 8) & 1) for e in range(elements)]
    kept = sum(keep)
    vectors = (kept + n - 1) // n
    assert len(symbols) == (vectors + chunk_vectors - 1) // chunk_vectors
    codebook = None
    if codebook_stream is not None:
        words = b"".join(spec_chunks(file, codebook_stream))
        codebook = np.frombuffer(words, "<f4").astype(np.float64).reshape(codebook_size, n)
    c_all = centred(seed, stream, vectors * n, prng) if prng else [0.0] * (vectors * n)
    if lattice in TRELLISES:
        assert codebook is None and chunk_vectors % SEGMENT == 0
        trellis = Trellis(lattice)
    decoded: list[float] = []
    for index, raw in enumerate(symbols):
        first = index * chunk_vectors
        count = min(chunk_vectors, vectors - first)
        start = 0
        cosets = [0] * count
        if lattice == 18 and codebook is None:
            start = (count + 7) // 8
            cosets = [raw[j // 8] >> (j % 8) & 1 for j in range(count)]
        per_vector = 1 if codebook is not None else n
        values = unpack_values(raw, start, count * per_vector, bits)
        for j in range(count):
            c = c_all[(first + j) * n : (first + j + 1) * n]
            if codebook is not None:
                v = codebook[values[j]].tolist()
                x = v if not prng else [a - b for a, b in zip(v, u_of(lattice, c), strict=True)]
            else:
                z = values[j * n : (j + 1) * n]
                sigma = [(zk >> 1) ^ -(zk & 1) for zk in z]
                assert all(abs(s) <= 1 << 24 for s in sigma)
                if lattice in TRELLISES:  # n = 1, vector first + j is weight t = first + j
                    x = [trellis.level(sigma[0]) - c[0]]
                else:
                    x = point_minus_dither(lattice, sigma, cosets[j], c)
            decoded += [xk * scale for xk in x]
    out = iter(decoded[:kept])
    with np.errstate(over="ignore"):
        return spec_round([next(out) if k else 0.0 for k in keep], dtype)


def spec_decode(file: bytes) -> tuple[dict[str, str], list[tuple[str, str, tuple, bytes]]]:
    assert file[:8] == b"\x89UDNC\r\n\x1a" and int.from_bytes(file[8:10], "little") == 1
    length = int.from_bytes(file[12:16], "little")
    assert zlib.crc32(file[: 16 + length]) == int.from_bytes(
        file[16 + length : 20 + length], "little"
    )
    header = Reader(file[16 : 16 + length])
    metadata = {}
    for _ in range(header.u(4)):
        key = header.text(4)
        metadata[key] = header.text(4)
    tensors = []
    for _ in range(header.u(4)):
        name = header.text(2)
        dtype, encoding, ndim = DTYPE_NAMES[header.u(1)], header.u(1), header.u(1)
        shape = tuple(header.u(8) for _ in range(ndim))
        body = Reader(header.take(header.u(4)))
        elements = math.prod(shape)
        if encoding == 0:
            data = b"".join(spec_chunks(file, body.stream()))
            assert body.pos == len(body.data) and len(data) == elements * ITEMSIZE[dtype]
        else:
            data = spec_lattice(file, dtype, elements, body)
        tensors.append((name, dtype, shape, data))
    for _ in range(header.u(4)):
        header.take(4)
        assert not header.u(1) & 1  # no critical section in a valid file
        header.take(header.u(4))
    assert header.pos == len(header.data)
    return metadata, tensors


def test_spec_decoder_known_answers() -> None:
    """The decoder above against spec §5.1 and Appendix B."""
    assert philox([0, 0, 0, 0], [0, 0]) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox([M32] * 4, [M32] * 2) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    c = centred(0x0123456789ABCDEF, 7, 4)
    assert [v.hex() for v in c] == [
        "-0x1.2d37180000000p-2", "0x1.d887a00000000p-5", "0x1.f6fe4c0000000p-2",
        "0x1.3601600000000p-3",
    ]  # fmt: skip
    assert philox4x64([0] * 4, [0] * 2) == [
        0x16554D9ECA36314C, 0xDB20FE9D672D0FDC, 0xD7E772CEE186176B, 0x7E68B68AEC7BA23B,
    ]  # fmt: skip
    assert philox4x64([M64] * 4, [M64] * 2) == [
        0x87B092C3013FE90B, 0x438C3C67BE8D0224, 0x9CC7D7C69CD777B6, 0xA09CAEBF594F0BA0,
    ]  # fmt: skip
    assert [v.hex() for v in centred(0x0123456789ABCDEF, 7, 4, prng=2)] == APPENDIX_B_4X64
    example = bytes.fromhex("e40300ff2a000000")  # spec §6.2's example, b = 2
    assert unpack_values(example, 0, 5, 2) == [0, 1, 2, 3, 300]
    trellis = Trellis(34)  # spec §6.8's example (TCQ4)
    assert [trellis.level(s) for s in (3, -1, 0, 2, 1)] == [6, -1, 0, 3, 1]
    assert trellis.q == [0, 1, 1, 1, 1]


@pytest.mark.parametrize("case_id", VALID)
def test_spec_decoder_agrees_with_expected(case_id: str) -> None:
    case = CASES[case_id]
    expected = read_safetensors((VECTORS / case_id / case["expected"]).read_bytes())
    metadata, tensors = spec_decode(input_of(case_id))
    assert metadata == expected[0]
    assert [t[:3] for t in tensors] == [t[:3] for t in expected[1]]
    for (name, _, _, data), (_, _, _, want) in zip(tensors, expected[1], strict=True):
        assert data == want, name


def test_known_expected_values() -> None:
    """Expected values the spec states outright: §6.5's two-step rounding, §3.2's bytewise
    names."""
    path = VECTORS / "double-rounding-f16-bf16" / "expected.safetensors"
    _, tensors = read_safetensors(path.read_bytes())
    f16 = np.frombuffer(tensors[0][3], "<f2").astype(float)
    bf16 = np.frombuffer(tensors[1][3], ml_dtypes.bfloat16).astype(float)
    assert f16[:3].tolist() == bf16[:3].tolist() == [1.0, -1.0, 1.0]
    _, tensors = read_safetensors((VECTORS / "unicode-names" / "expected.safetensors").read_bytes())
    names = [t[0] for t in tensors]
    assert "caf\u00e9.weight" in names and "cafe\u0301.weight" in names
