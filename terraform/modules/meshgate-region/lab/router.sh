#!/usr/bin/env bash
# A region's upstream router in the lab (BIRD 2), standing for the provider's: LINKS holds its
# interfaces as IFACE=ADDRESS/LENGTH words. Its control socket is private to the node:
# `meshgate lab exec DIR NODE -- birdc -s /run/bird/bird.ctl show route`.
set -euo pipefail
for link in $LINKS; do
  iface=${link%%=*}
  n=0
  until ip link show "$iface" >/dev/null 2>&1; do # links may come after the command started
    n=$((n + 1))
    if [ "$n" -ge 600 ]; then echo "router.sh: no interface $iface" >&2; exit 1; fi
    sleep 0.1
  done
  ip addr replace "${link#*=}" dev "$iface"
  ip link set "$iface" up
done
sysctl -qw net.ipv4.ip_forward=1
mkdir -p /run/bird
exec bird -f -c /etc/bird/bird.conf -s /run/bird/bird.ctl -P /run/bird/bird.pid
