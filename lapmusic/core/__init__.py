"""What every layer may use: the errors users see (:mod:`.errors`), atomic and durable writes (:mod:`.io`),
the one-writer lock of a folder (:mod:`.lock`), the torch device (:mod:`.device`) and the progress callback
(:mod:`.progress`). Import from those modules; this package re-exports nothing."""
