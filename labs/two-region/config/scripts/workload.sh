#!/usr/bin/env bash
# A workload host: the sample web workload on 127.0.0.1:8080 and the local proxy in front of
# it (mTLS inbound on the data network; /lab/proxies/$NODE.yaml). The workload journals what it
# receives, so a scenario that kills this host still reconciles what it served before.
set -euo pipefail
. /lab/scripts/lib.sh
link_up eth1 "$ADDR" "$GW"
supervise "meshgate workload run --listen 127.0.0.1:8080 --name $NODE --zone $ZONE \
    --journal /var/lib/meshgate/received.jsonl" \
  "meshgate proxy run --role local --zone-cp tls://$ZONE_CP:5682 --token-file $(token proxy) \
    --data-dir /var/lib/meshgate/proxy --config /lab/proxies/$NODE.yaml"
