"""Rate-distortion optimized points of the cubic lattices (codec/rdo.py, ``rate_weight``)."""

from __future__ import annotations

import numpy as np
import pytest

import udnc_format
from udnc_format.cli import main
from udnc_format.codec import rdo
from udnc_format.format.errors import OptionError


def laplace(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(size=size).astype(np.float32)


def entropy(symbols: np.ndarray) -> float:
    _, counts = np.unique(symbols, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_choose_trades_error_for_bits() -> None:
    rates = rdo.SymbolRates.fit(np.array([0] * 14 + [1, -1]))  # 0: 0.19 bit, ±1: 4 bits
    targets = np.array([0.0, 0.6, -0.6, 0.9, 1.6, 3.2])
    np.testing.assert_array_equal(rdo.choose(targets, 0.0, rates), np.rint(targets))
    # 0.6 → 0: error 0.36 + 0.04 bits beats 0.16 + 0.8; 3.2 is beyond every seen value.
    np.testing.assert_array_equal(rdo.choose(targets, 0.2, rates), [0, 0, 0, 1, 1, 3])
    assert rates.of(np.array([7]))[0] == pytest.approx(4.0 + 2.0)


def test_rate_weight_lowers_the_rate_at_a_bounded_error() -> None:
    w = laplace(1 << 16)
    plain = udnc_format.save({"w": w.reshape(256, -1)}, lattice="Z1", step=1.0, coder="rans")
    rdo_file = udnc_format.save(
        {"w": w.reshape(256, -1)}, lattice="Z1", step=1.0, coder="rans", rate_weight=0.2
    )
    assert len(rdo_file) < 0.97 * len(plain)
    decoded = udnc_format.load(rdo_file)["w"].reshape(-1)
    # The point is one of the two integers around the target: within one step of it.
    assert np.abs(decoded - w).max() <= 1.0 + 1e-6
    # rate_weight=0 is the plain encoder, bit for bit.
    assert (
        udnc_format.save(
            {"w": w.reshape(256, -1)}, lattice="Z1", step=1.0, coder="rans", rate_weight=0
        )
        == plain
    )


@pytest.mark.parametrize("dither", [True, False])
def test_rate_weight_wins_at_equal_error_where_the_rate_is_low(dither: bool) -> None:
    w = laplace(1 << 16, seed=1).reshape(256, -1)

    def point(step: float, weight: float) -> tuple[float, float]:
        data = udnc_format.save(
            {"w": w}, lattice="Z1", step=step, rate_weight=weight, dither=dither
        )
        symbols = udnc_format.open(data).get_quantized("w").symbols
        error = float(np.mean((udnc_format.load(data)["w"] - w) ** 2))
        return entropy(symbols), error

    rate, error = point(1.2, 0.2)
    # The plain quantizer needs a finer step, and more bits, for the same error.
    steps = np.linspace(0.6, 1.6, 21)
    plain = [point(float(s), 0.0) for s in steps]
    errors = [e for _, e in plain]
    plain_rate = float(np.interp(error, errors, [r for r, _ in plain]))
    assert rate < plain_rate - 0.03


def test_rate_weight_with_importance_feedback() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(512, 32)) * np.linspace(0.2, 3, 32)
    w = laplace(64 * 32, seed=3).reshape(64, 32)
    stats = {"w": np.mean(x**2, axis=0), "w:hessian": x.T @ x / len(x)}
    for weight in (0.0, 0.2):
        options = {"lattice": "Z1", "step": 0.8, "rate_weight": weight}
        data = udnc_format.save({"w": w}, importance=stats, **options)
        decoded = udnc_format.load(data)["w"]
        assert np.isfinite(decoded).all()


def test_rate_weight_is_checked() -> None:
    w = {"w": laplace(4096).reshape(64, 64)}
    with pytest.raises(OptionError, match="cubic"):
        udnc_format.save(w, lattice="E8", rate_weight=0.2)
    with pytest.raises(OptionError, match="cubic"):
        udnc_format.save(w, lattice="TCQ16", rate_weight=0.2)
    with pytest.raises(OptionError, match="lattice='Z1'"):  # the default lattice is a trellis
        udnc_format.save(w, rate_weight=0.2)
    with pytest.raises(OptionError, match="non-negative"):
        udnc_format.save(w, lattice="Z1", rate_weight=-1.0)
    udnc_format.save(w, lattice="Z4", rate_weight=0.2)


def test_cli_rate_weight(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import safetensors.numpy

    source = tmp_path / "w.safetensors"
    safetensors.numpy.save_file({"w": laplace(1 << 14).reshape(128, -1)}, source)
    plain, weighted = tmp_path / "plain.udnc", tmp_path / "rdo.udnc"
    z1 = ["-q", "--sqnr", "8", "--lattice", "Z1"]
    assert main(["compress", str(source), "-o", str(plain), *z1]) == 0
    argv = ["compress", str(source), "-o", str(weighted), *z1]
    assert main([*argv, "--rate-weight", "0.2"]) == 0
    assert weighted.stat().st_size < plain.stat().st_size
    with pytest.raises(SystemExit) as exited:  # a usage error
        main([*argv, "--rate-weight", "-1", "-f"])
    assert exited.value.code == 2
