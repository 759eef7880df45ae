#!/bin/sh
# The contract of the mysql images: MYSQL_ROOT_PASSWORD sets root's password (from anywhere) on
# first start; the data folder /var/lib/mysql belongs to uid 999; cskefu's image adds the
# database cosinee. MariaDB here, not MySQL 5.7.
set -eu
data=/var/lib/mysql
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
chown mysql:mysql "$data"
if [ ! -d "$data/mysql" ]; then
    : "${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD must be set}"
    mariadb-install-db --user=mysql --datadir="$data" --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    mariadbd --user=mysql --datadir="$data" --skip-networking --socket=/run/mysqld/init.sock &
    pid=$!
    i=0
    until mariadb-admin --socket=/run/mysqld/init.sock ping >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 120 ] || { echo "mariadbd did not start" >&2; exit 1; }
        sleep 0.5
    done
    mariadb --socket=/run/mysqld/init.sock <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}';
CREATE USER 'root'@'%' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD}';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS cosinee CHARACTER SET utf8mb4;
FLUSH PRIVILEGES;
SQL
    kill "$pid"
    wait "$pid" || true
fi
exec mariadbd --user=mysql --datadir="$data" --bind-address=0.0.0.0 --port=3306 \
    --socket=/run/mysqld/mysqld.sock
