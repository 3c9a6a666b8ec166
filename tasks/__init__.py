"""The Celery workers: the worker app (`tasks.worker`), how a routine runs
(`tasks.execution`), and the built-in routines (`tasks.routines`)."""
