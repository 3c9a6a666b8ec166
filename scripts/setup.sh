#!/usr/bin/env bash
# Install what the platform needs and is missing; quick when nothing is.
#   - Debian packages (as root): PostgreSQL, Redis, kcat, Chromium, and Java/Maven if absent
#   - .venv/ with the pinned Python packages (reinstalled only when requirements change)
#   - Apache Kafka's jars from Maven Central into .cache/ (fetched once)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have java || need+=("default-jre-headless:Java runs the Kafka broker")
have mvn || need+=("maven:resolves Kafka's jars from Maven Central")
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=("postgresql:the task database")
have redis-server || need+=("redis-server:the Celery broker")
have kcat || need+=("kcat:inspecting Kafka topics by hand")
have chromium || need+=("chromium:the dashboard's browser test")
have wrk || need+=("wrk:the HTTP load generator of make bench")
pkg_installed python3-venv || python3 -c "import venv, ensurepip" 2>/dev/null || need+=("python3-venv:the project's virtualenv")

if ((${#need[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: these Debian packages are missing; install them as root:" >&2
        printf '  %s\n' "${need[@]}" >&2
        exit 1
    fi
    pkgs=()
    for item in "${need[@]}"; do
        echo "setup: installing ${item%%:*} (${item#*:})"
        pkgs+=("${item%%:*}")
    done
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# Debian's postgresql package starts its own cluster on 5432; ours runs instead.
if [[ $(id -u) -eq 0 ]] && have pg_lsclusters && pg_lsclusters -h 2>/dev/null | grep -q online; then
    echo "setup: stopping Debian's default PostgreSQL cluster (ours uses the same port)"
    pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r v c; do
        pg_ctlcluster "$v" "$c" stop || true
    done
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "setup: installing Python packages (requirements-dev.txt)"
    .venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$want" >"$stamp"
fi

.venv/bin/python -c "from ops.kafka_node import fetch_jars; print('setup: Kafka jars in', fetch_jars())"
