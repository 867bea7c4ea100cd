"""The lattices of spec §6: generators, closest-point search, symbols, reconstruction, and the
dithered quantizer's error measured through the public API."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from conftest import (
    LATTICES,
    TRELLISES,
    assert_within_quantizer_bound,
    covering_radius,
    dimension,
    info_of,
    save_and_load,
    second_moment,
)

from udnc_format.coding.lattices import LatticeCodec, all_lattices, get_lattice
from udnc_format.format.constants import Lattice

H = float.fromhex("0x1.bb67ae8584caap-1")  # spec §6.1: binary64 nearest to sqrt(3)/2
_E8_MIDDLE = [[0.0] * k + [-1.0, 1.0] + [0.0] * (6 - k) for k in range(6)]
SPEC_GENERATORS = {
    "A2": [[1.0, 0.0], [0.5, H]],
    "D4": [[-1, -1, 0, 0], [1, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1]],
    "E8": [[2.0] + [0.0] * 7, *_E8_MIDDLE, [0.5] * 8],
}
CELL_VOLUME = {"A2": math.sqrt(3) / 2, "D4": 2.0, "E8": 1.0}  # Z^n: 1


def codec(name: str) -> LatticeCodec:
    return get_lattice(Lattice[name])


def minimal_vectors(name: str) -> np.ndarray:
    """The lattice's shortest non-zero vectors, written out: ±e_i for Z^n; the 6 of A2; the 24
    roots ±e_i ± e_j of D4; the 240 roots of E8 (±e_i ± e_j and (±½)^8 with an even number of
    minus signs). They are also the Voronoi-relevant vectors of these lattices."""
    n = dimension(name)
    eye = np.eye(n)
    if name == "A2":
        return np.array(
            [[s * 1.0, 0.0] for s in (1, -1)] + [[a * 0.5, b * H] for a in (1, -1) for b in (1, -1)]
        )
    if name.startswith("Z"):
        return np.vstack([eye, -eye])
    pairs = [
        sa * eye[i] + sb * eye[j]
        for i, j in itertools.combinations(range(n), 2)
        for sa in (1, -1)
        for sb in (1, -1)
    ]
    if name == "D4":
        return np.array(pairs)
    halves = [
        0.5 * np.array(s) for s in itertools.product((1, -1), repeat=8) if s.count(-1) % 2 == 0
    ]
    return np.array(pairs + halves)


def lattice_coefficients(name: str, points: np.ndarray) -> np.ndarray:
    return points @ np.linalg.inv(codec(name).generator)


def assert_lattice_points(name: str, points: np.ndarray) -> None:
    k = lattice_coefficients(name, points)
    assert np.abs(k - np.rint(k)).max(initial=0.0) < 1e-6


def brute_force_distances(name: str, targets: np.ndarray) -> np.ndarray:
    """Squared distance from each target to its nearest lattice point, by enumeration.

    The nearest point p is within the covering radius R of t. For Z^n, A2 and D4 the integer
    coefficients k of p = k·G are then within ±1 of round(t·G⁻¹) (|Δk_j| ≤ R·|G⁻¹ column j| +
    ½ < 2, checked below), so a ±1 box holds p. For E8 that box is far too large; there every
    coordinate of p is within 1 of t, so p is among the integer (D8) and half-integer (D8 + ½)
    points within ±1 of the rounded target, filtered to an even integer part (E8 = D8 ∪ D8 + ½,
    which test_generator_spans_the_named_lattice establishes)."""
    n, generator = dimension(name), codec(name).generator
    box = np.array(list(itertools.product((-1, 0, 1), repeat=n)), dtype=np.float64)
    best = np.empty(len(targets))
    if name != "E8":
        inverse = np.linalg.inv(generator)
        reach = covering_radius(name) * np.linalg.norm(inverse, axis=0) + 0.5
        assert reach.max() < 2
        for i, target in enumerate(targets):
            candidates = (np.rint(target @ inverse) + box) @ generator
            best[i] = ((candidates - target) ** 2).sum(axis=1).min()
        return best
    for i, target in enumerate(targets):
        distances = []
        for shift in (0.0, 0.5):
            integer = np.rint(target - shift) + box
            integer = integer[integer.sum(axis=1) % 2 == 0]
            distances.append(((integer + shift - target) ** 2).sum(axis=1).min())
        best[i] = min(distances)
    return best


def nearest(name: str, targets: np.ndarray) -> np.ndarray:
    cosets, symbols = codec(name).closest(targets)
    return codec(name).points(cosets, symbols)


def test_registry_lists_every_lattice() -> None:
    names = [c.lattice.name for c in all_lattices()]
    assert names == LATTICES + TRELLISES
    assert all(c.dim == dimension(c.lattice.name) for c in all_lattices())


@pytest.mark.parametrize("name", LATTICES)
def test_generator_matches_spec(name: str) -> None:
    """The generators are those of the spec's table (§6.1), bit for bit."""
    expected = SPEC_GENERATORS.get(name, np.eye(dimension(name)))
    np.testing.assert_array_equal(codec(name).generator, np.array(expected, dtype=np.float64))


