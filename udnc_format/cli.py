"""The ``udnc`` command: compress and decompress safetensors checkpoints, inspect and verify
.udnc files, and run the conformance suite against another implementation.

Exit codes: 0 success, 1 bad input or failed check (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import fields, replace
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from .checkpoint import Checkpoint
from .codec.reader import TensorInfo
from .coding.coders import DEFAULT_LEVELS, LEVEL_RANGES
from .format.constants import (
    DEFAULT_LATTICE,
    DEFAULT_PRNG,
    DEFAULT_RD_LATTICES,
    DEFAULT_RD_SQNRS,
    DEFAULT_SQNR_DB,
    DEFAULT_SQNR_OFFSETS,
    RD_ALLOCATIONS,
    VERSION_MAJOR,
    VERSION_MINOR,
    Coder,
    Lattice,
    Prng,
)
from .format.errors import MissingDependencyError, OptionError, UDNCError, WriteError
from .format.limits import DEFAULT_MAX_HEADER_BYTES, MACHINE_MEMORY
from .safetensors_io import TensorSpec

# The encoder's modules (codec.encoder, codec.importance, rate, rd, shards ...) are imported by
# the commands that use them: decompress, info and verify start without them
# (bench/speed/startup.md).
if TYPE_CHECKING:
    import numpy as np

    from .codec.encoder import EncodeOptions
    from .rd import RDPoint

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2
T = TypeVar("T")


def _progress(
    items: Iterable[T], sizes: Sequence[int], description: str, quiet: bool
) -> Iterator[T]:
    """Yield ``items`` while a progress bar (on stderr, only on a terminal) counts ``sizes``."""
    if quiet or not sys.stderr.isatty():  # no bar: tqdm (30 ms or more to import) is not needed
        for item, _ in zip(items, sizes, strict=False):
            yield item
        return
    from tqdm import tqdm

    with tqdm(
        total=sum(sizes),
        unit="B",
        unit_scale=True,
        desc=description,
        file=sys.stderr,
        leave=False,
    ) as bar:
        for item, size in zip(items, sizes, strict=False):
            yield item
            bar.update(size)


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"500M"``, ``"2G"``, ``"1.5G"`` or a number of bytes.

    >>> parse_size("2G"), parse_size("512k"), parse_size("1000")
    (2147483648, 524288, 1000)
    """
    number = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = number[-1:] if number[-1:] in _SIZE_UNITS else ""
    try:
        value = float(number[: len(number) - len(unit)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 500M or 2G)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value * _SIZE_UNITS[unit])


def parse_limit(text: str) -> int | None:
    """A limit in bytes (:func:`parse_size`), or ``none`` for no limit below the format's.

    >>> parse_limit("16M"), parse_limit("none")
    (16777216, None)
    """
    return None if text.strip().lower() == "none" else parse_size(text)


def _size_text(size: int | None) -> str:
    """``24G``, ``16M``, ``1.5K``; ``none`` for None."""
    if size is None:
        return "none"
    for unit in ("T", "G", "M", "K"):
        if size >= _SIZE_UNITS[unit]:
            return f"{size / _SIZE_UNITS[unit]:.3g}{unit}"
    return str(size)


def _offsets(items: Sequence[str], uniform: bool) -> tuple[tuple[str, float], ...]:
    offsets = []
    for item in items:
        pattern, sep, value = item.rpartition("=")
        try:
            offsets.append((pattern, float(value)))
        except ValueError:
            sep = ""
        if not sep or not pattern:
            raise OptionError("sqnr_offsets", f"{item!r}: expected GLOB=DB, e.g. '*lm_head*=6'")
    return (*offsets, *(() if uniform else DEFAULT_SQNR_OFFSETS))


def _metadata(items: Sequence[str]) -> dict[str, str]:
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise OptionError("metadata", f"{item!r}: expected KEY=VALUE")
        metadata[key] = value
    return metadata


