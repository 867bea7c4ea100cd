"""The peer tools, run inside their own environment (bench/rd/setup_peers.sh) by bench/rd/run.py:

    .venv/bin/python bench/rd/peers.py TOOL SETTING IN.safetensors DECODED.safetensors

TOOL is ``nncodec`` (SETTING: the qp), ``gguf`` (SETTING: the type, e.g. Q4_0), ``zipnn`` or
``zstd`` (SETTING: the level). Every tensor of IN (the compared tensors, float32) is coded on
its own; the decoded tensors are written to DECODED (float32, same names) and one JSON line goes
to stdout: coded bytes (NNCodec: its bitstream; GGUF: the quantized blocks, scales included;
zipnn, zstd: the compressed bytes) and the encode and decode seconds (tensors already in
memory). The caller measures the SQNR and the embeddings from DECODED.
"""

from __future__ import annotations

import json
import sys
import time
import types
from collections.abc import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

Codec = Callable[[dict[str, np.ndarray], str], tuple[int, float, float, dict[str, np.ndarray]]]


class _StubType(type):
    """Attributes of a stub class are stub classes: ``InterpolationMode.BILINEAR`` works."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubType(name, (_Stub,), {})


class _Stub(metaclass=_StubType):
    """Takes any arguments; can be called, subclassed and asked for any attribute."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str) -> type:
        return _StubType(name, (_Stub,), {})


class _Placeholder(types.ModuleType):
    """A module whose every attribute is a stub class: enough for nncodec's import-time uses
    of torchvision (``transforms.Compose([...])``, ``class D(datasets.ImageFolder)``)."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StubType(name, (_Stub,), {})


def _stub_torchvision() -> None:
    if "torchvision" in sys.modules:
        return
    root = sys.modules["torchvision"] = _Placeholder("torchvision")
    for part in ("datasets", "transforms", "models"):
        module = sys.modules[f"torchvision.{part}"] = _Placeholder(f"torchvision.{part}")
        setattr(root, part, module)


def _nncodec(tensors: dict[str, np.ndarray], setting: str) -> tuple[int, float, float, dict]:
    # nncodec imports torchvision for dataset helpers only; the PyPI torchvision is a CUDA build
    # that fails to import here, so empty placeholder modules stand in for it.
    _stub_torchvision()
    from nncodec import nnc

    start = time.perf_counter()
    stream = nnc.compress(
        dict(tensors), bitstream_path=None, qp=int(setting), return_bitstream=True, verbose=False
    )
    encode = time.perf_counter() - start
    start = time.perf_counter()
    decoded = nnc.decompress(bytearray(stream))
    decode = time.perf_counter() - start
    out = {
        name: np.asarray(decoded[name], dtype=np.float32).reshape(a.shape)
        for name, a in tensors.items()
    }
    return len(stream), encode, decode, out


def _gguf(tensors: dict[str, np.ndarray], setting: str) -> tuple[int, float, float, dict]:
    from gguf import GGMLQuantizationType, quants

    kind = GGMLQuantizationType[setting]
    size, encode, decode, out = 0, 0.0, 0.0, {}
    for name, array in tensors.items():
        start = time.perf_counter()
        blocks = quants.quantize(array, kind)
        encode += time.perf_counter() - start
        start = time.perf_counter()
        restored = quants.dequantize(blocks, kind)
        decode += time.perf_counter() - start
        size += blocks.nbytes
        out[name] = np.asarray(restored, dtype=np.float32).reshape(array.shape)
    return size, encode, decode, out


def _zipnn(tensors: dict[str, np.ndarray], setting: str) -> tuple[int, float, float, dict]:
    from zipnn import ZipNN

    codec = ZipNN(input_format="numpy")
    size, encode, decode, out = 0, 0.0, 0.0, {}
    for name, array in tensors.items():
        start = time.perf_counter()
        packed = codec.compress(array)
        encode += time.perf_counter() - start
        start = time.perf_counter()
        restored = codec.decompress(packed)
        decode += time.perf_counter() - start
        size += len(packed)
        out[name] = np.asarray(restored, dtype=np.float32).reshape(array.shape)
    return size, encode, decode, out


def _zstd(tensors: dict[str, np.ndarray], setting: str) -> tuple[int, float, float, dict]:
    import zstandard

    compressor = zstandard.ZstdCompressor(level=int(setting))
    size, encode, decode, out = 0, 0.0, 0.0, {}
    for name, array in tensors.items():
        start = time.perf_counter()
        packed = compressor.compress(array.astype("<f4").tobytes())
        encode += time.perf_counter() - start
        start = time.perf_counter()
        raw = zstandard.ZstdDecompressor().decompress(packed)
        decode += time.perf_counter() - start
        size += len(packed)
        out[name] = np.frombuffer(raw, dtype="<f4").reshape(array.shape).copy()
    return size, encode, decode, out


TOOLS: dict[str, Codec] = {"nncodec": _nncodec, "gguf": _gguf, "zipnn": _zipnn, "zstd": _zstd}


def main(argv: list[str]) -> int:
    tool, setting, source, target = argv
    tensors = load_file(source)
    size, encode, decode, decoded = TOOLS[tool](tensors, setting)
    save_file(decoded, target)
    print(json.dumps({"coded_bytes": size, "encode_seconds": encode, "decode_seconds": decode}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
