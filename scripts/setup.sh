#!/usr/bin/env bash
# Install what the platform needs and is missing; quick when nothing is.
#   - checks what the rest assumes: Python >= 3.11 (for .venv/), Java >= 17 (for Kafka 4)
#   - Debian packages (as root): PostgreSQL, Redis, kcat, Chromium, wrk, and Java, Maven,
#     Python's venv module (python3.X-venv) if absent
#   - .venv/ with the pinned Python packages (reinstalled only when requirements change)
#   - Apache Kafka's jars from Maven Central into .cache/ (fetched once)
#
# `scripts/setup.sh --check` only says what is missing, and exits 1 if anything is.
# PYTHON=/path/to/python3 chooses the interpreter .venv/ is made from; by default the first
# of python3, python3.13, python3.12, python3.11 on PATH that is new enough (Debian's own
# /usr/bin/python3 on Debian 12 and later).
set -euo pipefail
cd "$(dirname "$0")/.."

check_only=0
[[ ${1:-} == --check ]] && check_only=1

have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
py_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo "?"; }
py_new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' >/dev/null 2>&1; }
java_major() {
    # `openjdk version "17.0.15"` -> 17; the old scheme `java version "1.8.0_292"` -> 8
    java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9.]*\).*/\1/p' | head -1 |
        awk -F. '{print ($1 == 1 ? $2 : $1)}'
}
venv_usable() {
    [[ -x .venv/bin/python ]] && py_new_enough .venv/bin/python &&
        .venv/bin/python -m pip --version >/dev/null 2>&1
}
pick_python() {
    # The interpreter .venv/ is made from; prints nothing when none is new enough.
    local candidate
    if [[ -n ${PYTHON:-} ]]; then
        if py_new_enough "$PYTHON"; then command -v "$PYTHON"; fi
        return 0
    fi
    for candidate in python3 python3.13 python3.12 python3.11; do
        if have "$candidate" && py_new_enough "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
}

need=()      # Debian packages to install, as "package:why"
problems=()  # what installing packages cannot fix, said plainly

check_java() {
    if ! have java; then
        need+=("default-jre-headless:Java 17 or newer runs the Kafka broker")
        return
    fi
    local major
    major=$(java_major)
    if [[ -z $major || $major -lt 17 ]]; then
        problems+=("Java >= 17 is needed to run Kafka 4; $(command -v java) is Java ${major:-of an unknown version}. Install openjdk-17-jre-headless (or newer) and put its java first on PATH.")
    fi
}

base_python=""
check_python() {
    venv_usable && return 0
    base_python=$(pick_python)
    if [[ -z $base_python ]]; then
        if [[ -n ${PYTHON:-} ]]; then
            problems+=("Python >= 3.11 is needed for .venv/; PYTHON=$PYTHON is Python $(py_version "$PYTHON").")
        elif have python3; then
            problems+=("Python >= 3.11 is needed for .venv/; python3 is Python $(py_version python3) and no python3.11 or newer is on PATH. Install one (Debian 12 and later ship it), or name it with PYTHON=/path/to/python3.")
        else
            need+=("python3:Python 3.11 or newer for .venv/")
        fi
        return 0
    fi
    # Debian's python3 leaves out ensurepip (so `python3 -m venv` fails) unless its
    # python3.X-venv package is installed.
    if ! "$base_python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        local minor
        minor=$(py_version "$base_python" | cut -d. -f1,2)
        if [[ $base_python == /usr/bin/* ]]; then
            need+=("python$minor-venv:the venv module of Debian's $base_python")
        else
            problems+=("$base_python (Python $(py_version "$base_python")) has no venv/ensurepip module; install it or choose another interpreter with PYTHON=.")
        fi
    fi
}

check_java
check_python
have mvn || need+=("maven:resolves Kafka's jars from Maven Central")
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=("postgresql:the task database")
have redis-server || need+=("redis-server:the Celery broker")
have kcat || need+=("kcat:inspecting Kafka topics by hand")
have chromium || need+=("chromium:the dashboard's browser test")
have wrk || need+=("wrk:the HTTP load generator of make bench")

if ((${#need[@]})); then
    if ((check_only)) || [[ $(id -u) -ne 0 ]]; then
        echo "setup: these Debian packages are missing; install them as root:" >&2
        printf '  %s\n' "${need[@]}" >&2
        need=()
        problems+=("Debian packages are missing (listed above).")
    else
        pkgs=()
        for item in "${need[@]}"; do
            echo "setup: installing ${item%%:*} (${item#*:})"
            pkgs+=("${item%%:*}")
        done
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
        # What was just installed must now pass the same checks.
        need=()
        check_java
        check_python
        for item in "${need[@]}"; do
            problems+=("${item%%:*} is still missing after installing it (${item#*:}).")
        done
    fi
fi

if ((${#problems[@]})); then
    echo "setup: cannot go on:" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    exit 1
fi
if ((check_only)); then
    if venv_usable; then
        echo "setup: ok (.venv/ runs Python $(py_version .venv/bin/python), Java $(java_major))"
    else
        echo "setup: ok (.venv/ would be made from $base_python, Python $(py_version "$base_python"); Java $(java_major))"
    fi
    exit 0
fi

# Debian's postgresql package starts its own cluster on 5432; ours runs instead.
if [[ $(id -u) -eq 0 ]] && have pg_lsclusters && pg_lsclusters -h 2>/dev/null | grep -q online; then
    echo "setup: stopping Debian's default PostgreSQL cluster (ours uses the same port)"
    pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r v c; do
        pg_ctlcluster "$v" "$c" stop || true
    done
fi

stamp=.venv/.requirements.sha256
want=$(cat requirements-dev.lock | sha256sum | cut -d' ' -f1)
if ! venv_usable; then
    # Missing, made by an interpreter that is gone or too old, or left half-made.
    echo "setup: creating .venv from $base_python (Python $(py_version "$base_python"))"
    "$base_python" -m venv --clear .venv
fi
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    # From the lock, each file checked against its hash: nothing unpinned or altered.
    echo "setup: installing Python packages (requirements-dev.lock, hashes required)"
    .venv/bin/pip install -q --disable-pip-version-check --require-hashes -r requirements-dev.lock
    echo "$want" >"$stamp"
fi
# The client (client/, a package of its own) in .venv, editable: the tests use it and
# `taskplatform` is on .venv/bin. Its dependencies (httpx, pydantic) and the setuptools
# that builds it come from the lock above, hence --no-deps and --no-build-isolation (a
# directory cannot be hash-checked; an isolated build would fetch setuptools unchecked).
# Again only when its pyproject.toml changes.
client_stamp=.venv/.client.sha256
want_client=$(sha256sum client/pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/taskplatform || ! -f $client_stamp || $(cat "$client_stamp") != "$want_client" ]]; then
    echo "setup: installing the client (client/, editable)"
    .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e ./client
    echo "$want_client" >"$client_stamp"
fi

.venv/bin/python -c "from ops.kafka_node import fetch_jars; print('setup: Kafka jars in', fetch_jars())"
