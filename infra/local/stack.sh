#!/usr/bin/env bash
# Local development stack for SpaceMusic: the real dependencies, run as plain processes
# (no Docker), everything bound to 127.0.0.1.
#
#   bash infra/local/stack.sh install | up | down | status | reset | logs <name>
#
# Components (name: what, where):
#   pg        PostgreSQL 15             127.0.0.1:$PG_PORT        data .local/data/pg
#   registry  Apicurio Registry 3.0.9   127.0.0.1:$REGISTRY_PORT  schemas stored in Postgres db "registry"
#   kafka     Kafka 3.9.1 (KRaft)       $KAFKA_BOOTSTRAP_SERVERS  data .local/data/kafka
#   s3        moto S3 server            127.0.0.1:$S3_PORT        in memory
#   stripe    stripe-mock               127.0.0.1:$STRIPE_PORT    stateless
#   oidc      oidc-provider (npm)       127.0.0.1:$OIDC_PROVIDER_PORT  keys .local/data/oidc (infra/local/oidc)
# Logs in .local/logs/<name>.log, pid files in .local/run/<name>.pid. See infra/local/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

# ---- settings (infra/local/dev.env is exported by the Makefile; defaults for stand-alone use)
: "${KAFKA_BOOTSTRAP_SERVERS:=127.0.0.1:19092}"
: "${KAFKA_CONTROLLER_PORT:=19093}"
: "${REGISTRY_PORT:=18081}"
: "${PG_PORT:=15432}"
: "${S3_PORT:=15000}"
: "${STRIPE_PORT:=12111}"
: "${OIDC_PROVIDER_PORT:=18900}"
: "${UP_TIMEOUT:=90}"          # seconds each component may take to become healthy
: "${PYTHON:=python3}"         # interpreter used to create .venv (project needs 3.11 or 3.12)

APICURIO_VERSION=3.0.9
STRIPE_MOCK_VERSION=v0.203.0
PG_BIN=/usr/lib/postgresql/15/bin
HOST=127.0.0.1
KAFKA_PORT="${KAFKA_BOOTSTRAP_SERVERS%%,*}"; KAFKA_PORT="${KAFKA_PORT##*:}"

LOCAL="$ROOT/.local"
DATA="$LOCAL/data"
LOGS="$LOCAL/logs"
RUN="$LOCAL/run"
STAMPS="$LOCAL/stamps"
VENV="$ROOT/.venv"
KAFKA_LIBS="$LOCAL/kafka/libs"
APICURIO_DIR="$LOCAL/apicurio"
APICURIO_JAR="$APICURIO_DIR/apicurio-registry-app-$APICURIO_VERSION-runner.jar"
STRIPE_BIN="$LOCAL/bin/stripe-mock"
PGDATA="$DATA/pg"
PG_PWFILE="$DATA/pg-superuser.password"
PG_SOCK_DIR="$RUN"

COMPONENTS=(pg registry kafka s3 stripe oidc)

IS_ROOT=0; [[ $EUID -eq 0 ]] && IS_ROOT=1

