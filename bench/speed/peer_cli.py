"""File-to-file command lines of the peers, for bench/speed/whole_process.py:

    python bench/speed/peer_cli.py gguf-quantize TYPE IN.safetensors OUT.npz
    python bench/speed/peer_cli.py gguf-dequantize TYPE IN.npz OUT.safetensors
    python bench/speed/peer_cli.py nncodec-encode QP IN.safetensors OUT.nnc
    python bench/speed/peer_cli.py nncodec-decode QP IN.nnc OUT.safetensors

gguf-py quantizes every floating tensor of 2+ dimensions (as rows of its last dimension, which is a
multiple of 32 in the models measured) and keeps the others float32, in one uncompressed .npz;
NNCodec codes every tensor (1-D ones at its near-lossless ``nonweight_qp``). Run with the
peers' environment (bench/rd/setup_peers.sh) for NNCodec; gguf runs in either.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def gguf_quantize(kind_name: str, source: str, target: str) -> None:
    from gguf import GGMLQuantizationType, quants

    kind = GGMLQuantizationType[kind_name]
    arrays: dict[str, np.ndarray] = {}
    for name, array in load_file(source).items():
        if array.ndim >= 2 and array.dtype.kind == "f" and array.shape[-1] % 32 == 0:
            arrays["q:" + name] = quants.quantize(array.reshape(-1, array.shape[-1]), kind)
            arrays["s:" + name] = np.array(array.shape, dtype=np.int64)
        else:
            arrays["f:" + name] = array
    np.savez(target, **arrays)


def gguf_dequantize(kind_name: str, source: str, target: str) -> None:
    from gguf import GGMLQuantizationType, quants

    kind = GGMLQuantizationType[kind_name]
    stored = np.load(source)
    out: dict[str, np.ndarray] = {}
    for key in stored.files:
        part, name = key.split(":", 1)
        if part == "q":
            shape = tuple(stored["s:" + name])
            out[name] = quants.dequantize(stored[key], kind).astype(np.float32).reshape(shape)
        elif part == "f":
            out[name] = stored[key]
    save_file(out, target)


def _nnc():  # type: ignore[no-untyped-def]
    """NNCodec's API, with placeholders for the torchvision it imports (bench/rd/peers.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rd"))
    from peers import _stub_torchvision

    _stub_torchvision()
    from nncodec import nnc

    return nnc


def nncodec_encode(qp: str, source: str, target: str) -> None:
    tensors = {k: v.astype(np.float32) for k, v in load_file(source).items()}
    stream = _nnc().compress(tensors, bitstream_path=None, qp=int(qp), return_bitstream=True)
    Path(target).write_bytes(bytes(stream))


def nncodec_decode(qp: str, source: str, target: str) -> None:
    decoded = _nnc().decompress(bytearray(Path(source).read_bytes()))
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in decoded.items()}, target)


COMMANDS = {
    "gguf-quantize": gguf_quantize,
    "gguf-dequantize": gguf_dequantize,
    "nncodec-encode": nncodec_encode,
    "nncodec-decode": nncodec_decode,
}

if __name__ == "__main__":
    command, setting, source, target = sys.argv[1:]
    COMMANDS[command](setting, source, target)
