#!/usr/bin/env bash
# Builds the stand-in images of the compose apps' services, tagged with the upstream names, from
# Debian's packages (there is no image registry here): a Debian bookworm root made with
# debootstrap becomes a base image (`docker import`), and each service's image adds its
# entrypoint to it (`docker build`, no `# syntax=` lines, nothing pulled).
#
#   cskefu/mysql:5.7               MariaDB 10.11 (Debian) in MySQL's role; MYSQL_ROOT_PASSWORD,
#                                  data in /var/lib/mysql owned by uid 999, database cosinee
#   cskefu/redis:5.0.5             redis-server (Debian), data in /data
#   cskefu/activemq:5.14.3         NOT ActiveMQ: a small stand-in that listens on its ports and
#                                  keeps a journal in /data/activemq
#   postgres:16-alpine             PostgreSQL 15 (Debian) in its role: POSTGRES_PASSWORD,
#                                  POSTGRES_USER, POSTGRES_DB, data in $PGDATA
#   redis:7-alpine                 the same Redis, for SsalgTen (runs a compose `command`)
#   ssalgten/backend:TAG           NOT SsalgTen: one stand-in image in both roles (see
#   ssalgten/frontend:TAG          ssalgten/app.py): migrations at start, GET :3001/api/health,
#                                  GET :80/health; v1 healthy, v2 migrates and fails its health,
#                                  v3 migrates and stays healthy
#   cskefu/contact-center:TAG      NOT the real app: a stand-in speaking its health endpoint
#                                  (GET :8035/actuator/health) that upgrades its schema in
#                                  cosinee at start and writes messages (two rows each, one
#                                  transaction) and uploads (/data/uploads)
#
# Each image is built once per machine and reused by tag: its label `coffer.source` holds the
# hash of what built it, and a changed source rebuilds it. Safe to run concurrently (flock).
# Usage: build.sh [--force]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
force=${1:-}
exec 9>/tmp/coffer-test-images.lock
flock 9

# The contact-center tags to build: a pinned one (a git short id, as the manual demands) and the
# moving `develop`, both the same image, as upstream's develop points at the newest build.
CC_PINNED=4b70d05
PACKAGES=mariadb-server,mariadb-client,redis-server,postgresql,python3,procps
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

label() { docker image inspect -f '{{ index .Config.Labels "coffer.source" }}' "$1" 2>/dev/null || true; }
hash_of() { (cd "$here" && cat "$1"/* build.sh | sha256sum | cut -c1-16); }

started=$(date +%s)
base_hash=$(echo "$PACKAGES bookworm uid999" | sha256sum | cut -c1-16)
base=coffer-test/debian-base:$base_hash
if [ "$force" = --force ] || ! docker image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    root=$(mktemp -d /tmp/coffer-rootfs.XXXXXX)
    trap 'umount "$root/proc" 2>/dev/null || true; rm -rf "$root"' EXIT
    echo "debootstrap bookworm with $PACKAGES (a few minutes, once per machine)"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >/tmp/coffer-debootstrap.log 2>&1 || {
        tail -n 30 /tmp/coffer-debootstrap.log; exit 1; }
    # MySQL's images run it as uid/gid 999; their data folders are owned by 999 on the host.
    chroot "$root" sh -c 'groupmod -g 999 mysql && usermod -u 999 -g 999 mysql &&
        chown -R mysql:mysql /run/mysqld /var/log/mysql 2>/dev/null; rm -rf /var/lib/mysql/*;
        pg_dropcluster --stop 15 main 2>/dev/null; true'
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    umount "$root/proc" 2>/dev/null || true
    tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$base" >/dev/null
    rm -rf "$root"; trap - EXIT
fi

build() { # tag folder [build-arg...]
    local tag=$1 dir=$2; shift 2
    local args=(); for a in "$@"; do args+=(--build-arg "$a"); done
    local h; h=$(hash_of "$dir")-$(echo "$*" | sha256sum | cut -c1-8)
    if [ "$force" != --force ] && [ "$(label "$tag")" = "$h" ]; then return; fi
    docker build -q --label coffer.source="$h" --build-arg BASE="$base" "${args[@]}" \
        -t "$tag" "$here/$dir" >/tmp/coffer-image-build.log 2>&1 || {
        cat /tmp/coffer-image-build.log; exit 1; }
    echo "built $tag"
}
build cskefu/mysql:5.7 mysql
build cskefu/redis:5.0.5 redis
build cskefu/activemq:5.14.3 activemq
build postgres:16-alpine postgres
build cskefu/contact-center:$CC_PINNED contact-center VERSION=$CC_PINNED
docker tag cskefu/contact-center:$CC_PINNED cskefu/contact-center:develop
# Two later builds for guarded upgrades: one that migrates and stays healthy, one that migrates
# and then fails its health check.
build cskefu/contact-center:7d2c9e4 contact-center VERSION=7d2c9e4
build cskefu/contact-center:9f3e1aa contact-center VERSION=9f3e1aa HEALTH=fail
build redis:7-alpine redis
# SsalgTen: v1 healthy; v2 applies its migration and then fails its health check; v3 applies it
# and stays healthy. One image per tag serves as both backend and frontend.
for v in v1:ok v2:fail v3:ok; do
    build ssalgten/backend:${v%%:*} ssalgten VERSION=${v%%:*} HEALTH=${v#*:}
    docker tag ssalgten/backend:${v%%:*} ssalgten/frontend:${v%%:*}
done
echo "stand-in images ready in $(( $(date +%s) - started )) s"
