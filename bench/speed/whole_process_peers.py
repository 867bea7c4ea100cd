"""File-to-file command lines of the peers, one direction per process, for whole_process.py:

    python bench/speed/whole_process_peers.py gguf-quantize TYPE IN.safetensors OUT.npz
    python bench/speed/whole_process_peers.py gguf-dequantize TYPE IN.npz OUT.safetensors
    python bench/speed/whole_process_peers.py nncodec-encode QP IN.safetensors OUT.nnc
    python bench/speed/whole_process_peers.py nncodec-decode QP IN.nnc OUT.safetensors

gguf-py quantizes every float32 tensor of 2+ dimensions (``gguf.quants`` works along the last
dimension, a multiple of 32 in MiniLM) and keeps the others as they are, all in one
uncompressed .npz. NNCodec codes every float32 tensor (those of 1 dimension at its
near-lossless ``nonweight_qp``); the others (MiniLM's int64 position ids) go raw into an .npz
next to the bitstream. NNCodec runs in the peers' environment (bench/rd/setup_peers.sh).
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
        if array.ndim >= 2 and array.dtype == np.float32:
            arrays["q:" + name] = quants.quantize(array, kind)
            arrays["s:" + name] = np.array(array.shape, dtype=np.int64)
        else:
            arrays["k:" + name] = array
    with open(target, "wb") as out:
        np.savez(out, **arrays)


def gguf_dequantize(kind_name: str, source: str, target: str) -> None:
    from gguf import GGMLQuantizationType, quants

    kind = GGMLQuantizationType[kind_name]
    out: dict[str, np.ndarray] = {}
    with np.load(source) as stored:
        for key in stored.files:
            part, name = key.split(":", 1)
            if part == "q":
                shape = tuple(int(n) for n in stored["s:" + name])
                restored = quants.dequantize(stored[key], kind).reshape(shape)
                out[name] = np.ascontiguousarray(restored, dtype=np.float32)
            elif part == "k":
                out[name] = stored[key]
    save_file(out, target)


def _nnc():  # type: ignore[no-untyped-def]
    """NNCodec's API, with the torchvision placeholders of bench/rd/peers.py."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rd"))
    from peers import _stub_torchvision

    _stub_torchvision()
    from nncodec import nnc

    return nnc


def nncodec_encode(qp: str, source: str, target: str) -> None:
    tensors = load_file(source)
    coded = {k: v for k, v in tensors.items() if v.dtype == np.float32}
    stream = _nnc().compress(coded, bitstream_path=None, qp=int(qp), return_bitstream=True)
    Path(target).write_bytes(bytes(stream))
    with open(target + ".rest.npz", "wb") as rest:
        np.savez(rest, **{k: v for k, v in tensors.items() if k not in coded})


def nncodec_decode(qp: str, source: str, target: str) -> None:
    decoded = _nnc().decompress(bytearray(Path(source).read_bytes()))
    out = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in decoded.items()}
    with np.load(source + ".rest.npz") as rest:
        out.update({k: rest[k] for k in rest.files})
    save_file(out, target)


COMMANDS = {
    "gguf-quantize": gguf_quantize,
    "gguf-dequantize": gguf_dequantize,
    "nncodec-encode": nncodec_encode,
    "nncodec-decode": nncodec_decode,
}

if __name__ == "__main__":
    command, setting, source, target = sys.argv[1:]
    COMMANDS[command](setting, source, target)
