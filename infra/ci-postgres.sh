#!/usr/bin/env bash
# Sourced by .ci/run: a throwaway PostgreSQL on 127.0.0.1 for the scale-out integration tests
# (tests/test_postgres.py), from Debian's packages. Exports UNLEARN_TEST_POSTGRES=postgresql://user:pw@127.0.0.1:port
# with a random password made here; without it those tests skip. Any failure leaves the variable unset and
# says why: the rest of the suite does not depend on it.
unlearn_start_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "ci-postgres: no PostgreSQL and no root apt-get to install it; the PostgreSQL tests will skip"; return 0
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ||
      { echo "ci-postgres: apt-get install postgresql failed; the PostgreSQL tests will skip"; return 0; }
  fi
  local version cluster port password
  read -r version cluster port < <(pg_lsclusters -h | awk 'NR == 1 {print $1, $2, $3}') || true
  if [ -z "${version:-}" ]; then
    echo "ci-postgres: no cluster after installing; the PostgreSQL tests will skip"; return 0
  fi
  # Debian's default cluster listens on localhost only (listen_addresses = 'localhost')
  pg_ctlcluster "$version" "$cluster" start 2>/dev/null || pg_ctlcluster "$version" "$cluster" status >/dev/null ||
    { echo "ci-postgres: cluster $version/$cluster did not start; the PostgreSQL tests will skip"; return 0; }
  password=$(python3 -c "import secrets; print(secrets.token_hex(16))")
  su postgres -c "psql -q -p $port -c \"CREATE ROLE unlearn_ci\"" >/dev/null 2>&1 || true  # kept from an earlier run
  su postgres -c "psql -q -p $port -c \"ALTER ROLE unlearn_ci LOGIN CREATEDB PASSWORD '$password'\"" ||
    { echo "ci-postgres: could not create the test role; the PostgreSQL tests will skip"; return 0; }
  export UNLEARN_TEST_POSTGRES="postgresql://unlearn_ci:$password@127.0.0.1:$port"
  echo "ci-postgres: PostgreSQL $version on 127.0.0.1:$port for the integration tests"
}
unlearn_start_postgres
