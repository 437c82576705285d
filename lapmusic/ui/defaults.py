"""The sidebar's default settings: the classroom demo, overridable as a whole by ``LAPMUSIC_APP_DEFAULTS``."""

from __future__ import annotations

import json
import logging
import os

from lapmusic.core.errors import LapMusicError
from lapmusic.training.presets import DEFAULT_PRESET, get_preset

log = logging.getLogger(__name__)

# The sidebar's widgets a preset sets when it is chosen (the preset's other settings, e.g. dropout, go into
# the config without a widget: lapmusic.ui.sidebar.make_config).
PRESET_WIDGETS = ("hidden", "epochs", "lr", "batch_size", "patience", "output", "nade_vocab", "nade_repeat",
                  "nade_repeat_window")
_WIDGET_DEFAULTS = {"patience": 0, "output": "bernoulli", "nade_vocab": 0, "nade_repeat": False,
                    "nade_repeat_window": 1}  # a preset that leaves a widget's setting out: TrainConfig's default


def preset_widgets(name: str) -> dict:
    """The sidebar widgets' values for preset ``name`` (the keys of :data:`PRESET_WIDGETS` it sets or resets).

    Raises
    ------
    lapmusic.core.errors.LapMusicError
        For an unknown preset.
    """
    settings = get_preset(name).settings
    return {key: settings.get(key, _WIDGET_DEFAULTS.get(key)) for key in PRESET_WIDGETS
            if key in settings or key in _WIDGET_DEFAULTS}


# The demo's time budget per run (seconds of training): on a quiet 2-core machine the music pair's 20 epochs fit
# in it (docs/research/presets.md); on a loaded one it stops them early instead of keeping the class waiting.
DEMO_SECONDS = 30


def app_defaults() -> dict:
    """The sidebar's defaults, overridden key by key by ``LAPMUSIC_APP_DEFAULTS`` (JSON; tests shrink runs).

    The demo trains both inits on the Bach set with the ``music`` preset (:mod:`lapmusic.training.presets`), so a
    class hears music from the first click, each run within :data:`DEMO_SECONDS` of training; ``{"preset": "paper"}`` makes the paper's Bernoulli model the
    default. The preset's widget values come first, then the override's keys. An override that is not a JSON
    object is ignored with a warning.
    """
    defaults = {"preset": DEFAULT_PRESET, "dataset": "bach", "init": "both", "max_sequences": 0, "seed": 0,
                "device": "auto", "max_seconds": DEMO_SECONDS}
    override = {}
    text = os.environ.get("LAPMUSIC_APP_DEFAULTS", "").strip()
    if text:
        try:
            override = json.loads(text)
            if not isinstance(override, dict):
                override = {}
        except ValueError:
            log.warning("ignoring LAPMUSIC_APP_DEFAULTS (not JSON): %r", text)
    preset = override.get("preset", DEFAULT_PRESET)
    try:
        defaults.update(preset=preset, **preset_widgets(preset))
    except LapMusicError:  # an unknown preset in the override: the default one
        log.warning("ignoring the unknown preset %r of LAPMUSIC_APP_DEFAULTS", preset)
        defaults.update(preset_widgets(DEFAULT_PRESET))
    defaults.update({k: v for k, v in override.items() if k in defaults and k != "preset"})
    return defaults
