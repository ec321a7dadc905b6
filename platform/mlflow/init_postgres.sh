#!/usr/bin/env bash
# Create (or update) the PostgreSQL role and database that platform/mlflow/serve.sh uses. Idempotent.
#
#   # Debian/Ubuntu, once: apt-get update && apt-get install -y postgresql    (PostgreSQL 15 on bookworm)
#   sudo -u postgres platform/mlflow/init_postgres.sh                        # local cluster, peer auth
#   platform/mlflow/init_postgres.sh --pg-host /tmp/pg --pg-port 5433 --superuser postgres
#
# Prints the backend store URI (without the password). The password is MLFLOW_DB_PASSWORD if set,
# otherwise the content of --password-file, otherwise a new random one written there (mode 600);
# give it to serve.sh as PGPASSWORD="$(cat FILE)" so it never appears in a URI or a process list.
#
# Options                                    default
#   --db NAME / --user NAME                  mlflow / mlflow    (lower-case letters, digits, _)
#   --password-file FILE                     ./.specforce/mlflow_db_password
#   --pg-host HOST_OR_SOCKET_DIR             libpq default (PGHOST, else the local socket)
#   --pg-port N                              libpq default (PGPORT, else 5432)
#   --superuser NAME                         libpq default (PGUSER, else the OS user)
#   --connect-host H                         host written in the printed URI: 127.0.0.1
#   --psql PATH                              psql on PATH
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

DB=mlflow
DB_USER=mlflow
PASSWORD_FILE=./.specforce/mlflow_db_password
PG_HOST="${PGHOST:-}"
PG_PORT="${PGPORT:-}"
SUPERUSER="${PGUSER:-}"
CONNECT_HOST=127.0.0.1
PSQL="$(command -v psql || true)"
while (($#)); do
    case "$1" in
        --db) DB="${2:?--db needs a value}"; shift 2 ;;
        --user) DB_USER="${2:?--user needs a value}"; shift 2 ;;
        --password-file) PASSWORD_FILE="${2:?--password-file needs a value}"; shift 2 ;;
        --pg-host) PG_HOST="${2:?--pg-host needs a value}"; shift 2 ;;
        --pg-port) PG_PORT="${2:?--pg-port needs a value}"; shift 2 ;;
        --superuser) SUPERUSER="${2:?--superuser needs a value}"; shift 2 ;;
        --connect-host) CONNECT_HOST="${2:?--connect-host needs a value}"; shift 2 ;;
        --psql) PSQL="${2:?--psql needs a value}"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# Names go into SQL as identifiers; a strict pattern keeps quoting questions out entirely.
[[ "$DB" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "--db must match [a-z_][a-z0-9_]{0,62}, got '$DB'"
[[ "$DB_USER" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "--user must match [a-z_][a-z0-9_]{0,62}, got '$DB_USER'"
[[ -z "$PG_PORT" || "$PG_PORT" =~ ^[0-9]+$ ]] || die "--pg-port must be a port number, got '$PG_PORT'"
[[ -n "$PSQL" && -x "$PSQL" ]] || die "psql not found (apt-get install -y postgresql-client, or pass --psql PATH)"

if [[ -n "${MLFLOW_DB_PASSWORD:-}" ]]; then
    PASSWORD="$MLFLOW_DB_PASSWORD"
elif [[ -s "$PASSWORD_FILE" ]]; then
    PASSWORD="$(<"$PASSWORD_FILE")"
else
    mkdir -p "$(dirname "$PASSWORD_FILE")"
    PASSWORD="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    (umask 077 && printf '%s\n' "$PASSWORD" >"$PASSWORD_FILE")
    echo "generated a database password in $PASSWORD_FILE" >&2
fi

psql_args=(-X -q -v ON_ERROR_STOP=1 -d postgres)
[[ -n "$PG_HOST" ]] && psql_args+=(-h "$PG_HOST")
[[ -n "$PG_PORT" ]] && psql_args+=(-p "$PG_PORT")
[[ -n "$SUPERUSER" ]] && psql_args+=(-U "$SUPERUSER")

# The script reaches psql on stdin, where :'var' / :"var" interpolation quotes the password as a literal
# and the names as identifiers; \gexec runs CREATE only when the object is missing (no IF NOT EXISTS
# exists for roles or databases).
"$PSQL" "${psql_args[@]}" -v db="$DB" -v db_user="$DB_USER" -v pw="$PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'db_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'db_user') \gexec
ALTER ROLE :"db_user" WITH LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'db_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"db_user";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT ALL ON DATABASE :"db" TO :"db_user";
SQL

port="${PG_PORT:-5432}"
echo "postgresql://$DB_USER@$CONNECT_HOST:$port/$DB"
