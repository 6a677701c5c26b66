#!/bin/sh
# Entrypoint of berth-test/mariadb: behaves like the official mysql image's
# for what the tests use. Arguments starting with "-" are server flags; on
# first start with an empty data dir it initialises it and sets the root
# password from MYSQL_ROOT_PASSWORD (root may log in from any host), and
# creates MYSQL_DATABASE if set.
set -eu
if [ "${1#-}" != "$1" ]; then
  set -- mariadbd "$@"
fi
case "$1" in
  mariadbd|mysqld) shift ;;
  *) exec "$@" ;;
esac

datadir=/var/lib/mysql
for arg in "$@"; do
  case "$arg" in
    --datadir=*) datadir="${arg#--datadir=}" ;;
  esac
done
mkdir -p "$datadir" /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld

if [ ! -d "$datadir/mysql" ]; then
  if [ -z "${MYSQL_ROOT_PASSWORD:-}" ] && [ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ]; then
    echo "error: database is uninitialized and MYSQL_ROOT_PASSWORD is not set" >&2
    exit 1
  fi
  echo "initialising $datadir"
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db --auth-root-authentication-method=normal >/dev/null
  mariadbd --user=mysql --datadir="$datadir" --skip-networking --socket=/run/mysqld/init.sock &
  pid=$!
  for _ in $(seq 1 60); do
    mariadb --socket=/run/mysqld/init.sock -uroot -e "SELECT 1" >/dev/null 2>&1 && break
    sleep 1
  done
  pw="${MYSQL_ROOT_PASSWORD:-}"
  mariadb --socket=/run/mysqld/init.sock -uroot <<SQL
ALTER USER 'root'@'localhost' IDENTIFIED BY '${pw}';
CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '${pw}';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  if [ -n "${MYSQL_DATABASE:-}" ]; then
    mariadb --socket=/run/mysqld/init.sock -uroot -p"$pw" -e "CREATE DATABASE IF NOT EXISTS \`${MYSQL_DATABASE}\`"
  fi
  kill "$pid"
  wait "$pid" || true
  echo "initialisation done"
fi
exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 "$@"
