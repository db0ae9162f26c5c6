# shellcheck shell=bash
# Helpers for the nodes' start scripts (each node's `cmd` in topology.clab.yml). The same
# scripts run in containerlab's containers and in `meshgate lab`'s namespaces.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# wait_for SECONDS WHAT CMD...: run CMD until it succeeds; give up after SECONDS.
wait_for() {
  local limit=$(($1 * 10)) what=$2 n=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    n=$((n + 1))
    [ "$n" -lt "$limit" ] || die "timed out after ${limit}00 ms waiting for $what"
    sleep 0.1
  done
}

# link_up IFNAME ADDRESS/LEN [GATEWAY]: containerlab may add a node's links after its cmd
# started, so wait for the interface; the gateway becomes the default route.
link_up() {
  wait_for 60 "interface $1" ip link show "$1"
  ip addr replace "$2" dev "$1"
  ip link set "$1" up
  if [ -n "${3:-}" ]; then ip route replace default via "$3" dev "$1"; fi
}

# token ROLE: the join token the global node wrote for this node's zone and ROLE.
token() {
  wait_for 180 "the lab's join tokens" test -f /clab/shared/tokens/ready
  echo "/clab/shared/tokens/$1-$ZONE"
}

# supervise CMD...: run the commands given as separate strings in the background; on
# SIGTERM/SIGINT stop them all; when one exits, stop the others and exit with its status.
supervise() {
  local pids=() cmd status
  for cmd in "$@"; do
    bash -c "exec $cmd" &
    pids+=($!)
  done
  trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
  wait -n "${pids[@]}"
  status=$?
  kill -TERM "${pids[@]}" 2>/dev/null
  wait "${pids[@]}"
  exit "$status"
}
