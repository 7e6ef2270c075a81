#!/usr/bin/env bash
# Start a single-node SLURM cluster with accounting (munge, MariaDB, slurmdbd, slurmctld,
# slurmd) for the sweep tests. Idempotent: daemons already running are left alone.
# Needs root and Debian's packages; facts in ../shared/notes/slurm-single-node.md.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
BASE=${GRADRANK_SLURM_DIR:-/tmp/gradrank-slurm}
HOST=$(hostname -s)
DBPASS=gradrank-slurmdbd

alive() {  # alive PIDFILE [NAME]: that process exists, is not a zombie, and is NAME (default: the file's name)
    local pid name=${2:-$(basename "$1" .pid)}
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" &&
        [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local t=$1 what=$2
    shift 2
    for _ in $(seq $((t * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "slurm-up: $what did not come up in ${t}s" >&2
    return 1
}

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge slurmdbd mariadb-server >/dev/null
fi
mkdir -p "$BASE/state" "$BASE/spool" "$BASE/log"

# munge
install -d -o munge -g munge /run/munge
if ! alive /run/munge/munged.pid; then
    runuser -u munge -- /usr/sbin/munged
fi
wait_for 10 munge munge -n

# MariaDB for accounting
install -d -o mysql -g mysql /run/mysqld
if ! alive /run/mysqld/mysqld.pid mariadbd; then
    setsid mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
        >"$BASE/log/mariadb.log" 2>&1 </dev/null &
fi
wait_for 30 mariadb mariadb-admin ping
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

# configuration (rewritten each time; the daemons are restarted only if it changed)
mkdir -p /etc/slurm
DBD_CONF=$(cat <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
PidFile=$BASE/slurmdbd.pid
LogFile=$BASE/log/slurmdbd.log
CONF
)
NODE=$(slurmd -C | head -n 1)
CONF_TEXT=$(cat <<CONF
ClusterName=gradrank
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SchedulerParameters=sched_min_interval=0,batch_sched_delay=0,sched_interval=1
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
)
changed=0
if [ "$(cat /etc/slurm/slurmdbd.conf 2>/dev/null)" != "$DBD_CONF" ]; then
    printf '%s\n' "$DBD_CONF" >/etc/slurm/slurmdbd.conf
    changed=1
fi
chmod 600 /etc/slurm/slurmdbd.conf
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$CONF_TEXT" ]; then
    printf '%s\n' "$CONF_TEXT" >/etc/slurm/slurm.conf
    changed=1
fi
if [ $changed = 1 ]; then  # a changed config needs fresh daemons
    for f in slurmd slurmctld slurmdbd; do
        if alive "$BASE/$f.pid"; then kill "$(cat "$BASE/$f.pid")"; fi
    done
    for f in slurmd slurmctld slurmdbd; do
        for _ in $(seq 50); do alive "$BASE/$f.pid" || break; sleep 0.2; done
    done
fi

alive "$BASE/slurmdbd.pid" || slurmdbd
wait_for 30 slurmdbd sacctmgr -n show cluster
alive "$BASE/slurmctld.pid" || slurmctld
wait_for 30 slurmctld scontrol ping
alive "$BASE/slurmd.pid" || slurmd
wait_for 30 "an idle node" bash -c 'sinfo -h -o %T | grep -Eq "^(idle|mixed|allocated)"'
echo "slurm-up: $(sinfo -h -o '%P %D %T %c CPUs %m MB')"
