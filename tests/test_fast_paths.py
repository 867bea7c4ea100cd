"""The decoder's and encoder's fast paths give exactly the bits of the spec's arithmetic, and
the output never depends on the number of threads."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import udnc_format
from udnc_format.coding.lattices import LatticeCodec, get_lattice
from udnc_format.coding.philox import centred_from_levels, dither_levels
from udnc_format.coding.symbols import deserialize, deserialize_symbols, serialize, unzigzag, zigzag
from udnc_format.format.constants import MAX_ABS_COORDINATE, Lattice, Prng

CUBIC = [get_lattice(Lattice(n)) for n in range(1, 9)]


def generic(codec: LatticeCodec, symbols: np.ndarray, levels: np.ndarray, scale: float):
    """spec §6.4 and §6.5 literally: x = σ − c in binary64, then x ⊗ s."""
    centred = centred_from_levels(levels).reshape(symbols.shape)
    return ((symbols.astype(np.float64) - centred) * scale).reshape(-1)


@pytest.mark.parametrize("codec", CUBIC, ids=lambda c: c.lattice.name)
@given(
    seed=st.integers(0, 2**64 - 1),
    scale=st.one_of(
        st.floats(min_value=5e-324, max_value=1e300, allow_nan=False, allow_infinity=False),
        st.sampled_from([5e-324, 2.0**-1000, 2.0**-1022 * 3, 2.0**-998, 1.0, 0.05]),
    ),
)
def test_cubic_fixed_point_matches_spec_arithmetic(codec, seed: int, scale: float) -> None:
    """(σ·2^24 + 2^23 − k) ⊗ (s·2^-24) is bit for bit (σ − c) ⊗ s, also at the symbol limits
    and for scales whose 2^-24 part is subnormal (the generic path then runs)."""
    rng = np.random.default_rng(seed % 2**32)
    count = 64 * codec.dim
    symbols = rng.integers(-MAX_ABS_COORDINATE, MAX_ABS_COORDINATE + 1, count)
    symbols[:4] = [MAX_ABS_COORDINATE, -MAX_ABS_COORDINATE, 0, -1]
    symbols = symbols.reshape(-1, codec.dim)
    levels = dither_levels(seed, 1, 0, count, Prng.PHILOX4X64_10)
    with np.errstate(over="ignore"):
        fast = codec.reconstruct_scaled(None, symbols, levels, scale)
        expected = generic(codec, symbols, levels, scale)
    assert fast.dtype == np.float64
    assert fast.view(np.uint64).tolist() == expected.view(np.uint64).tolist()


@given(
    values=st.lists(st.integers(0, 2 * MAX_ABS_COORDINATE), max_size=60),
    bits=st.sampled_from([1, 2, 4, 8]),
)
def test_symbols_in_16_bits(values: list[int], bits: int) -> None:
    """deserialize_symbols is unzigzag(deserialize(...)), escapes included, also as
    binary64."""
    data = serialize(np.array(values, dtype=np.uint64), bits)
    limit = 2 * MAX_ABS_COORDINATE + 1
    expected = unzigzag(deserialize(data, 0, len(values), bits, limit))
    got = deserialize_symbols(data, 0, len(values), bits, limit)
    assert got.dtype == np.int64
    assert got.tolist() == expected.tolist()
    floats = deserialize_symbols(data, 0, len(values), bits, limit, np.empty(len(values)))
    assert floats.dtype == np.float64
    assert floats.tolist() == expected.astype(np.float64).tolist()


def test_narrow_zigzag() -> None:
    """int32 symbols zigzag in 32 bits to the same values as in 64."""
    symbols = np.array([0, -1, 1, -(2**24), 2**24, 2**30 - 1, -(2**30)], dtype=np.int32)
    narrow = zigzag(symbols)
    assert narrow.dtype == np.uint32
    assert narrow.tolist() == zigzag(symbols.astype(np.int64)).tolist()


WEIGHTS = {
    "a": np.random.default_rng(1).normal(size=(40, 300)).astype(np.float32),
    "b": np.random.default_rng(2).laplace(size=(8, 1000)).astype(np.float16),
    "bias": np.linspace(-1, 1, 300, dtype=np.float32),
}


@pytest.mark.parametrize(
    "options",
    [
        {"lattice": "Z1", "sqnr": 30},
        {"lattice": "E8", "step": 0.1, "prune": 0.3},
        {"lattice": "A2", "sqnr": 20, "prng": "philox4x32_10"},
        {"lattice": "D4", "sqnr": 12, "codebook": True},
    ],
    ids=lambda o: o["lattice"],
)
def test_encoding_does_not_depend_on_threads(options: dict) -> None:
    """Chunks and quantization blocks coded on 1, 2 or 3 threads give the same file."""
    small = {"chunk_weights": 1000, "min_elements": 16, **options}
    files = {t: udnc_format.save(WEIGHTS, threads=t, **small) for t in (1, 2, 3)}
    assert files[1] == files[2] == files[3]


def test_default_generator_is_philox4x64() -> None:
    with udnc_format.UDNCFile(udnc_format.save(WEIGHTS, sqnr=20)) as handle:
        assert handle.header.tensors[0].quantized.prng is Prng.PHILOX4X64_10
        assert handle.header.minor == 2
    data = udnc_format.save(WEIGHTS, sqnr=20, prng="philox4x32_10")
    with udnc_format.UDNCFile(data) as handle:
        assert handle.header.tensors[0].quantized.prng is Prng.PHILOX4X32_10


def test_prng_none_is_refused() -> None:
    with pytest.raises(udnc_format.InvalidInputError, match="prng"):
        udnc_format.save(WEIGHTS, prng="none")


@pytest.fixture(scope="module")
def many_chunks() -> bytes:
    tensors = {
        **WEIGHTS,
        "e8": np.random.default_rng(3).normal(size=(30, 64)).astype(ml_dtypes.bfloat16),
        "ids": np.arange(5000, dtype=np.int64),
    }
    return udnc_format.save(
        tensors, lattice="Z1", chunk_weights=512, min_elements=16, sqnr=25, prune=0.2
    )


@pytest.mark.parametrize("threads", [2, 3, None])
def test_decoding_does_not_depend_on_threads(many_chunks: bytes, threads: int | None) -> None:
    """Chunks decoded in parallel, straight into the output, give the serial decoder's bits."""
    serial = udnc_format.load(many_chunks, threads=1)
    parallel = udnc_format.load(many_chunks, threads=threads)
    assert list(parallel) == list(serial)
    for name, array in serial.items():
        assert parallel[name].dtype == array.dtype and parallel[name].shape == array.shape
        assert parallel[name].tobytes() == array.tobytes(), name