@pytest.mark.parametrize("name", LATTICES)
def test_cell_volume(name: str) -> None:
    """|det G| is 1 for Z^n and E8, 2 for D4, sqrt(3)/2 for A2."""
    assert codec(name).volume == pytest.approx(CELL_VOLUME.get(name, 1.0), rel=1e-12)


@pytest.mark.parametrize("name", LATTICES)
def test_generator_spans_the_named_lattice(name: str) -> None:
    """The generator's lattice contains the named lattice's minimal vectors, which generate a
    lattice of the same covolume: the two lattices are equal."""
    assert codec(name).volume == pytest.approx(CELL_VOLUME.get(name, 1.0), rel=1e-12)
    vectors = minimal_vectors(name)
    expected_count = {"A2": 6, "D4": 24, "E8": 240}.get(name, 2 * dimension(name))
    assert len(vectors) == expected_count
    assert_lattice_points(name, vectors)
    shortest = {"A2": 1.0, "D4": 2.0, "E8": 2.0}.get(name, 1.0)
    np.testing.assert_allclose((vectors**2).sum(axis=1), shortest, rtol=1e-15)


@pytest.mark.parametrize("name", LATTICES)
def test_second_moment_constant(name: str) -> None:
    """The package's G(Λ) (used for rate control) is the literature's."""
    assert codec(name).second_moment == pytest.approx(second_moment(name), abs=2e-6)


