"""An audio player over its piano roll, with a playhead that follows the music.

One self-contained piece of HTML (no CDN, no network: it works offline): a ``<canvas>`` piano roll (time
across, pitch up, primer grey, continuation blue, black-key rows shaded), a red vertical line (the
playhead) and a native ``<audio>`` element holding the WAV as a ``data:`` URI. The playhead is placed at

    x = left + (currentTime / duration) * width,    duration = frames * step_seconds

on every ``timeupdate``/``seeked`` event and on every animation frame while the audio plays, so it moves
smoothly. A click on the roll seeks there. When one player starts, the others on the page pause (a
``BroadcastChannel``), so the LAE and random samples side by side are heard one at a time.

:func:`player_html` builds the HTML (no Streamlit, testable; it also works as a file of its own);
:func:`show_player` puts it on the page with ``st.html(..., unsafe_allow_javascript=True)`` (in the page, not
in an iframe: ``st.components.v1.html`` is deprecated, and one page lets the players pause each other). The
JavaScript is ours; the only data in it is the roll as JSON and the WAV as base64. Element ids are
``<id>-audio``, ``<id>-playhead`` (with ``data-seconds``, the time it shows, for tests), ``<id>-roll``.
"""

from __future__ import annotations

import base64
import html
import json
import uuid

import numpy as np

from lapmusic import LOWEST_PITCH

MAX_EMBED_BYTES = 8 * 2**20
"""Larger WAVs (above about 3 minutes at 22,050 Hz) are not embedded: the page would carry them base64-encoded
on every rerun. The roll is then drawn without a playhead and :func:`show_player` adds Streamlit's own audio
player (served bytes) under it."""

ROLL_HEIGHT = 260  # pixels of the canvas

_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def roll_notes(roll: np.ndarray, primer_frames: int = 0) -> list[list[int]]:
    """``(T, 88)`` 0/1 roll -> ``[[midi_pitch, start_frame, end_frame, is_primer], ...]``.

    Held frames are merged into one note; a primer note held past the primer is cut at the boundary (as in
    the MIDI's two tracks), so every note is either primer (1) or generated (0).
    """
    from lapmusic.data.roll import check_roll, roll_to_notes

    roll = check_roll(roll, "piano roll")
    k = int(np.clip(primer_frames, 0, roll.shape[0]))
    notes = []
    for part, offset, is_primer in ((roll[:k], 0, 1), (roll[k:], k, 0)):
        if part.shape[0] == 0:
            continue
        for pitch, start, end in roll_to_notes(part):
            notes.append([int(pitch), int(start) + offset, int(end) + offset, is_primer])
    return notes


def player_html(
    roll: np.ndarray,
    *,
    wav: bytes | None,
    step_seconds: float,
    primer_frames: int = 0,
    title: str | None = None,
    player_id: str | None = None,
) -> str:
    """The player's HTML for one sample (see the module docstring).

    Args:
        roll: ``(T, 88)`` 0/1 piano roll, primer first.
        wav: the WAV's bytes (``None``, or more than :data:`MAX_EMBED_BYTES`: the roll without audio).
        step_seconds: seconds per frame (the audio's time scale).
        primer_frames: how many leading frames are the primer (grey, with a dashed line at their end).
        title: a line above the roll.
        player_id: the DOM id of the player (default: a fresh one).
    """
    notes = roll_notes(roll, primer_frames)
    frames = int(np.asarray(roll).shape[0])
    pitches = [n[0] for n in notes]
    low, high = (min(pitches) - 2, max(pitches) + 2) if pitches else (55, 79)
    if high - low < 24:  # at least two octaves, so a sparse roll is not stretched into fat bars
        middle = (low + high) // 2
        low, high = middle - 12, middle + 12
    low, high = max(low, LOWEST_PITCH), min(high, LOWEST_PITCH + 87)
    data = {
        "notes": notes,
        "frames": frames,
        "step": float(step_seconds),
        "primer": int(np.clip(primer_frames, 0, frames)),
        "low": int(low),
        "high": int(high),
        "names": list(_NAMES),
    }
    pid = player_id or f"lm-{uuid.uuid4().hex[:8]}"
    audio = ""
    note = ""
    if wav and len(wav) <= MAX_EMBED_BYTES:
        uri = "data:audio/wav;base64," + base64.b64encode(wav).decode("ascii")
        audio = f'<audio id="{pid}-audio" controls preload="auto" src="{uri}"></audio>'
    elif wav:
        note = (f"<div class='lm-note'>A long sample ({len(wav) / 2**20:.0f} MB of audio): the playhead is shown for "
                f"samples up to {MAX_EMBED_BYTES // 2**20} MB; play it with the player below.</div>")
    heading = f"<div class='lm-title'>{html.escape(title)}</div>" if title else ""
    return _TEMPLATE.format(pid=pid, heading=heading, audio=audio, note=note, height=ROLL_HEIGHT,
                            data=json.dumps(data, separators=(",", ":")))


