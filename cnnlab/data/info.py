"""A dataset described in numbers: count, shape, classes with counts, value statistics."""

from __future__ import annotations

from cnnlab.data.dataset import ImageSet


def describe(data: ImageSet) -> dict:
    mean, std = data.stats()
    return {
        "source": data.source,
        "count": len(data),
        "kind": "sequences" if data.sequences else "images",
        "shape": list(data.shape),
        "dtype": data.dtype,
        "classes": dict(zip(data.classes, data.class_counts(), strict=True)),
        "mean": [round(m, 4) for m in mean],
        "std": [round(s, 4) for s in std],
    }


def format_info(splits: dict[str, dict]) -> str:
    lines = []
    for split, info in splits.items():
        kind = info.get("kind", "images")
        shape = "x".join(map(str, info["shape"]))
        lines.append(f"{split}: {info['count']} {kind} of {shape} from {info['source']}")
        scale = "(0..1 scale)" if info.get("dtype", "uint8") == "uint8" else "(float32 values)"
        what = "pixel" if kind == "images" else "value"
        lines.append(f"  {what} mean {info['mean']}  std {info['std']}  {scale}")
        width = max(len(name) for name in info["classes"])
        for name, count in info["classes"].items():
            lines.append(f"  {name:<{width}}  {count}")
    return "\n".join(lines)
