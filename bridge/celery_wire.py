"""Celery's task message as kombu's Redis transport puts it on a queue, written by the
bridge itself so that checking a delivery and pushing it is one round trip.

The task message is Celery's own (`app.amqp.create_task_message`, protocol 2: headers,
properties and the `[args, kwargs, embed]` body), serialized by kombu's serializer; the
envelope around it is what kombu's virtual transport adds before its Redis channel
LPUSHes the JSON to the queue's list (the body in base64, a delivery tag, where it was
routed). `send_task` would write the same, but only after its own round trip, and with
about half a millisecond of producer-pool and client set-up per publish
(docs/performance.md). tests/bridge/test_dispatcher.py holds the two equal.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import orjson
from celery import Celery
from kombu.serialization import dumps

# What the bridge's Celery messages never use: no priority within a queue (the
# transport's `priority_steps` is [0], so the queue's list is named as the queue), and
# kombu's persistent delivery mode.
PRIORITY = 0
PERSISTENT = 2


def encode_task(
    celery: Celery, name: str, args: list[Any], *, task_id: str, queue: str, argsrepr: str
) -> bytes:
    """The bytes to LPUSH onto `queue` for task `name` with `args`. Raises what kombu's
    serializer raises for arguments it cannot encode (EncodeError, TypeError, ...)."""
    message = celery.amqp.create_task_message(
        task_id, name, args, {}, reply_to=celery.thread_oid, argsrepr=argsrepr,
        ignore_result=None,  # as send_task leaves it: the task's own setting decides
    )  # fmt: skip
    content_type, content_encoding, body = dumps(
        message.body, serializer=celery.conf.task_serializer
    )
    if isinstance(body, str):
        body = body.encode(content_encoding)
    properties = {
        **message.properties,
        "delivery_mode": PERSISTENT,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": PRIORITY,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": message.headers,
            "properties": properties,
        }
    )
