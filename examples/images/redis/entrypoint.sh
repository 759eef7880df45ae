#!/bin/sh
# Redis with its data in /data; REDIS_PASSWORD (cskefu passes DB_PASSWD) protects it. With
# arguments (a compose file's `command: redis-server --appendonly yes ...`), runs them in /data,
# as the redis images do.
set -eu
mkdir -p /data
cd /data
if [ "${1:-}" = redis-server ]; then
    exec "$@" --protected-mode no
elif [ $# -gt 0 ]; then
    exec "$@"
fi
if [ -n "${REDIS_PASSWORD:-}" ]; then
    exec redis-server --dir /data --appendonly yes --protected-mode no --requirepass "$REDIS_PASSWORD"
fi
exec redis-server --dir /data --appendonly yes --protected-mode no
