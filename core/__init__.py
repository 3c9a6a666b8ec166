"""Shared domain code: settings, statuses, priorities, schema, Kafka and database helpers.

Every stage (app, bridge, tasks, recorder, simulator, ops) imports from here; no stage
imports another stage.
"""
