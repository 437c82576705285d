"""Errors a user can cause. Their message says what was wrong and what to do."""


class LapMusicError(Exception):
    """Base class for every error shown to a user (CLI prints it as one line, the app with st.error)."""


class DataError(LapMusicError):
    """A dataset, file or upload could not be used."""


class DownloadError(DataError):
    """Every download source failed; the message lists what was tried and how to fix it offline."""


class CheckpointError(LapMusicError):
    """A run folder or checkpoint is missing, corrupt or foreign."""


class SolverError(LapMusicError):
    """An LAE solver cannot run with the given data or settings."""


class DeviceError(LapMusicError):
    """The torch device asked for does not exist on this machine."""
