#!/usr/bin/env bash
# A workload host: the sample web workload on 127.0.0.1:8080 and the local proxy in front of
# it (mTLS inbound on the data network; /lab/proxies/$NODE.yaml).
set -euo pipefail
. /lab/scripts/lib.sh
link_up eth1 "$ADDR" "$GW"
supervise "meshgate workload run --listen 127.0.0.1:8080 --name $NODE --zone $ZONE" \
  "meshgate proxy run --role local --zone-cp tls://$ZONE_CP:5682 --token-file $(token proxy) \
    --data-dir /var/lib/meshgate/proxy --config /lab/proxies/$NODE.yaml"
