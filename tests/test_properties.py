"""Properties of the reference codec over the conformance suite's hypothesis strategies
(udnc_conformance.strategies): the quantizer's error bound, bit-identical decoding through every
API and the CLI, and damaged files that decode or raise a UDNCError, never anything else."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_within_quantizer_bound, info_of, stored_mask
from hypothesis import given, settings
from udnc_conformance import runner, strategies

import udnc_format

QUANTIZED_FILES = strategies.valid_files(
    strategies.quantizable_tensors(), strategies.encoder_options()
)
HANG_SECONDS = 20  # a decode of these small files takes milliseconds

# The encoder measures its error in units of max |w|; with a given step and weights far below
# it (1e-265), that measure overflows: a harmless warning (the measure is used only for SQNR).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in dot:RuntimeWarning")


def same_bits(left: np.ndarray, right: np.ndarray) -> bool:
    return (
        left.dtype == right.dtype
        and left.shape == right.shape
        and np.ascontiguousarray(left).tobytes() == np.ascontiguousarray(right).tobytes()
    )


@contextlib.contextmanager
def hard_timeout(seconds: int) -> Iterator[None]:
    """Fail (rather than hang the suite) when the body runs longer than ``seconds``."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"no result after {seconds} s: the decoder hangs")

    if not hasattr(signal, "SIGALRM"):
        yield
        return
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@settings(max_examples=50)
@given(QUANTIZED_FILES)
def test_encode_then_decode_stays_within_the_quantizer_bound(made):
    decoded = udnc_format.load(made.data)
    assert list(decoded) == list(made.tensors)
    for name, original in made.tensors.items():
        assert_within_quantizer_bound(original, decoded[name], made.data, name)
        info = info_of(made.data, name)
        if info.encoding == "lattice" and not info.codebook_size:
            # The conformance runner's own bound (spec §6.1 constants written out there) accepts
            # every output of the reference encoder.
            kept = stored_mask(made.data, name)
            violation = runner.error_bound_violation(
                original, decoded[name], info.lattice, info.scale, info.dtype, kept
            )
            assert violation == "", violation


@settings(max_examples=40)
@given(strategies.valid_files())
def test_decoding_is_bit_identical_on_repeat_and_across_apis(made):
    first, again = udnc_format.load(made.data), udnc_format.load(made.data)
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "m.udnc"
        path.write_bytes(made.data)
        on_disk = udnc_format.load_file(path)
        with udnc_format.open(path) as handle:
            assert handle.keys() == list(made.tensors)
            assert handle.metadata() == made.options.get("metadata", {})
            lazy = {name: handle.get_tensor(name) for name in reversed(handle.keys())}
    for name, original in made.tensors.items():
        assert first[name].shape == original.shape and first[name].dtype == original.dtype
        for other in (again, on_disk, lazy):
            assert same_bits(first[name], other[name]), name


@settings(max_examples=2)
@given(strategies.valid_files())
def test_cli_decompress_is_bit_identical_to_the_api(made):
    expected = udnc_format.load(made.data)
    with tempfile.TemporaryDirectory() as temp:
        source, target = Path(temp) / "m.udnc", Path(temp) / "m.safetensors"
        source.write_bytes(made.data)
        done = subprocess.run(
            ["udnc", "decompress", str(source), "-o", str(target), "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        metadata, tensors = runner.read_safetensors(target)
    assert metadata == made.options.get("metadata", {})
    assert set(tensors) == set(expected)
    for name, array in expected.items():
        assert same_bits(tensors[name].array(), array), name


@settings(max_examples=50, deadline=timedelta(seconds=5))
@given(strategies.mutated_files())
def test_damaged_files_decode_or_raise_a_udnc_error(data):
    with hard_timeout(HANG_SECONDS):
        with contextlib.suppress(udnc_format.UDNCError):
            udnc_format.load(data)
        with tempfile.TemporaryDirectory() as temp:  # the lazy reader, tensor by tensor
            path = Path(temp) / "m.udnc"
            path.write_bytes(data)
            try:
                with udnc_format.open(path) as handle:
                    for name in handle:
                        with contextlib.suppress(udnc_format.UDNCError):
                            handle.get_tensor(name)
            except udnc_format.UDNCError:
                pass


def test_a2_symbols_beyond_the_limit_make_the_encoder_refuse():
    weights = {"w": np.array([[15000.0, 0.0]], np.float16)}
    options = {"lattice": "A2", "step": 0.001, "dither": False, "min_elements": 1}
    try:
        data = udnc_format.save(weights, **options)
    except udnc_format.InvalidInputError:
        return  # what spec §8.3 asks: a larger step, or no quantization
    udnc_format.load(data)