# ---- small helpers -------------------------------------------------------------------------
say()  { printf '%s\n' "$*"; }
err()  { printf 'stack: %s\n' "$*" >&2; }
die()  { err "$*"; exit 1; }
now()  { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
line() { printf '%-9s %-24s %s\n' "$1" "$2" "$3"; }

sha() { sha256sum "$1" | cut -c1-16; }

# Run an install step with its output appended to .local/logs/install.log; show it on failure.
# (Maven 3.8 prints stray ANSI escapes even with -q, hence no direct output.)
logged() {
  local log="$LOGS/install.log" start
  mkdir -p "$LOGS"
  printf '\n===== %s: %s =====\n' "$(date '+%F %T')" "$*" >>"$log"
  start=$(wc -l <"$log")
  if ! "$@" >>"$log" 2>&1; then
    err "install step failed: $*"
    err "log: $log (output of the step below)"
    tail -n +"$((start + 1))" "$log" | tail -n 40 | sed 's/^/    /' >&2
    exit 1
  fi
}

# A lock so that two concurrent invocations (make -j, two terminals) do not race.
take_lock() {
  mkdir -p "$RUN"
  exec 9>"$LOCAL/stack.lock"
  flock -w 600 9 || die "another stack.sh is still running (lock $LOCAL/stack.lock)"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

port_owner() {  # best effort description of who listens on a port
  if command -v ss >/dev/null 2>&1; then
    ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:(\(.*\))/\1/p' | head -1
  fi
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# cmdline of a pid contains a marker (guards against a recycled pid)
pid_is() {
  local pid=$1 marker=$2 cmd
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$marker"* ]]
}

addr_of() {
  case $1 in
    pg) echo "$HOST:$PG_PORT" ;;
    registry) echo "http://$HOST:$REGISTRY_PORT" ;;
    kafka) echo "$HOST:$KAFKA_PORT" ;;
    s3) echo "http://$HOST:$S3_PORT" ;;
    stripe) echo "http://$HOST:$STRIPE_PORT" ;;
    oidc) echo "http://$HOST:$OIDC_PROVIDER_PORT" ;;
  esac
}

marker_of() {
  case $1 in
    pg) echo "postgres" ;;
    registry) echo "apicurio-registry-app" ;;
    kafka) echo "kafka.Kafka" ;;
    s3) echo "moto_server" ;;
    stripe) echo "stripe-mock" ;;
    oidc) echo "server.mjs" ;;
  esac
}

ports_of() {
  case $1 in
    pg) echo "$PG_PORT" ;;
    registry) echo "$REGISTRY_PORT" ;;
    kafka) echo "$KAFKA_PORT $KAFKA_CONTROLLER_PORT" ;;
    s3) echo "$S3_PORT" ;;
    stripe) echo "$STRIPE_PORT" ;;
    oidc) echo "$OIDC_PROVIDER_PORT" ;;
  esac
}

canonical_name() {
  case ${1:-} in
    pg|postgres|postgresql) echo pg ;;
    registry|apicurio|schema-registry) echo registry ;;
    kafka) echo kafka ;;
    s3|moto) echo s3 ;;
    stripe|stripe-mock) echo stripe ;;
    oidc|oidc-provider|idp) echo oidc ;;
    *) return 1 ;;
  esac
}

log_of() { echo "$LOGS/$1.log"; }