# The flag of each EncodeOptions keyword where it is not ``--keyword``.
_FLAGS = {"dither": "--no-dither", "sqnr_offsets": "--sqnr-offset", "threads": "-j/--threads"}


def _flag(option: str) -> str:
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def check_compress(args: argparse.Namespace) -> None:
    """Every option of ``compress`` checked before anything is read or written (an invalid
    value is a usage error): the encoder options, as ``args.options``."""
    from .codec.encoder import EncodeOptions

    if args.processes and (args.bits is not None or args.shard_size):
        raise OptionError("processes", "--processes goes with neither --bits nor --shard-size")
    if args.processes and args.importance:
        raise OptionError("processes", "--processes does not go with --importance")
    args.options = EncodeOptions.from_kwargs(
        lattice=args.lattice,
        step=args.step,
        sqnr=args.sqnr,
        dither=not args.no_dither,
        seed=args.seed,
        coder=args.coder,
        level=args.level,
        prune=args.prune,
        rate_weight=args.rate_weight,
        codebook=args.codebook,
        prng=args.prng,
        threads=args.threads,
        keep=tuple(args.keep or ()),
        sqnr_offsets=_offsets(args.sqnr_offset or (), args.uniform),
        metadata=_metadata(args.metadata or ()),
    )


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise WriteError(f"{path}: exists; use --force to overwrite")


def cmd_compress(args: argparse.Namespace) -> int:
    from .checkpoint import index_path, write_shards
    from .codec.encoder import encode_tensors
    from .codec.importance import plan_importance
    from .codec.writer import write_file
    from .importance_file import load_importance
    from .rate import sqnr_for_bits
    from .safetensors_io import iter_checkpoint
    from .shards import compress_sharded

    source, target = Path(args.input), Path(args.output)
    sharded = args.shard_size or args.processes
    _check_output(index_path(target) if sharded else target, args.force)
    specs, metadata, tensors = iter_checkpoint(source)
    for pattern in args.keep or ():
        if not args.quiet and not any(fnmatch.fnmatchcase(s.name, pattern) for s in specs):
            print(f"udnc compress: warning: --keep {pattern!r} matches no tensor", file=sys.stderr)
    options: EncodeOptions = args.options
    options = replace(options, metadata=MappingProxyType({**metadata, **options.metadata}))
    if args.importance:  # one pass to check the statistics and plan the allocation
        stats = load_importance(args.importance)
        pairs = _progress(
            iter_checkpoint(source)[2], [s.nbytes for s in specs], "planning", args.quiet
        )
        plan = plan_importance(stats, pairs, options, allocate=not args.importance_no_allocation)
        options = replace(options, importance=plan)
    sizes = [spec.nbytes for spec in specs]
    if args.bits is not None:

        def report(sqnr: float, rate: float) -> None:
            if not args.quiet:
                print(f"rate search: {sqnr:.2f} dB -> {rate:.3f} bits/weight", file=sys.stderr)

        def passes() -> Iterator[tuple[str, np.ndarray]]:
            return _progress(iter_checkpoint(source)[2], sizes, "measuring", args.quiet)

        sqnr = sqnr_for_bits(passes, options, args.bits, report)
        if sqnr <= 0:
            print(
                f"udnc compress: warning: --bits {args.bits:g} needs an SQNR of {sqnr:.1f} dB: "
                "the quantization noise is louder than the weights",
                file=sys.stderr,
            )
        options = replace(options, sqnr=sqnr)
    if args.processes:
        kwargs = {f.name: getattr(options, f.name) for f in fields(options)}
        # Plain values for the worker processes; threads are set per process.
        kwargs = {k: dict(v) if isinstance(v, Mapping) else v for k, v in kwargs.items()}
        kwargs["threads"] = args.threads or None
        target = compress_sharded(source, target, processes=args.processes, **kwargs)[-1]
    elif args.shard_size:
        tensors = _progress(tensors, sizes, "compress", args.quiet)
        encoded = encode_tensors(tensors, options)
        target = write_shards(encoded, options.metadata, target, args.shard_size)[-1]
    else:
        tensors = _progress(tensors, sizes, "compress", args.quiet)
        write_file(encode_tensors(tensors, options), options.metadata, target)
    if not args.quiet:
        with Checkpoint(target) as handle:
            quantized = sum(handle.info(name).encoding == "lattice" for name in handle)
            size = handle.file_bytes
            shards = f" in {len(handle.files)} shards" if len(handle.files) > 1 else ""
            # The tensors' bytes, as `udnc info` counts them (the safetensors header aside).
            tensor_bytes = sum(sizes)
            print(
                f"{target}: {len(handle)} tensors ({quantized} quantized){shards}, "
                f"{tensor_bytes:,} tensor bytes -> {size:,} file bytes, compression ratio "
                f"{tensor_bytes / max(size, 1):.2f}"
            )
    return EXIT_OK