@pytest.mark.parametrize("spread", [0.4, 3.0, 1e4])
@pytest.mark.parametrize("name", LATTICES)
def test_closest_agrees_with_brute_force(name: str, spread: float, rng) -> None:
    """closest() finds a nearest lattice point (squared distances agree within 1e-9)."""
    targets = rng.normal(size=(120, dimension(name))) * spread
    found = ((nearest(name, targets) - targets) ** 2).sum(axis=1)
    np.testing.assert_allclose(found, brute_force_distances(name, targets), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", LATTICES)
def test_closest_on_lattice_points_and_deep_holes(name: str, rng) -> None:
    """Targets on lattice points are their own nearest point; targets next to the points that
    are farthest from the lattice (ties between several points) are within the covering
    radius, and agree with brute force."""
    n = dimension(name)
    points = rng.integers(-50, 50, size=(64, n)) @ codec(name).generator
    np.testing.assert_array_equal(nearest(name, points), points)
    holes = {"A2": [0.5, H / 3], "D4": [1.0, 0, 0, 0], "E8": [1.0] + [0.0] * 7}
    hole = np.array(holes.get(name, [0.5] * n))
    targets = (
        points + hole + rng.normal(scale=1e-7, size=points.shape) * (rng.random((64, 1)) < 0.5)
    )
    found = ((nearest(name, targets) - targets) ** 2).sum(axis=1)
    assert found.max() <= covering_radius(name) ** 2 + 1e-6
    np.testing.assert_allclose(found, brute_force_distances(name, targets), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", LATTICES)
def test_closest_is_beaten_by_no_neighbour(name: str, rng) -> None:
    """No minimal (Voronoi-relevant) vector v moves the found point closer: t − p lies in the
    Voronoi cell, i.e. p is a nearest point (a complete optimality certificate)."""
    targets = rng.normal(size=(3000, dimension(name))) * 5
    found = nearest(name, targets)
    here = ((targets - found) ** 2).sum(axis=1)
    for v in minimal_vectors(name):
        there = ((targets - found - v) ** 2).sum(axis=1)
        assert np.all(here <= there + 1e-9)


@pytest.mark.parametrize("name", LATTICES)
def test_closest_returns_lattice_points(name: str, rng) -> None:
    """Points rebuilt from the returned symbols (and coset bits) are lattice points."""
    targets = rng.normal(size=(500, dimension(name))) * 20
    cosets, symbols = codec(name).closest(targets)
    assert symbols.dtype == np.int64 and symbols.shape == targets.shape
    assert (cosets is not None) == (name == "E8")
    assert_lattice_points(name, codec(name).points(cosets, symbols))


@pytest.mark.parametrize("name", LATTICES)
def test_symbols_points_closest_round_trip(name: str, rng) -> None:
    """Any symbols (and coset bits) give points whose nearest point has the same symbols."""
    n = dimension(name)
    symbols = rng.integers(-1000, 1000, size=(400, n))
    cosets = rng.integers(0, 2, size=400).astype(np.uint8) if name == "E8" else None
    points = codec(name).points(cosets, symbols)
    assert_lattice_points(name, points)
    got_cosets, got_symbols = codec(name).closest(points)
    np.testing.assert_array_equal(got_symbols, symbols)
    if cosets is not None:
        np.testing.assert_array_equal(got_cosets, cosets)


def spec_reconstruction(name: str, symbols: np.ndarray, cosets, c: np.ndarray) -> np.ndarray:
    """x = p − u written out from spec §6.3 and §6.4."""
    s = symbols
    if name.startswith("Z"):
        return s - c
    if name == "A2":
        big_y = 2 * s[:, 1] + s[:, 0] % 2
        return np.stack([s[:, 0] / 2 - (c[:, 0] + c[:, 1] / 2), (big_y - c[:, 1]) * H], axis=1)
    p = s.astype(np.float64)
    p[:, -1] = 2 * s[:, -1] + s[:, :-1].sum(axis=1) % 2
    if name == "D4":
        u = np.stack(
            [-c[:, 0] + c[:, 1], -c[:, 0] - c[:, 1] + c[:, 2], -c[:, 2] + c[:, 3], -c[:, 3]], axis=1
        )
        return p - u
    p += cosets[:, None] / 2
    half = c[:, 7:8] / 2
    u = np.empty_like(c)
    u[:, 0] = 2 * c[:, 0] - c[:, 1]
    u[:, 1:6] = c[:, 1:6] - c[:, 2:7]
    u[:, 6] = c[:, 6]
    u[:, 7] = 0
    return p - (u + half)


@pytest.mark.parametrize("name", LATTICES)
def test_reconstruct_is_bit_exact_per_spec(name: str, rng) -> None:
    """reconstruct() gives the binary64 bits of spec §6.4, with and without dither."""
    n = dimension(name)
    symbols = rng.integers(-(2**24), 2**24 + 1, size=(300, n))
    cosets = rng.integers(0, 2, size=300).astype(np.uint8) if name == "E8" else None
    centred = np.floor(rng.random((300, n)) * 2**24) * 2.0**-24 - 0.5
    got = codec(name).reconstruct(cosets, symbols, centred)
    assert got.tobytes() == spec_reconstruction(name, symbols, cosets, centred).tobytes()
    plain = codec(name).reconstruct(cosets, symbols, None)
    assert plain.tobytes() == codec(name).points(cosets, symbols).tobytes()
    assert plain.tobytes() == spec_reconstruction(name, symbols, cosets, 0 * centred).tobytes()


# ---------------------------------------------------------------------------------------------
# The quantizer's error, through save() and load()

MEASURED_STEP = 0.25


@pytest.fixture(scope="module")
def gaussian_weights() -> np.ndarray:
    return np.random.default_rng(1802).normal(size=(1000, 1000))


@pytest.mark.parametrize("name", LATTICES)
def test_dithered_error_is_g_delta_squared_and_uncorrelated(name: str, gaussian_weights) -> None:
    """With dither, over 10^6 Gaussian weights the MSE per weight is G(Λ)·Δ² within 2% and the
    error is uncorrelated with the weights (|corr| < 0.01), as subtractive dither promises."""
    w = gaussian_weights
    data, out = save_and_load({"w": w}, lattice=name, step=MEASURED_STEP)
    info = info_of(data, "w")
    assert (info.encoding, info.lattice, info.dither) == ("lattice", name, True)
    assert info.step == pytest.approx(MEASURED_STEP, rel=1e-12)
    error = out["w"] - w
    assert out["w"].dtype == np.float64
    mse = float(np.mean(error**2))
    assert mse == pytest.approx(second_moment(name) * MEASURED_STEP**2, rel=0.02)
    assert abs(np.corrcoef(error.reshape(-1), w.reshape(-1))[0, 1]) < 0.01
    assert_within_quantizer_bound(w, out["w"], data, "w")


@pytest.mark.parametrize("name", LATTICES)
def test_undithered_error_within_covering_radius(name: str, rng) -> None:
    """Without dither every vector's error is at most the covering radius times the scale, and
    decoded vectors are lattice points of the scaled lattice."""
    w = rng.normal(size=(84, 100)) * 3  # 8400 weights: whole vectors for every n
    data, out = save_and_load({"w": w}, lattice=name, step=0.5, dither=False)
    info = info_of(data, "w")
    assert (info.dither, info.seed) == (False, None)
    assert_within_quantizer_bound(w, out["w"], data, "w")
    n = dimension(name)
    assert_lattice_points(name, out["w"].reshape(-1, n) / info.scale)
