#!/usr/bin/env bash
# Show what platform/local/start.sh is running: sessions, URLs, auth, and the Ray cluster's status.
#
#   platform/local/status.sh [--run-dir DIR] [--brief]
#
# Exit 0 if the Ray head and the MLflow server are both up, 1 otherwise. --brief skips `ray status`
# (which takes a few seconds to import Ray).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_lib.sh
source "$HERE/_lib.sh"
sf_defaults
BRIEF=0
while (($#)); do
    case "$1" in
        --run-dir) RUN_DIR="${2:?--run-dir needs a value}"; shift 2 ;;
        --brief) BRIEF=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) sf_die 2 "unknown argument '$1' (see --help)" ;;
    esac
done
[[ -d "$RUN_DIR" ]] || { echo "not running: run dir '$RUN_DIR' does not exist"; exit 1; }
sf_resolve_paths

up=0
for name in ray-head ray-worker mlflow; do
    if pid="$(sf_live_pid "$name")"; then
        echo "$name: running (session $pid, $(sf_session_pids "$pid" | wc -l) processes), log $RUN_DIR/logs/$name.log"
        [[ "$name" == ray-worker ]] || up=$((up + 1))
    else
        echo "$name: not running"
    fi
done
[[ -f "$STATE_FILE" ]] || { echo "no state file $STATE_FILE (never started here)"; exit 1; }
# shellcheck disable=SC1090
source "$STATE_FILE"
echo "mode: $SF_MODE-node; GCS $SF_GCS_ADDRESS; dashboard http://$SF_DASHBOARD_HOST:$SF_DASHBOARD_PORT;" \
     "MLflow http://$SF_MLFLOW_HOST:$SF_MLFLOW_PORT"
if [[ "$SF_RAY_AUTH_MODE" == token ]]; then
    echo "auth: token; export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$SF_RAY_AUTH_TOKEN_PATH"
else
    echo "auth: disabled"
fi
if (( ! BRIEF )) && sf_live_pid ray-head >/dev/null; then
    export RAY_AUTH_MODE="$SF_RAY_AUTH_MODE"
    [[ -z "$SF_RAY_AUTH_TOKEN_PATH" ]] || export RAY_AUTH_TOKEN_PATH="$SF_RAY_AUTH_TOKEN_PATH"
    # A loopback head is only reachable by clients in Ray's single-machine mode (see start.sh).
    [[ "$SF_MODE" == single ]] && export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    "$RAY" status --address "$SF_GCS_ADDRESS" || true
fi
(( up == 2 ))
