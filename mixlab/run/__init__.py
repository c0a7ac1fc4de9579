"""Running work: recorded jobs on a background worker (:mod:`mixlab.run.jobs`, their rows
:mod:`mixlab.run.records`) and the executors that score a sweep here or on a Ray cluster
(:mod:`mixlab.run.executors`). Importing this package imports neither torch nor Ray."""
