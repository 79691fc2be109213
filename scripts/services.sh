#!/usr/bin/env bash
# Make sure the PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) that the tests use are
# running, starting them with this machine's own packages when they are not. Under CI=true a
# service that cannot be started is an error; elsewhere it is a warning and the tests that need
# it are skipped (they fail under CI=true too).
set -uo pipefail

postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

wait_for() {  # wait_for CHECK: up to 30 s
    for _ in $(seq 60); do "$1" && return 0; sleep 0.5; done
    return 1
}

if ! postgres_up && command -v pg_ctlcluster >/dev/null; then
    echo "services: starting PostgreSQL"
    # pg_ctl refuses to run as root; pg_ctlcluster runs the server as the postgres user.
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    wait_for postgres_up
fi

if ! redis_up && command -v redis-server >/dev/null; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
    wait_for redis_up
fi

missing=()
postgres_up || missing+=("PostgreSQL on 127.0.0.1:5432")
redis_up || missing+=("Redis on 127.0.0.1:6379")
if [ ${#missing[@]} -gt 0 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "services: not running and could not be started: ${missing[*]}" >&2
        exit 1
    fi
    echo "services: warning: not running: ${missing[*]}; tests that need them will be skipped" >&2
fi
exit 0
