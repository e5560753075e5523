#!/usr/bin/env bash
# Make sure the local services the test-suite may use are running:
# PostgreSQL (5432), Redis (6379) and RabbitMQ (5672) on 127.0.0.1.
# A service that cannot be started (not installed, or not answering) is an error:
# the script exits 1, as the suite then fails (see tests/services.py). A developer
# may opt out explicitly with SOURCERY_TEST_SKIP_SERVICES=1: the script then exits 0
# and the tests needing the missing services are skipped.
set -uo pipefail

HOST=127.0.0.1
WAIT_SECONDS=${WAIT_SECONDS:-60}
missing=()
failed=()

warn() { printf 'ensure-services: WARNING: %s\n' "$*" >&2; }
info() { printf 'ensure-services: %s\n' "$*"; }

port_open() {
    # Succeeds when something accepts TCP connections on $HOST:$1.
    if command -v timeout >/dev/null 2>&1; then
        timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
    else
        bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
    fi
}

postgres_ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$HOST" -p 5432
    else
        port_open 5432
    fi
}

redis_ready() {
    if command -v redis-cli >/dev/null 2>&1; then
        [[ "$(redis-cli -h "$HOST" -p 6379 ping 2>/dev/null)" == "PONG" ]]
    else
        port_open 6379
    fi
}

rabbitmq_ready() {
    port_open 5672
}

wait_for() {
    # wait_for NAME CHECK-FUNCTION
    local name=$1 check=$2 waited=0
    while ! "$check"; do
        if (( waited >= WAIT_SECONDS )); then
            warn "$name did not answer within ${WAIT_SECONDS}s"
            failed+=("$name")
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    info "$name is up"
}

ensure_postgres() {
    if postgres_ready; then info "PostgreSQL is up"; return; fi
    if ! command -v pg_ctlcluster >/dev/null 2>&1 || [[ ! -d /etc/postgresql ]]; then
        warn "PostgreSQL is not running and pg_ctlcluster is not installed"
        missing+=("PostgreSQL")
        return
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    info "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start \
        || warn "pg_ctlcluster failed to start PostgreSQL"
    wait_for PostgreSQL postgres_ready
}

ensure_redis() {
    if redis_ready; then info "Redis is up"; return; fi
    if ! command -v redis-server >/dev/null 2>&1; then
        warn "Redis is not running and redis-server is not installed"
        missing+=("Redis")
        return
    fi
    info "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
        || warn "redis-server failed to start"
    wait_for Redis redis_ready
}

ensure_rabbitmq() {
    if rabbitmq_ready; then
        info "RabbitMQ is up"
    elif ! command -v rabbitmq-server >/dev/null 2>&1; then
        warn "RabbitMQ is not running and rabbitmq-server is not installed"
        missing+=("RabbitMQ")
        return
    else
        info "starting RabbitMQ"
        rabbitmq-server -detached || warn "rabbitmq-server failed to start"
        wait_for RabbitMQ rabbitmq_ready || return
    fi
    # No plugin is needed: senders pick an actor's queue themselves (see
    # sourcery.queues.base.queue_index), because the consistent-hash exchange re-maps keys
    # when the node restarts.
}

ensure_test_database() {
    # The PostgreSQL tests use the database `test` (each test in a schema of its own).
    command -v psql >/dev/null 2>&1 || return
    postgres_ready || return
    if ! psql -U postgres -h "$HOST" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1; then
        if psql -U postgres -h "$HOST" -d postgres -qc "CREATE DATABASE test" 2>/dev/null; then
            info "created the PostgreSQL database test"
        else
            warn "could not create the PostgreSQL database test"
        fi
    fi
}

ensure_postgres
ensure_test_database
ensure_redis
ensure_rabbitmq

if (( ${#missing[@]} )); then
    warn "not installed: ${missing[*]}"
fi
if (( ${#failed[@]} )); then
    warn "installed but not ready: ${failed[*]}"
fi
if (( ${#missing[@]} + ${#failed[@]} )); then
    if [[ "${SOURCERY_TEST_SKIP_SERVICES:-}" == "1" ]]; then
        warn "SOURCERY_TEST_SKIP_SERVICES=1: the tests needing them will be skipped"
        exit 0
    fi
    warn "set SOURCERY_TEST_SKIP_SERVICES=1 to skip the tests needing them instead"
    exit 1
fi
exit 0
