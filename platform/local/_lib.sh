# Shared helpers for platform/local/{start,stop,status}.sh. Sourced, never executed.
#
# Every service is launched with `setsid`, so its process id is also its session id: stop.sh can then
# end the service's whole process tree (Ray spawns ~20 helpers, mlflow spawns uvicorn workers) by that
# one id, without matching process names that other users' Ray or MLflow processes would also match.

# ---- configuration (env vars; start.sh flags override them) ---------------------------------------
sf_defaults() {
    VENV="${VENV:-.venv}"
    RUN_DIR="${SPECFORCE_RUN_DIR:-./.specforce/local}"
    RAY_PORT="${SPECFORCE_RAY_PORT:-6379}"
    DASHBOARD_PORT="${SPECFORCE_DASHBOARD_PORT:-8265}"
    RAY_CLIENT_PORT="${SPECFORCE_RAY_CLIENT_PORT:-10001}"
    AGENT_PORT="${SPECFORCE_AGENT_PORT:-52365}"
    WORKER_AGENT_PORT="${SPECFORCE_WORKER_AGENT_PORT:-52366}"
    MLFLOW_PORT="${SPECFORCE_MLFLOW_PORT:-5000}"
    MLFLOW_WORKERS="${SPECFORCE_MLFLOW_WORKERS:-1}"
    HEAD_CPUS="${SPECFORCE_HEAD_CPUS:-}"
    WORKER_CPUS="${SPECFORCE_WORKER_CPUS:-}"
    START_TIMEOUT="${SPECFORCE_START_TIMEOUT:-120}"
    STOP_TIMEOUT="${SPECFORCE_STOP_TIMEOUT:-30}"
}

sf_die() {  # sf_die CODE MESSAGE...
    local code="$1"; shift
    echo "error: $*" >&2
    exit "$code"
}

sf_check_port_value() {  # sf_check_port_value NAME VALUE
    [[ "$2" =~ ^[0-9]+$ ]] && (( $2 >= 1 && $2 <= 65535 )) \
        || sf_die 2 "$1 must be a TCP port number in 1..65535, got '$2'"
}

sf_check_positive_int() {  # sf_check_positive_int NAME VALUE
    [[ "$2" =~ ^[0-9]+$ ]] && (( $2 >= 1 )) || sf_die 2 "$1 must be a positive integer, got '$2'"
}

# Resolve paths once so pid files, logs and printed commands stay valid from any working directory.
sf_resolve_paths() {
    mkdir -p "$RUN_DIR/logs"
    RUN_DIR="$(cd "$RUN_DIR" && pwd)"
    [[ -d "$VENV" ]] || sf_die 2 "VENV='$VENV' is not a directory (create the virtualenv with 'make setup' or set VENV)"
    VENV="$(cd "$VENV" && pwd)"
    PY="$VENV/bin/python"
    RAY="$VENV/bin/ray"
    MLFLOW="$VENV/bin/mlflow"
    STATE_FILE="$RUN_DIR/state.env"
}

sf_require_exe() {  # sf_require_exe PATH
    [[ -x "$1" ]] || sf_die 2 "missing executable $1 (is VENV='$VENV' the project's virtualenv?)"
}

# ---- process bookkeeping -------------------------------------------------------------------------
sf_pidfile() { echo "$RUN_DIR/$1.pid"; }

# Prints the pid of service $1 if its pid file names a live session leader (our setsid launch);
# a stale file (process gone, or pid reused by an unrelated process) is removed.
sf_live_pid() {
    local file pid sid
    file="$(sf_pidfile "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(<"$file")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && sid="$(ps -o sid= -p "$pid" 2>/dev/null)" && (( sid == pid )); then
        echo "$pid"
        return 0
    fi
    rm -f "$file"
    return 1
}

sf_session_pids() {  # every process still in session $1
    ps -o pid= -s "$1" 2>/dev/null | tr -d ' ' | grep -v '^$' || true
}

