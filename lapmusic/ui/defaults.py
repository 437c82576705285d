"""The sidebar's default settings: the classroom demo, overridable as a whole by ``LAPMUSIC_APP_DEFAULTS``."""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger(__name__)


def app_defaults() -> dict:
    """The sidebar's defaults, overridden key by key by ``LAPMUSIC_APP_DEFAULTS`` (JSON; tests shrink runs).

    The demo trains both inits on the Bach set, 128 units, 30 epochs at lr 3e-3 in batches of 8, stopping
    after 5 epochs without a better validation NLL: both beat the trivial baselines within those epochs
    (docs/research/app.md, "The default demo"). An override that is not a JSON object is ignored with a warning.
    """
    defaults = {
        "dataset": "bach",
        "hidden": 128,
        "init": "both",
        "epochs": 30,
        "lr": 3e-3,
        "batch_size": 8,
        "max_sequences": 0,
        "patience": 5,
        "seed": 0,
        "device": "auto",
        "output": "bernoulli",
        "nade_vocab": 0,
        "nade_repeat": False,
        "nade_repeat_window": 1,
    }
    text = os.environ.get("LAPMUSIC_APP_DEFAULTS", "").strip()
    if text:
        try:
            override = json.loads(text)
            if isinstance(override, dict):
                defaults.update({k: v for k, v in override.items() if k in defaults})
        except ValueError:
            log.warning("ignoring LAPMUSIC_APP_DEFAULTS (not JSON): %r", text)
    return defaults
