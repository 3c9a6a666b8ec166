"""The status recorder: the one writer of task statuses to Postgres, from `tasks.status`."""
