#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying and testing `testbed sweep --launcher slurm`.
#
#   sudo apt-get install slurm-wlm munge     # once (Debian/Ubuntu); as root here
#   bash scripts/slurm-local.sh start        # munged + slurmctld + slurmd; waits until the node is idle
#   bash scripts/slurm-local.sh status       # sinfo + squeue
#   bash scripts/slurm-local.sh stop
#
# Runs as root (SlurmUser=root); state, spool and logs live under $SLURM_LOCAL_DIR (default /tmp/slurm-local).
# One node named after this host with all its CPUs and 90% of its memory, one default partition `local`,
# no accounting database (sacct answers "accounting storage is disabled"; testbed tracks jobs with squeue).
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CONF_DIR=/etc/slurm
HOST=$(hostname -s)

die() { echo "slurm-local: $*" >&2; exit 1; }

write_conf() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {printf "%d", $2 * 0.9 / 1024}' /proc/meminfo)
  mkdir -p "$CONF_DIR" "$DIR/state" "$DIR/spool" "$DIR/log"
  cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by testbed's scripts/slurm-local.sh: a single-node cluster for local runs and tests.
ClusterName=testbed-local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MessageTimeout=30
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# A job that asks for no memory gets a share per CPU, not the whole node (which would run one at a time).
DefMemPerCPU=$((mem_mb / cpus))
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  command -v slurmctld >/dev/null || die "Slurm is not installed: apt-get install slurm-wlm munge"
  [ "$(id -u)" = 0 ] || die "run as root (the daemons run as SlurmUser=root)"
  if sinfo -h >/dev/null 2>&1; then echo "slurm-local: already running"; sinfo; return; fi
  write_conf
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  [ -s /etc/munge/munge.key ] || mungekey --create 2>/dev/null || \
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || munged --force
  slurmctld
  slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then sinfo; return; fi
    sleep 0.5
  done
  die "the node did not come up: see $DIR/log/slurmctld.log and $DIR/log/slurmd.log"
}

stop() {
  scancel --user=root 2>/dev/null || true
  pkill -x slurmd || true
  pkill -x slurmctld || true
  echo "slurm-local: stopped (munged left running)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) die "usage: $0 start | stop | status" ;;
esac
