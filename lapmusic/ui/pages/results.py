"""Results tab: test metrics of finished runs against the trivial baselines, and published anchors."""

from __future__ import annotations

import streamlit as st

from ...jobs import FINISHED, list_runs
from ...metrics import ANCHOR_NLL, best_published_nll
from .. import common
from ..sidebar import Settings

ANCHOR_COLUMNS = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "musedata": "MuseData", "pianomidi": "Piano-midi.de"}


def anchor_rows() -> list[dict]:
    """One row per published model, one column per benchmark (from ``metrics.ANCHOR_NLL``)."""
    # Each dataset lists its reference first and the best known model last; keep that order across datasets.
    names = list(dict.fromkeys(name for anchors in ANCHOR_NLL.values() for name in anchors))
    best = {list(anchors)[-1] for anchors in ANCHOR_NLL.values()}
    models = [n for n in names if n not in best] + [n for n in names if n in best]
    return [
        {"model": model, **{ANCHOR_COLUMNS[k]: _number(ANCHOR_NLL[k].get(model)) for k in ANCHOR_COLUMNS}}
        for model in models
    ]


def _percent(value) -> str:
    """ACC values from lapmusic.metrics are already in percent."""
    return f"{value:.1f}%" if isinstance(value, (int, float)) else "-"


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def render(settings: Settings) -> None:
    st.subheader("Results on the test split")
    finished = [r for r in list_runs(manager=common.manager()) if r.state == FINISHED and r.final]
    if not finished:
        st.info("No finished run yet. When a run finishes, its test metrics are compared here.")
    else:
        focus = {str(p) for p in common.focused_runs()}
        names = [str(r.run_dir) for r in finished]
        default = [n for n in names if n in focus] or names[: min(4, len(names))]
        chosen = st.multiselect(
            "Runs", names, default=default, key="results_runs", format_func=lambda p: p.rsplit("/", 1)[-1]
        )
        rows = []
        for run in finished:
            if str(run.run_dir) not in chosen:
                continue
            final = run.final
            base = final.get("baselines") or {}
            rows.append(
                {
                    "run": run.name,
                    "dataset": final.get("dataset", run.config.get("dataset")),
                    "init": final.get("init", run.config.get("init")),
                    "hidden": final.get("hidden", run.config.get("hidden")),
                    "epochs": final.get("epochs"),
                    "test NLL": _number(final.get("nll")),
                    "baseline NLL (key frequencies)": _number(base.get("marginal_nll")),
                    "test ACC": _percent(final.get("acc")),
                    # ACC at the decision threshold chosen on the validation split (final.json, issue 9)
                    "test ACC (valid. threshold)": (f"{_percent(final.get('acc_tuned'))} at p ≥ "
                                                    f"{final['threshold']:.3f}" if final.get("threshold") else "-"),
                    "baseline ACC (repeat last frame)": _percent(base.get("copy_previous_acc")),
                    "expected ACC": _percent(final.get("expected_acc")),
                    "best published NLL": _number(best_published_nll(final.get("dataset", run.config.get("dataset")))),
                    "training time": common.format_seconds(final.get("total_seconds")),
                }
            )
        if rows:
            st.dataframe(rows, hide_index=True)
        st.caption(
            "NLL: negative log-likelihood of the next frame in nats per frame (lower is better). ACC: "
            "frame-level accuracy TP/(TP+FP+FN) of predicting each key at probability 0.5 (higher is better); "
            "the second ACC predicts a key at the threshold that gave the best ACC on the validation split. "
            "A network must beat both trivial baselines to have learned anything about time."
        )

    st.markdown("**Published test NLL, for orientation**")
    st.dataframe(anchor_rows(), hide_index=True)
    st.caption(
        "Full-size models trained for hours; a classroom run with a few epochs lands well above these numbers."
    )
