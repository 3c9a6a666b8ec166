# One image for every platform process (api, bridge, recorder, worker, flower, migrate).
# The code is root's and read-only; the processes run as `platform` and write only where
# docker-compose.yml mounts tmpfs: RUN_DIR and PROMETHEUS_MULTIPROC_DIR. .dockerignore
# lets in only what is copied here.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /srv
COPY requirements.lock .
RUN pip install --require-hashes -r requirements.lock
COPY core ./core
COPY app ./app
COPY bridge ./bridge
COPY recorder ./recorder
COPY tasks ./tasks
COPY simulator ./simulator
COPY ops ./ops
COPY alembic ./alembic
COPY alembic.ini .
# Byte code compiled now: the running user cannot write it next to the code.
RUN python -m compileall -q /srv \
    && useradd --system --uid 1000 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin platform
USER platform
