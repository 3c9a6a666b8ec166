"""The platform's Prometheus metrics, in one place.

Every platform process (API workers, bridge, recorder, Celery pool processes) writes its
samples to the shared PROMETHEUS_MULTIPROC_DIR that `make up` sets, and the API's
/metrics merges them all (prometheus-client's multiprocess mode), so one scrape sees the
whole platform. Without that variable each process keeps its own registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip

# Tasks, labelled by what operators slice them by.
TASK_LABELS = ["priority", "team", "routine"]
TASK_WAIT = Histogram(
    "task_wait_seconds",
    "From ACCEPTED to STARTED (each attempt)",
    TASK_LABELS,
    buckets=LATENCY_BUCKETS,
)
TASK_RUN = Histogram(
    "task_run_seconds", "From STARTED to the attempt's end", TASK_LABELS, buckets=LATENCY_BUCKETS
)
TASKS_FINISHED = Counter(
    "tasks_finished_total", "Tasks that reached a terminal status", ["status", *TASK_LABELS]
)
TASK_RETRIES = Counter("task_retries_total", "Failed attempts sent back for a retry", TASK_LABELS)

# The bridge.
DISPATCHED = Counter("bridge_dispatched_total", "Tasks put on a Celery queue", ["priority", "team"])
WAITING = Gauge(
    "bridge_waiting_tasks",
    "Tasks held by the bridge until workers have room",
    ["priority"],
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "celery_queue_depth",
    "Tasks waiting on each Celery queue",
    ["queue"],
    multiprocess_mode="mostrecent",
)
RESERVED = Gauge(
    "celery_reserved_tasks",
    "Tasks taken by workers and not yet acknowledged",
    multiprocess_mode="mostrecent",
)
WORKER_SLOTS = Gauge(
    "celery_worker_slots", "Worker slots announced by live workers", multiprocess_mode="mostrecent"
)
CONSUMER_LAG = Gauge(
    "bridge_consumer_lag",
    "Requests on Kafka not yet read by the bridge",
    ["topic", "partition"],
    multiprocess_mode="mostrecent",
)
DEAD_LETTERS = Counter(
    "dead_letters_total", "Requests sent to the dead-letter topic", ["team", "reason"]
)
EXPIRED = Counter(
    "tasks_expired_total", "Tasks ended EXPIRED before they ran, by where", ["team", "stage"]
)
SCHEDULED = Gauge("bridge_scheduled_held", "Scheduled tasks the bridge holds until their run_at")
PARKED = Counter(
    "bridge_scheduled_parked_total", "Scheduled tasks parked in Postgres until near their time"
)
RELEASED = Counter(
    "scheduled_released_total", "Parked scheduled tasks the releaser sent back to the bridge"
)
DEMOTIONS = Counter("demotions_total", "Tasks demoted for flooding a queue", ["team", "from"])

# The recorder.
EVENTS_RECORDED = Counter("status_events_recorded_total", "Status events written to Postgres")
RECORDER_LAG = Gauge(
    "recorder_lag_seconds",
    "Age of the newest status event in the last batch when it was committed",
    multiprocess_mode="mostrecent",
)
RECONCILED = Counter("reconciler_actions_total", "What the reconciler did", ["action"])

# The API.
PRODUCE_LATENCY = Histogram(
    "kafka_produce_seconds",
    "From producing a request's tasks to Kafka's acknowledgement of the last, in the API",
    buckets=LATENCY_BUCKETS,
)


def reason_class(reason: str) -> str:
    """A dead-letter reason reduced to a small set of label values."""
    lowered = reason.lower()
    for needle, label in (
        ("unknown routine", "unknown_routine"),
        ("not json", "not_json"),
        ("does not match topic", "wrong_topic"),
        ("priority", "bad_priority"),
        ("missing", "missing_field"),
    ):
        if needle in lowered:
            return label
    return "malformed"
