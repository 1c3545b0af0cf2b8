"""A run's loss history (JSON lines) and its loss curve drawn as a PNG (Pillow; no
plotting library needed)."""

from __future__ import annotations

import json
from pathlib import Path


def append(path: Path, entry: dict) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate(path: Path, step: int) -> None:
    """Drop entries after ``step`` (a resumed run rewrites them)."""
    kept = [e for e in read(path) if e["step"] <= step]
    path.write_text("".join(json.dumps(e) + "\n" for e in kept), encoding="utf-8")


def plot_loss(entries: list[dict], out: Path, title: str) -> Path | None:
    """Training loss (blue) and evaluation loss (orange dots) against the optimizer step, as a PNG."""
    from PIL import Image, ImageDraw

    train = [(e["step"], e["loss"]) for e in entries if "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in entries if "eval_loss" in e]
    points = train + evals
    if not points:
        return None
    width, height, left, right, top, bottom = 800, 480, 70, 20, 40, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    max_step = max(1, max(s for s, _ in points))
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    hi = hi if hi > lo else lo + 1.0

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * step / max_step
        y = top + (height - top - bottom) * (hi - value) / (hi - lo)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for i in range(5):
        value = lo + (hi - lo) * i / 4
        _, y = xy(0, value)
        draw.line([left - 4, y, left, y], fill="black")
        draw.text((5, y - 6), f"{value:.3g}", fill="black")
    for i in range(5):
        step = max_step * i / 4
        x, _ = xy(step, lo)
        draw.line([x, height - bottom, x, height - bottom + 4], fill="black")
        draw.text((x - 10, height - bottom + 8), f"{step:.0f}", fill="black")
    if len(train) > 1:
        draw.line([xy(s, v) for s, v in train], fill=(31, 119, 180), width=2)
    for s, v in evals:
        x, y = xy(s, v)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(255, 127, 14))
    draw.text((left, 12), f"{title}: training loss (line), evaluation loss (dots)", fill="black")
    draw.text((width // 2 - 40, height - 20), "optimizer step", fill="black")
    image.save(out)
    return out
