#!/bin/sh
# Redis with its data in /data; REDIS_PASSWORD (cskefu passes DB_PASSWD) protects it.
set -eu
mkdir -p /data
if [ -n "${REDIS_PASSWORD:-}" ]; then
    exec redis-server --dir /data --appendonly yes --protected-mode no --requirepass "$REDIS_PASSWORD"
fi
exec redis-server --dir /data --appendonly yes --protected-mode no