def cmd_decompress(args: argparse.Namespace) -> int:
    from .safetensors_io import write_safetensors

    source, target = Path(args.input), Path(args.output)
    _check_output(target, args.force)
    with _open(source, args) as handle:
        specs = [TensorSpec(e.name, e.dtype, e.shape) for e in handle.entries()]
        names = _progress(
            [s.name for s in specs], [s.nbytes for s in specs], "decompress", args.quiet
        )
        tensors = (tensor for _, tensor in handle.iter_tensors(names))
        write_safetensors(target, specs, tensors, handle.metadata())
    if not args.quiet:
        print(f"{target}: {len(specs)} tensors")
    return EXIT_OK


def _open(path: Path, args: argparse.Namespace) -> Checkpoint:
    """The checkpoint at ``path``, read with the command's limits and threads."""
    return Checkpoint(
        path,
        max_tensor_bytes=getattr(args, "max_tensor_bytes", MACHINE_MEMORY),
        max_header_bytes=args.max_header_bytes,
        max_total_bytes=getattr(args, "max_total_bytes", None),
        threads=getattr(args, "threads", None),
    )


def _info_dict(info: TensorInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "dtype": info.dtype,
        "shape": list(info.shape),
        "encoding": info.encoding,
        "lattice": info.lattice,
        "scale": info.scale,
        # The step s·V^(1/n) overflows for a scale near the largest binary64 (the scale, which
        # the file stores, never does): JSON has no infinity, so it is null then.
        "step": info.step if info.step is None or math.isfinite(info.step) else None,
        "dither": info.dither,
        "prng": info.prng,
        "seed": info.seed,
        "pruned": info.pruned,
        "codebook_size": info.codebook_size,
        "coder": info.coder,
        "stored_bytes": info.stored_bytes,
        "source_bytes": info.source_bytes,
        "bits_per_weight": info.bits_per_weight,
    }


