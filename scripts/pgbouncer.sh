#!/usr/bin/env bash
# Starts (or stops) a PgBouncer in transaction mode on 127.0.0.1:6432 in front of the local
# PostgreSQL, configured like Neon's pooler but stricter: Debian's 1.18 has no prepared
# statement support at all, and the server pool is small so clients queue.
#   scripts/pgbouncer.sh start | stop
# A second instance (scripts/bench-fleet.sh) sets its own PGBOUNCER_DIR and PGBOUNCER_PORT; also
# PGBOUNCER_POOL (server connections per database, default 4) and PGBOUNCER_MAX_CLIENTS (500).
set -euo pipefail
dir="${PGBOUNCER_DIR:-/tmp/tasks-pgbouncer}"
port="${PGBOUNCER_PORT:-6432}"
case "${1:-start}" in
  stop)
    [ -f "$dir/pgbouncer.pid" ] && kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
command -v pgbouncer >/dev/null || { echo "pgbouncer is not installed (apt-get install pgbouncer)" >&2; exit 1; }
mkdir -p "$dir"
cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
stats_users = postgres
pool_mode = transaction
default_pool_size = ${PGBOUNCER_POOL:-4}
max_client_conn = ${PGBOUNCER_MAX_CLIENTS:-500}
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
query_wait_timeout = 120
# Default 15 s: after a failed server login PgBouncer waits that long before trying again,
# which would stretch a 2 s PostgreSQL restart into a 15 s outage.
server_login_retry = 1
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
echo '"postgres" ""' > "$dir/userlist.txt"
chown -R postgres "$dir" 2>/dev/null || true
"$0" stop
# PgBouncer refuses to run as root.
if [ "$(id -u)" = 0 ]; then
  su postgres -s /bin/sh -c "pgbouncer -d '$dir/pgbouncer.ini'"
else
  pgbouncer -d "$dir/pgbouncer.ini"
fi
for _ in $(seq 1 50); do
  pg_isready -h 127.0.0.1 -p "$port" -q && exit 0
  sleep 0.1
done
echo "pgbouncer did not start; see $dir/pgbouncer.log" >&2
exit 1
