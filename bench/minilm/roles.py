"""The default role offsets, measured: which kinds of all-MiniLM-L6-v2's tensors the sentence
embeddings are sensitive to, for a given lattice (``DEFAULT_SQNR_OFFSETS``, README "The default
rate").

Two measurements, both on the 50 calibration sentences of bench/accuracy/sentences.py (kept
apart from the 120 held-out sentences of roundtrip.py that the accuracy figures use):

- sensitivity by role: the tensors of one role alone (the first matching pattern of
  ``DEFAULT_SQNR_OFFSETS``, grouped as the README describes them) are quantized at 24 dB each,
  every other tensor stays float32, and the mean cosine loss 1 − cos of the embeddings is
  recorded; the table gives it per role and as a multiple of the least sensitive role's.
- the word-embedding offset: the whole model at the default rate (38 dB plus the default
  offsets), the offset of ``*word_embeddings*`` swept alone; the minimum cosine per offset.

    python bench/minilm/roles.py [--lattice TCQ256 --lattice Z1] [--out bench/minilm]

Each lattice runs with the dither on (the default). In process, udnc_format.save / load.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import udnc_format
from udnc_format.format.constants import DEFAULT_SQNR_DB, DEFAULT_SQNR_OFFSETS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "accuracy"))
sys.path.insert(0, str(HERE.parent))
import roundtrip  # noqa: E402
import sentences  # noqa: E402
from report import publish, run_record  # noqa: E402

os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"

ROLE_SQNR_DB = 24.0
# The README's roles, each the patterns of DEFAULT_SQNR_OFFSETS it stands for.
ROLES: dict[str, tuple[str, ...]] = {
    "word embeddings": ("*word_embeddings*",),
    "other embeddings": ("*embed*", "*wte*", "*wpe*"),
    "queries and keys": ("*query*", "*key*", "*q_proj*", "*k_proj*"),
    "values": ("*value*", "*v_proj*"),
    "first feed-forward": ("*intermediate*", "*up_proj*", "*gate_proj*"),
    "attention and feed-forward outputs": ("*attention.output*", "*output.dense*", "*o_proj*"),
}
WORD_OFFSETS = (-10.0, -12.0, -14.0, -16.0, -18.0, -20.0, -22.0)


def role_of(name: str) -> str | None:
    """The role of the first pattern of DEFAULT_SQNR_OFFSETS that ``name`` matches."""
    for pattern, _ in DEFAULT_SQNR_OFFSETS:
        if fnmatch.fnmatchcase(name, pattern):
            return next(role for role, patterns in ROLES.items() if pattern in patterns)
    return None


class Embedder:
    """MiniLM with swappable weights, embedding the calibration sentences."""

    def __init__(self) -> None:
        import torch
        from safetensors.numpy import load_file
        from sentence_transformers import SentenceTransformer

        self.torch = torch
        directory = roundtrip.model_dir()
        self.model = SentenceTransformer(str(directory), device="cpu")
        self.module = self.model[0].auto_model
        self.state = load_file(str(directory / roundtrip.WEIGHTS))
        self.sentences = list(sentences.CALIBRATION)
        self.reference = self.embed()

    def embed(self) -> np.ndarray:
        vectors = self.model.encode(self.sentences, batch_size=32, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float64)

    def cosines(self, replaced: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {n: self.torch.from_numpy(np.array(a)) for n, a in replaced.items()}
        self.module.load_state_dict(tensors, strict=False)
        try:
            return roundtrip.cosine_per_row(self.reference, self.embed())
        finally:
            originals = {n: self.torch.from_numpy(self.state[n]) for n in replaced}
            self.module.load_state_dict(originals, strict=False)


def quantized(tensors: dict[str, np.ndarray], **options: Any) -> dict[str, np.ndarray]:
    return udnc_format.load(udnc_format.save(tensors, **options))


def measure(lattice: str) -> dict[str, Any]:
    embedder = Embedder()
    state = embedder.state
    roles: dict[str, Any] = {}
    for role in ROLES:
        names = [n for n in state if role_of(n) == role and state[n].ndim >= 2]
        if not names:
            continue
        part = {n: state[n] for n in names}
        cos = embedder.cosines(quantized(part, lattice=lattice, sqnr=ROLE_SQNR_DB, sqnr_offsets=()))
        roles[role] = {
            "tensors": len(names),
            "weights": int(sum(state[n].size for n in names)),
            "mean_loss": float(1.0 - cos.mean()),
        }
    least = min(r["mean_loss"] for r in roles.values())
    for r in roles.values():
        r["times_least"] = r["mean_loss"] / least
    sweep = []
    others = tuple(p for p in DEFAULT_SQNR_OFFSETS if p[0] != "*word_embeddings*")
    for offset in WORD_OFFSETS:
        options = {"sqnr_offsets": (("*word_embeddings*", offset), *others)}
        data = udnc_format.save(state, lattice=lattice, sqnr=DEFAULT_SQNR_DB, **options)
        cos = embedder.cosines(udnc_format.load(data))
        sweep.append(
            {
                "offset_db": offset,
                "bits_per_weight": 8 * len(data) / sum(a.size for a in state.values()),
                "min_cos": float(cos.min()),
                "mean_cos": float(cos.mean()),
            }
        )
    return {"roles": roles, "word_embedding_sweep": sweep}


def render(document: dict[str, Any]) -> str:
    lines = [
        "# all-MiniLM-L6-v2: the default role offsets, measured per lattice",
        "",
        f"- command: `{document['command']}`",
        f"- date: {document['date']}; {document['machine']}; load average "
        f"{document['load_start']} at start, {document['load_end']} at end",
        f"- {len(sentences.CALIBRATION)} calibration sentences (bench/accuracy/sentences.py), "
        "none of the 120 held-out ones; dither on; in process",
        f"- by role: that role's tensors alone at {ROLE_SQNR_DB:.0f} dB each, the rest float32; "
        "mean cosine loss 1 − cos, and as a multiple of the least sensitive role's",
        f"- word-embedding sweep: the whole model at {DEFAULT_SQNR_DB:.0f} dB with the default "
        "offsets, the `*word_embeddings*` offset alone varied",
        "",
    ]
    for lattice, result in document["lattices"].items():
        lines += [
            f"## {lattice}",
            "",
            "| role | tensors | weights | mean loss 1 − cos | × least sensitive |",
            "|---|---:|---:|---:|---:|",
        ]
        for role, r in result["roles"].items():
            lines.append(
                f"| {role} | {r['tensors']} | {r['weights']:,} | {r['mean_loss']:.2e} "
                f"| {r['times_least']:.1f} |"
            )
        lines += [
            "",
            "| word-embedding offset dB | bits/weight (file) | min cos | mean cos |",
            "|---:|---:|---:|---:|",
        ]
        for s in result["word_embedding_sweep"]:
            lines.append(
                f"| {s['offset_db']:+.0f} | {s['bits_per_weight']:.3f} | {s['min_cos']:.5f} "
                f"| {s['mean_cos']:.5f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lattice", action="append", help="default: TCQ256 and Z1")
    parser.add_argument("--out", type=Path, help="where roles.json and roles.md go")
    args = parser.parse_args(argv)
    document: dict[str, Any] = {**run_record("bench/minilm/roles.py", argv), "lattices": {}}
    started = time.perf_counter()
    for lattice in args.lattice or ["TCQ256", "Z1"]:
        document["lattices"][lattice] = measure(lattice)
    document["load_end"] = [round(x, 2) for x in os.getloadavg()]
    document["seconds"] = time.perf_counter() - started
    publish(args.out, "roles", document, render(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
