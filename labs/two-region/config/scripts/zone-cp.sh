#!/usr/bin/env bash
# A zone CP node ($ZONE): enrolls with the global CP over the management network ($GLOBAL)
# and serves its zone's proxies and edge on the data network (ADDR, via GW).
set -euo pipefail
. /lab/scripts/lib.sh
link_up eth1 "$ADDR" "$GW"
exec meshgate zone-cp run --zone "$ZONE" --global "https://$GLOBAL:5685" --token-file "$(token zone)" \
  --data-dir /var/lib/meshgate/zone-cp --listen 0.0.0.0:5681 --proxy-listen 0.0.0.0:5682
