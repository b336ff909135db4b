# Shared paths and helpers for the one-node SLURM in launch/local-cluster/ (sourced, not run).
#
# Everything the cluster writes lives under one directory, $STEELSEG_SLURM_HOME
# (default /var/tmp/steelseg-slurm). The only things outside it are the symlinks in /etc/slurm
# (so sbatch, sacct, submitit and dask-jobqueue find the config without SLURM_CONF), munge's
# socket in /run/munge (the path every munge client looks at) and the fake GPU device nodes.

set -euo pipefail

SLURM_HOME="${STEELSEG_SLURM_HOME:-/var/tmp/steelseg-slurm}"
CLUSTER_NAME="${STEELSEG_SLURM_CLUSTER:-steelseg}"
DB_PORT="${STEELSEG_SLURM_DB_PORT:-3316}"      # not 3306: never collide with a system MariaDB
DBD_PORT="${STEELSEG_SLURM_DBD_PORT:-6819}"
FAKE_GPUS=(/dev/fakegpu0 /dev/fakegpu1)

ETC_DIR="$SLURM_HOME/etc"
MUNGE_DIR="$SLURM_HOME/munge"
MUNGE_SOCKET_DIR=/run/munge
DB_DIR="$SLURM_HOME/mysql"
SPOOL_DIR="$SLURM_HOME/slurm"
LOG_DIR="$SLURM_HOME/log"
RUN_DIR="$SLURM_HOME/run"

MUNGED_PID="$RUN_DIR/munged.pid"
MARIADB_PID="$DB_DIR/run/mariadbd.pid"
MARIADB_SOCKET="$DB_DIR/run/mariadbd.sock"
OPTUNA_URL_FILE="$SLURM_HOME/optuna-storage-url"  # an RDB for sweeps: --storage "$(cat ...)"
SLURMDBD_PID="$RUN_DIR/slurmdbd.pid"
SLURMCTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"            # the one node's slurmd (--nodes 1)
NODES_FILE="$SLURM_HOME/nodes"               # how many nodes the running cluster was made with

# --nodes N >= 2: nodes n1..nN, each a slurmd in its own network namespace (address
# $NODE_NET.(10+i) on a bridge of this machine, no route out) and UTS namespace (hostname nI).
NODE_NET="${STEELSEG_SLURM_NODE_NET:-10.77.0}"
# The same interface name on this machine (the bridge) and in every node (its veth end), as a real
# cluster has ib0 everywhere: a Dask scheduler here and its workers on the nodes share one --interface.
BRIDGE=sgnet0
CTLD_ADDR_MULTI="$NODE_NET.1"
HOSTS_MARK="# steelseg-local-cluster"

log() { printf '[local-slurm] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# pid_of FILE: print the pid in FILE if that process is alive, else nothing.
pid_of() {
    local file=$1 pid
    [[ -r $file ]] || return 0
    pid=$(tr -dc '0-9' <"$file")
    if [[ -n $pid ]] && ! process_gone "$pid"; then
        echo "$pid"
    fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
# process_gone PID: no such process, or only its zombie (killed, not yet reaped: kill -0 still works).
process_gone() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    [[ ${stat##*) } == Z* ]]  # the state follows the command name, which may hold spaces
}

wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# recorded_nodes: the N the cluster's configs were written for (1 when never recorded).
recorded_nodes() {
    if [[ -s $NODES_FILE ]]; then tr -dc '0-9' <"$NODES_FILE"; else echo 1; fi
}

# node_names N: the compute nodes of an N-node cluster.
node_names() {
    local n=$1 i
    if ((n == 1)); then hostname -s; return; fi
    for ((i = 1; i <= n; i++)); do echo "n$i"; done
}

node_netns() { echo "steelseg-$1"; }            # NODE -> its network namespace
node_addr() { echo "$NODE_NET.$((10 + ${1#n}))"; }  # nI -> its address
slurmd_pid_file() {                              # NODE N -> the pid file of its slurmd
    if (($2 == 1)); then echo "$SLURMD_PID"; else echo "$RUN_DIR/slurmd-$1.pid"; fi
}

# node_state [NODE]: a node's state as sinfo prints it (idle, mix, alloc, down*, ...).
node_state() {
    sinfo -h -N -n "${1:-$(hostname -s)}" -o '%t' 2>/dev/null | head -n 1
}

# nodes_usable N: every node of the N-node cluster can take jobs.
nodes_usable() {
    local node
    for node in $(node_names "$1"); do
        [[ $(node_state "$node") =~ ^(idle|mix|mixed|alloc|allocated|comp|completing)$ ]] || return 1
    done
}

node_usable() { nodes_usable "$(recorded_nodes)"; }

# slurmd_pids N: the live slurmd pids of an N-node cluster.
slurmd_pids() {
    local node
    for node in $(node_names "$1"); do pid_of "$(slurmd_pid_file "$node" "$1")"; done
}

# mariadb_cli ARGS...: the mariadb client on our private socket, as the DB's root (unix socket auth).
mariadb_cli() {
    mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot "$@"
}
