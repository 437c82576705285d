"""The app's training service: the job manager (:mod:`.manager`) and its parts: the jobs (:mod:`.job`,
:mod:`.table`), the queue (:mod:`.queue`), the scheduler (:mod:`.scheduler`), worker processes (:mod:`.pool`,
:mod:`.worker`, run as ``python -m lapmusic.jobs.worker RUNDIR``), slots and quotas (:mod:`.limits`),
estimates (:mod:`.estimate`), the manager's own files and folder ownership (:mod:`.folder`), run folders as
the app sees them (:mod:`.runs`) and browser-session links (:mod:`.sessions`). Import from those modules:
this package imports none of them, so a worker process starts light."""
