"""Failures: every one is a UDNCError subclass of the kind spec §8.1 and §10 name, with a
message naming the file and the tensor; nothing else ever escapes; writes are atomic."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import zlib
from collections.abc import Iterator, Mapping

import numpy as np
import pytest
from conftest import encode, lay_out, spec_serialize, with_last_chunk
from hypothesis import given, settings
from hypothesis import strategies as st
from udnc_conformance.surgery import (
    chunk_spans,
    data_start,
    edit_body,
    iter_chunk_containers,
    refresh_chunk_crcs,
    with_header_crc,
)

import udnc_format
from udnc_format.codec.encoder import EncodeOptions, encode_tensors
from udnc_format.format.constants import MAX_CHUNK_RAW, MAX_ELEMENTS, Coder, Dtype, Lattice, Prng
from udnc_format.format.errors import (
    ALL_ERRORS,
    BadMagicError,
    ChecksumError,
    CorruptStreamError,
    DuplicateNameError,
    FormatError,
    InvalidInputError,
    LayoutError,
    LimitError,
    TensorNotFoundError,
    TruncatedError,
    UDNCError,
    UnsupportedFeatureError,
    UnsupportedVersionError,
    WriteError,
)
from udnc_format.format.header import ChunkRef, LatticeParams, Section, StreamRef, TensorEntry

SPEC_KINDS = {
    "bad-magic": BadMagicError,
    "truncated": TruncatedError,
    "unsupported-version": UnsupportedVersionError,
    "unsupported-feature": UnsupportedFeatureError,
    "checksum": ChecksumError,
    "layout": LayoutError,
    "limit": LimitError,
    "corrupt-stream": CorruptStreamError,
    "duplicate-name": DuplicateNameError,
}


def load_all(data: bytes) -> dict[str, np.ndarray]:
    return udnc_format.load(data)


def weights(shape=(6, 40), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def with_quantized(entry: TensorEntry, **changes) -> TensorEntry:
    assert entry.quantized is not None
    return dataclasses.replace(entry, quantized=dataclasses.replace(entry.quantized, **changes))


def with_chunks(stream: StreamRef, **changes) -> StreamRef:
    return dataclasses.replace(
        stream, chunks=tuple(dataclasses.replace(c, **changes) for c in stream.chunks)
    )


def crafted(edit_entry, *, quantized: bool = True, **options) -> bytes:
    """A one-tensor file ("w") whose placed table entry ``edit_entry`` changes."""
    defaults = {"lattice": "E8", "step": 0.3, "coder": "raw", "min_elements": 1}
    items = encode({"w": weights()}, **({**defaults, **options} if quantized else {"keep": ["*"]}))
    return lay_out(items, edit=lambda entries: [edit_entry(e) for e in entries])


# ---------------------------------------------------------------------------------------------
# The hierarchy


def test_error_kinds_are_the_spec_kinds() -> None:
    """Each kind of spec §10 has its class; all classes are UDNCError; kinds are unique."""
    for kind, cls in SPEC_KINDS.items():
        assert cls.kind == kind
        assert issubclass(cls, UDNCError)
    assert all(issubclass(cls, UDNCError) for cls in ALL_ERRORS)
    assert len({cls.kind for cls in ALL_ERRORS}) == len(ALL_ERRORS)
    assert issubclass(TensorNotFoundError, KeyError)
    for cls in SPEC_KINDS.values():
        assert issubclass(cls, FormatError)


# ---------------------------------------------------------------------------------------------
# Preamble, version and header CRC (spec §8.1 steps 1 to 5, in order)


def test_wrong_magic(small_file: bytes, tmp_path) -> None:
    path = tmp_path / "bad.udnc"
    path.write_bytes(b"PK\x03\x04" + small_file[4:])
    with pytest.raises(BadMagicError, match=re.escape("bad.udnc")):
        udnc_format.open(path)
    for broken in (b"\x89UDNC\r\n\x0a" + small_file[8:], b"GIF89a", b"\x00" * 100):
        with pytest.raises(BadMagicError):
            load_all(broken)


@pytest.mark.parametrize("length", range(8))
def test_short_file_prefix_of_magic_is_truncated(small_file: bytes, length: int) -> None:
    """Shorter than 8 bytes: a prefix of the magic is truncated, anything else bad-magic."""
    with pytest.raises(TruncatedError):
        load_all(small_file[:length])
    if length:
        with pytest.raises(BadMagicError):
            load_all(b"X" + small_file[1:length])


@pytest.mark.parametrize("major", [0, 2, 0xFFFF])
def test_other_major_version_is_unsupported(small_file: bytes, major: int) -> None:
    """The version is checked before the header CRC (not recomputed here) and before the
    header length."""
    patched = small_file[:8] + major.to_bytes(2, "little") + small_file[10:]
    with pytest.raises(UnsupportedVersionError, match=str(major)):
        load_all(patched)
    with pytest.raises(UnsupportedVersionError):
        load_all(patched[:16])  # the rest of the file missing too
    assert with_header_crc(patched) != patched  # the CRC did not match


@pytest.mark.parametrize("minor", [1, 7, 0xFFFF])
def test_any_minor_version_is_accepted(small_file: bytes, minor: int) -> None:
    patched = with_header_crc(small_file[:10] + minor.to_bytes(2, "little") + small_file[12:])
    assert list(load_all(patched)) == ["bias", "w.e8", "w.raw", "w.d4"]


def test_header_length_limit_comes_before_truncation(small_file: bytes) -> None:
    for length in ((1 << 28) + 1, 0xFFFFFFFF):
        with pytest.raises(LimitError):
            load_all(small_file[:12] + length.to_bytes(4, "little") + small_file[16:])
    patched = small_file[:12] + (len(small_file)).to_bytes(4, "little") + small_file[16:]
    with pytest.raises(TruncatedError):
        load_all(patched)


@pytest.mark.parametrize("where", ["body start", "body end", "crc"])
def test_header_crc_mismatch(small_file: bytes, where: str) -> None:
    header_end = data_start(small_file)
    position = {"body start": 20, "body end": header_end - 5, "crc": header_end - 1}[where]
    patched = bytearray(small_file)
    patched[position] ^= 0x10
    with pytest.raises(ChecksumError):
        load_all(bytes(patched))


def test_chunk_crc_mismatch_names_file_and_tensor(small_file: bytes, tmp_path) -> None:
    """A flipped data byte is found by the chunk CRC when the tensor is decoded."""
    path = tmp_path / "flipped.udnc"
    patched = bytearray(small_file)
    patched[-1] ^= 0x01  # the last chunk: w.d4's symbols
    path.write_bytes(bytes(patched))
    with udnc_format.open(path) as handle:
        assert handle.get_tensor("bias").tolist() == list(range(6))
        with pytest.raises(ChecksumError) as caught:
            handle.get_tensor("w.d4")
    assert "flipped.udnc" in str(caught.value) and "'w.d4'" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Truncation and mutation


def expected_truncation_error(data: bytes, length: int) -> type[UDNCError]:
    """The kind spec §8.1 gives a file cut to ``length`` bytes."""
    if length < data_start(data):
        return TruncatedError  # inside the magic (a prefix), preamble, header or header CRC
    return LayoutError  # the last chunk no longer lies within the file


def test_every_truncation_fails_on_open(small_file: bytes) -> None:
    """Cutting the file anywhere fails when opening, with the kind spec §8.1 prescribes."""
    for length in range(len(small_file)):
        with pytest.raises(UDNCError) as caught:
            udnc_format.UDNCFile(small_file[:length])
        assert type(caught.value) is expected_truncation_error(small_file, length), length


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6, 0.99])
def test_truncated_file_on_disk_names_the_file(small_file: bytes, tmp_path, fraction) -> None:
    path = tmp_path / "cut.udnc"
    path.write_bytes(small_file[: int(len(small_file) * fraction)])
    with pytest.raises(UDNCError, match=re.escape("cut.udnc")):
        udnc_format.load_file(path)


def test_file_shrinking_after_open_fails_on_get_tensor(small_file: bytes, tmp_path) -> None:
    """open() reads the header only; data that has since disappeared is reported when read."""
    path = tmp_path / "shrinking.udnc"
    path.write_bytes(small_file)
    with udnc_format.open(path) as handle:
        os.truncate(path, data_start(small_file) + 1)
        with pytest.raises(UDNCError, match=re.escape("'w.d4'")):
            handle.get_tensor("w.d4")


def decode_or_udnc_error(data: bytes) -> None:
    """Decoding either succeeds or raises a UDNCError, nothing else."""
    try:
        with udnc_format.UDNCFile(data) as handle:
            for name in handle:
                handle.info(name)
                handle.get_tensor(name)
    except UDNCError:
        pass


byte_changes = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4
)


def mutate(data: bytes, changes: list[tuple[int, int]], start: int = 0) -> bytes:
    out = bytearray(data)
    for position, value in changes:
        index = start + position % (len(data) - start)
        out[index] = value if value != out[index] else value ^ 0xFF
    return bytes(out)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflowing casts on purpose
@settings(max_examples=150)
@given(changes=byte_changes)
def test_random_byte_changes_never_escape(small_file: bytes, changes) -> None:
    decode_or_udnc_error(mutate(small_file, changes))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflowing casts on purpose
@settings(max_examples=300)
@given(changes=byte_changes, in_header=st.booleans())
def test_random_byte_changes_behind_fixed_checksums_never_escape(
    small_file: bytes, changes, in_header: bool
) -> None:
    """Changes that the CRCs would catch are re-checksummed, so that they reach the header
    parser (header body), or the coders and the content checks (data region)."""
    if in_header:
        mutated = with_header_crc(mutate(small_file[: data_start(small_file) - 4], changes, 8))
        decode_or_udnc_error(mutated + small_file[data_start(small_file) - 4 :])
    else:
        mutated = mutate(small_file, changes, data_start(small_file))
        decode_or_udnc_error(refresh_chunk_crcs(mutated))


# ---------------------------------------------------------------------------------------------
# Invalid input to the encoder


def test_duplicate_names_in_pairs() -> None:
    pairs = [("a", np.zeros(3)), ("b", np.ones(2)), ("a", np.ones(4))]
    with pytest.raises(DuplicateNameError, match="'a'"):
        list(encode_tensors(pairs, EncodeOptions()))


def test_duplicate_tensor_names_in_a_file() -> None:
    items = encode({"a": np.zeros(3)}) + encode({"a": np.ones(3)})
    with pytest.raises(DuplicateNameError, match="'a'"):
        load_all(lay_out(items))


def test_duplicate_metadata_keys_in_a_file(small_file: bytes) -> None:
    def edit(body) -> None:
        body.metadata = [body.metadata[0], body.metadata[0]]

    with pytest.raises(DuplicateNameError, match="license"):
        load_all(edit_body(small_file, edit))


@pytest.mark.parametrize(
    "options",
    [
        {"latice": "E8"},
        {"lattice": "E9"},
        {"lattice": "hexagonal"},
        {"coder": "gzip"},
        {"coder": "zstandard"},
        {"prune": 1.0},
        {"prune": -0.1},
        {"seed": -1},
        {"seed": 2**64},
        {"chunk_weights": 0},
        {"sqnr": math.nan},
        {"sqnr": math.inf},
        {"level": 23},
        {"coder": "bz2", "level": 0},
        {"metadata": {"k": 1}},
        {"metadata": {2: "v"}},
        {"step": 0.0},
        {"step": -0.1},
        {"step": math.nan},
        {"step": math.inf},
        {"step": {"w": -1.0}},
    ],
    ids=repr,
)
def test_invalid_options(options) -> None:
    with pytest.raises(InvalidInputError):
        udnc_format.save({"w": weights((40, 40))}, **options)


def test_unknown_option_is_named() -> None:
    with pytest.raises(InvalidInputError, match="latice"):
        udnc_format.save({"w": weights()}, latice="E8")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_weights_in_a_quantized_tensor(dtype, bad) -> None:
    """A NaN or infinity cannot be lattice-coded: InvalidInputError naming the tensor; the
    same tensor kept lossless (or too small to quantize) is fine."""
    tensor = weights((40, 40)).astype(dtype)
    tensor[3, 7] = bad
    with pytest.raises(InvalidInputError, match=re.escape("'layer.weight'")):
        udnc_format.save({"ok": weights((40, 40)), "layer.weight": tensor})
    out = load_all(udnc_format.save({"layer.weight": tensor}, keep=["layer.*"]))
    assert out["layer.weight"].tobytes() == tensor.tobytes()


@pytest.mark.parametrize(
    ("name", "tensor"),
    [
        ("complex", np.zeros(4, np.complex64)),
        ("object", np.array([None, 1], dtype=object)),
        ("strings", np.array(["a", "b"])),
        ("datetime", np.zeros(2, "datetime64[s]")),
        ("list", [1.0, 2.0]),
        ("ndim33", np.zeros((1,) * 33, np.float32)),
        ("", np.zeros(2)),
        ("x" * 65536, np.zeros(2)),
        ("lone\ud800surrogate", np.zeros(2)),
    ],
    ids=["complex", "object", "str", "datetime", "list", "ndim33", "empty", "long", "surrogate"],
)
def test_unencodable_tensors(name, tensor) -> None:
    with pytest.raises(InvalidInputError) as caught:
        udnc_format.save({name: tensor})
    if name and len(name) < 100 and "\ud800" not in name:
        assert repr(name) in str(caught.value)


def test_name_of_65535_bytes_is_fine() -> None:
    name = "é" * 32767 + "x"  # 65535 UTF-8 bytes
    assert list(load_all(udnc_format.save({name: np.zeros(2)}))) == [name]


def test_non_string_name() -> None:
    with pytest.raises(InvalidInputError):
        udnc_format.save({3: np.zeros(2)})  # type: ignore[dict-item]


def test_missing_tensor(small_file: bytes, tmp_path) -> None:
    path = tmp_path / "model.udnc"
    path.write_bytes(small_file)
    with udnc_format.open(path) as handle:
        with pytest.raises(TensorNotFoundError) as caught:
            handle.get_tensor("nope")
        assert isinstance(caught.value, KeyError)
        assert "model.udnc" in str(caught.value) and "'nope'" in str(caught.value)
        with pytest.raises(KeyError):
            handle.info("nope")
        assert "nope" not in handle


def test_unreadable_paths(tmp_path) -> None:
    with pytest.raises(UDNCError, match=re.escape("missing.udnc")):
        udnc_format.open(tmp_path / "missing.udnc")
    with pytest.raises(UDNCError):
        udnc_format.load_file(tmp_path)


# ---------------------------------------------------------------------------------------------
# Crafted headers (spec §3 to §6, §8.1 steps 6 and 7)


def test_unknown_critical_section_is_unsupported() -> None:
    items = encode({"w": weights()})
    data = lay_out(items, sections=[Section(b"FUTR", True, b"\x01\x02")])
    with pytest.raises(UnsupportedFeatureError, match="FUTR"):
        udnc_format.UDNCFile(data)


@pytest.mark.parametrize("flags", [0, 0b10, 0xFE])
def test_unknown_optional_section_is_skipped(flags: int) -> None:
    """Optional sections (reserved flag bits ignored) are skipped: the file decodes as if
    they were absent."""
    items = encode({"w": weights(), "b": np.arange(5)}, step=0.2, min_elements=1)
    plain = load_all(lay_out(items))
    sections = [Section(b"note", False, b"anything"), Section(b"\x00\xff\x10 ", False, b"")]
    data = lay_out(items, sections=sections, metadata={"k": "v"})

    def set_flags(body) -> None:
        body.sections[0].flags = flags

    out = load_all(edit_body(data, set_flags))
    assert list(out) == list(plain)
    for name in plain:
        assert out[name].tobytes() == plain[name].tobytes()


def test_critical_bit_with_reserved_bits_is_still_critical() -> None:
    data = lay_out(encode({"w": weights()}), sections=[Section(b"note", False, b"")])

    def set_flags(body) -> None:
        body.sections[0].flags = 0xFF

    with pytest.raises(UnsupportedFeatureError):
        load_all(edit_body(data, set_flags))


def test_overlapping_chunks() -> None:
    items = encode({"a": weights(), "b": weights(seed=1)}, keep=["*"], coder="raw")

    def overlap(entries: list[TensorEntry]) -> list[TensorEntry]:
        a, b = entries
        assert a.passthrough is not None and b.passthrough is not None
        shifted = with_chunks(b.passthrough, offset=a.passthrough.chunks[0].offset + 1)
        return [a, dataclasses.replace(b, passthrough=shifted)]

    with pytest.raises(LayoutError, match="overlap"):
        udnc_format.UDNCFile(lay_out(items, edit=overlap))


@pytest.mark.parametrize("offset", ["beyond", "straddling", "in header", "huge"])
def test_chunk_outside_the_data_region(offset: str) -> None:
    def move(entry: TensorEntry) -> TensorEntry:
        assert entry.passthrough is not None
        chunk = entry.passthrough.chunks[0]
        new = {
            "beyond": chunk.offset + chunk.stored_length + 1,
            "straddling": chunk.offset + 1,
            "in header": chunk.offset - 1,
            "huge": 2**64 - 1,
        }[offset]
        return dataclasses.replace(entry, passthrough=with_chunks(entry.passthrough, offset=new))

    with pytest.raises(LayoutError, match="'w'"):
        udnc_format.UDNCFile(crafted(move, quantized=False))


@pytest.mark.parametrize(
    ("shape", "error"),
    [
        ((1 << 24, 1 << 24, 2), LimitError),  # 2^49 elements
        ((1 << 16,) * 4, LimitError),  # 2^64 elements
        ((2**64 - 1, 2**64 - 1), LimitError),
        ((1,) * 33, LimitError),  # ndim 33
        ((1 << 24, 1 << 24, 1), LayoutError),  # 2^48 elements: allowed; sizes then disagree
        ((0, 1 << 32, 1 << 32), LimitError),  # empty, but its other dimensions make 2^64
        ((1 << 24, 0, 1 << 24), None),  # empty, 2^48 without the zero: valid
    ],
    ids=["2^49", "2^64", "huge dims", "ndim 33", "2^48", "empty 2^64", "empty 2^48"],
)
def test_shape_limits(shape, error) -> None:
    non_zero = math.prod(d for d in shape if d)
    assert (non_zero > MAX_ELEMENTS or len(shape) > 32) == (error is LimitError)
    entry = TensorEntry("big", Dtype.U8, shape, passthrough=StreamRef(Coder.RAW, ()))
    data = lay_out([(entry, [])])
    if error is None:
        assert udnc_format.load(data)["big"].shape == shape
        return
    with pytest.raises(error):
        udnc_format.UDNCFile(data)


def test_passthrough_size_must_match_shape() -> None:
    def grow(entry: TensorEntry) -> TensorEntry:
        return dataclasses.replace(entry, shape=(6, 41))

    with pytest.raises(LayoutError, match="'w'"):
        udnc_format.UDNCFile(crafted(grow, quantized=False))


def test_raw_length_limit() -> None:
    def huge(entry: TensorEntry) -> TensorEntry:
        assert entry.passthrough is not None
        stream = with_chunks(entry.passthrough, raw_length=MAX_CHUNK_RAW + 1)
        return dataclasses.replace(entry, passthrough=dataclasses.replace(stream, coder=Coder.ZSTD))

    with pytest.raises(LimitError):
        udnc_format.UDNCFile(crafted(huge, quantized=False))


def test_raw_chunk_stored_length_must_equal_raw_length() -> None:
    def shorter(entry: TensorEntry) -> TensorEntry:
        assert entry.passthrough is not None
        chunk = entry.passthrough.chunks[0]
        stream = with_chunks(entry.passthrough, raw_length=chunk.raw_length - 1)
        return dataclasses.replace(entry, passthrough=stream)

    with pytest.raises(LayoutError):
        udnc_format.UDNCFile(crafted(shorter, quantized=False))


def symbols_of(entry: TensorEntry) -> StreamRef:
    assert entry.quantized is not None
    return entry.quantized.symbols


LATTICE_LAYOUT_ERRORS = {
    "zero scale": lambda e: with_quantized(e, scale=0.0),
    "negative scale": lambda e: with_quantized(e, scale=-0.3),
    "infinite scale": lambda e: with_quantized(e, scale=math.inf),
    "nan scale": lambda e: with_quantized(e, scale=math.nan),
    "integer dtype": lambda e: dataclasses.replace(e, dtype=Dtype.I32),
    "seed without dither": lambda e: with_quantized(e, prng=Prng.NONE, seed=5, dither_stream=0),
    "stream without dither": lambda e: with_quantized(e, prng=Prng.NONE, seed=0, dither_stream=1),
    "zero chunk_vectors": lambda e: with_quantized(e, chunk_vectors=0),
    "codebook size without codebook": lambda e: with_quantized(e, codebook_size=3),
    "too many symbol chunks": lambda e: with_quantized(
        e, chunk_vectors=e.quantized.chunk_vectors * 4
    ),
}


@pytest.mark.parametrize("case", list(LATTICE_LAYOUT_ERRORS))
def test_lattice_descriptor_layout_errors(case: str) -> None:
    """Declared values that contradict each other (spec §4.5, §6.1): layout, naming the
    tensor."""
    with pytest.raises(LayoutError, match="'w'"):
        udnc_format.UDNCFile(crafted(LATTICE_LAYOUT_ERRORS[case], chunk_weights=64))


@pytest.mark.parametrize("size", [0, 1 << 25])
def test_codebook_size_limits(size: int) -> None:
    def resize(entry: TensorEntry) -> TensorEntry:
        return with_quantized(entry, codebook_size=size)

    with pytest.raises(LimitError):
        udnc_format.UDNCFile(crafted(resize, codebook=True))


def test_codebook_and_mask_sizes_must_match() -> None:
    def bigger_codebook(entry: TensorEntry) -> TensorEntry:
        return with_quantized(entry, codebook_size=entry.quantized.codebook_size + 1)

    with pytest.raises(LayoutError, match="codebook"):
        udnc_format.UDNCFile(crafted(bigger_codebook, codebook=True))

    def longer_mask(entry: TensorEntry) -> TensorEntry:
        mask = with_chunks(entry.quantized.mask, raw_length=999)
        return with_quantized(entry, mask=dataclasses.replace(mask, coder=Coder.ZSTD))

    with pytest.raises(LayoutError, match="mask"):
        udnc_format.UDNCFile(crafted(longer_mask, prune=0.3))


def without_last_symbol_chunk(**options) -> bytes:
    """A one-tensor file whose symbol stream lost its last chunk (and that chunk's bytes)."""
    (item,) = encode({"w": weights()}, lattice="E8", step=0.3, min_elements=1, **options)
    symbols = symbols_of(item.entry)
    assert len(symbols.chunks) > 1
    entry = with_quantized(
        item.entry, symbols=dataclasses.replace(symbols, chunks=symbols.chunks[:-1])
    )
    return lay_out([(entry, item.payloads[:-1])])


def test_symbol_chunk_count_must_match() -> None:
    with pytest.raises(LayoutError, match="'w'"):
        udnc_format.UDNCFile(without_last_symbol_chunk(chunk_weights=64))


def test_mask_and_symbol_chunk_count_checked_on_decode() -> None:
    """With a mask, the symbol chunk count depends on the kept weights: checked when decoding
    (spec §8.1 step 9)."""
    data = without_last_symbol_chunk(prune=0.3, chunk_weights=64)
    with udnc_format.UDNCFile(data) as handle, pytest.raises(LayoutError, match="'w'"):
        handle.get_tensor("w")


UNKNOWN_ENUMS = {
    "dtype": lambda e: dataclasses.replace(e, dtype=99),
    "lattice": lambda e: with_quantized(e, lattice=9),
    "prng": lambda e: with_quantized(e, prng=3),
    "serialization": lambda e: with_quantized(e, serialization=0),
    "coder": lambda e: with_quantized(e, symbols=dataclasses.replace(symbols_of(e), coder=6)),
}


@pytest.mark.parametrize("field", list(UNKNOWN_ENUMS))
def test_unknown_enumeration_values(field: str) -> None:
    """spec §3.4: an unknown value of an enumerated field is unsupported-feature, naming the
    tensor."""
    with pytest.raises(UnsupportedFeatureError, match="'w'"):
        udnc_format.UDNCFile(crafted(UNKNOWN_ENUMS[field]))


def test_unknown_passthrough_coder() -> None:
    def edit(entry: TensorEntry) -> TensorEntry:
        assert entry.passthrough is not None
        return dataclasses.replace(
            entry, passthrough=dataclasses.replace(entry.passthrough, coder=200)
        )

    with pytest.raises(UnsupportedFeatureError, match="'w'"):
        udnc_format.UDNCFile(crafted(edit, quantized=False))


def test_unknown_encoding_and_lattice_flags() -> None:
    data = crafted(lambda e: e)

    def encoding(body) -> None:
        body.tensors[0].encoding = 7
        body.tensors[0].body = b"an encoding from the future"

    with pytest.raises(UnsupportedFeatureError, match="'w'"):
        udnc_format.UDNCFile(edit_body(data, encoding))

    def flags(body) -> None:
        body.tensors[0].body.flags |= 0b100

    with pytest.raises(UnsupportedFeatureError, match="'w'"):
        udnc_format.UDNCFile(edit_body(data, flags))


def test_empty_tensor_name_in_a_file() -> None:
    entry = TensorEntry("", Dtype.U8, (0,), passthrough=StreamRef(Coder.RAW, ()))
    with pytest.raises(LayoutError):
        udnc_format.UDNCFile(lay_out([(entry, [])]))


def test_malformed_header_bodies(small_file: bytes) -> None:
    """Bytes left over, a body ending inside a field, counts beyond the bytes that remain,
    invalid UTF-8: all layout errors (and fast: nothing is allocated for the counts)."""
    start, end = 16, data_start(small_file) - 4
    body = small_file[start:end]

    def rebuilt(new_body: bytes) -> bytes:
        head = small_file[:12] + len(new_body).to_bytes(4, "little") + new_body
        return head + zlib.crc32(head).to_bytes(4, "little") + small_file[end + 4 :]

    cases = [
        body + b"\x00",
        body[:-1],
        (0xFFFFFFFF).to_bytes(4, "little") + body[4:],
        body.replace(b"license", b"licen\xffe"),
        body.replace(b"w.e8", b"w\xc3(8"),
    ]
    for case in cases:
        with pytest.raises(LayoutError):
            udnc_format.UDNCFile(rebuilt(case))


def test_tensor_body_with_bytes_left_over() -> None:
    """A tensor body is consumed exactly (spec §4.1)."""
    data = crafted(lambda e: e, quantized=False)
    start = data_start(data)
    length = int.from_bytes(data[12:16], "little")
    body = bytearray(data[16 : 16 + length])
    # metadata count, tensor count, then tensor 0: name length u16, name "w", dtype, encoding,
    # ndim, shape (2 × u64), and the body length u32
    ndim_at = 4 + 4 + 2 + 1 + 1 + 1
    assert body[ndim_at] == 2
    at = ndim_at + 1 + 2 * 8
    old = int.from_bytes(body[at : at + 4], "little")
    body[at : at + 4] = (old + 1).to_bytes(4, "little")
    body[at + 4 + old : at + 4 + old] = b"\x00"
    head = data[:12] + len(body).to_bytes(4, "little") + bytes(body)
    patched = head + zlib.crc32(head).to_bytes(4, "little") + data[start:]
    with pytest.raises(LayoutError):
        udnc_format.UDNCFile(patched)


# ---------------------------------------------------------------------------------------------
# Chunk contents (spec §8.1 step 8): corrupt bytes behind valid CRCs


def raw_file(tensor: np.ndarray, **options) -> bytes:
    return udnc_format.save({"w": tensor}, coder="raw", min_elements=1, min_ndim=1, **options)


def patch(data: bytes, position: int, new: bytes) -> bytes:
    return refresh_chunk_crcs(data[:position] + new + data[position + len(new) :])


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_symbol_magnitude_limit(bits: int) -> None:
    """z = 2^25 (σ = 2^24) is the largest valid symbol value; 2^25 + 1 is a corrupt stream."""
    data = raw_file(np.ones(6, np.float32), lattice="Z1", step=1.0, dither=False)
    for value, decoded in [(2**25, 2.0**24), (2**25 - 1, -(2.0**24))]:
        out = load_all(with_last_chunk(data, spec_serialize([2, value, 2, 2, 2, 2], bits), bits))
        assert out["w"].tolist() == [1.0, decoded, 1.0, 1.0, 1.0, 1.0]
    for value in (2**25 + 1, (1 << bits) - 1 + 255 + 2**32 - 1):  # up to the largest value
        with pytest.raises(CorruptStreamError, match="'w'"):
            load_all(with_last_chunk(data, spec_serialize([2, value, 2, 2, 2, 2], bits), bits))


def test_unknown_field_width_is_unsupported() -> None:
    data = raw_file(np.ones(6, np.float32), lattice="Z1", step=1.0, dither=False)
    for bits in (0, 3, 16):
        with pytest.raises(UnsupportedFeatureError, match="'w'"):
            udnc_format.UDNCFile(with_last_chunk(data, spec_serialize([2] * 6, 8), bits))


def test_coset_bitmap_padding_must_be_zero() -> None:
    data = raw_file(weights((3, 8)), lattice="E8", step=0.5)  # 3 vectors: 5 padding bits
    ((start, _),) = chunk_spans(data)
    with pytest.raises(CorruptStreamError, match="'w'"):
        load_all(patch(data, start, bytes([data[start] | 0x80])))


def test_mask_padding_must_be_zero() -> None:
    data = raw_file(weights((3, 7)), lattice="Z1", step=0.5, prune=0.3)  # 21 bits: 3 padding
    (start, end), *_ = chunk_spans(data)
    assert end - start == 3
    with pytest.raises(CorruptStreamError, match="'w'"):
        load_all(patch(data, end - 1, bytes([data[end - 1] | 0x80])))


def test_codebook_index_must_be_below_codebook_size() -> None:
    data = raw_file(weights((4, 32)), lattice="D4", step=2.0, codebook=True, dither=False)
    with udnc_format.UDNCFile(data) as handle:
        size = handle.info("w").codebook_size
    assert size >= 1
    indices = [0] * 32
    assert load_all(with_last_chunk(data, spec_serialize(indices, 8), 8))["w"].shape == (4, 32)
    for bad in (size, size + 1000):
        indices[5] = bad
        with pytest.raises(CorruptStreamError, match="'w'"):
            load_all(with_last_chunk(data, spec_serialize(indices, 8), 8))


def test_chunk_decoding_to_another_size(small_file: bytes) -> None:
    def longer(body) -> None:
        for chunk in iter_chunk_containers(body):
            if chunk.offset + chunk.stored_length == len(small_file):
                chunk.raw_length += 1  # w.d4's last deflate chunk

    data = edit_body(small_file, longer)
    expected = pytest.raises(CorruptStreamError, match=re.escape("'w.d4'"))
    with udnc_format.UDNCFile(data) as handle, expected:
        handle.get_tensor("w.d4")


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_save_into_missing_directory(tmp_path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "model.udnc"
    with pytest.raises(WriteError, match=re.escape("model.udnc")):
        udnc_format.save_file({"w": weights()}, target)
    assert not (tmp_path / "no").exists()


def test_save_onto_a_directory(tmp_path) -> None:
    (tmp_path / "model.udnc").mkdir()
    with pytest.raises(WriteError):
        udnc_format.save_file({"w": weights()}, tmp_path / "model.udnc")
    assert os.listdir(tmp_path) == ["model.udnc"]
    assert os.listdir(tmp_path / "model.udnc") == []


def test_failed_encoding_leaves_nothing(tmp_path) -> None:
    """A NaN in the second tensor fails the save after the first was encoded: no file, no
    temporary file."""
    bad = weights((40, 40))
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="'second'"):
        udnc_format.save_file({"first": weights((40, 40)), "second": bad}, tmp_path / "m.udnc")
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_an_existing_file(tmp_path) -> None:
    path = tmp_path / "m.udnc"
    udnc_format.save_file({"w": weights()}, path)
    before = path.read_bytes()
    stamp = os.stat(path).st_mtime_ns
    with pytest.raises(DuplicateNameError):
        udnc_format.save_file([("a", weights()), ("a", weights())], path)  # type: ignore[arg-type]
    assert path.read_bytes() == before and os.stat(path).st_mtime_ns == stamp
    assert os.listdir(tmp_path) == ["m.udnc"]


class Interrupting(Mapping):
    """A mapping whose second tensor cannot be fetched: Ctrl-C in the middle of a save."""

    def __iter__(self) -> Iterator[str]:
        return iter(["a", "b"])

    def __len__(self) -> int:
        return 2

    def __getitem__(self, name: str) -> np.ndarray:
        if name == "b":
            raise KeyboardInterrupt
        return weights()


def test_interrupted_save_leaves_nothing(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        udnc_format.save_file(Interrupting(), tmp_path / "m.udnc")
    assert os.listdir(tmp_path) == []


def test_successful_save_replaces_existing_file(tmp_path) -> None:
    path = tmp_path / "m.udnc"
    path.write_bytes(b"old")
    udnc_format.save_file({"w": weights()}, path)
    assert list(udnc_format.load_file(path)) == ["w"]
    assert os.listdir(tmp_path) == ["m.udnc"]


# ---------------------------------------------------------------------------------------------
# Regressions: bugs found while writing these tests, now fixed


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflowing casts on purpose
@pytest.mark.parametrize("lattice", ["Z1", "D4", "E8", "A2"])
def test_bug_huge_weight_over_step_ratio_is_rejected(lattice: str) -> None:
    """spec §8.3: symbols beyond 2^24 need a larger step or passthrough, never garbage."""
    tensor = np.zeros((4, 300))
    tensor[0, 0] = 1e30
    try:
        data = udnc_format.save({"w": tensor}, lattice=lattice, step=1e-10, dither=False)
    except InvalidInputError:
        return
    assert load_all(data)["w"][0, 0] == pytest.approx(1e30)


def test_bug_chunk_weights_beyond_u32() -> None:
    try:
        data = udnc_format.save({"w": weights((40, 40))}, chunk_weights=1 << 40)
    except InvalidInputError:
        return
    assert load_all(data)["w"].shape == (40, 40)


def test_bug_metadata_with_lone_surrogate() -> None:
    with pytest.raises(InvalidInputError):
        udnc_format.save({"w": np.zeros(2)}, metadata={"key": "bad \ud800"})


def test_bug_empty_tensor_with_huge_dimension() -> None:
    entry = TensorEntry("e", Dtype.U8, (0, 2**63), passthrough=StreamRef(Coder.RAW, ()))
    try:
        out = load_all(lay_out([(entry, [])]))
    except LimitError:
        return
    assert out["e"].size == 0


def test_bug_declared_size_allocated_before_chunks_are_checked() -> None:
    elements, chunk_vectors = 1 << 48, 2**32 - 1
    chunks = -(-(elements // 8) // chunk_vectors)

    def entry(offset: int) -> TensorEntry:
        stream = StreamRef(Coder.RAW, (ChunkRef(offset, 0, 0, 0),) * chunks)
        params = LatticeParams(
            Lattice.Z8, Prng.NONE, 1, 1.0, 0, 0, chunk_vectors, 0, None, None, stream
        )
        return TensorEntry("huge", Dtype.F32, (elements,), quantized=params)

    probe = lay_out([(entry(0), [])])
    data = lay_out([(entry(len(probe)), [])])
    # Rejected at opening (declared sizes) or at the latest on decoding.
    with pytest.raises(UDNCError), udnc_format.UDNCFile(data) as handle:
        handle.get_tensor("huge")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflowing casts on purpose
def test_bug_weights_near_float32_max() -> None:
    with contextlib.suppress(UDNCError):
        load_all(udnc_format.save({"w": np.full((32, 32), 3.3e38, np.float32)}))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflowing casts on purpose
@pytest.mark.parametrize("value", [1e-200, 1e200])
def test_bug_sqnr_rate_control_of_extreme_float64_weights(value: float) -> None:
    tensor = np.full((32, 32), value) * np.linspace(0.5, 1.5, 1024).reshape(32, 32)
    out = load_all(udnc_format.save({"w": tensor}))
    assert np.allclose(out["w"], tensor, rtol=0.2, atol=0)  # 30 dB: errors within Δ/2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflowing casts on purpose
def test_bug_nan_codeword_decodes_to_nan() -> None:
    data = raw_file(weights((4, 32)), lattice="D4", step=2.0, codebook=True, dither=False)
    codebook_start = chunk_spans(data)[0][0]
    nan = np.array([np.nan], "<f4").tobytes()
    try:
        out = load_all(patch(data, codebook_start, nan))
    except UDNCError:
        return
    assert not np.isnan(out["w"]).any()


@pytest.mark.parametrize("options", [{"lattice": 99}, {"coder": 99}, {"seed": 1.5}], ids=repr)
def test_bug_option_values_of_wrong_type(options) -> None:
    with pytest.raises(InvalidInputError):
        udnc_format.save({"w": weights((40, 40))}, **options)


def test_bug_precedence_duplicate_name_before_critical_section() -> None:
    items = encode({"a": np.zeros(3)}) + encode({"a": np.ones(3)})
    data = lay_out(items, sections=[Section(b"FUTR", True, b"")])
    with pytest.raises(DuplicateNameError):
        udnc_format.UDNCFile(data)


def test_bug_precedence_unknown_enum_before_limits() -> None:
    def edit(entry: TensorEntry) -> TensorEntry:
        return dataclasses.replace(with_quantized(entry, lattice=9), shape=(1 << 25,) * 2)

    with pytest.raises(UnsupportedFeatureError):
        udnc_format.UDNCFile(crafted(edit))


def test_sqnr_on_weights_too_small_to_scale_stores_them_losslessly() -> None:
    """An SQNR target on subnormal float64 weights has no representable step: lossless."""
    tensor = np.zeros((32, 32))
    tensor[0, :2] = [5e-324, 1e-323]
    out = load_all(udnc_format.save({"w": tensor}))
    assert out["w"].tobytes() == tensor.tobytes()


def test_a_tensor_named_like_safetensors_metadata_cannot_be_written_as_safetensors(tmp_path):
    from udnc_format.safetensors_io import TensorSpec, write_safetensors

    spec = TensorSpec("__metadata__", Dtype.U8, (1,))
    with pytest.raises(InvalidInputError, match="__metadata__"):
        write_safetensors(tmp_path / "x.safetensors", [spec], [np.zeros(1, np.uint8)], {})
    assert not list(tmp_path.iterdir())
