# A one-machine Slurm cluster for tests: Debian's slurmctld and slurmd, started by the test, with
# everything (config, state, spool, logs, pid files) under a folder the test owns. Source it:
#
#   source tests/scripts/slurm_cluster.sh
#   slurm_start DIR          # writes DIR/slurm.conf, exports SLURM_CONF, starts the daemons and
#                            # waits (30 s at most) until the node is idle; returns 1 on failure
#                            # (77 when slurmctld/slurmd/srun are not installed)
#   trap slurm_stop EXIT     # stops exactly the daemons slurm_start started (safe to call twice)
#   slurm_wait_job ID SECS   # waits until job ID has a final state; prints "STATE EXIT_CODE",
#                            # e.g. "COMPLETED 0:0"; returns 1 on timeout
#   slurm_own_pids           # prints the pids of live processes of this cluster (see below)
#
# The cluster: one node named after this machine (short hostname) at 127.0.0.1 with 8 CPUs whatever
# the real core count (SlurmdParameters=config_overrides: slurmd reports the configured node, so
# 4-task jobs fit on a 2-core machine; the tasks oversubscribe the cores), one partition "debug".
# No system-level setup: AuthType=auth/none and CredType=cred/none need no munge,
# ProctrackType=proctrack/linuxproc and TaskPlugin=task/none need no cgroups, both daemons run as
# root (SlurmUser=root), and the ports are free ones probed on 127.0.0.1 below the ephemeral
# range. The machine's own /etc/slurm is never read: every client command gets SLURM_CONF. Run
# as root (slurmd must be able to start jobs as the submitting user).
#
# DIR should be short (a mktemp folder under /tmp): slurmstepd makes UNIX sockets under
# DIR/spool, and such paths are limited to 107 bytes.
#
# slurm_own_pids finds the cluster's processes by the log files under DIR they hold open (the
# daemons, slurmscriptd and every slurmstepd write their logs there) and their descendants (the
# tasks): slurm_stop ends those too if a job outlived its cancellation, and nothing else. A
# watchdog stops the daemons when the sourcing shell dies without running its EXIT trap (killed
# by a test timeout). The functions work under `set -euo pipefail`.

SLURM_CLUSTER_DIR=""
SLURM_CLUSTER_PIDS=""
SLURM_CLUSTER_NODE=""
SLURM_CLUSTER_WATCHDOG=""

_slurm_log_tails() { # the last lines of the daemons' logs (or their stderr), for failure messages
  local d f
  for d in slurmctld slurmd; do
    f=$SLURM_CLUSTER_DIR/$d.log
    [ -s "$f" ] || f=$SLURM_CLUSTER_DIR/$d.out
    [ -s "$f" ] && { echo "---- tail of $f" >&2; tail -n 15 "$f" >&2; }
  done
  return 0
}