# Launch "$@" as a new session in the background; stdout/stderr to log $2. Prints the pid.
sf_launch() {  # sf_launch NAME LOGFILE CMD...
    local name="$1" log="$2"; shift 2
    # A background job of a non-interactive shell is never a process-group leader, so setsid
    # execs in place (no fork) and $! is both the service's pid and its session id.
    setsid "$@" >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$(sf_pidfile "$name")"
    echo "$pid"
}

# SIGTERM, wait, then SIGKILL whatever is left in the session. Ray's `start --block` leader shuts its
# children down in order, so it alone gets the SIGTERM; mlflow's leader does not forward SIGTERM to its
# uvicorn worker (which then lingers ~30 s), so WHOLE=1 signals every process of the session at once.
sf_stop_session() {  # sf_stop_session NAME PID [WHOLE]
    local name="$1" pid="$2" whole="${3:-0}" left i
    if (( whole )); then
        # shellcheck disable=SC2046
        kill -TERM $(sf_session_pids "$pid") 2>/dev/null || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
        left="$(sf_session_pids "$pid")"
        [[ -z "$left" ]] && break
        sleep 0.2
    done
    left="$(sf_session_pids "$pid")"
    if [[ -n "$left" ]]; then
        echo "$name: still running after ${STOP_TIMEOUT}s, sending SIGKILL to $(echo $left)"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -z "$(sf_session_pids "$pid")" ]] && break
            sleep 0.2
        done
    fi
    left="$(sf_session_pids "$pid")"
    [[ -z "$left" ]] || sf_die 1 "$name: processes $(echo $left) of session $pid survived SIGKILL"
    rm -f "$(sf_pidfile "$name")"
    echo "$name: stopped (session $pid)"
}

# ---- ports and HTTP ------------------------------------------------------------------------------
# Exit 0 if HOST:PORT can be bound now. SO_REUSEADDR mirrors what the servers themselves set, so a
# socket of a just-stopped run lingering in TIME_WAIT does not count as "taken"; a listener does.
sf_port_free() {  # sf_port_free HOST PORT
    "$PY" - "$1" "$2" <<'EOF'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((host, port))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

sf_require_port() {  # sf_require_port HOST PORT WHAT HOW_TO_CHANGE
    if ! sf_port_free "$1" "$2"; then
        local holder=""
        if command -v ss >/dev/null 2>&1; then
            holder="$(ss -Hltnp "sport = :$2" 2>/dev/null | head -n 3)"
        fi
        echo "error: port $2 ($3) is already in use on $1 by another process; choose another with $4" >&2
        [[ -n "$holder" ]] && echo "  holder: $holder" >&2
        exit 3
    fi
}

# Exit 0 when URL answers HTTP 200. With "token" the Ray token goes in the Authorization header, read
# the way Ray's own clients read it: RAY_AUTH_TOKEN first, else the file RAY_AUTH_TOKEN_PATH.
sf_http_ok() {  # sf_http_ok URL [token]
    "$PY" - "$1" "${2:-}" <<'EOF'
import os, sys, urllib.request
url, auth = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url)
if auth == "token":
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        with open(os.environ["RAY_AUTH_TOKEN_PATH"]) as f:
            token = f.read()
    req.add_header("Authorization", "Bearer " + token.strip())
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# Print how many nodes the dashboard's State API reports ALIVE (0 when it does not answer).
sf_alive_nodes() {  # sf_alive_nodes DASHBOARD_URL [token]
    "$PY" - "$1" "${2:-}" <<'EOF'
import json, os, sys, urllib.request
url, auth = sys.argv[1], sys.argv[2]
req = urllib.request.Request(url + "/api/v0/nodes?limit=1000")
if auth == "token":
    token = os.environ.get("RAY_AUTH_TOKEN") or open(os.environ["RAY_AUTH_TOKEN_PATH"]).read()
    req.add_header("Authorization", "Bearer " + token.strip())
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        nodes = json.load(r)["data"]["result"]["result"]
    print(sum(1 for n in nodes if n.get("state") == "ALIVE"))
except Exception:
    print(0)
EOF
}

sf_log_tail() {  # sf_log_tail LOGFILE
    echo "---- last lines of $1 ----" >&2
    tail -n 25 "$1" >&2 || true
}