def shown(text: str) -> str:
    r"""Text read from a file, its unprintable characters escaped (``\x1b``, ``\u202e``): a
    tensor name or metadata value cannot drive the terminal or reorder what is shown.

    >>> print(shown("w\x1b[2Jeight\u202e"))
    w\x1b[2Jeight\u202e
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.input)
    with _open(path, args) as handle:
        infos = [handle.info(name) for name in handle]
        metadata = handle.metadata()
        versions = sorted({f"{f.header.major}.{f.header.minor}" for f in handle.files})
        file_size, shards = handle.file_bytes, len(handle.files)
    source = sum(i.source_bytes for i in infos)
    quantized = [i for i in infos if i.encoding == "lattice"]
    quantized_weights = sum(math.prod(i.shape) for i in quantized)
    weights = sum(math.prod(i.shape) for i in infos)
    totals = {
        "file_bytes": file_size,
        "source_bytes": source,
        "ratio": source / file_size if file_size else 0.0,
        "tensors": len(infos),
        "quantized": len(quantized),
        "bits_per_weight": 8 * file_size / weights if weights else 0.0,
        "quantized_bits_per_weight": (
            8 * sum(i.stored_bytes for i in quantized) / quantized_weights
            if quantized_weights
            else 0.0
        ),
    }
    if args.json:
        document = {
            "version": versions[0] if len(versions) == 1 else versions,
            "shards": shards,
            "metadata": metadata,
            "tensors": [_info_dict(i) for i in infos],
            "totals": totals,
        }
        print(json.dumps(document, indent=2, allow_nan=False))
        return EXIT_OK
    in_shards = f" in {shards} shards" if shards > 1 else ""
    print(f"{path}: .udnc {', '.join(versions)}, {len(infos)} tensors{in_shards}")
    width = max([len("name"), *(len(shown(i.name)) for i in infos)])
    header = f"{'name':{width}} {'dtype':6} {'shape':18} {'lattice':7} {'step':>10} {'dither':6} "
    print(header + f"{'bits/w':>7} {'bytes':>10} coder")
    for i in infos:
        shape = "x".join(map(str, i.shape)) or "scalar"
        lattice = i.lattice or "-"
        step = f"{i.step:.4g}" if i.step is not None else "-"
        # the generator's short name: "4x64" for Philox4x64-10 (spec §5.4), "4x32" for §5.1
        dither = (i.prng or "no").removeprefix("philox").removesuffix("_10")
        dither = dither if i.encoding == "lattice" else "-"
        print(
            f"{shown(i.name):{width}} {i.dtype:6} {shape:18} {lattice:7} {step:>10} {dither:6} "
            f"{i.bits_per_weight:7.3f} {i.stored_bytes:>10,} {i.coder}"
        )
    print(
        f"total: {source:,} tensor bytes -> {file_size:,} file bytes "
        f"({totals['quantized_bits_per_weight']:.3f} bits per quantized weight), "
        f"compression ratio {totals['ratio']:.2f}"
    )
    for key, value in metadata.items():
        print(f"metadata {shown(key)} = {shown(value)}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    path = Path(args.input)
    with _open(path, args) as handle:
        sizes = [entry.source_bytes for entry in handle.entries()]
        for _ in handle.iter_tensors(_progress(handle.keys(), sizes, "verify", args.quiet)):
            pass
        count = len(handle)
    if not args.quiet:
        print(f"{path}: OK ({count} tensors, every checksum verified)")
    return EXIT_OK


def run_conformance(argv: Sequence[str]) -> int:
    """``udnc conformance ARGS``: the conformance runner with its own command line."""
    # Imported here: compressing and decompressing do not need the suite.
    try:
        from udnc_conformance.runner import main as runner_main
    except ImportError as exc:
        print(f"udnc conformance: the conformance suite is not installed: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return runner_main(argv, prog="udnc conformance")


def _rd_table(points: Sequence[RDPoint]) -> list[str]:
    width = max([len("curve"), *(len(p.curve) for p in points)])
    lines = [
        f"{'curve':{width}} {'target dB':>9} {'SQNR dB':>8} {'bits/weight':>11} {'ratio':>6} "
        f"{'step':>10} {'encode s':>8} {'decode s':>8}"
    ]
    for p in points:
        step = f"{p.step:.4g}" if p.step is not None else "per tensor"
        lines.append(
            f"{p.curve:{width}} {p.target_sqnr:9.2f} {p.sqnr:8.2f} {p.bits_per_weight:11.4f} "
            f"{8 * p.source_bytes / (p.bits_per_weight * p.weights):6.2f} {step:>10} "
            f"{p.encode_seconds:8.2f} {p.decode_seconds:8.2f}"
        )
    return lines


def cmd_rd(args: argparse.Namespace) -> int:
    from .rd import curves_of, plot_curves, rd_sweep, settings_for

    # Fail before the sweep, not after it: the output must be writable and matplotlib present.
    if args.plot is not None:
        _check_output(Path(args.plot), args.force)
        if importlib.util.find_spec("matplotlib") is None:
            raise MissingDependencyError("--plot needs matplotlib: pip install 'udnc[plot]'")
    dithers = {"on": (True,), "off": (False,), "both": (True, False)}[args.dither]
    settings = settings_for(args.lattice or DEFAULT_RD_LATTICES, dithers, args.sqnr)

    def progress(items: Iterator[T], sizes: Sequence[int], description: str) -> Iterator[T]:
        return _progress(items, sizes, description, args.quiet)

    points = []
    for point in rd_sweep(
        args.input,
        settings,
        allocation=args.allocation,
        coder=args.coder,
        level=args.level,
        workdir=args.work_dir,
        progress=progress,
    ):
        points.append(point)
        if not args.quiet:
            print(
                f"rd: {point.curve} at {point.target_sqnr:g} dB: {point.bits_per_weight:.4f} "
                f"bits/weight, {point.sqnr:.2f} dB",
                file=sys.stderr,
            )
    if args.plot is not None:
        title = f"{Path(args.input).name}: rate-distortion of udnc ({args.coder})"
        plot_curves(curves_of(points), args.plot, title)
    tensors, weights = points[0].tensors, points[0].weights
    if args.json:
        document = {
            "input": str(args.input),
            "tensors": tensors,
            "weights": weights,
            "source_bytes": points[0].source_bytes,
            "allocation": args.allocation,
            "coder": args.coder,
            "level": args.level,
            "points": [p.as_dict() for p in points],
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    allocation = {
        "step": "one global step",
        "sqnr": "one SQNR per tensor",
        "roles": "per-tensor SQNR with the role offsets",
    }[args.allocation]
    print(
        f"{args.input}: {weights:,} weights in {tensors} quantizable tensors; {allocation}; "
        f"coder {args.coder}; bits/weight = 8 x .udnc file size / weights, SQNR over all of them"
    )
    print("\n".join(_rd_table(points)))
    if args.plot is not None:
        print(f"plot: {args.plot}")
    return EXIT_OK


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _bits(text: str) -> float:
    value = _positive_float(text)
    if not 0.05 < value < 32:
        raise argparse.ArgumentTypeError(f"must lie in (0.05, 32): {text!r}")
    return value


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}: {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _add_rd_command(commands: Any, common: argparse.ArgumentParser) -> None:
    rd = commands.add_parser(
        "rd",
        parents=[common],
        help="rate-distortion curves of a checkpoint: bits/weight against global SQNR",
        description="Compress the quantizable tensors of a checkpoint at several settings into "
        "real .udnc files (in a temporary directory), decode them, and report bits per weight "
        "(8 x file size / weights) against the global SQNR 10 log10(sum w^2 / sum (w - w')^2) "
        "over all of them, with encode and decode times.",
        formatter_class=_DefaultsFormatter,
    )
    rd.add_argument("input", help="a .safetensors file or a sharded *.safetensors.index.json")
    rd.add_argument(
        "--lattice",
        action="append",
        choices=[m.name for m in Lattice],
        type=str.upper,
        help="a lattice to sweep (repeatable; default: Z1 and E8)",
    )
    rd.add_argument(
        "--dither", default="both", choices=["on", "off", "both"], help="dither settings to sweep"
    )
    rd.add_argument(
        "--sqnr",
        type=float,
        nargs="+",
        default=list(DEFAULT_RD_SQNRS),
        metavar="DB",
        help="target global SQNRs in dB",
    )
    rd.add_argument(
        "--allocation",
        default="step",
        choices=list(RD_ALLOCATIONS),
        help="'step': one step for every tensor (equal noise per weight); 'sqnr': the same SQNR "
        "for every tensor; 'roles': compress's per-role SQNR offsets around the target",
    )
    rd.add_argument(
        "--coder", default="zstd", choices=[m.name.lower() for m in Coder], type=str.lower
    )
    rd.add_argument("--level", type=int, help="coder level")
    rd.add_argument("--json", action="store_true", help="machine-readable output")
    rd.add_argument("--plot", metavar="PNG", help="draw the curves into this PNG (matplotlib)")
    rd.add_argument("-f", "--force", action="store_true", help="overwrite the plot")
    rd.add_argument("--work-dir", metavar="DIR", help="where the temporary .udnc files go")
    rd.set_defaults(run=cmd_rd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="udnc", description="Universal deep neural network compression (.udnc files)."
    )
    parser.add_argument("--version", action="version", version=version_text())
    quiet_help = "print nothing on success"
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    common = argparse.ArgumentParser(add_help=False)  # -q is also accepted after the command
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help
    )
    limits = argparse.ArgumentParser(add_help=False)
    limits.add_argument(
        "--max-tensor-bytes",
        type=parse_limit,
        default=MACHINE_MEMORY,
        metavar="SIZE",
        help="reject (exit 1) a tensor that declares more decoded bytes, e.g. 1G, before "
        f"anything is allocated for it (default: this machine's memory, "
        f"{_size_text(MACHINE_MEMORY)}; 'none': only the format's limits; SECURITY.md)",
    )
    limits.add_argument(
        "--max-total-bytes",
        type=parse_limit,
        metavar="SIZE",
        help="reject (exit 1) a file whose tensors together declare more decoded bytes, e.g. "
        "8G, before any is decoded: bounds the time a file can take (default: none)",
    )
    header_limit = argparse.ArgumentParser(add_help=False)
    header_limit.add_argument(
        "--max-header-bytes",
        type=parse_limit,
        default=DEFAULT_MAX_HEADER_BYTES,
        metavar="SIZE",
        help="reject (exit 1) a file whose header is longer, before parsing it (default: "
        f"{_size_text(DEFAULT_MAX_HEADER_BYTES)}; 'none': the format's 256M)",
    )
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument(
        "-j",
        "--threads",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="threads that code the chunks of a tensor in parallel (default: 0, every core); "
        "the output does not depend on it",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compress = commands.add_parser(
        "compress",
        parents=[common, threads],
        help="safetensors -> .udnc",
        formatter_class=_DefaultsFormatter,
    )
    compress.add_argument("input", help="a .safetensors file or a sharded *.safetensors.index.json")
    compress.add_argument("-o", "--output", required=True, help="the .udnc file to write")
    rate = compress.add_mutually_exclusive_group()
    rate.add_argument(
        "--sqnr",
        type=_positive_float,
        help=f"SQNR target in dB per quantized tensor, before the role offsets "
        f"(default {DEFAULT_SQNR_DB:g})",
    )
    rate.add_argument("--step", type=float, help="lattice step Δ for every quantized tensor")
    rate.add_argument(
        "--bits",
        type=_bits,
        help="average coded bits per quantized weight, in (0.05, 32), found by search on the "
        "real coded size",
    )
    lattices = [m.name for m in Lattice]
    compress.add_argument(
        "--lattice",
        default=DEFAULT_LATTICE.name,
        choices=lattices,
        type=str.upper,
        help=f"quantization lattice (default {DEFAULT_LATTICE.name}; --codebook, --rate-weight "
        "and fine-tuning need another, e.g. Z1)",
    )
    compress.add_argument(
        "--sqnr-offset",
        action="append",
        metavar="GLOB=DB",
        help="SQNR offset for matching tensors, before the default role offsets (repeatable)",
    )
    compress.add_argument(
        "--uniform",
        action="store_true",
        help="one SQNR for every tensor: no default role offsets (embeddings, attention, ...)",
    )
    compress.add_argument("--no-dither", action="store_true", help="plain lattice quantization")
    compress.add_argument("--seed", type=int, default=0, help="dither seed (0 .. 2^64-1)")
    compress.add_argument(
        "--prng",
        default=DEFAULT_PRNG.name.lower(),
        choices=[m.name.lower() for m in Prng if m is not Prng.NONE],
        type=str.lower,
        help="dither generator (philox4x32_10: files that decoders of format 1.0 read)",
    )
    coders = [m.name.lower() for m in Coder]
    compress.add_argument(
        "--coder", default="zstd", choices=coders, type=str.lower, help="universal coder"
    )
    levels = ", ".join(
        f"{coder.name.lower()} {DEFAULT_LEVELS[coder]}"
        for coder in Coder
        if LEVEL_RANGES[coder][1] > LEVEL_RANGES[coder][0]
    )
    compress.add_argument(
        "--level", type=int, help=f"coder level (default: {levels}; raw and rans take none)"
    )
    compress.add_argument("--prune", type=float, default=0.0, help="fraction pruned per tensor")
    compress.add_argument(
        "--rate-weight",
        type=float,
        default=0.0,
        metavar="LAMBDA",
        help="cubic lattices: pick points of least error + LAMBDA x bits, not the nearest "
        "(try 0.2 below about 3 bits per weight; default 0)",
    )
    compress.add_argument(
        "--importance",
        metavar="FILE",
        help="importance statistics (.safetensors, docs/importance.md): steps allocated by "
        "importance, errors weighted and fed forward, pruning by importance",
    )
    compress.add_argument(
        "--importance-no-allocation",
        action="store_true",
        help="with --importance: keep the plain steps (--sqnr and role offsets); quantize with "
        "the statistics only",
    )
    compress.add_argument("--codebook", action="store_true", help="store fitted shared vectors")
    compress.add_argument("--keep", action="append", metavar="GLOB", help="keep tensors lossless")
    compress.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="a metadata entry added to the input's (repeatable; wins over the input's own)",
    )
    compress.add_argument(
        "--shard-size",
        type=parse_size,
        metavar="SIZE",
        help="split the output into shards of about SIZE (e.g. 2G) with an index",
    )
    compress.add_argument(
        "--processes",
        type=_positive_int,
        metavar="N",
        help="one .udnc shard per input shard, compressed in N processes, with an index",
    )
    compress.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    compress.set_defaults(run=cmd_compress, check=check_compress, parser=compress)

    decompress = commands.add_parser(
        "decompress", parents=[common, limits, header_limit, threads], help=".udnc -> safetensors"
    )
    decompress.add_argument("input", help="a .udnc file or a sharded *.udnc.index.json")
    decompress.add_argument("-o", "--output", required=True)
    decompress.add_argument("-f", "--force", action="store_true", help="overwrite the output")
    decompress.set_defaults(run=cmd_decompress)

    info = commands.add_parser(
        "info", parents=[common, header_limit], help="how each tensor is stored"
    )
    info.add_argument("input")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(run=cmd_info)

    verify = commands.add_parser(
        "verify",
        parents=[common, limits, header_limit, threads],
        help="check every checksum and decode everything",
    )
    verify.add_argument("input")
    verify.set_defaults(run=cmd_verify)

    _add_rd_command(commands, common)

    # Listed here; its options are the runner's own (udnc_conformance.runner.build_parser), and
    # main hands it everything after the word (udnc conformance --help shows them).
    commands.add_parser(
        "conformance",
        help="run the conformance suite against a decoder or an encoder",
        add_help=False,
    )
    return parser


class Terminated(BaseException):
    """SIGTERM, raised where the command is running so that it unwinds like Ctrl-C: temporary
    files are removed and the output is left as it was (a BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` swallows it)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def version_text() -> str:
    """``udnc --version``: the package and the format versions it writes and reads."""
    from . import __version__

    newest = f"{VERSION_MAJOR}.{VERSION_MINOR}"
    return (
        f"udnc {__version__}: writes .udnc format {newest}, reads every {VERSION_MAJOR}.x "
        f"(features up to {newest})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``udnc`` command."""
    words = sys.argv[1:] if argv is None else list(argv)
    if words[:1] == ["conformance"]:
        command, run = "conformance", partial(run_conformance, words[1:])
    else:
        args = build_parser().parse_args(words)
        if hasattr(args, "check"):
            try:
                args.check(args)
            except OptionError as exc:  # an invalid option value: a usage error (exit 2)
                args.parser.error(f"{_flag(exc.option)}: {exc}")
        command, run = args.command, partial(args.run, args)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return int(run())
    except UDNCError as exc:
        print(f"udnc {command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"udnc {command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print(f"udnc {command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BAD_INPUT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
