"""A dataset described in numbers: count, shape, classes with counts, pixel statistics."""

from __future__ import annotations

from cnnlab.data.dataset import ImageSet


def describe(data: ImageSet) -> dict:
    mean, std = data.stats()
    return {
        "source": data.source,
        "count": len(data),
        "shape": list(data.shape),
        "classes": dict(zip(data.classes, data.class_counts(), strict=True)),
        "mean": [round(m, 4) for m in mean],
        "std": [round(s, 4) for s in std],
    }


def format_info(splits: dict[str, dict]) -> str:
    lines = []
    for split, info in splits.items():
        c, h, w = info["shape"]
        lines.append(f"{split}: {info['count']} images of {c}x{h}x{w} from {info['source']}")
        lines.append(f"  pixel mean {info['mean']}  std {info['std']}  (0..1 scale)")
        width = max(len(name) for name in info["classes"])
        for name, count in info["classes"].items():
            lines.append(f"  {name:<{width}}  {count}")
    return "\n".join(lines)
