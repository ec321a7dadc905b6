#!/usr/bin/env bash
# Stop what platform/local/start.sh started: the Ray worker node, the Ray head and the MLflow server.
#
#   platform/local/stop.sh [--run-dir DIR]      # DIR defaults to $SPECFORCE_RUN_DIR or ./.specforce/local
#
# Only the sessions recorded in DIR's pid files are signalled (SIGTERM, then SIGKILL after
# SPECFORCE_STOP_TIMEOUT seconds, default 30), so other Ray/MLflow processes on the machine are left
# alone: never `ray stop`, which ends every Ray process of the user. Data (mlflow.db, artifacts/,
# logs/, the Ray token) stays in DIR. Exit 0 when nothing of ours is left running.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=_lib.sh
source "$HERE/_lib.sh"
sf_defaults
while (($#)); do
    case "$1" in
        --run-dir) RUN_DIR="${2:?--run-dir needs a value}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) sf_die 2 "unknown argument '$1' (see --help)" ;;
    esac
done
sf_check_positive_int SPECFORCE_STOP_TIMEOUT "$STOP_TIMEOUT"
[[ -d "$RUN_DIR" ]] || { echo "nothing to stop: run dir '$RUN_DIR' does not exist"; exit 0; }
RUN_DIR="$(cd "$RUN_DIR" && pwd)"

# The worker goes first so the head does not wait out a node that is leaving; then the head and
# MLflow shut down in parallel (each can take seconds on a loaded machine).
stop_one() {
    local pid
    if pid="$(sf_live_pid "$1")"; then
        sf_stop_session "$1" "$pid" "$([[ "$1" == mlflow ]] && echo 1 || echo 0)"
    else
        echo "$1: not running"
    fi
}
stop_one ray-worker
stop_one ray-head & head_job=$!
stop_one mlflow & mlflow_job=$!
status=0
wait "$head_job" || status=1
wait "$mlflow_job" || status=1
exit "$status"
