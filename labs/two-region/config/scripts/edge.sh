#!/usr/bin/env bash
# An edge node: the anycast VIP on lo, `meshgate edge run` (which starts ExaBGP, peering with
# the region's router) with /lab/edges/$NODE.yaml.
set -euo pipefail
. /lab/scripts/lib.sh
link_up eth1 "$ADDR" "$GW"
ip addr replace "$VIP/32" dev lo
exec meshgate edge run --zone-cp "tls://$ZONE_CP:5682" --token-file "$(token edge)" \
  --data-dir /var/lib/meshgate/edge --config "/lab/edges/$NODE.yaml"
