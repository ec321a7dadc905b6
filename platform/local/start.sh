#!/usr/bin/env bash
# Start a local Ray head (optionally + a second worker node) and an MLflow tracking server.
#
#   platform/local/start.sh                  # Ray head + MLflow, everything on 127.0.0.1
#   platform/local/start.sh --with-worker    # + a second Ray node on this machine (see "Two nodes")
#   platform/local/status.sh ; platform/local/stop.sh
#
# Then, from the repo root (start.sh prints these with the real ports and token path):
#   export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$PWD/.specforce/local/ray_auth_token
#   specforce submit SPEC --address http://127.0.0.1:8265 --tracking-uri http://127.0.0.1:5000 --storage /abs/shared/path --wait
#   specforce sweep SPEC --tracking-uri http://127.0.0.1:5000     # embedded Ray, logging to this MLflow
#
# Options (each has an env var; flags win):          default
#   --run-dir DIR         SPECFORCE_RUN_DIR            ./.specforce/local   (pid files, logs/, state.env,
#                                                                             Ray temp dir, mlflow.db, artifacts/)
#   --ray-port N          SPECFORCE_RAY_PORT           6379   Ray GCS
#   --dashboard-port N    SPECFORCE_DASHBOARD_PORT     8265   Ray dashboard + Jobs API
#   --dashboard-host H    (flag only)                  127.0.0.1
#   --ray-client-port N   SPECFORCE_RAY_CLIENT_PORT    10001  Ray Client server
#   --agent-port N        SPECFORCE_AGENT_PORT         52365  head's dashboard agent (worker: SPECFORCE_WORKER_AGENT_PORT, 52366)
#   --mlflow-port N       SPECFORCE_MLFLOW_PORT        5000
#   --mlflow-host H       (flag only)                  127.0.0.1
#   --head-cpus N / --worker-cpus N  SPECFORCE_HEAD_CPUS / SPECFORCE_WORKER_CPUS   Ray's autodetection
#   --with-worker         start a second Ray node
#   VENV (env)            the virtualenv whose ray/mlflow/python run everything            .venv
#   RAY_AUTH_MODE (env)   token (default here) | disabled
#   RAY_AUTH_TOKEN_PATH   token file; generated (mode 600) if missing                      <run-dir>/ray_auth_token
#
# Exit codes: 0 started or already running; 2 bad argument/setup; 3 a port is taken; 1 a service failed.
#
# Loopback: on Linux `ray start --node-ip-address=127.0.0.1` is silently replaced by the routable address
# and GCS/raylet listen on all interfaces. Ray keeps a node on loopback only in its single-machine mode
# (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the switch Ray uses on macOS/Windows), which this script sets for
# the head; clients that dial the GCS port directly (`ray status --address`, `ray.init(address=...)`)
# need the same variable (status.sh sets it). Jobs submitted over the dashboard inherit it.
# Two nodes: that mode refuses extra nodes, so with --with-worker Ray runs in its normal multi-node mode,
# which binds GCS/raylet on all interfaces of this machine; keep token auth on for it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_lib.sh
source "$HERE/_lib.sh"
sf_defaults

WITH_WORKER=0
DASHBOARD_HOST=127.0.0.1
MLFLOW_HOST=127.0.0.1
while (($#)); do
    case "$1" in
        --run-dir) RUN_DIR="${2:?--run-dir needs a value}"; shift 2 ;;
        --ray-port) RAY_PORT="${2:?--ray-port needs a value}"; shift 2 ;;
        --dashboard-port) DASHBOARD_PORT="${2:?--dashboard-port needs a value}"; shift 2 ;;
        --dashboard-host) DASHBOARD_HOST="${2:?--dashboard-host needs a value}"; shift 2 ;;
        --ray-client-port) RAY_CLIENT_PORT="${2:?--ray-client-port needs a value}"; shift 2 ;;
        --agent-port) AGENT_PORT="${2:?--agent-port needs a value}"; shift 2 ;;
        --mlflow-port) MLFLOW_PORT="${2:?--mlflow-port needs a value}"; shift 2 ;;
        --mlflow-host) MLFLOW_HOST="${2:?--mlflow-host needs a value}"; shift 2 ;;
        --head-cpus) HEAD_CPUS="${2:?--head-cpus needs a value}"; shift 2 ;;
        --worker-cpus) WORKER_CPUS="${2:?--worker-cpus needs a value}"; shift 2 ;;
        --with-worker) WITH_WORKER=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) sf_die 2 "unknown argument '$1' (see --help)" ;;
    esac
done

