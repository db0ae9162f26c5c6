#!/usr/bin/env bash
# A zone ingress node: SNI passthrough from other zones' edges and proxies to this zone's
# local proxies (/lab/proxies/$NODE.yaml says where it listens and what it advertises).
set -euo pipefail
. /lab/scripts/lib.sh
link_up eth1 "$ADDR" "$GW"
exec meshgate proxy run --role ingress --zone-cp "tls://$ZONE_CP:5682" --token-file "$(token ingress)" \
  --data-dir /var/lib/meshgate/proxy --config "/lab/proxies/$NODE.yaml"
