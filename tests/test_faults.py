"""Faults during a write: a full disk (ENOSPC on write, on fsync, in the spool), and SIGTERM or
SIGINT to a running ``udnc compress``. Whatever happens, the output is absent or the old file,
no temporary file is left behind, and the input is byte-identical."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from safetensors.numpy import save_file as st_save_file

import udnc_format
from udnc_format import checkpoint
from udnc_format.cli import main
from udnc_format.codec import writer
from udnc_format.codec.encoder import EncodeOptions, encode_tensors

RNG = np.random.default_rng(11)
WEIGHTS = {f"layer{i}.weight": RNG.normal(size=(64, 96)).astype(np.float32) for i in range(4)}
OLD_OUTPUT = b"the previous output, which a failed write must not touch"


class FullDisk:
    """A writable file with ``room`` bytes left on its disk: the write that goes beyond fails
    with ENOSPC, as on a real full disk."""

    def __init__(self, handle: IO[bytes], room: int) -> None:
        self.handle, self.room, self.written = handle, room, 0

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self.written + size > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += size
        return self.handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def full_disk(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Every output written through a temporary file beside its target has ``room`` bytes."""
    create = writer.create_temporary

    def create_on_full_disk(target: Path, created: list[Path]) -> FullDisk:
        return FullDisk(create(target, created), room)

    monkeypatch.setattr(writer, "create_temporary", create_on_full_disk)
    monkeypatch.setattr(checkpoint, "create_temporary", create_on_full_disk)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    st_save_file(WEIGHTS, str(path))
    return path


@pytest.mark.parametrize("room", [0, 15, 300, 20_000])
def test_full_disk_during_save_leaves_nothing(tmp_path, monkeypatch, room):
    full_disk(monkeypatch, room)
    target = tmp_path / "m.udnc"
    with pytest.raises(udnc_format.WriteError, match=r"m\.udnc: write failed: No space left"):
        udnc_format.save_file(WEIGHTS, target)
    assert os.listdir(tmp_path) == []


def test_full_disk_keeps_the_old_output(tmp_path, monkeypatch):
    target = tmp_path / "m.udnc"
    target.write_bytes(OLD_OUTPUT)
    full_disk(monkeypatch, 1000)
    with pytest.raises(udnc_format.WriteError):
        udnc_format.save_file(WEIGHTS, target)
    assert os.listdir(tmp_path) == ["m.udnc"] and target.read_bytes() == OLD_OUTPUT


def test_full_disk_found_only_by_fsync(tmp_path, monkeypatch):
    """Delayed allocation: the writes succeed, the flush to the disk fails."""

    def fsync(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer.os, "fsync", fsync)
    with pytest.raises(udnc_format.WriteError, match="No space left"):
        udnc_format.save_file(WEIGHTS, tmp_path / "m.udnc")
    assert os.listdir(tmp_path) == []


def test_full_disk_in_the_spool(tmp_path, monkeypatch):
    """The chunks are spooled in the target's directory before the header is written."""
    spool = tempfile.TemporaryFile

    def full_spool(*args: Any, **kwargs: Any) -> FullDisk:
        return FullDisk(spool(*args, **kwargs), 5000)

    monkeypatch.setattr(writer.tempfile, "TemporaryFile", full_spool)
    with pytest.raises(udnc_format.WriteError, match="No space left"):
        udnc_format.save_file(WEIGHTS, tmp_path / "m.udnc")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("shards", [False, True])