# Run a command as the postgres OS user when we are root (postgres refuses to run as root).
as_pg() {
  if (( IS_ROOT )); then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---- install --------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {  # packages...; apt-get update at most once per run
  local sudo=()
  if (( ! IS_ROOT )); then
    command -v sudo >/dev/null 2>&1 \
      || die "Debian packages are missing ($*), this is not root and there is no sudo; as root run: apt-get install $*"
    sudo=(sudo)
  fi
  if (( ! APT_UPDATED )); then "${sudo[@]}" apt-get update -q; APT_UPDATED=1; fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

install_debs() {
  local want=(postgresql-15 libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core chromium)
  command -v curl >/dev/null 2>&1 || want+=(curl)
  command -v java >/dev/null 2>&1 || want+=(openjdk-17-jre-headless)
  command -v mvn  >/dev/null 2>&1 || want+=(maven)
  local missing=() p status
  local -A installed=()
  while read -r p status; do
    [[ $status == installed ]] && installed[$p]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${want[@]}" 2>/dev/null || true)
  for p in "${want[@]}"; do [[ -n ${installed[$p]:-} ]] || missing+=("$p"); done
  if (( ${#missing[@]} == 0 )); then say "debs      ok"; return; fi
  local t0; t0=$(now)
  say "debs      installing: ${missing[*]}"
  apt_install "${missing[@]}"
  say "debs      installed in $(since "$t0")s"
}

install_venv() {
  local stamp; stamp="$STAMPS/venv.$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [[ -f $stamp && -x $VENV/bin/python ]]; then say "venv      ok"; return; fi
  local t0; t0=$(now)
  if [[ ! -x $VENV/bin/python ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (need Python 3.11 or 3.12; set PYTHON=...)"
    "$PYTHON" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' \
      || die "$PYTHON is $("$PYTHON" -V 2>&1); the project needs 3.11 or 3.12 (set PYTHON=...)"
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
      # Debian splits venv/ensurepip out of python3 itself.
      apt_install python3-venv
    fi
    "$PYTHON" -m venv "$VENV"
  fi
  [[ -x $VENV/bin/uv ]] || logged "$VENV/bin/pip" install -q uv
  logged "$VENV/bin/uv" pip install --python "$VENV/bin/python" -e '.[dev]'
  mkdir -p "$STAMPS"; rm -f "$STAMPS"/venv.*; touch "$stamp"
  say "venv      installed in $(since "$t0")s"
}

install_kafka() {
  local stamp; stamp="$STAMPS/kafka-libs.$(sha infra/local/kafka-pom.xml)"
  if [[ -f $stamp && -d $KAFKA_LIBS ]]; then say "kafka     ok"; return; fi
  local t0; t0=$(now)
  rm -rf "$KAFKA_LIBS.tmp"
  logged mvn -q -B -f infra/local/kafka-pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp"
  rm -rf "$KAFKA_LIBS"; mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  mkdir -p "$STAMPS"; rm -f "$STAMPS"/kafka-libs.*; touch "$stamp"
  say "kafka     installed in $(since "$t0")s ($(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars)"
}

install_apicurio() {
  local stamp="$STAMPS/apicurio.$APICURIO_VERSION"
  if [[ -f $stamp && -f $APICURIO_JAR && -d $APICURIO_DIR/lib ]]; then say "registry  ok"; return; fi
  local t0 tgz="$APICURIO_DIR/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
  t0=$(now)
  mkdir -p "$APICURIO_DIR"
  if [[ ! -f $tgz ]]; then
    # dependency:copy needs no project; run it where there is no pom.xml
    (cd "$APICURIO_DIR" && logged mvn -q -B dependency:copy \
      -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
      -DoutputDirectory="$APICURIO_DIR")
  fi
  rm -rf "${APICURIO_DIR:?}/lib" "${APICURIO_DIR:?}/meta"
  tar -xzf "$tgz" -C "$APICURIO_DIR"
  [[ -f $APICURIO_JAR ]] || die "registry: $tgz did not contain $(basename "$APICURIO_JAR")"
  mkdir -p "$STAMPS"; rm -f "$STAMPS"/apicurio.*; touch "$stamp"
  say "registry  installed in $(since "$t0")s"
}

go_minor() { "$1" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p'; }

# Prints the path of a go command able to build stripe-mock (its go.mod says go 1.22.1).
# go >= 1.21 fetches a newer toolchain from the module proxy by itself (GOTOOLCHAIN=auto).
# Debian 12's golang-go is 1.19, which cannot; in that case fetch the golang.org/toolchain
# module (a regular Go module on the proxy) with it and use that.
find_go() {
  local go minor
  go=$(command -v go || true)
  [[ -z $go && -x /usr/local/go/bin/go ]] && go=/usr/local/go/bin/go
  if [[ -z $go ]]; then
    apt_install golang-go ca-certificates >&2
    go=$(command -v go) || die "go still not found after installing golang-go"
  fi
  minor=$(go_minor "$go")
  if [[ -n $minor ]] && (( minor >= 21 )); then echo "$go"; return; fi
  local tc dir
  tc="golang.org/toolchain@v0.0.1-go1.22.12.linux-$(dpkg --print-architecture)"
  dir=$(cd /tmp && GOFLAGS=-modcacherw GO111MODULE=on "$go" mod download -json "$tc" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [[ -n $dir && -f $dir/bin/go ]] || die "could not fetch Go toolchain $tc through the module proxy"
  chmod -R u+x "$dir/bin" "$dir/pkg/tool"
  echo "$dir/bin/go"
}

install_stripe_mock() {
  local stamp="$STAMPS/stripe-mock.$STRIPE_MOCK_VERSION"
  if [[ -x $STRIPE_BIN && -f $stamp ]]; then say "stripe    ok"; return; fi
  local t0 go
  t0=$(now)
  mkdir -p "$STAMPS" "$LOCAL/bin"
  if [[ -x $STRIPE_BIN ]] && command -v go >/dev/null 2>&1 \
     && go version -m "$STRIPE_BIN" 2>/dev/null | grep -q "github.com/stripe/stripe-mock[[:space:]]*$STRIPE_MOCK_VERSION"; then
    rm -f "$STAMPS"/stripe-mock.*; touch "$stamp"; say "stripe    ok (existing binary is $STRIPE_MOCK_VERSION)"; return
  fi
  go=$(find_go)
  logged env GOBIN="$LOCAL/bin" "$go" install "github.com/stripe/stripe-mock@$STRIPE_MOCK_VERSION"
  rm -f "$STAMPS"/stripe-mock.*; touch "$stamp"
  say "stripe    installed in $(since "$t0")s"
}

install_oidc() {  # the local OpenID Connect provider: oidc-provider from the npm registry
  command -v node >/dev/null 2>&1 || apt_install nodejs npm
  bash "$ROOT/infra/local/oidc/install.sh" && say "oidc      ok"
}

cmd_install() {
  take_lock
  mkdir -p "$STAMPS" "$LOGS" "$RUN" "$DATA"
  install_debs
  install_venv
  install_kafka
  install_apicurio
  install_stripe_mock
  install_oidc
  [[ -x $VENV/bin/moto_server ]] || die "moto_server missing from .venv (the dev extra should bring moto[server])"
}

# ---- health checks --------------------------------------------------------------------------
health_pg() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2; }
health_registry() {
  curl -fsS -o /dev/null --max-time 3 "http://$HOST:$REGISTRY_PORT/apis/ccompat/v7/subjects" 2>/dev/null
}
health_kafka() {
  port_open "$KAFKA_PORT" || return 1
  "$VENV/bin/python" - "$HOST:$KAFKA_PORT" 2>/dev/null <<'PY'
import asyncio, sys
from aiokafka.admin import AIOKafkaAdminClient
async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=4000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()
asyncio.run(asyncio.wait_for(main(), 6))
PY
}
health_s3() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$HOST:$S3_PORT/" 2>/dev/null || true)
  [[ -n $code && $code != 000 ]]
}
health_oidc() {
  curl -fsS -o /dev/null --max-time 3 "http://$HOST:$OIDC_PROVIDER_PORT/.well-known/openid-configuration" 2>/dev/null
}
health_stripe() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 -u sk_test_123: \
         "http://$HOST:$STRIPE_PORT/v1/balance" 2>/dev/null || true)
  [[ $code == 200 ]]
}

# ---- process bookkeeping --------------------------------------------------------------------
# Prints the pid of our running process for a component, or fails; removes stale pid files.
running_pid() {
  local name=$1 pidfile="$RUN/$1.pid" pid=""
  if [[ $name == pg ]]; then
    [[ -r $PGDATA/postmaster.pid ]] && read -r pid <"$PGDATA/postmaster.pid" || true
    if pid_alive "$pid" && pid_is "$pid" postgres; then
      echo "$pid" 2>/dev/null >"$pidfile" || true; echo "$pid"; return 0
    fi
    rm -f "$pidfile"; return 1
  fi
  [[ -r $pidfile ]] && read -r pid <"$pidfile" || true
  if pid_alive "$pid" && pid_is "$pid" "$(marker_of "$name")"; then echo "$pid"; return 0; fi
  rm -f "$pidfile"; return 1
}

fail_component() {  # name message [nolog]
  local name=$1 log; log=$(log_of "$1")
  err "$name FAILED: $2"
  if [[ -z ${3:-} && -f $log ]]; then
    err "log: $log (last 20 lines below)"
    tail -n 20 "$log" | sed 's/^/    /' >&2
  else
    err "log: $log"
  fi
  exit 1
}

check_ports_free() {
  local name=$1 p owner
  for p in $(ports_of "$name"); do
    if port_open "$p"; then
      owner=$(port_owner "$p")
      fail_component "$name" "port $HOST:$p is already in use by another process${owner:+ ($owner)}; stop it first" nolog
    fi
  done
}

# Start a detached process (own session, survives the calling shell) writing its pid file.
spawn() {  # name workdir cmd...
  local name=$1 dir=$2; shift 2
  local log; log=$(log_of "$name")
  rm -f "$RUN/$name.pid"
  printf '\n===== %s: starting %s =====\n' "$(date '+%F %T')" "$name" >>"$log"
  # 9>&-: the child must not inherit the stack lock (it would hold it for its lifetime)
  ( cd "$dir" && exec setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" ) \
    >>"$log" 2>&1 </dev/null 9>&- &
  local i
  for i in $(seq 1 50); do [[ -s $RUN/$name.pid ]] && return 0; sleep 0.1; done
  fail_component "$name" "process did not start"
}

# Wait until all the named components are healthy, checking them in turn and printing each
# as soon as it is; fail early if a process died.
wait_healthy() {  # name...   (start times in the associative array T0)
  local deadline name pid left=("$@") next
  deadline=$(( $(date +%s) + UP_TIMEOUT ))
  while (( ${#left[@]} )); do
    next=()
    for name in "${left[@]}"; do
      if "health_$name"; then
        line "$name" "$(addr_of "$name")" "started in $(since "${T0[$name]}")s"
        continue
      fi
      pid=$(running_pid "$name") || fail_component "$name" "the process exited during startup"
      (( $(date +%s) < deadline )) \
        || fail_component "$name" "not healthy after ${UP_TIMEOUT}s (pid $pid still running)"
      next+=("$name")
    done
    left=("${next[@]}")
    (( ${#left[@]} )) && sleep 0.3
  done
  return 0
}

# ---- postgres -------------------------------------------------------------------------------
pg_prepare_dirs() {
  mkdir -p "$DATA" "$LOGS" "$RUN"
  touch "$(log_of pg)"
  if (( IS_ROOT )); then
    id -u postgres >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/postgresql \
      --shell /usr/sbin/nologin --comment "PostgreSQL administrator" postgres
    chown postgres: "$RUN" "$(log_of pg)"
    [[ -d $PGDATA ]] && chown -R postgres: "$PGDATA"
    # The postgres user must be able to traverse every parent directory of the repo.
    local d="$ROOT"
    while [[ $d != / ]]; do
      if ! runuser -u postgres -- test -x "$d"; then
        say "pg        note: chmod o+x $d so the postgres user can reach the data directory"
        chmod o+x "$d"
      fi
      d=$(dirname "$d")
    done
  fi
}

pg_initdb() {
  [[ -f $PGDATA/PG_VERSION ]] && return 0
  rm -rf "$PGDATA"; mkdir -p "$PGDATA"; chmod 700 "$PGDATA"
  if [[ ! -s $PG_PWFILE ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$PG_PWFILE")
  fi
  if (( IS_ROOT )); then chown postgres: "$PGDATA" "$PG_PWFILE"; fi
  as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --pwfile="$PG_PWFILE" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$(log_of pg)" 2>&1 \
    || fail_component pg "initdb failed"
  # Settings that depend on the environment live in spacemusic.conf, rewritten on each start.
  printf "\n# local stack settings (infra/local/stack.sh)\ninclude_if_exists = 'spacemusic.conf'\n" \
    >>"$PGDATA/postgresql.conf"
}

pg_write_conf() {
  local sock="$PG_SOCK_DIR"
  cat >"$PGDATA/spacemusic.conf" <<EOF
# Written by infra/local/stack.sh on every start; do not edit.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$sock'
max_connections = 200
fsync = on
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 1000
EOF
  if (( IS_ROOT )); then chown postgres: "$PGDATA/spacemusic.conf"; fi
}

pg_bootstrap_sql() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK_DIR" -p "$PG_PORT" -U postgres -d postgres \
    >>"$(log_of pg)" 2>&1 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'spacemusic') THEN
    CREATE ROLE spacemusic LOGIN CREATEDB PASSWORD 'spacemusic';
  ELSE
    ALTER ROLE spacemusic LOGIN CREATEDB PASSWORD 'spacemusic';
  END IF;
END
$$;
SELECT 'CREATE DATABASE spacemusic OWNER spacemusic'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'spacemusic') \gexec
SELECT 'CREATE DATABASE registry OWNER spacemusic'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'registry') \gexec
SQL
}

up_pg() {
  local t0 pid; t0=$(now)
  if pid=$(running_pid pg); then
    local deadline=$(( $(date +%s) + UP_TIMEOUT ))
    until health_pg; do
      (( $(date +%s) < deadline )) || fail_component pg "process $pid runs but pg_isready fails"
      sleep 0.5
    done
    pg_bootstrap_sql || fail_component pg "could not create role/databases"
    line pg "$(addr_of pg)" "already up"
    return
  fi
  check_ports_free pg
  (( ${#PG_SOCK_DIR} < 100 )) || die "pg: socket dir path too long for a unix socket: $PG_SOCK_DIR"
  pg_prepare_dirs
  pg_initdb
  pg_write_conf
  rm -f "$PG_SOCK_DIR/.s.PGSQL.$PG_PORT.lock" 2>/dev/null || true
  printf '\n===== %s: starting pg =====\n' "$(date '+%F %T')" >>"$(log_of pg)"
  as_pg "$PG_BIN/pg_ctl" start -D "$PGDATA" -l "$(log_of pg)" -w -t "$UP_TIMEOUT" -s \
    >>"$(log_of pg)" 2>&1 </dev/null 9>&- || fail_component pg "pg_ctl start failed"
  running_pid pg >/dev/null || fail_component pg "postmaster is not running after pg_ctl start"
  health_pg || fail_component pg "pg_isready fails after start"
  pg_bootstrap_sql || fail_component pg "could not create role/databases"
  line pg "$(addr_of pg)" "started in $(since "$t0")s"
}

down_pg() {
  local pid
  if pid=$(running_pid pg); then
    as_pg "$PG_BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 -s >>"$(log_of pg)" 2>&1 \
      || { err "pg: pg_ctl stop failed; sending SIGKILL to $pid"; kill -KILL "$pid" 2>/dev/null || true; }
    rm -f "$RUN/pg.pid"
    line pg "$(addr_of pg)" "stopped"
  else
    line pg "$(addr_of pg)" "was not running"
  fi
}

# ---- registry / kafka / s3 / stripe launchers -----------------------------------------------
launch_registry() {
  local dir="$DATA/registry"; mkdir -p "$dir/tmp"
  spawn registry "$dir" java -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.io.tmpdir="$dir/tmp" \
    -Dquarkus.http.host="$HOST" \
    -Dquarkus.http.port="$REGISTRY_PORT" \
    -Dapicurio.storage.kind=sql \
    -Dapicurio.storage.sql.kind=postgresql \
    -Dapicurio.datasource.url="jdbc:postgresql://$HOST:$PG_PORT/registry" \
    -Dapicurio.datasource.username=spacemusic \
    -Dapicurio.datasource.password=spacemusic \
    -Dapicurio.datasource.jdbc.initial-size=2 \
    -Dapicurio.datasource.jdbc.min-size=2 \
    -Dapicurio.datasource.jdbc.max-size=20 \
    -Dapicurio.rest.deletion.artifact.enabled=true \
    -Dapicurio.rest.deletion.artifact-version.enabled=true \
    -Dapicurio.rest.deletion.group.enabled=true \
    -Dapicurio.ccompat.use-canonical-hash=true \
    -Dapicurio.ccompat.max-subjects=100000 \
    -Dapicurio.import.work-dir="$dir/tmp" \
    -Dapicurio.storage.snapshot.location="$dir/tmp" \
    -Dquarkus.http.access-log.enabled=false \
    '-Dquarkus.log.category."io.quarkus".level=INFO' \
    '-Dquarkus.log.console.format=%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p [%c{3.}] (%t) %s%e%n' \
    -jar "$APICURIO_JAR"
}

kafka_write_props() {
  local dir="$DATA/kafka"
  mkdir -p "$dir/logs"
  cat >"$dir/server.properties.new" <<EOF
# Written by infra/local/stack.sh on every start; do not edit.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/logs
num.partitions=3
default.replication.factor=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.hours=168
EOF
  mv "$dir/server.properties.new" "$dir/server.properties"
}

kafka_java() { java -Xmx256m -Dlog4j.configuration="file:$ROOT/infra/local/log4j.properties" -cp "$KAFKA_LIBS/*" "$@"; }

kafka_format() {
  local dir="$DATA/kafka" id
  [[ -f $dir/logs/meta.properties ]] && return 0
  if [[ ! -s $dir/cluster.id ]]; then
    id=$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$(log_of kafka)" \
         | grep -E '^[A-Za-z0-9_-]{22}$' | tail -1 || true)
    [[ -n $id ]] || fail_component kafka "StorageTool random-uuid failed"
    echo "$id" >"$dir/cluster.id"
  fi
  read -r id <"$dir/cluster.id"
  kafka_java kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" --ignore-formatted \
    >>"$(log_of kafka)" 2>&1 || fail_component kafka "StorageTool format failed"
}

launch_kafka() {
  local dir="$DATA/kafka"
  kafka_write_props
  kafka_format
  spawn kafka "$dir" java -Xmx1g -Xms256m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dkafka.logs.dir="$LOGS" \
    -Dlog4j.configuration="file:$ROOT/infra/local/log4j.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties"
}

launch_s3() {
  local dir="$DATA/s3"; mkdir -p "$dir"
  spawn s3 "$dir" "$VENV/bin/moto_server" -H "$HOST" -p "$S3_PORT"
}

launch_stripe() {
  local dir="$DATA/stripe"; mkdir -p "$dir"
  # stripe-mock also serves HTTPS on *:12112 unless told otherwise, even with -http-addr:
  # park the HTTPS side on a unix socket so nothing listens beyond 127.0.0.1.
  rm -f "$RUN/stripe-https.sock"
  spawn stripe "$dir" "$STRIPE_BIN" -http-addr "$HOST:$STRIPE_PORT" -https-unix "$RUN/stripe-https.sock"
}

launch_oidc() {
  local dir="$DATA/oidc"; mkdir -p "$dir"
  # Redirects back to `make run`'s web; the browser test starts its own provider.
  spawn oidc "$ROOT/infra/local/oidc" env OIDC_PROVIDER_PORT="$OIDC_PROVIDER_PORT" \
    OIDC_PROVIDER_KEYS="$dir/jwks.json" \
    OIDC_REDIRECT_URIS="http://$HOST:${WEB_PORT:-8080}/auth/oidc/callback" node server.mjs
}

require_installed() {
  local missing=()
  [[ -x $PG_BIN/postgres ]] || missing+=("postgresql-15")
  [[ -f $APICURIO_JAR ]] || missing+=("apicurio registry")
  compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null || missing+=("kafka jars")
  [[ -x $VENV/bin/moto_server ]] || missing+=(".venv with moto[server]")
  [[ -x $STRIPE_BIN ]] || missing+=("stripe-mock")
  [[ -d $ROOT/infra/local/oidc/node_modules/oidc-provider ]] || missing+=("oidc-provider (npm)")
  command -v java >/dev/null 2>&1 || missing+=("java")
  (( ${#missing[@]} == 0 )) || die "not installed: ${missing[*]}; run: bash infra/local/stack.sh install"
}

cmd_up() {
  require_installed
  take_lock
  mkdir -p "$DATA" "$LOGS" "$RUN"
  up_pg
  # The others are independent of each other: launch all that are down, then wait for each.
  local name pending=()
  declare -gA T0=()
  # Kafka last: its first start formats the storage synchronously (two short JVM runs).
  for name in registry s3 stripe oidc kafka; do
    if running_pid "$name" >/dev/null; then
      if "health_$name"; then line "$name" "$(addr_of "$name")" "already up"; continue; fi
      T0[$name]=$(now); pending+=("$name")   # ours but still starting (or unhealthy): wait
      continue
    fi
    check_ports_free "$name"
    T0[$name]=$(now)
    "launch_$name"
    pending+=("$name")
  done
  (( ${#pending[@]} == 0 )) || wait_healthy "${pending[@]}"
}

stop_pid() {  # name pid: SIGTERM, wait, SIGKILL
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do pid_alive "$pid" || break; sleep 0.1; done
  if pid_alive "$pid"; then
    err "$name: still running 30s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do pid_alive "$pid" || break; sleep 0.1; done
  fi
}

cmd_down() {
  take_lock
  local name pid stopping=() pids=()
  # registry, kafka, s3, stripe-mock and the OIDC provider in parallel, then Postgres (the
  # registry uses it).
  for name in registry kafka s3 stripe oidc; do
    if pid=$(running_pid "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      stopping+=("$name"); pids+=("$pid")
    else
      line "$name" "$(addr_of "$name")" "was not running"
    fi
  done
  local i
  for i in "${!stopping[@]}"; do
    stop_pid "${stopping[$i]}" "${pids[$i]}"
    rm -f "$RUN/${stopping[$i]}.pid"
    line "${stopping[$i]}" "$(addr_of "${stopping[$i]}")" "stopped"
  done
  down_pg
}

cmd_status() {
  local name pid state rc=0
  for name in "${COMPONENTS[@]}"; do
    if pid=$(running_pid "$name"); then
      if "health_$name"; then state="up (pid $pid)"; else state="running but NOT healthy (pid $pid)"; rc=1; fi
    else
      state="down"; rc=1
    fi
    printf '%-9s %-24s %-32s %s\n' "$name" "$(addr_of "$name")" "$state" "${LOGS#"$ROOT"/}/$name.log"
  done
  return $rc
}

cmd_reset() {
  cmd_down
  exec 9>&-   # cmd_down took the lock; take it again for the delete
  take_lock
  rm -rf "$DATA"
  say "deleted $DATA (installed software and logs kept)"
}

cmd_logs() {
  local name
  name=$(canonical_name "${1:-}") || die "usage: stack.sh logs <pg|registry|kafka|s3|stripe>"
  local log; log=$(log_of "$name")
  [[ -f $log ]] || die "no log yet: $log"
  if [[ -t 1 ]]; then exec tail -n 100 -F "$log"; else exec tail -n 100 "$log"; fi
}

usage() {
  cat <<EOF
usage: bash infra/local/stack.sh <command>
  install       install what is missing (Debian packages, .venv, Kafka, Apicurio, stripe-mock)
  up            start every component that is down and wait until all are healthy
  down          stop everything
  status        one line per component (exit code 1 if any is down)
  reset         down, then delete .local/data
  logs <name>   tail a log (pg, registry, kafka, s3, stripe); follows when on a terminal
EOF
}

case ${1:-} in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  logs) shift; cmd_logs "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
