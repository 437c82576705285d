"""How the pages write times, paths and runs: ``2 min 05 s``, ``runs/bach-lae-...``, ``LAE · h128 · seed 0``."""

from __future__ import annotations

from pathlib import Path


def format_seconds(seconds: float | None) -> str:
    """``42 s``, ``2 min 05 s`` or ``1 h 03 min``; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_range(low: float, high: float) -> str:
    """A duration range as a person says it: ``20 to 40 s``, ``40 s to 2 min``, ``3 to 5 min``,
    ``50 min to 1 h 20 min``; one value when both ends read the same (``about`` is the caller's)."""
    low, high = max(0.0, min(low, high)), max(0.0, low, high)

    def say(seconds: float, unit: str) -> str:
        if unit == "s":
            return f"{max(1, int(round(seconds)))}"
        if unit == "min":
            return f"{max(1, int(round(seconds / 60)))}"
        return format_seconds(round(seconds / 60) * 60)

    def unit_of(seconds: float) -> str:
        return "s" if seconds < 59.5 else "min" if seconds < 3570 else "h"

    lo_unit, hi_unit = unit_of(low), unit_of(high)
    lo, hi = say(low, lo_unit), say(high, hi_unit)
    if lo_unit == hi_unit:
        if hi_unit == "h":
            return lo if lo == hi else f"{lo} to {hi}"
        return f"{lo} {lo_unit}" if lo == hi else f"{lo} to {hi} {lo_unit}"
    lo = lo if lo_unit == "h" else f"{lo} {lo_unit}"
    hi = hi if hi_unit == "h" else f"{hi} {hi_unit}"
    return f"{lo} to {hi}"


def display_path(path) -> str:
    """``path`` relative to the working folder when it is inside it (``runs/...``), else absolute."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_label(config: dict, *, with_dataset: bool = False) -> str:
    """``LAE · h128 · seed 0`` (`` · NADE`` for a NADE output, `` · NADE+skip`` with its previous-frame skip,
    `` · skip`` with the Bernoulli readout's skip, ``+vocab N`` with a chord vocabulary; the dataset first when
    runs of several datasets are compared)."""
    init = {"lae": "LAE", "random": "random"}.get(str(config.get("init")), str(config.get("init", "?")))
    label = f"{init} · h{config.get('hidden', '?')} · seed {config.get('seed', '?')}"
    if config.get("output") == "nade":
        label += " · NADE+skip" if config.get("nade_skip") else " · NADE"  # Bernoulli runs keep their usual label
        label += f"+vocab {config['nade_vocab']}" if config.get("nade_vocab") else ""
        label += "+repeat" if config.get("nade_repeat") else ""
        window = config.get("nade_repeat_window", 1) if config.get("nade_repeat") else 1
        label += f" {window}" if window > 1 else ""
    elif config.get("readout_skip"):
        label += " · skip"
    return f"{config.get('dataset', '?')} · {label}" if with_dataset else label