def test_full_disk_during_cli_compress(source, tmp_path, monkeypatch, capsys, shards):
    before = digest(source)
    target = tmp_path / "out" / "m.udnc"
    target.parent.mkdir()
    full_disk(monkeypatch, 2000)
    extra = ["--shard-size", "4K"] if shards else []
    assert main(["compress", str(source), "-o", str(target), "-q", *extra]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(target.parent) == []
    assert digest(source) == before


def test_full_disk_during_cli_decompress(source, tmp_path, monkeypatch, capsys):
    packed = tmp_path / "m.udnc"
    assert main(["compress", str(source), "-o", str(packed), "-q"]) == 0
    before = digest(packed)
    restored = tmp_path / "out" / "back.safetensors"
    restored.parent.mkdir()
    full_disk(monkeypatch, 50_000)
    assert main(["decompress", str(packed), "-o", str(restored), "-q"]) == 1
    assert "back.safetensors: write failed: No space left" in capsys.readouterr().err
    assert os.listdir(restored.parent) == [] and digest(packed) == before


# ---------------------------------------------------------------------------------------------
# Signals to a running `udnc compress`


@pytest.fixture
def large_source(tmp_path: Path) -> Path:
    """A checkpoint that takes a few seconds to compress at the slowest settings."""
    path = tmp_path / "large.safetensors"
    rng = np.random.default_rng(3)
    tensors = {f"w{i}": rng.normal(size=(512, 1024)).astype(np.float32) for i in range(12)}
    st_save_file(tensors, str(path))
    return path


def temporaries(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


INTERRUPTIBLE_CLI = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'udnc'; runpy.run_module('udnc_format.cli', run_name='__main__')"
)


@pytest.mark.parametrize(
    ("signum", "code", "old_output"),
    [
        (signal.SIGTERM, 128 + signal.SIGTERM, False),
        (signal.SIGTERM, 128 + signal.SIGTERM, True),
        (signal.SIGINT, 128 + signal.SIGINT, False),
    ],
)
def test_signal_during_compress_leaves_the_old_output_and_the_input(
    large_source, tmp_path, signum, code, old_output
):
    target = tmp_path / "out" / "m.udnc"
    target.parent.mkdir()
    if old_output:
        target.write_bytes(OLD_OUTPUT)
    before = digest(large_source)
    # A shell without job control starts background commands with SIGINT ignored, and Python
    # then keeps it ignored: the child takes Python's KeyboardInterrupt handler, as from a
    # terminal, before it runs the CLI (no preexec_fn: forking a threaded pytest can deadlock).
    command = [sys.executable, "-c", INTERRUPTIBLE_CLI, "compress", str(large_source)]
    command += ["-o", str(target), "--force", "--coder", "lzma", "--level", "9"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not temporaries(target.parent) and process.poll() is None:
            assert time.monotonic() < deadline, "compress never started writing"
            time.sleep(0.01)
        # Stopped first, so that a loaded machine cannot let compress finish between the check
        # and the signal; the signal is delivered when it continues.
        process.send_signal(signal.SIGSTOP)
        assert process.poll() is None, "compress ended before it could be interrupted"
        process.send_signal(signum)
        process.send_signal(signal.SIGCONT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, err
    assert err.strip().endswith("terminated" if signum == signal.SIGTERM else "interrupted")
    assert "Traceback" not in err
    assert temporaries(target.parent) == []
    assert sorted(os.listdir(target.parent)) == (["m.udnc"] if old_output else [])
    if old_output:
        assert target.read_bytes() == OLD_OUTPUT
    assert digest(large_source) == before


def test_an_interruption_just_after_the_temporary_file_appears_leaves_nothing(
    tmp_path, monkeypatch
):
    """A signal handled right after ``open`` created the temporary file, before its caller
    holds it (the race a loaded machine hit in the SIGINT test), still removes it."""
    real_open = open

    def open_then_interrupted(path: object, mode: str = "r", *args: object) -> object:
        handle = real_open(path, mode, *args)  # type: ignore[call-overload]
        if "x" in mode:
            handle.close()
            raise KeyboardInterrupt
        return handle

    monkeypatch.setattr(writer, "open", open_then_interrupted, raising=False)
    tensors = {"w": np.ones((8, 256), np.float32)}
    for save in (
        lambda: udnc_format.save_file(tensors, tmp_path / "m.udnc"),
        lambda: checkpoint.write_shards(
            encode_tensors(tensors, EncodeOptions()), {}, tmp_path / "s.udnc", 1 << 20
        ),
    ):
        with pytest.raises(KeyboardInterrupt):
            save()
        assert sorted(os.listdir(tmp_path)) == []