for pair in "--ray-port:$RAY_PORT" "--dashboard-port:$DASHBOARD_PORT" "--ray-client-port:$RAY_CLIENT_PORT" \
            "--agent-port:$AGENT_PORT" "SPECFORCE_WORKER_AGENT_PORT:$WORKER_AGENT_PORT" \
            "--mlflow-port:$MLFLOW_PORT"; do
    sf_check_port_value "${pair%%:*}" "${pair#*:}"
done
sf_check_positive_int SPECFORCE_START_TIMEOUT "$START_TIMEOUT"
sf_check_positive_int SPECFORCE_MLFLOW_WORKERS "$MLFLOW_WORKERS"
[[ -z "$HEAD_CPUS" ]] || sf_check_positive_int --head-cpus "$HEAD_CPUS"
[[ -z "$WORKER_CPUS" ]] || sf_check_positive_int --worker-cpus "$WORKER_CPUS"

export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
case "$RAY_AUTH_MODE" in
    token|disabled) ;;
    *) sf_die 2 "RAY_AUTH_MODE must be 'token' or 'disabled', got '$RAY_AUTH_MODE'" ;;
esac
# No phoning home from a local cluster; users can still opt in by exporting it.
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
# On SIGTERM a Ray node first "drains" for up to 30 s so Ray Serve proxies can quiesce; a local sweep
# cluster serves no traffic, so stop.sh should not wait that out.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}"

sf_resolve_paths
for exe in "$PY" "$RAY" "$MLFLOW"; do sf_require_exe "$exe"; done
command -v setsid >/dev/null || sf_die 2 "setsid (util-linux) is required"

