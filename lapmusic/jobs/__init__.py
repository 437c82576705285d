"""The app's training service: the job manager (:mod:`.manager`), its queue (:mod:`.queue`), worker processes
(:mod:`.supervisor`, :mod:`.worker`, run as ``python -m lapmusic.jobs.worker RUNDIR``), run folders as the app
sees them (:mod:`.runs`), estimates (:mod:`.estimate`) and browser sessions (:mod:`.sessions`).
Import from those modules: this package imports none of them, so a worker process starts light."""
