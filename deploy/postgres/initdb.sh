#!/bin/sh
# Run once by the postgres image on an empty volume (docker-compose.yml mounts it into
# /docker-entrypoint-initdb.d), as its superuser `postgres`: the platform's role, no
# superuser, owning its database, as ops/postgres_node.py makes them natively. psql's
# :'password' quotes the password, whatever characters it holds.
set -eu
psql -v ON_ERROR_STOP=1 --username postgres --dbname postgres \
    -v password="$TASKPLATFORM_PASSWORD" <<'SQL'
CREATE ROLE taskplatform LOGIN PASSWORD :'password';
CREATE DATABASE taskplatform OWNER taskplatform;
SQL
