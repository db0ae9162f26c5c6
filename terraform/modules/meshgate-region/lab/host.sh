#!/usr/bin/env bash
# A meshgate host in the lab: the network a provider would give it (one link to the region's
# router and the default route through it), then its systemd units, started as systemd would
# start them (unit-run.py) from the files Terraform rendered, bound at their real paths.
# usage: bash /lab/host.sh IFACE ADDRESS/LENGTH GATEWAY UNIT...
set -euo pipefail

# wait_for SECONDS CMD...: run CMD until it succeeds; give up after SECONDS.
wait_for() {
  local limit=$(($1 * 10)) n=0
  shift
  until "$@" >/dev/null 2>&1; do
    n=$((n + 1))
    if [ "$n" -ge "$limit" ]; then echo "host.sh: gave up waiting for: $*" >&2; exit 1; fi
    sleep 0.1
  done
}

iface=$1 address=$2 gateway=$3
shift 3
wait_for 60 ip link show "$iface" # the lab may add the node's links after its command started
ip addr replace "$address" dev "$iface"
ip link set "$iface" up
ip route replace default via "$gateway" dev "$iface"

# Terraform cannot know the CA of the lab's own global CP: its node writes the fingerprint, and
# every unit gets it as MESHGATE_CA_FINGERPRINT (as the environment file does on a real host).
if [ -n "${CA_FINGERPRINT_FILE:-}" ]; then
  wait_for 180 test -s "$CA_FINGERPRINT_FILE"
  MESHGATE_CA_FINGERPRINT=$(cat "$CA_FINGERPRINT_FILE")
  export MESHGATE_CA_FINGERPRINT
fi
exec python3 /lab/unit-run.py "$@"
