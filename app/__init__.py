"""The HTTP API (Flask). `create_app(settings)` builds it; gunicorn serves
`app:create_app()`; `flask --app app keys create <team>` issues keys (app/cli.py)."""

from __future__ import annotations

from flask import Flask

from core.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    from app import (
        cli,
        dashboard,
        docs,
        errors,
        health,
        metrics,
        openapi,
        stats_api,
        task_events_api,
        tasks_api,
    )
    from app.api import api_blueprint
    from app.services import Services

    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.api_max_body_bytes
    app.extensions["taskplatform"] = Services(settings)
    errors.register_error_handlers(app)
    metrics.install(app)
    app.register_blueprint(
        api_blueprint(
            [
                (tasks_api.blueprint, "/tasks"),
                (task_events_api.blueprint, "/tasks"),
                (stats_api.blueprint, "/stats"),
            ]
        )
    )
    for module in (health, openapi, docs, dashboard):
        app.register_blueprint(module.blueprint)
    cli.register_cli(app)
    return app
