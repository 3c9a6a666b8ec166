# One image for every platform process (api, bridge, recorder, worker, flower, migrate).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY core ./core
COPY app ./app
COPY bridge ./bridge
COPY recorder ./recorder
COPY tasks ./tasks
COPY simulator ./simulator
COPY ops ./ops
COPY alembic ./alembic
COPY alembic.ini .
RUN useradd --system --uid 1000 platform
USER platform
