"""The ``udnc`` command: every command and option, sharded inputs and outputs, and the failure
paths (exit 1 with one line naming the file, no traceback, nothing left behind)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file as st_load_file
from safetensors.numpy import save_file as st_save_file

import udnc_format
from udnc_format.cli import main, parse_size
from udnc_format.format.constants import DEFAULT_LATTICE, DEFAULT_SQNR_OFFSETS

RNG = np.random.default_rng(7)
WEIGHTS = {
    "encoder.dense.weight": RNG.laplace(scale=0.05, size=(96, 128)).astype(np.float32),
    "encoder.dense.bias": RNG.normal(size=96).astype(np.float32),
    "head.weight": RNG.normal(scale=0.1, size=(64, 64)).astype(np.float16),
    "embed.weight": RNG.normal(scale=0.02, size=(200, 32)).astype(ml_dtypes.bfloat16),
    "step": np.array(12, dtype=np.int64),
}
METADATA = {"format": "pt", "license": "MIT"}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    st_save_file(WEIGHTS, str(path), metadata=METADATA)
    return path


def run(*args: object) -> int:
    return main([str(a) for a in args])


def sqnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    ref, dec = reference.astype(np.float64), decoded.astype(np.float64)
    return 10 * math.log10(np.sum(ref**2) / np.sum((ref - dec) ** 2))


def quantized_bits(path: Path) -> float:
    with udnc_format.open(path) as f:
        infos = [f.info(name) for name in f if f.info(name).encoding == "lattice"]
    return 8 * sum(i.stored_bytes for i in infos) / sum(math.prod(i.shape) for i in infos)


def test_compress_decompress_round_trip_keeps_names_dtypes_and_metadata(checkpoint, tmp_path):
    packed, restored = tmp_path / "m.udnc", tmp_path / "back.safetensors"
    assert run("compress", checkpoint, "-o", packed, "-q") == 0
    assert run("decompress", packed, "-o", restored, "-q") == 0
    back = st_load_file(str(restored))
    assert set(back) == set(WEIGHTS)
    for name, original in WEIGHTS.items():
        assert back[name].dtype == original.dtype and back[name].shape == original.shape
    assert np.array_equal(back["encoder.dense.bias"], WEIGHTS["encoder.dense.bias"])
    assert back["step"] == 12
    with udnc_format.open(packed) as f:
        assert f.metadata() == METADATA
        assert f.info("embed.weight").dtype == "BF16"
    for name in ("encoder.dense.weight", "head.weight", "embed.weight"):
        assert sqnr(WEIGHTS[name], back[name]) > 25


@pytest.mark.parametrize("target", [18.0, 27.5])
def test_sqnr_lands_within_a_third_of_a_db_per_tensor(checkpoint, tmp_path, target):
    packed = tmp_path / "m.udnc"
    assert run("compress", checkpoint, "-o", packed, "--sqnr", target, "--uniform", "-q") == 0
    decoded = udnc_format.load_file(packed)
    for name in ("encoder.dense.weight", "head.weight", "embed.weight"):
        assert abs(sqnr(WEIGHTS[name], decoded[name]) - target) <= 0.3, name


def test_sqnr_offsets_shift_matching_tensors(checkpoint, tmp_path):
    """--sqnr-offset applies before the default role offsets (*embed* here)."""
    packed = tmp_path / "m.udnc"
    options = ["--sqnr", "30", "--sqnr-offset", "head.*=-8", "-q"]
    assert run("compress", checkpoint, "-o", packed, *options) == 0
    decoded = udnc_format.load_file(packed)
    embed_offset = dict(DEFAULT_SQNR_OFFSETS)["*embed*"]
    assert abs(sqnr(WEIGHTS["head.weight"], decoded["head.weight"]) - 22) <= 0.3
    assert abs(sqnr(WEIGHTS["embed.weight"], decoded["embed.weight"]) - 30 - embed_offset) <= 0.3
    assert abs(sqnr(WEIGHTS["encoder.dense.weight"], decoded["encoder.dense.weight"]) - 30) <= 0.3
    with pytest.raises(SystemExit) as exited:  # a usage error
        run("compress", checkpoint, "-o", packed, "-f", "--sqnr-offset", "nonsense")
    assert exited.value.code == 2


@pytest.mark.parametrize("bits", [2.0, 3.5, 5.0])
def test_bits_lands_within_two_percent(checkpoint, tmp_path, bits):
    packed = tmp_path / "m.udnc"
    assert run("compress", checkpoint, "-o", packed, "--bits", bits, "-q") == 0
    assert abs(quantized_bits(packed) - bits) <= 0.02 * bits


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        (["--lattice", "E8", "--coder", "lzma"], {"lattice": "E8", "coder": "lzma"}),
        (["--lattice", "d4", "--coder", "bz2", "--level", "5"], {"lattice": "D4", "coder": "bz2"}),
        (["--lattice", "A2", "--coder", "deflate"], {"lattice": "A2", "coder": "deflate"}),
        (["--no-dither"], {"dither": False}),
        (["--seed", "99"], {"seed": 99, "dither": True}),
        (["--step", "0.01"], {"lattice": DEFAULT_LATTICE.name}),
        (["--prune", "0.3"], {"pruned": True}),
        (["--codebook", "--lattice", "Z1", "--sqnr", "15"], {"lattice": "Z1"}),
    ],
)
def test_compress_options_are_declared_in_the_file(checkpoint, tmp_path, options, expect):
    packed = tmp_path / "m.udnc"
    assert run("compress", checkpoint, "-o", packed, "-q", *options) == 0
    with udnc_format.open(packed) as f:
        info = f.info("encoder.dense.weight")
        for key, value in expect.items():
            assert getattr(info, key) == value
        if "--step" in options:
            assert info.step == pytest.approx(0.01)
        if "--codebook" in options:
            assert info.codebook_size > 0
        if "--prune" in options:
            size = WEIGHTS["encoder.dense.weight"].size
            pruned = np.count_nonzero(f.get_tensor("encoder.dense.weight") == 0)
            assert pruned >= math.floor(0.3 * size)


def test_keep_and_metadata_options(checkpoint, tmp_path):
    packed = tmp_path / "m.udnc"
    args = ["--keep", "head.*", "--keep", "embed.*", "--metadata", "origin=test"]
    assert run("compress", checkpoint, "-o", packed, "-q", *args) == 0
    with udnc_format.open(packed) as f:
        assert f.info("head.weight").encoding == "passthrough"
        assert f.info("embed.weight").encoding == "passthrough"
        assert f.info("encoder.dense.weight").encoding == "lattice"
        assert f.metadata() == {**METADATA, "origin": "test"}
        assert np.array_equal(f.get_tensor("head.weight"), WEIGHTS["head.weight"])


def test_info_json_reports_every_tensor_and_the_ratio(checkpoint, tmp_path, capsys):
    packed = tmp_path / "m.udnc"
    run("compress", checkpoint, "-o", packed, "-q")
    capsys.readouterr()
    assert run("info", packed, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    tensors = {t["name"]: t for t in document["tensors"]}
    assert set(tensors) == set(WEIGHTS)
    dense = tensors["encoder.dense.weight"]
    assert dense["lattice"] == DEFAULT_LATTICE.name and dense["dither"]
    assert dense["coder"] == "zstd"
    assert dense["prng"] == "philox4x64_10"
    assert dense["bits_per_weight"] > 0 and dense["step"] > 0
    totals = document["totals"]
    assert totals["file_bytes"] == packed.stat().st_size
    assert totals["ratio"] == pytest.approx(totals["source_bytes"] / totals["file_bytes"])
    assert document["metadata"] == METADATA


def test_info_table_names_lattice_step_and_ratio(checkpoint, tmp_path, capsys):
    packed = tmp_path / "m.udnc"
    run("compress", checkpoint, "-o", packed, "-q", "--lattice", "E8")
    capsys.readouterr()
    assert run("info", packed) == 0
    out = capsys.readouterr().out
    assert "encoder.dense.weight" in out and "E8" in out and "compression ratio" in out


@pytest.mark.parametrize(
    ("options", "shown"),
    [((), "4x64"), (("--prng", "philox4x32_10"), "4x32"), (("--no-dither",), "no")],
)
def test_info_table_names_the_dither_generator(checkpoint, tmp_path, capsys, options, shown):
    packed = tmp_path / "m.udnc"
    run("compress", checkpoint, "-o", packed, "-q", *options)
    capsys.readouterr()
    assert run("info", packed) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "encoder.dense.weight" in x)
    assert line.split()[5] == shown


def test_verify_passes_a_sound_file_and_fails_a_damaged_one(checkpoint, tmp_path, capsys):
    packed = tmp_path / "m.udnc"
    run("compress", checkpoint, "-o", packed, "-q")
    assert run("verify", packed) == 0
    data = bytearray(packed.read_bytes())
    data[-10] ^= 0x40  # inside the last chunk
    packed.write_bytes(bytes(data))
    capsys.readouterr()
    assert run("verify", packed) == 1
    err = capsys.readouterr().err
    assert str(packed) in err and "CRC" in err and len(err.strip().splitlines()) == 1


def test_sharded_input_goes_into_one_file(tmp_path):
    names = sorted(WEIGHTS)
    shards = {
        "model-00001-of-00002.safetensors": names[:2],
        "model-00002-of-00002.safetensors": names[2:],
    }
    weight_map = {}
    for shard, members in shards.items():
        st_save_file({n: WEIGHTS[n] for n in members}, str(tmp_path / shard), metadata=METADATA)
        weight_map.update(dict.fromkeys(members, shard))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    packed = tmp_path / "m.udnc"
    assert run("compress", index, "-o", packed, "-q") == 0
    assert set(udnc_format.load_file(packed)) == set(WEIGHTS)


def test_shard_size_splits_the_output_and_every_command_reads_the_index(checkpoint, tmp_path):
    target = tmp_path / "out" / "m.udnc"
    target.parent.mkdir()
    assert run("compress", checkpoint, "-o", target, "--shard-size", "4K", "-q") == 0
    index = tmp_path / "out" / "m.udnc.index.json"
    shards = sorted(p.name for p in target.parent.glob("m-*.udnc"))
    assert len(shards) >= 2 and shards[0].endswith(f"-of-{len(shards):05d}.udnc")
    assert set(json.loads(index.read_text())["weight_map"]) == set(WEIGHTS)
    assert run("verify", index, "-q") == 0
    assert run("info", index, "--json", "-q") == 0
    restored = tmp_path / "back.safetensors"
    assert run("decompress", index, "-o", restored, "-q") == 0
    assert set(st_load_file(str(restored))) == set(WEIGHTS)
    assert not list(target.parent.glob(".*tmp"))


def test_parse_size_accepts_units():
    assert parse_size("1.5K") == 1536 and parse_size("2MiB") == 2 << 20


# ----------------------------------------------------------------------------------------------
# Failure paths: exit 1, one line on stderr naming the file, no traceback, nothing left behind.


def assert_one_line_error(capsys, *fragments: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_missing_input(tmp_path, capsys):
    missing = tmp_path / "nope.safetensors"
    assert run("compress", missing, "-o", tmp_path / "m.udnc") == 1
    assert_one_line_error(capsys, str(missing), "no such file")
    assert run("decompress", tmp_path / "nope.udnc", "-o", tmp_path / "x.safetensors") == 1
    assert run("info", tmp_path / "nope.udnc") == 1
    assert run("verify", tmp_path / "nope.udnc") == 1


def test_not_a_safetensors_file(tmp_path, capsys):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"this is not a checkpoint at all")
    assert run("compress", bogus, "-o", tmp_path / "m.udnc") == 1
    assert_one_line_error(capsys, str(bogus))
    assert not (tmp_path / "m.udnc").exists()


def test_truncated_safetensors_input(checkpoint, tmp_path, capsys):
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[:-100])
    assert run("compress", truncated, "-o", tmp_path / "m.udnc") == 1
    assert_one_line_error(capsys, str(truncated))
    assert (
        list(tmp_path.iterdir()) == sorted([checkpoint, truncated])
        or not (tmp_path / "m.udnc").exists()
    )


def test_truncated_udnc_input(checkpoint, tmp_path, capsys):
    packed = tmp_path / "m.udnc"
    run("compress", checkpoint, "-o", packed, "-q")
    packed.write_bytes(packed.read_bytes()[:-50])
    restored = tmp_path / "back.safetensors"
    assert run("decompress", packed, "-o", restored) == 1
    assert_one_line_error(capsys, str(packed))
    assert not restored.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_output_is_not_overwritten_without_force(checkpoint, tmp_path, capsys):
    packed = tmp_path / "m.udnc"
    packed.write_bytes(b"precious")
    assert run("compress", checkpoint, "-o", packed) == 1
    assert_one_line_error(capsys, str(packed), "--force")
    assert packed.read_bytes() == b"precious"
    assert run("compress", checkpoint, "-o", packed, "--force", "-q") == 0
    assert packed.read_bytes()[:5] == b"\x89UDNC"


def test_unwritable_directory(checkpoint, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes into read-only directories; /proc refuses new files
        target = Path("/proc/udnc-test.udnc")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "m.udnc"
    try:
        assert run("compress", checkpoint, "-o", target) == 1
        assert_one_line_error(capsys, str(target.parent))
    finally:
        if target.parent != Path("/proc"):
            target.parent.chmod(0o700)


def test_missing_output_directory(checkpoint, tmp_path, capsys):
    target = tmp_path / "no" / "such" / "dir" / "m.udnc"
    assert run("compress", checkpoint, "-o", target) == 1
    assert_one_line_error(capsys, str(target))


def test_failure_during_encoding_leaves_nothing_and_keeps_the_input(tmp_path, capsys):
    source = tmp_path / "nan.safetensors"
    st_save_file(
        {"ok": np.ones((64, 64), np.float32), "bad": np.full((64, 64), np.nan, np.float32)},
        str(source),
    )
    before = source.read_bytes()
    assert run("compress", source, "-o", tmp_path / "m.udnc") == 1
    assert_one_line_error(capsys, "'bad'", "NaN")
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


def test_usage_errors_exit_2(checkpoint, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run("compress", checkpoint)  # no -o
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        run("compress", checkpoint, "-o", tmp_path / "m.udnc", "--lattice", "B7")
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        run("compress", checkpoint, "-o", tmp_path / "m.udnc", "--sqnr", "20", "--bits", "3")
    assert exit_info.value.code == 2


def test_console_script_runs_as_a_process(checkpoint, tmp_path):
    """The installed entry point, as a user runs it: stdout quiet with -q, exit codes real."""
    packed = tmp_path / "m.udnc"
    command = [sys.executable, "-m", "udnc_format.cli"]
    done = subprocess.run(
        [*command, "compress", str(checkpoint), "-o", str(packed), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    done = subprocess.run(
        [*command, "verify", str(tmp_path / "missing.udnc")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "missing.udnc" in done.stderr


# ----------------------------------------------------------------------------------------------
# Untrusted indexes and inputs: shards stay in the index's directory, only regular files are
# read, and a malformed index fails in one line.


@pytest.fixture
def sharded(checkpoint, tmp_path) -> Path:
    """A sharded .udnc output: its index in tmp_path/out."""
    target = tmp_path / "out" / "m.udnc"
    target.parent.mkdir()
    assert run("compress", checkpoint, "-o", target, "--shard-size", "4K", "-q") == 0
    return tmp_path / "out" / "m.udnc.index.json"


def test_a_shard_symlinked_out_of_the_index_directory_is_refused(sharded, tmp_path, capsys):
    index = json.loads(sharded.read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    outside = tmp_path / "elsewhere.udnc"
    (sharded.parent / first).rename(outside)
    (sharded.parent / first).symlink_to(outside)
    for command in ("info", "verify"):
        assert run(command, sharded) == 1
        assert_one_line_error(capsys, str(sharded), "leads outside its directory")
    inside = sharded.parent / "sub" / first
    inside.parent.mkdir()
    outside.rename(inside)
    (sharded.parent / first).unlink()
    (sharded.parent / first).symlink_to(inside)  # within the directory: followed
    assert run("verify", sharded, "-q") == 0


@pytest.mark.parametrize(
    "weight_map",
    [["m-00001-of-00002.udnc"], "m-00001-of-00002.udnc", {"w": "a\x00b.udnc"}, {"w": "../x.udnc"}],
    ids=["list", "string", "NUL", "parent"],
)
def test_a_malformed_weight_map_fails_in_one_line(sharded, weight_map, capsys):
    document = json.loads(sharded.read_text())
    document["weight_map"] = weight_map
    sharded.write_text(json.dumps(document))
    assert run("info", sharded) == 1
    assert_one_line_error(capsys, str(sharded))


def test_an_index_nested_too_deeply_fails_in_one_line(tmp_path, capsys):
    for name in ("m.udnc.index.json", "m.safetensors.index.json"):
        index = tmp_path / name
        index.write_text("[" * 100_000 + "]" * 100_000)
        command = ["info", index] if name.startswith("m.udnc") else ["compress", index, "-o", "x"]
        assert run(*command) == 1
        assert_one_line_error(capsys, str(index), "nested too deeply")


def test_a_fifo_is_refused_without_blocking(checkpoint, tmp_path, capsys):
    fifo = tmp_path / "pipe.udnc"
    os.mkfifo(fifo)
    for argv in (
        ["info", fifo],
        ["verify", fifo],
        ["decompress", fifo, "-o", tmp_path / "x.safetensors"],
        ["compress", fifo, "-o", tmp_path / "x.udnc"],
    ):
        assert run(*argv) == 1, argv
        assert_one_line_error(capsys, str(fifo), "not a regular file")
    with pytest.raises(udnc_format.UDNCError, match="not a regular file"):
        udnc_format.open(fifo)
    index = tmp_path / "f.udnc.index.json"
    index.write_text(
        json.dumps({"format": "udnc-index", "version": 1, "weight_map": {"w": fifo.name}})
    )
    assert run("verify", index) == 1
    assert_one_line_error(capsys, "not a regular file")


def test_a_valid_file_decoding_to_infinity_prints_no_warning(tmp_path):
    """Vector f16-overflow-to-infinity decodes to ±inf (spec §11): no numpy RuntimeWarning on
    stderr, from the main thread or a worker."""
    vector = Path(udnc_format.__file__).parents[1] / "conformance" / "vectors"
    path = vector / "f16-overflow-to-infinity" / "input.udnc"
    for argv in (["verify", path], ["decompress", path, "-o", tmp_path / "x.safetensors"]):
        done = subprocess.run(
            [sys.executable, "-m", "udnc_format.cli", *map(str, argv), "-q", "-j", "2"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr


def test_info_json_is_json_when_the_step_overflows(tmp_path, capsys):
    from udnc_conformance.surgery import edit_body, set_lattice

    data = udnc_format.save({"w": RNG.normal(size=(16, 128))}, lattice="D4", step=0.1)
    path = tmp_path / "huge-scale.udnc"
    path.write_bytes(edit_body(data, set_lattice(scale=float.fromhex("0x1.fffffffffffffp+1023"))))
    assert run("info", path, "--json") == 0
    tensor = json.loads(capsys.readouterr().out)["tensors"][0]
    assert tensor["step"] is None and tensor["scale"] == float.fromhex("0x1.fffffffffffffp+1023")


@pytest.mark.parametrize("edit", ["missing tensor", "unlisted tensor", "version 2"])
def test_an_index_that_disagrees_with_its_shards_is_refused(sharded, edit, capsys):
    document = json.loads(sharded.read_text())
    if edit == "missing tensor":
        document["weight_map"]["no.such.tensor"] = next(iter(document["weight_map"].values()))
    elif edit == "unlisted tensor":
        document["weight_map"].pop(next(iter(document["weight_map"])))
    else:
        document["version"] = 2
    sharded.write_text(json.dumps(document))
    assert run("info", sharded) == 1
    assert_one_line_error(capsys, str(sharded))


# ----------------------------------------------------------------------------------------------
# Usage errors: every invalid option value exits 2 naming the option, before the output is
# looked at; --version; compress and info count the same source bytes.


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--metadata", "foo"], "--metadata"),
        (["--prune", "1.5"], "--prune"),
        (["--level", "99"], "--level"),
        (["--seed", "-1"], "--seed"),
        (["--step", "0"], "--step"),
        (["-j", "-3"], "--threads"),
        (["--shard-size", "2X"], "--shard-size"),
        (["--sqnr", "abc"], "--sqnr"),
        (["--sqnr", "-5"], "--sqnr"),
        (["--bits", "0.01"], "--bits"),
        (["--codebook", "--lattice", "TCQ4"], "--codebook"),
        (["--coder", "rans", "--level", "5"], "takes no level"),
        (["--sqnr-offset", "oops"], "--sqnr-offset"),
        (["--processes", "2", "--bits", "3"], "--processes"),
    ],
)
def test_an_invalid_option_value_is_a_usage_error_before_the_output_check(
    checkpoint, tmp_path, capsys, options, named
):
    existing = tmp_path / "x.udnc"
    existing.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as exited:
        run("compress", checkpoint, "-o", existing, *options)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "exists" not in err, err
    assert existing.read_bytes() == b"keep me"


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert udnc_format.__version__ in out and "format 1.2" in out


def test_bits_below_zero_db_warns_with_the_sqnr(checkpoint, tmp_path, capsys):
    # Z1: the default trellis reaches 0.5 bits at a positive SQNR on this checkpoint.
    argv = ["--bits", "0.5", "--lattice", "Z1"]
    assert run("compress", checkpoint, "-o", tmp_path / "m.udnc", *argv) == 0
    err = capsys.readouterr().err
    assert "warning: --bits 0.5 needs an SQNR of -" in err and "louder than the weights" in err


def test_compress_and_info_report_the_same_sizes_and_ratio(checkpoint, tmp_path, capsys):
    packed = tmp_path / "m.udnc"
    assert run("compress", checkpoint, "-o", packed) == 0
    said = capsys.readouterr().out
    assert run("info", packed) == 0
    total = capsys.readouterr().out.splitlines()[-len(METADATA) - 1]
    tensor_bytes = sum(array.nbytes for array in WEIGHTS.values())
    for text in (said, total):
        assert f"{tensor_bytes:,} tensor bytes -> {packed.stat().st_size:,} file bytes" in text
    ratio = said.rsplit("ratio ", 1)[1].strip()
    assert f"compression ratio {ratio}" in total


def test_compress_help_describes_every_option():
    import argparse

    from udnc_format.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    compress = commands.choices["compress"]
    for action in compress._actions:
        assert action.help, action.option_strings
    text = compress.format_help()
    assert "zstd 3" in text and "KEY=VALUE" in text


def test_decompress_info_and_verify_import_no_encoder_and_no_tqdm(tmp_path: Path) -> None:
    """Reading commands start light (bench/speed/startup.md): none of the encoder's modules, and
    no tqdm (nor the importlib.metadata it brings) when no progress bar is shown."""
    source = tmp_path / "m.udnc"
    weights = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    udnc_format.save_file({"w": weights, "b": np.arange(3.0)}, source, lattice="E8")
    probe = (
        "import sys\n"
        "from udnc_format.cli import main\n"
        "src, out = sys.argv[1:]\n"
        "assert main(['decompress', src, '-o', out]) == 0\n"
        "assert main(['info', src]) == 0 and main(['verify', src]) == 0\n"
        "heavy = {'udnc_format.codec.encoder', 'udnc_format.codec.importance', 'tqdm',\n"
        "         'udnc_format.rate', 'udnc_format.rd', 'udnc_format.shards'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
    )
    command = [sys.executable, "-c", probe, str(source), str(tmp_path / "m.safetensors")]
    subprocess.run(command, check=True, capture_output=True)
    assert st_load_file(tmp_path / "m.safetensors")["w"].shape == (16, 64)
