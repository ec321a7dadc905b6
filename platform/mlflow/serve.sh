#!/usr/bin/env bash
# The team MLflow tracking server: PostgreSQL backend store, artifacts on a local path or S3-compatible
# storage, proxied through the server (clients need no storage credentials). Runs in the foreground
# (put it under systemd, a container or tmux); Ctrl-C / SIGTERM stops it.
#
#   # once: create the database (see init_postgres.sh), then
#   export PGPASSWORD="$(cat .specforce/mlflow_db_password)"     # libpq reads it; keeps it out of `ps`
#   platform/mlflow/serve.sh --backend-store-uri postgresql://mlflow@127.0.0.1:5432/mlflow \
#       --artifacts-destination /srv/mlflow/artifacts
#   # S3 / MinIO: --artifacts-destination s3://bucket/mlflow with MLFLOW_S3_ENDPOINT_URL=http://minio:9000,
#   # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment and boto3 installed in the venv.
#   # Reachable from other machines only if you say so:
#   platform/mlflow/serve.sh ... --host 0.0.0.0 --allowed-hosts mlflow.example.org,10.0.0.5:5000
#
# Options (env var in brackets)                              default
#   --backend-store-uri URI    [MLFLOW_BACKEND_STORE_URI]     required; postgresql://USER@HOST:PORT/DB
#   --artifacts-destination D  [MLFLOW_ARTIFACTS_DESTINATION] required; absolute/relative path or s3://...
#   --host H                                                  127.0.0.1
#   --port N                   [MLFLOW_PORT]                  5000
#   --workers N                [MLFLOW_WORKERS]               4
#   --allowed-hosts LIST       (Host headers accepted)        127.0.0.1:N,localhost:N; required
#                                                             when --host is not a loopback address
#   --cors-allowed-origins L                                  http:// + each allowed host
#   --print-command            print the mlflow command line and exit (nothing is started)
#   VENV (env)                 virtualenv providing mlflow and psycopg2                     .venv
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

VENV="${VENV:-.venv}"
STORE="${MLFLOW_BACKEND_STORE_URI:-}"
ARTIFACTS="${MLFLOW_ARTIFACTS_DESTINATION:-}"
HOST=127.0.0.1
PORT="${MLFLOW_PORT:-5000}"
WORKERS="${MLFLOW_WORKERS:-4}"
ALLOWED=""
CORS=""
PRINT_ONLY=0
while (($#)); do
    case "$1" in
        --backend-store-uri) STORE="${2:?--backend-store-uri needs a value}"; shift 2 ;;
        --artifacts-destination) ARTIFACTS="${2:?--artifacts-destination needs a value}"; shift 2 ;;
        --host) HOST="${2:?--host needs a value}"; shift 2 ;;
        --port) PORT="${2:?--port needs a value}"; shift 2 ;;
        --workers) WORKERS="${2:?--workers needs a value}"; shift 2 ;;
        --allowed-hosts) ALLOWED="${2:?--allowed-hosts needs a value}"; shift 2 ;;
        --cors-allowed-origins) CORS="${2:?--cors-allowed-origins needs a value}"; shift 2 ;;
        --print-command) PRINT_ONLY=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -n "$STORE" ]] || die "--backend-store-uri (or MLFLOW_BACKEND_STORE_URI) is required, e.g. postgresql://mlflow@127.0.0.1:5432/mlflow"
[[ "$STORE" =~ ^postgresql(\+psycopg2|\+psycopg)?://[^/]+/[^/?]+ ]] \
    || die "--backend-store-uri must be a PostgreSQL URI postgresql://USER@HOST:PORT/DB, got '$STORE'"
if [[ "$STORE" =~ ^[^:]+://[^/@]*:[^/@]*@ ]]; then
    echo "warning: the backend store URI contains a password, which every local user can read in the" \
         "process list; prefer PGPASSWORD or a ~/.pgpass file (libpq reads both)" >&2
fi
[[ -n "$ARTIFACTS" ]] || die "--artifacts-destination (or MLFLOW_ARTIFACTS_DESTINATION) is required: a path or s3://bucket/prefix"
[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT >= 1 && PORT <= 65535)) || die "--port must be a TCP port number in 1..65535, got '$PORT'"
[[ "$WORKERS" =~ ^[0-9]+$ ]] && ((WORKERS >= 1)) || die "--workers must be a positive integer, got '$WORKERS'"

case "$HOST" in
    127.0.0.1|localhost|::1) ;;
    *) [[ -n "$ALLOWED" ]] || die "--host '$HOST' exposes the server beyond this machine: also pass \
--allowed-hosts with the names clients will use (DNS-rebinding protection), e.g. --allowed-hosts mlflow.example.org" ;;
esac
ALLOWED="${ALLOWED:-127.0.0.1:$PORT,localhost:$PORT}"
if [[ -z "$CORS" ]]; then
    CORS="$(echo "$ALLOWED" | tr ',' '\n' | sed 's|^|http://|' | paste -sd, -)"
fi

[[ -x "$VENV/bin/mlflow" ]] || die "no mlflow in VENV='$VENV' (set VENV to the project's virtualenv)"
# SQLAlchemy's driver for a bare postgresql:// changed (psycopg2 up to 2.0, psycopg 3 from 2.1), so
# name the installed driver explicitly instead of failing at the first request.
has_module() { "$VENV/bin/python" -c "import $1" 2>/dev/null; }
case "$STORE" in
    postgresql+psycopg2://*) has_module psycopg2 || die "psycopg2 is not installed in $VENV: pip install psycopg2-binary" ;;
    postgresql+psycopg://*) has_module psycopg || die "psycopg is not installed in $VENV: pip install 'psycopg[binary]'" ;;
    *)
        if has_module psycopg2; then
            STORE="postgresql+psycopg2://${STORE#postgresql://}"
        elif has_module psycopg; then
            STORE="postgresql+psycopg://${STORE#postgresql://}"
        else
            die "no PostgreSQL driver in $VENV: pip install psycopg2-binary (or 'psycopg[binary]')"
        fi
        ;;
esac

case "$ARTIFACTS" in
    s3://*)
        "$VENV/bin/python" -c 'import boto3' 2>/dev/null \
            || die "artifacts on $ARTIFACTS need boto3 in $VENV: pip install boto3"
        [[ -n "${MLFLOW_S3_ENDPOINT_URL:-}" ]] \
            || echo "note: MLFLOW_S3_ENDPOINT_URL is unset, so $ARTIFACTS means AWS S3 itself" >&2
        ;;
    *://*) die "--artifacts-destination must be a local path or s3://..., got '$ARTIFACTS'" ;;
    *)
        mkdir -p "$ARTIFACTS"
        ARTIFACTS="$(cd "$ARTIFACTS" && pwd)"
        ;;
esac

cmd=("$VENV/bin/mlflow" server
    --backend-store-uri "$STORE"
    --artifacts-destination "$ARTIFACTS" --serve-artifacts
    --host "$HOST" --port "$PORT" --workers "$WORKERS"
    --allowed-hosts "$ALLOWED" --cors-allowed-origins "$CORS")
if ((PRINT_ONLY)); then
    printf '%q ' "${cmd[@]}"; echo
    exit 0
fi
shown_store="$(echo "$STORE" | sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#')"
echo "MLflow tracking server on http://$HOST:$PORT (store $shown_store, artifacts $ARTIFACTS)" >&2
exec "${cmd[@]}"