def test_first_failing_chunk_is_reported_whatever_the_threads(many_chunks: bytes) -> None:
    """With several corrupt chunks, every thread count reports the first one in chunk order."""
    with udnc_format.UDNCFile(many_chunks) as handle:
        chunks = handle.header.tensors[0].quantized.symbols.chunks
    assert len(chunks) > 4
    data = bytearray(many_chunks)
    for chunk in chunks[2:]:
        data[chunk.offset] ^= 0xFF
    messages = set()
    for threads in (1, 2, 4):
        with pytest.raises(udnc_format.ChecksumError) as error:
            udnc_format.load(bytes(data), threads=threads)
        messages.add(str(error.value))
    assert len(messages) == 1
    assert f"chunk 2 at offset {chunks[2].offset}" in messages.pop()


def test_one_file_read_from_several_threads_starts_one_pool(
    many_chunks: bytes, monkeypatch
) -> None:
    """Threads sharing a UDNCFile share its worker threads: no second pool is started (and
    left running) when two of them decode at the same moment."""
    import concurrent.futures
    import threading

    from udnc_format.codec import parallel

    started = []

    class Counted(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs) -> None:
            started.append(self)
            threading.Event().wait(0.05)  # widen the window between the check and the set
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(parallel, "ThreadPoolExecutor", Counted)
    serial = udnc_format.load(many_chunks, threads=1)
    with udnc_format.UDNCFile(many_chunks, threads=2) as handle:
        barrier = threading.Barrier(4)
        results: list[dict] = []

        def read() -> None:
            barrier.wait()
            results.append(handle.get_tensors(handle.keys()))

        readers = [threading.Thread(target=read) for _ in range(4)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
    assert len(started) == 1
    assert len(results) == 4
    for result in results:
        assert {k: v.tobytes() for k, v in result.items()} == {
            k: v.tobytes() for k, v in serial.items()
        }


def test_threads_must_be_a_count() -> None:
    with pytest.raises(udnc_format.InvalidInputError, match="threads"):
        udnc_format.save(WEIGHTS, threads=-1)
    with pytest.raises(udnc_format.InvalidInputError, match="threads"):
        udnc_format.load(udnc_format.save(WEIGHTS), threads=-2)


def test_cli_threads(tmp_path) -> None:
    """-j/--threads on compress, decompress and verify: any count gives the same files."""
    from safetensors.numpy import save_file

    from udnc_format.cli import main

    source = tmp_path / "model.safetensors"
    save_file({"w": WEIGHTS["a"], "bias": WEIGHTS["bias"]}, str(source))
    outputs = []
    for threads in ("1", "2"):
        packed = tmp_path / f"model-{threads}.udnc"
        restored = tmp_path / f"restored-{threads}.safetensors"
        assert main(["compress", str(source), "-o", str(packed), "-j", threads, "-q"]) == 0
        assert main(["decompress", str(packed), "-o", str(restored), "--threads", threads]) == 0
        assert main(["verify", str(packed), "-j", threads, "-q"]) == 0
        outputs.append((packed.read_bytes(), restored.read_bytes()))
    assert outputs[0] == outputs[1]
    with pytest.raises(SystemExit) as usage:
        main(["compress", str(source), "-o", str(tmp_path / "x.udnc"), "-j", "-1"])
    assert usage.value.code == 2


def test_batched_tensors_fail_like_one_after_another() -> None:
    """get_tensors decodes the chunks of several tensors together, yet reports the error that
    decoding them one after the other meets first."""
    tensors = {"a": WEIGHTS["a"], "b": WEIGHTS["a"][::-1].copy()}
    data = bytearray(
        udnc_format.save(tensors, lattice="Z1", chunk_weights=1000, prune=0.5, sqnr=20)
    )
    with udnc_format.UDNCFile(bytes(data)) as handle:
        a_chunk = handle.header.tensors[0].quantized.symbols.chunks[3]
        b_mask = handle.header.tensors[1].quantized.mask.chunks[0]
    for corrupt in ([a_chunk, b_mask], [b_mask]):
        broken = bytearray(data)
        for chunk in corrupt:
            broken[chunk.offset] ^= 0xFF
        with udnc_format.UDNCFile(bytes(broken), threads=2) as handle:
            with pytest.raises(udnc_format.ChecksumError) as one_by_one:
                for name in handle:
                    handle.get_tensor(name)
            with pytest.raises(udnc_format.ChecksumError) as batched:
                handle.get_tensors(["a", "b"])
        assert str(batched.value) == str(one_by_one.value)
        assert f"offset {corrupt[0].offset}" in str(batched.value)


def test_open_reads_the_header_and_get_tensor_its_own_chunks(tmp_path, monkeypatch) -> None:
    """open() reads the preamble and header only; get_tensor then reads that tensor's stored
    chunks and nothing else (bench/speed times it on a 1 GiB file)."""
    from udnc_format.codec import reader

    path = tmp_path / "big.udnc"
    big = np.random.default_rng(0).random((256, 4096), dtype=np.float32)  # 4 MiB, incompressible
    udnc_format.save_file({"big": big, "small": np.arange(16.0)}, path, keep=["*"], coder="raw")
    reads: list[int] = []
    real = reader.read_at

    def counting(handle, offset: int, length: int) -> bytes:
        reads.append(length)
        return real(handle, offset, length)

    monkeypatch.setattr(reader, "read_at", counting)
    with udnc_format.open(path) as handle:
        header = sum(reads)
        assert header < 1024
        assert handle.get_tensor("small").tolist() == list(np.arange(16.0))
        assert sum(reads) - header == 16 * 8


def test_closing_the_workers_while_they_work_is_a_udnc_error() -> None:
    """Workers shut down by another thread (a UDNCFile closed during a read): the tasks that
    had not started are cancelled and the map raises UDNCError, not CancelledError; a map
    started after the shutdown raises UDNCError, not the pool's RuntimeError."""
    import threading

    from udnc_format.codec.parallel import Workers

    workers = Workers(2)
    running, release = threading.Semaphore(0), threading.Event()
    outcome: list[object] = []

    def task(item: int) -> int:
        running.release()
        release.wait(10)
        return item

    def work() -> None:
        try:
            outcome.append(workers.map(task, range(6)))
        except Exception as exc:
            outcome.append(exc)

    mapper = threading.Thread(target=work)
    mapper.start()
    assert running.acquire(timeout=10) and running.acquire(timeout=10)  # four tasks queued
    pool = workers._executor()
    pool.shutdown(wait=False, cancel_futures=True)  # what close() does, without waiting
    release.set()
    mapper.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], udnc_format.UDNCError), outcome
    with pytest.raises(udnc_format.UDNCError, match="closed"):
        workers.map(task, range(3))
