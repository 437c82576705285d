"""pytest plugin for scripts/gpu_check.sh: a test that fails only because a package absent from the GPU
machine is imported (streamlit, plotly, music21, pyfluidsynth, playwright) is reported as skipped, naming
the package, instead of failed. Every other failure stays a failure.
"""

import pytest

ABSENT = {"streamlit", "plotly", "music21", "fluidsynth", "playwright"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and report.failed and call.excinfo.errisinstance(ModuleNotFoundError):
        name = (call.excinfo.value.name or "").split(".")[0]
        if name in ABSENT:
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"needs {name}, absent on this machine")