# Ray puts unix sockets under <temp-dir>/session_<date>_<pid>/sockets/<name> (~65 chars after the
# temp dir); the kernel limit for a socket path is 107 bytes.
HEAD_TMP="$RUN_DIR/ray"
WORKER_TMP="$RUN_DIR/ray-worker"
(( ${#WORKER_TMP} <= 40 )) || sf_die 2 "run dir '$RUN_DIR' is too long for Ray's unix socket paths \
(Ray temp dir '$WORKER_TMP' must be <= 40 characters): pass a shorter --run-dir"

if [[ "$RAY_AUTH_MODE" == token && -z "${RAY_AUTH_TOKEN:-}" ]]; then
    export RAY_AUTH_TOKEN_PATH="${RAY_AUTH_TOKEN_PATH:-$RUN_DIR/ray_auth_token}"
    if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
        (umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$RAY_AUTH_TOKEN_PATH")
        echo "generated a Ray auth token in $RAY_AUTH_TOKEN_PATH"
    fi
    RAY_AUTH_TOKEN_PATH="$(cd "$(dirname "$RAY_AUTH_TOKEN_PATH")" && pwd)/$(basename "$RAY_AUTH_TOKEN_PATH")"
fi

# ---- what is already running ----------------------------------------------------------------------
head_pid="$(sf_live_pid ray-head || true)"
worker_pid="$(sf_live_pid ray-worker || true)"
mlflow_pid="$(sf_live_pid mlflow || true)"
if [[ -n "$head_pid" && -f "$STATE_FILE" ]]; then
    # A running head keeps the mode, ports and auth it was started with.
    # shellcheck disable=SC1090
    source "$STATE_FILE"
    RAY_PORT="$SF_RAY_PORT"; DASHBOARD_PORT="$SF_DASHBOARD_PORT"; DASHBOARD_HOST="$SF_DASHBOARD_HOST"
    GCS_ADDRESS="$SF_GCS_ADDRESS"; export RAY_AUTH_MODE="$SF_RAY_AUTH_MODE"
    [[ -z "$SF_RAY_AUTH_TOKEN_PATH" ]] || export RAY_AUTH_TOKEN_PATH="$SF_RAY_AUTH_TOKEN_PATH"
    if (( WITH_WORKER )) && [[ "$SF_MODE" == single ]]; then
        sf_die 2 "the running Ray head (session $head_pid) is a single-node loopback head, which cannot \
accept a second node: run platform/local/stop.sh, then start.sh --with-worker"
    fi
    MODE="$SF_MODE"
elif (( WITH_WORKER )); then
    MODE=multi
else
    MODE=single
fi
[[ -z "$mlflow_pid" || ! -f "$STATE_FILE" ]] || { source "$STATE_FILE"; MLFLOW_PORT="$SF_MLFLOW_PORT"; MLFLOW_HOST="$SF_MLFLOW_HOST"; }

if [[ "$MODE" == single ]]; then
    export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    RAY_BIND=127.0.0.1
else
    unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    RAY_BIND=0.0.0.0
    if [[ "$RAY_AUTH_MODE" == disabled ]]; then
        echo "WARNING: RAY_AUTH_MODE=disabled with --with-worker: Ray's GCS and raylets listen on all" \
             "interfaces and anyone who can reach this machine can run code on the cluster." >&2
    fi
fi
DASHBOARD_URL="http://$DASHBOARD_HOST:$DASHBOARD_PORT"
MLFLOW_URL="http://$MLFLOW_HOST:$MLFLOW_PORT"
AUTH_ARG=""; [[ "$RAY_AUTH_MODE" == token ]] && AUTH_ARG=token

want_worker=$(( WITH_WORKER && ${#worker_pid} == 0 ))
if [[ -n "$head_pid" && -n "$mlflow_pid" ]] && (( ! want_worker )); then
    echo "already running: Ray head (session $head_pid) and MLflow (session $mlflow_pid);" \
         "dashboard $DASHBOARD_URL, tracking $MLFLOW_URL (platform/local/status.sh for details)"
    exit 0
fi

# ---- check every fixed port before starting anything, so a conflict leaves nothing half-started ----
if [[ -z "$head_pid" ]]; then
    sf_require_port "$RAY_BIND" "$RAY_PORT" "Ray GCS" "--ray-port or SPECFORCE_RAY_PORT"
    sf_require_port "$DASHBOARD_HOST" "$DASHBOARD_PORT" "Ray dashboard" "--dashboard-port or SPECFORCE_DASHBOARD_PORT"
    sf_require_port "$RAY_BIND" "$RAY_CLIENT_PORT" "Ray client server" "--ray-client-port or SPECFORCE_RAY_CLIENT_PORT"
    sf_require_port "$RAY_BIND" "$AGENT_PORT" "Ray dashboard agent" "--agent-port or SPECFORCE_AGENT_PORT"
fi
if (( want_worker )); then
    sf_require_port "$RAY_BIND" "$WORKER_AGENT_PORT" "worker node's dashboard agent" "SPECFORCE_WORKER_AGENT_PORT"
fi
if [[ -z "$mlflow_pid" ]]; then
    sf_require_port "$MLFLOW_HOST" "$MLFLOW_PORT" "MLflow server" "--mlflow-port or SPECFORCE_MLFLOW_PORT"
fi

# ---- launch (head and MLflow start in parallel; both take seconds on a small machine) ------------
if [[ -z "$head_pid" ]]; then
    rm -rf "$HEAD_TMP"  # a previous session's socket files would otherwise be found by `ray` CLIs
    head_cmd=("$RAY" start --head --block --port="$RAY_PORT"
        --dashboard-host="$DASHBOARD_HOST" --dashboard-port="$DASHBOARD_PORT"
        --ray-client-server-port="$RAY_CLIENT_PORT" --dashboard-agent-listen-port="$AGENT_PORT"
        --temp-dir="$HEAD_TMP")
    [[ "$MODE" == single ]] && head_cmd+=(--node-ip-address=127.0.0.1)
    [[ -n "$HEAD_CPUS" ]] && head_cmd+=(--num-cpus="$HEAD_CPUS")
    head_pid="$(sf_launch ray-head "$RUN_DIR/logs/ray-head.log" "${head_cmd[@]}")"
    echo "starting Ray head (session $head_pid, $MODE-node mode, auth $RAY_AUTH_MODE)..."
    head_new=1
else
    echo "Ray head already running (session $head_pid)"
    head_new=0
fi
if [[ -z "$mlflow_pid" ]]; then
    mkdir -p "$RUN_DIR/artifacts"
    # Host headers and CORS origins are pinned to the address we serve on (DNS-rebinding protection).
    allowed_hosts="$(printf '%s\n' "$MLFLOW_HOST:$MLFLOW_PORT" "127.0.0.1:$MLFLOW_PORT" "localhost:$MLFLOW_PORT" \
        | awk '!seen[$0]++' | paste -sd, -)"
    allowed_hosts="${SPECFORCE_MLFLOW_ALLOWED_HOSTS:-$allowed_hosts}"
    cors="${SPECFORCE_MLFLOW_CORS_ORIGINS:-$(echo "$allowed_hosts" | tr ',' '\n' | sed 's|^|http://|' | paste -sd, -)}"
    mlflow_pid="$(sf_launch mlflow "$RUN_DIR/logs/mlflow.log" "$MLFLOW" server \
        --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
        --backend-store-uri "sqlite:///$RUN_DIR/mlflow.db" \
        --artifacts-destination "$RUN_DIR/artifacts" --serve-artifacts \
        --allowed-hosts "$allowed_hosts" --cors-allowed-origins "$cors")"
    echo "starting MLflow server (session $mlflow_pid)..."
    mlflow_new=1
else
    echo "MLflow server already running (session $mlflow_pid)"
    mlflow_new=0
fi

# Wait until CHECK succeeds; fail (and stop what we started) if the process dies or time runs out.
wait_ready() {  # wait_ready NAME PID LOG CHECK...
    local name="$1" pid="$2" log="$3" deadline=$((SECONDS + START_TIMEOUT)); shift 3
    until "$@"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: $name exited during start-up" >&2; sf_log_tail "$log"; return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "error: $name not ready after ${START_TIMEOUT}s (SPECFORCE_START_TIMEOUT)" >&2
            sf_log_tail "$log"; return 1
        fi
        sleep 0.5
    done
}
fail_cleanup() {
    ((head_new)) && sf_stop_session ray-head "$head_pid" >&2 || true
    ((mlflow_new)) && sf_stop_session mlflow "$mlflow_pid" >&2 || true
    exit 1
}

wait_ready "Ray head" "$head_pid" "$RUN_DIR/logs/ray-head.log" sf_http_ok "$DASHBOARD_URL/api/version" "$AUTH_ARG" \
    || fail_cleanup
wait_ready "MLflow server" "$mlflow_pid" "$RUN_DIR/logs/mlflow.log" sf_http_ok "$MLFLOW_URL/health" || fail_cleanup
if [[ -z "${GCS_ADDRESS:-}" ]]; then
    if [[ "$MODE" == single ]]; then
        GCS_ADDRESS="127.0.0.1:$RAY_PORT"
    else
        GCS_ADDRESS="$("$PY" -c 'import ray._private.services as s; print(s.get_node_ip_address())'):$RAY_PORT"
    fi
fi

cat >"$STATE_FILE" <<EOF
SF_MODE=$MODE
SF_RAY_PORT=$RAY_PORT
SF_GCS_ADDRESS=$GCS_ADDRESS
SF_DASHBOARD_HOST=$DASHBOARD_HOST
SF_DASHBOARD_PORT=$DASHBOARD_PORT
SF_MLFLOW_HOST=$MLFLOW_HOST
SF_MLFLOW_PORT=$MLFLOW_PORT
SF_RAY_AUTH_MODE=$RAY_AUTH_MODE
SF_RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-}
EOF

if (( want_worker )); then
    rm -rf "$WORKER_TMP"
    # A distinct temp dir keeps the two raylets' sockets, logs and session files apart on one machine.
    worker_cmd=("$RAY" start --block --address="$GCS_ADDRESS" --temp-dir="$WORKER_TMP"
        --dashboard-agent-listen-port="$WORKER_AGENT_PORT")
    [[ -n "$WORKER_CPUS" ]] && worker_cmd+=(--num-cpus="$WORKER_CPUS")
    worker_pid="$(sf_launch ray-worker "$RUN_DIR/logs/ray-worker.log" "${worker_cmd[@]}")"
    echo "starting Ray worker node (session $worker_pid)..."
    two_nodes() { [[ "$(sf_alive_nodes "$DASHBOARD_URL" "$AUTH_ARG")" -ge 2 ]]; }
    if ! wait_ready "Ray worker node" "$worker_pid" "$RUN_DIR/logs/ray-worker.log" two_nodes; then
        sf_stop_session ray-worker "$worker_pid" >&2 || true
        exit 1
    fi
fi

echo
echo "Ray cluster   : $GCS_ADDRESS ($MODE-node$([[ -n "$worker_pid" ]] && echo ', 2 nodes'))"
echo "Ray dashboard : $DASHBOARD_URL"
echo "MLflow        : $MLFLOW_URL  (store $RUN_DIR/mlflow.db, artifacts $RUN_DIR/artifacts)"
echo "Logs          : $RUN_DIR/logs"
if [[ "$RAY_AUTH_MODE" == token ]]; then
    echo "Ray auth      : token in ${RAY_AUTH_TOKEN_PATH:-\$RAY_AUTH_TOKEN}. Clients need it:"
    echo "  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-<file>}"
else
    echo "Ray auth      : DISABLED (RAY_AUTH_MODE=disabled)"
    echo "  export RAY_AUTH_MODE=disabled"
fi
echo "Submit        : specforce submit SPEC --address $DASHBOARD_URL --tracking-uri $MLFLOW_URL --storage $RUN_DIR/ray_results"
echo "Stop          : $HERE/stop.sh --run-dir $RUN_DIR"
