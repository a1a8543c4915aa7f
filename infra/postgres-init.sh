#!/bin/sh
# Runs once, when the postgres container initialises an empty data volume (/docker-entrypoint-initdb.d):
# one login role and one database each for Dagster and MLflow. The passwords come from the container's
# environment (DAGSTER_PG_PASSWORD, MLFLOW_PG_PASSWORD, set by docker-compose.yaml from your shell) and are
# read by psql's \getenv, so they appear neither in this file nor on any command line.
set -eu
: "${DAGSTER_PG_PASSWORD:?DAGSTER_PG_PASSWORD is not set}"
: "${MLFLOW_PG_PASSWORD:?MLFLOW_PG_PASSWORD is not set}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv dagster_password DAGSTER_PG_PASSWORD
\getenv mlflow_password MLFLOW_PG_PASSWORD
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE dagster OWNER dagster;
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
SQL
