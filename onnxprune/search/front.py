"""The Pareto front of measured candidates: faster (lower latency ratio) against better (higher quality)."""

from __future__ import annotations


def pareto_front(points: list[dict], cost: str = "latency_ratio", gain: str = "quality") -> list[dict]:
    """The points no other point beats on both `cost` (lower is better) and `gain` (higher is
    better), sorted by cost; ties on both keep the first."""
    ordered = sorted(points, key=lambda p: (p[cost], -p[gain]))
    front, best = [], float("-inf")
    for point in ordered:
        if point[gain] > best:
            front.append(point)
            best = point[gain]
    return front


def plot_front(points: list[dict], front: list[dict], path: str, title: str) -> None:
    """Every candidate as a dot, the front as a line (matplotlib, drawn off-screen)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p["latency_ratio"] for p in points], [p["quality"] for p in points], s=14, color="0.6",
               label="candidates")
    ax.plot([p["latency_ratio"] for p in front], [p["quality"] for p in front], "o-", color="C0", label="front")
    for p in front:
        ax.annotate(p["label"], (p["latency_ratio"], p["quality"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("latency vs dense (paired)")
    ax.set_ylabel(front[0]["quality_name"] if front else "quality")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