_slurm_port_free() { # _slurm_port_free PORT: true when nothing listens on 127.0.0.1:PORT
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Two free consecutive ports from a base derived from DIR, below the kernel's range of ephemeral
# ports (ip_local_port_range; 32768 by default): a port in that range can be the local end of
# any process's outgoing connection (MPI's, another test's), which no listener shows to the
# probe above but which makes slurmd's bind fail with "Address already in use".
_slurm_free_ports() {
  local base p low span
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || low=32768
  [ "${low:-0}" -gt 14000 ] 2>/dev/null || low=32768 # a range starting lower: ports 10000.. anyway
  span=$(( low - 12000 )) # bases 10000 .. low - 2002: the scan stays below low
  base=$(( 10000 + ($(printf '%s' "$1" | cksum | cut -d' ' -f1) % span) / 2 * 2 ))
  for ((p = base; p < base + 2000 && p + 1 < low; p += 2)); do
    if _slurm_port_free "$p" && _slurm_port_free $((p + 1)); then
      echo "$p $((p + 1))"
      return 0
    fi
  done
  return 1
}

slurm_start() { # slurm_start DIR
  local dir=${1:?usage: slurm_start DIR} cmd ports p i state=""
  case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac
  for cmd in slurmctld slurmd srun sbatch squeue scancel sinfo scontrol; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
      echo "slurm_start: $cmd is not installed" >&2
      return 77
    fi
  done
  [ "$(id -u)" -eq 0 ] || { echo "slurm_start: slurmd must run as root" >&2; return 77; }
  if [ -n "$SLURM_CLUSTER_PIDS" ]; then
    echo "slurm_start: a cluster is already running from $SLURM_CLUSTER_DIR" >&2
    return 1
  fi
  mkdir -p "$dir/state" "$dir/spool" && dir=$(cd "$dir" && pwd) || return 1
  if [ ${#dir} -gt 70 ]; then # room for "/spool/<node>_<job>.<step>" in 107 bytes
    echo "slurm_start: DIR $dir is too long for slurmstepd's sockets (70 bytes at most)" >&2
    return 1
  fi
  SLURM_CLUSTER_DIR=$dir
  SLURM_CLUSTER_NODE=$(uname -n)
  SLURM_CLUSTER_NODE=${SLURM_CLUSTER_NODE%%.*} # the short name, as slurmctld compares it
  ports=$(_slurm_free_ports "$dir") || { echo "slurm_start: no free ports" >&2; return 1; }
  set -- $ports
  cat >"$dir/slurm.conf" <<EOF
# written by tests/scripts/slurm_cluster.sh for a test; removed with its folder
ClusterName=dttest
SlurmctldHost=$SLURM_CLUSTER_NODE(127.0.0.1)
SlurmctldPort=$1
SlurmdPort=$2
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
LaunchType=launch/slurm
# slurmd reports the configured CPUs/memory of NodeName, not the real ones (8 CPUs on 2 cores)
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
# a requeued job waits cred_expire seconds before it may start again (120 s by default)
AuthInfo=cred_expire=5
# schedule pending (e.g. requeued) jobs within a second, not a minute
SchedulerParameters=sched_interval=1,bf_interval=1
# finished jobs stay visible to scontrol show job for 10 minutes (there is no accounting)
MinJobAge=600
KillWait=5
InactiveLimit=0
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$SLURM_CLUSTER_NODE NodeAddr=127.0.0.1 CPUs=8 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$SLURM_CLUSTER_NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

  export SLURM_CONF=$dir/slurm.conf
  # -D: foreground, so $! is the daemon itself; -i: ignore the missing state files of a new cluster
  slurmctld -D -i -f "$SLURM_CONF" >"$dir/slurmctld.out" 2>&1 &
  SLURM_CLUSTER_PIDS=$!
  slurmd -D -f "$SLURM_CONF" -N "$SLURM_CLUSTER_NODE" >"$dir/slurmd.out" 2>&1 &
  SLURM_CLUSTER_PIDS="$SLURM_CLUSTER_PIDS $!"
  _slurm_watchdog $$ "$SLURM_CONF" $SLURM_CLUSTER_PIDS </dev/null >/dev/null 2>&1 &
  SLURM_CLUSTER_WATCHDOG=$!
  for ((i = 0; i < 300; i++)); do # 30 s
    state=$(sinfo -h -N -n "$SLURM_CLUSTER_NODE" -o %T 2>/dev/null) || state=""
    [ "$state" = idle ] && return 0
    for p in $SLURM_CLUSTER_PIDS; do
      kill -0 "$p" 2>/dev/null || { echo "slurm_start: daemon $p exited" >&2; i=-1; break; }
    done
    [ $i -lt 0 ] && break
    sleep 0.1
  done
  [ $i -lt 0 ] || echo "slurm_start: the node is not idle after 30 s (state '${state}')" >&2
  _slurm_log_tails
  slurm_stop
  return 1
}

_slurm_watchdog() { # _slurm_watchdog SHELL_PID CONF PIDS...: when SHELL_PID is gone, stops PIDS
  local shell=$1 conf=$2 p nap=""
  shift 2
  # slurm_stop ends the watchdog with TERM: end its sleep too, leaving nothing behind
  trap '[ -z "$nap" ] || { kill "$nap"; wait "$nap"; } 2>/dev/null; exit 0' TERM
  while kill -0 "$shell" 2>/dev/null; do
    sleep 1 &
    nap=$!
    wait "$nap" || true
  done
  trap - TERM
  for p in "$@"; do # only if the pid is still that daemon (its command line names CONF)
    grep -qsaF -- "$conf" "/proc/$p/cmdline" && kill -TERM "$p"
  done
  sleep 5
  for p in "$@"; do grep -qsaF -- "$conf" "/proc/$p/cmdline" && kill -KILL "$p"; done
  return 0
}

slurm_own_pids() { # pids of live processes of this cluster: those with its log files open, and
  # their descendants (the daemons, slurmscriptd and slurmstepd keep the log files open; the tasks
  # are children of slurmstepd)
  [ -n "$SLURM_CLUSTER_DIR" ] || return 0
  local roots
  roots=$(find /proc/[0-9]*/fd -maxdepth 1 \( -lname "$SLURM_CLUSTER_DIR/slurmctld.log" \
            -o -lname "$SLURM_CLUSTER_DIR/slurmd.log" \) 2>/dev/null | cut -d/ -f3 | sort -u) \
          || true
  [ -n "$roots" ] || return 0
  ps -e -o pid=,ppid= | awk -v roots="$roots" '
    BEGIN { n = split(roots, r, "\n"); for (i = 1; i <= n; i++) own[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      do { changed = 0
           for (p in parent) if (!(p in own) && (parent[p] in own)) { own[p] = 1; changed = 1 }
      } while (changed)
      for (p in own) if (p in parent) print p
    }' | sort -n
}

slurm_stop() { # stops what slurm_start started; safe to call twice
  [ -n "$SLURM_CLUSTER_PIDS" ] || return 0
  local p i alive="" jobs
  # cancel the cluster's jobs first, so that their slurmstepd processes end their tasks
  jobs=$(squeue -h -o %i 2>/dev/null) || jobs=""
  if [ -n "$jobs" ]; then
    scancel --quiet $jobs >/dev/null 2>&1 || true
    for ((i = 0; i < 100; i++)); do # 10 s for the steps to end (KillWait=5)
      jobs=$(squeue -h -t RUNNING,COMPLETING,SUSPENDED -o %i 2>/dev/null) || jobs=""
      [ -z "$jobs" ] && break
      sleep 0.1
    done
  fi
  kill -TERM $SLURM_CLUSTER_PIDS 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do # 5 s, then KILL
    alive=""
    for p in $SLURM_CLUSTER_PIDS; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  [ -z "$alive" ] || kill -KILL $alive 2>/dev/null || true
  for p in $SLURM_CLUSTER_PIDS; do wait "$p" 2>/dev/null || true; done
  # slurmstepd processes and tasks that outlived the cancellation
  alive=$(slurm_own_pids)
  [ -z "$alive" ] || kill -KILL $alive 2>/dev/null || true
  if [ -n "$SLURM_CLUSTER_WATCHDOG" ]; then
    kill -TERM "$SLURM_CLUSTER_WATCHDOG" 2>/dev/null || true
    wait "$SLURM_CLUSTER_WATCHDOG" 2>/dev/null || true
  fi
  SLURM_CLUSTER_PIDS=""
  SLURM_CLUSTER_WATCHDOG=""
  return 0
}

slurm_wait_job() { # slurm_wait_job ID SECS: prints "STATE EXIT_CODE" once the job has ended
  local id=${1:?usage: slurm_wait_job ID SECS} secs=${2:?usage: slurm_wait_job ID SECS}
  local end=$((SECONDS + secs)) info state code
  while :; do
    info=$(scontrol -o show job "$id" 2>/dev/null) || info=""
    state=$(sed -n 's/.*\bJobState=\([A-Z_]*\).*/\1/p' <<<"$info")
    code=$(sed -n 's/.*\bExitCode=\([0-9:]*\).*/\1/p' <<<"$info")
    case $state in
      COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|PREEMPTED|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE)
        echo "$state $code"
        return 0 ;;
    esac
    if [ $SECONDS -ge $end ]; then
      echo "slurm_wait_job: job $id still '${state:-unknown}' after $secs s" >&2
      return 1
    fi
    sleep 0.2
  done
}
