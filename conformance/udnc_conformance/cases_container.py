"""Case builders of the container (spec §2, §3, §8.1 steps 1 to 6, §9): preamble and version,
header CRC and body, metadata, names, sections, UTF-8, and the header's limits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from udnc_format.format.constants import (
    Dtype,
)
from udnc_format.format.header import (
    Section,
)

from .mini_encoder import Built, assemble, base_file, base_items, decoded, passthrough, weights, z1
from .surgery import (
    edit_body,
    flip,
    header_length,
    patch,
    patch_header,
    set_lattice,
    set_tensor,
    with_body_bytes,
    with_header_crc,
)

NFC_NAME = "caf\u00e9.weight"  # é as one code point


NFD_NAME = "cafe\u0301.weight"  # e and a combining acute accent


def unicode_names_case() -> Built:
    items = [
        passthrough(NFC_NAME, np.array([1, 2, 3], "<i4")),
        passthrough(NFD_NAME, np.array([4, 5, 6], "<i4")),
        z1("層.重み", weights((4, 6), 31), scale=0.1, stream=2),
        passthrough("😀/emoji", np.array([7], "<u8")),
        passthrough("tab\tand space ", np.array([1.5], "<f4")),
        passthrough("noncharacter \uffff", np.array([9], "<u1")),
    ]
    return assemble(items), {
        NFC_NAME: np.array([1, 2, 3], "<i4"),
        NFD_NAME: np.array([4, 5, 6], "<i4"),
    }


METADATA = {
    "": "the key is empty",
    "empty value": "",
    "license": "Apache-2.0",
    "ключ": "значение ✓",
    "emoji 😀": "🚀" * 3,
    "caf\u00e9": "NFC key",
    "cafe\u0301": "NFD key, a different key",
    "multi\nline": "line 1\nline 2\ttab",
    "json": '{"quoted": "value"}',
}


def metadata_case() -> Built:
    item = passthrough("w", np.arange(4, dtype="<u2"))
    return assemble([item], metadata=METADATA), {"w": np.arange(4, dtype="<u2")}


def several_tensors_case() -> Built:
    """Passthrough and Z1 tensors of every quantizable dtype, each with its own dither stream
    (and one dither seed), one without dither."""
    items = [
        passthrough("embed.ids", np.arange(-3, 9, dtype="<i8").reshape(3, 4)),
        z1("layer0.weight", weights((8, 12), 41), scale=0.05, seed=77, stream=1),
        z1("layer0.bias", weights((12,), 42, "<f2"), scale=0.02, seed=77, stream=2),
        z1("layer1.weight", weights((6, 10), 43, Dtype.BF16), scale=0.1, seed=77, stream=3),
        z1("layer1.bias", weights((10,), 44, "<f8"), scale=0.01, dither=False),
        passthrough("norm.scale", weights((10,), 45)),
    ]
    return assemble(items, metadata={"format": "several"})


def sections_case() -> Built:
    """Unknown optional sections (one with reserved flag bits set, one with a non-printable
    tag and an empty payload) are skipped (spec §3.3)."""
    data = assemble(
        base_items(),
        metadata={"license": "MIT"},
        sections=[
            Section(b"note", False, b"an optional section from a later minor version"),
            Section(b"\x00\xff\x10 ", False, b""),
        ],
    )

    def flags(body: Any) -> None:
        body.sections[1].flags = 0xFE  # bits 1-7 reserved, ignored; bit 0 clear: optional

    return edit_body(data, flags), decoded(base_file())


def unreferenced_bytes_case() -> Built:
    data = base_file(gap=b"\xde\xad\xbe\xef", tail=b"bytes after the last chunk")
    return data, decoded(base_file())


def out_of_order_case() -> Built:
    items = [
        passthrough("bias", np.arange(-3, 3, dtype="<i2"), chunks=4),
        *base_items()[1:],
    ]
    plain = assemble(items)
    return assemble(items, order=lambda slots: slots[::-1]), decoded(plain)


def minor_version_case() -> Built:
    """A future minor version (1.7): any minor is accepted (spec §2.1)."""
    return base_file(minor=7), decoded(base_file())


def ndim_32_case() -> Built:
    """32 dimensions, the most allowed (spec §9), passthrough and lattice-coded."""
    shape = (1,) * 30 + (2, 3)
    ids = np.arange(6, dtype="<u2").reshape(shape)
    items = [passthrough("ids", ids), z1("w", weights(shape, 98), scale=0.25)]
    return assemble(items), {"ids": ids}


def long_name_case() -> Built:
    """A tensor name of 65535 UTF-8 bytes, the most a u16 length allows (spec §4.1)."""
    name = "\u00e9" * 32767 + "x"
    assert len(name.encode("utf-8")) == 0xFFFF
    array = np.array([1, 2], "<i2")
    return assemble([passthrough(name, array)]), {name: array}


def header_crc_mismatch() -> bytes:
    """A metadata byte changed ("MIT" -> "MJT") after the header CRC was computed."""
    data = base_file()
    position = data.index(b"MIT")
    return flip(data, position + 1, 0x03)


def duplicate_tensor_names() -> bytes:
    items = base_items()
    items[0] = replace(items[0], entry=replace(items[0].entry, name="w"))
    return assemble(items)


def duplicate_metadata_keys() -> bytes:
    def edit(body: Any) -> None:
        body.metadata = [body.metadata[0], {"key": "license", "value": "GPL"}]

    return edit_body(base_file(), edit)


def duplicate_name_and_critical_section() -> bytes:
    items = base_items()
    items[0] = replace(items[0], entry=replace(items[0].entry, name="w"))
    return assemble(items, sections=[Section(b"FUTR", True, b"")])


def critical_section() -> bytes:
    return base_file(sections=[Section(b"FUTR", True, b"a critical section from the future")])


def header_body_left_over() -> bytes:
    """One byte after the section list, inside the header body."""
    return with_body_bytes(base_file(), lambda body: body.append(0), 1)


def header_crc_before_layout() -> bytes:
    """header_body_left_over with a header CRC that does not match either."""
    data = header_body_left_over()
    return flip(data, 16 + header_length(data) + 1, 0x10)


def tensor_count_beyond_body() -> bytes:
    data = base_file()
    body_start = 16
    # metadata count (u32), one entry: key length u32 + "license" + value length u32 + "MIT"
    count_at = body_start + 4 + 4 + len("license") + 4 + len("MIT")
    assert int.from_bytes(data[count_at : count_at + 4], "little") == 2
    return with_header_crc(patch(data, count_at, (0xFFFFFFFF).to_bytes(4, "little")))


def tensor_body_left_over() -> bytes:
    """The passthrough tensor's body_length is one more than its Stream, the extra byte
    inside the body."""
    # metadata count, the entry (key, value), tensor count; then tensor 0: name length u16,
    # name, dtype, encoding, ndim 1, shape u64, body_length u32
    at = 4 + 4 + len("license") + 4 + len("MIT") + 4
    at += 2 + len("bias") + 1 + 1 + 1 + 8

    def change(body: bytearray) -> None:
        old = int.from_bytes(body[at : at + 4], "little")
        body[at : at + 4] = (old + 1).to_bytes(4, "little")
        body[at + 4 + old : at + 4 + old] = b"\x00"

    return with_body_bytes(base_file(), change, 1)


def truncated_at(where: Callable[[bytes], int]) -> Callable[[], bytes]:
    def build() -> bytes:
        data = base_file()
        return data[: where(data)]

    return build


def shape_edit(shape: Sequence[int], index: int = 0) -> Callable[[], bytes]:
    def build() -> bytes:
        return edit_body(base_file(), set_tensor(index, shape=list(shape)))

    return build


def enum_before_limit() -> bytes:
    def edit(body: Any) -> None:
        set_lattice(lattice=9)(body)
        set_tensor(1, shape=[1 << 25, 1 << 25])(body)

    return edit_body(base_file(), edit)


def major_version(major: int, fix_crc: bool) -> Callable[[], bytes]:
    def build() -> bytes:
        data = base_file()
        data = patch(data, 8, major.to_bytes(2, "little"))
        return with_header_crc(data) if fix_crc else data

    return build


def header_length_over_limit() -> bytes:
    return patch(base_file(), 12, ((1 << 28) + 1).to_bytes(4, "little"))


def invalid_utf8_name() -> bytes:
    return patch_header(base_file(), b"bias", b"bi\xc3(")


def surrogate_utf8_name() -> bytes:
    """A UTF-16 surrogate (U+D800) encoded as UTF-8 bytes (CESU-8): not valid UTF-8."""
    return patch_header(base_file(), b"bias", b"\xed\xa0\x80s")


def overlong_utf8_metadata() -> bytes:
    """An overlong encoding of "/" (C0 AF): not valid UTF-8."""
    return patch_header(base_file(), b"license", b"lic\xc0\xafse")


def invalid_utf8_metadata() -> bytes:
    return patch_header(base_file(), b"MIT", b"M\xffT")


def section_payload_beyond_body() -> bytes:
    data = base_file(sections=[Section(b"note", False, b"xyz")])
    old = b"note\x00" + (3).to_bytes(4, "little")
    return patch_header(data, old, b"note\x00" + (0xFFFFFF00).to_bytes(4, "little"))