def show_player(roll, *, wav, step_seconds, primer_frames=0, title=None) -> None:
    """Draw :func:`player_html` on the Streamlit page, as wide as its column."""
    import streamlit as st

    st.html(player_html(roll, wav=wav, step_seconds=step_seconds, primer_frames=primer_frames, title=title),
            unsafe_allow_javascript=True)
    if wav and len(wav) > MAX_EMBED_BYTES:
        st.audio(wav, format="audio/wav")


# Braces doubled for str.format; the script draws once, then moves only the playhead element.
_TEMPLATE = """<style>
  .lm-player {{ font-family: "Source Sans Pro", sans-serif; color: #31333f; background: white; }}
  .lm-title {{ font-weight: 600; font-size: 15px; margin: 2px 0 4px 0; white-space: nowrap; overflow: hidden;
              text-overflow: ellipsis; }}
  .lm-wrap {{ position: relative; width: 100%; height: {height}px; cursor: pointer; }}
  .lm-wrap canvas {{ position: absolute; left: 0; top: 0; width: 100%; height: 100%; }}
  .lm-playhead {{ position: absolute; top: 0; width: 2px; margin-left: -1px; background: #d62728;
                  pointer-events: none; }}
  audio {{ width: 100%; margin-top: 6px; height: 36px; }}
  .lm-note {{ font-size: 13px; color: #808495; margin-top: 6px; }}
</style>
<div class="lm-player" id="{pid}">
  {heading}
  <div class="lm-wrap" id="{pid}-wrap"><canvas id="{pid}-roll"></canvas>
    <div class="lm-playhead" id="{pid}-playhead" data-seconds="0"></div></div>
  {audio}{note}
</div>
<script>
(function () {{
  const D = {data};
  const pid = "{pid}";
  const wrap = document.getElementById(pid + "-wrap");
  const canvas = document.getElementById(pid + "-roll");
  const head = document.getElementById(pid + "-playhead");
  const audio = document.getElementById(pid + "-audio");
  const M = {{left: 38, right: 8, top: 6, bottom: 20}};
  const duration = Math.max(D.frames, 1) * D.step;
  const rows = D.high - D.low + 1;
  function box() {{
    const w = wrap.clientWidth, h = wrap.clientHeight;
    return {{w: w, h: h, pw: Math.max(w - M.left - M.right, 1), ph: Math.max(h - M.top - M.bottom, 1)}};
  }}
  function xOf(t, b) {{ return M.left + Math.min(Math.max(t / duration, 0), 1) * b.pw; }}
  function yOf(p, b) {{ return M.top + (D.high - p) * b.ph / rows; }}
  function draw() {{
    const b = box(), r = window.devicePixelRatio || 1;
    canvas.width = Math.round(b.w * r); canvas.height = Math.round(b.h * r);
    const c = canvas.getContext("2d");
    c.setTransform(r, 0, 0, r, 0, 0);
    c.clearRect(0, 0, b.w, b.h);
    const rowH = b.ph / rows;
    c.font = "10px sans-serif"; c.textBaseline = "middle"; c.fillStyle = "#808495";
    for (let p = D.low; p <= D.high; p++) {{
      const pc = p % 12, y = yOf(p, b);
      if ([1, 3, 6, 8, 10].includes(pc)) {{ c.fillStyle = "rgba(0,0,0,0.05)"; c.fillRect(M.left, y, b.pw, rowH); }}
      if (pc === 0) {{
        c.fillStyle = "rgba(0,0,0,0.15)"; c.fillRect(M.left, y + rowH - 0.5, b.pw, 0.5);
        c.fillStyle = "#808495"; c.fillText("C" + (Math.floor(p / 12) - 1), 4, y + rowH / 2);
      }}
    }}
    for (const n of D.notes) {{
      if (n[0] < D.low || n[0] > D.high) continue;
      c.fillStyle = n[3] ? "#7f7f7f" : "#1f77b4";
      const x0 = xOf(n[1] * D.step, b), x1 = xOf(n[2] * D.step, b);
      c.fillRect(x0, yOf(n[0], b) + 0.5, Math.max(x1 - x0 - 0.5, 1), Math.max(rowH - 1, 1));
    }}
    if (D.primer > 0 && D.primer < D.frames) {{
      const x = xOf(D.primer * D.step, b);
      c.strokeStyle = "black"; c.setLineDash([4, 3]); c.beginPath();
      c.moveTo(x, M.top); c.lineTo(x, M.top + b.ph); c.stroke(); c.setLineDash([]);
    }}
    c.strokeStyle = "rgba(0,0,0,0.3)"; c.strokeRect(M.left, M.top, b.pw, b.ph);
    c.fillStyle = "#808495"; c.textBaseline = "top";
    const tick = [1, 2, 5, 10, 15, 30, 60, 120].find(s => duration / s <= 10) || 300;
    for (let t = 0; t <= duration + 1e-9; t += tick) {{
      c.fillText(t + " s", Math.min(xOf(t, b) - 4, b.w - 28), M.top + b.ph + 4);
    }}
    head.style.top = M.top + "px"; head.style.height = b.ph + "px";
    place();
  }}
  function place() {{
    const t = audio ? audio.currentTime : 0;
    head.style.left = xOf(t, box()) + "px";
    head.dataset.seconds = t.toFixed(3);
    head.style.display = audio ? "block" : "none";
  }}
  function loop() {{ place(); if (audio && !audio.paused && !audio.ended) requestAnimationFrame(loop); }}
  if (audio) {{
    ["timeupdate", "seeked", "seeking", "pause", "ended", "loadedmetadata"].forEach(e => audio.addEventListener(e, place));
    let channel = null;
    try {{ channel = new BroadcastChannel("lapmusic-player"); }} catch (e) {{ channel = null; }}
    audio.addEventListener("play", () => {{ if (channel) channel.postMessage(pid); requestAnimationFrame(loop); }});
    if (channel) channel.onmessage = (e) => {{ if (e.data !== pid && !audio.paused) audio.pause(); }};
    wrap.addEventListener("click", (e) => {{
      const b = box(), rect = wrap.getBoundingClientRect();
      const t = (e.clientX - rect.left - M.left) / b.pw * duration;
      audio.currentTime = Math.min(Math.max(t, 0), duration);
      place();
    }});
  }}
  wrap.addEventListener("mousemove", (e) => {{
    const b = box(), rect = wrap.getBoundingClientRect();
    const t = (e.clientX - rect.left - M.left) / b.pw * duration;
    const p = D.high - Math.floor((e.clientY - rect.top - M.top) / (b.ph / rows));
    wrap.title = (t >= 0 && t <= duration && p >= D.low && p <= D.high)
      ? D.names[p % 12] + (Math.floor(p / 12) - 1) + " at " + t.toFixed(2) + " s" : "";
  }});
  window.addEventListener("resize", draw);
  draw();
}})();
</script>
"""
