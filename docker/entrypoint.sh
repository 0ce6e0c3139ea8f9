#!/bin/sh
# Entrypoint for every Lodestar container (web, worker, gpu-worker, beat, migrate).
#
# Waits for PostgreSQL (when DATABASE_URL points at one), applies migrations when
# RUN_MIGRATIONS=1 (the one-shot `migrate` service in docker-compose.yml sets it), then
# execs the command, so the process gets signals directly.
set -eu

if [ -n "${DATABASE_URL:-}" ] && [ "${DATABASE_URL#postgres}" != "$DATABASE_URL" ]; then
    python - <<'EOF'
import os, sys, time
import psycopg

url = os.environ["DATABASE_URL"]
deadline = time.monotonic() + int(os.environ.get("DB_WAIT_SECONDS", "60"))
while True:
    try:
        psycopg.connect(url, connect_timeout=3).close()
        break
    except psycopg.OperationalError as error:
        if time.monotonic() > deadline:
            sys.exit(f"database not reachable: {error}")
        time.sleep(1)
EOF
fi

if [ "${RUN_MIGRATIONS:-0}" = "1" ]; then
    python manage.py migrate --noinput
fi

exec "$@"
