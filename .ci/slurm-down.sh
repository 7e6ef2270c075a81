#!/usr/bin/env bash
# Stop the daemons started by slurm-up.sh, by their pid files (never by name).
set -uo pipefail
BASE=${GRADRANK_SLURM_DIR:-/tmp/gradrank-slurm}
for f in "$BASE/slurmd.pid" "$BASE/slurmctld.pid" "$BASE/slurmdbd.pid" /run/mysqld/mysqld.pid /run/munge/munged.pid; do
    if [ -s "$f" ]; then kill "$(cat "$f")" 2>/dev/null || true; fi
done
