#!/bin/sh
# Entrypoint of the ServiceTrail image: for each secret setting below, when VAR_FILE
# names a file (a Docker Compose or Kubernetes secret), export VAR with its content,
# so the secret never appears in the compose file or in `docker inspect`. Then exec
# the command (`python -m services.intake` by default), which becomes PID 1.
set -eu

# The per-service URLs and the owner's are read by `servicetrail migrate` and
# `servicetrail set-role-passwords` in the migration step.
for var in JWT_SECRET DATABASE_URL KAFKA_SASL_PASSWORD MIGRATION_DATABASE_URL \
    INTAKE_DATABASE_URL DISPATCH_DATABASE_URL LEDGER_DATABASE_URL METRICS_DATABASE_URL; do
    file_var="${var}_FILE"
    eval "file=\${${file_var}:-}"
    [ -n "$file" ] || continue
    eval "current=\${${var}:-}"
    if [ -n "$current" ]; then
        echo "servicetrail: both $var and $file_var are set; set only one" >&2
        exit 64
    fi
    if [ ! -r "$file" ]; then
        echo "servicetrail: $file_var=$file is not a readable file (uid $(id -u))" >&2
        exit 66
    fi
    value="$(cat "$file")"
    if [ -z "$value" ]; then
        echo "servicetrail: $file_var=$file is empty" >&2
        exit 65
    fi
    export "$var=$value"
    unset "$file_var"
done

exec "$@"
