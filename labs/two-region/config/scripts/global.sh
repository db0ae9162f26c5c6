#!/usr/bin/env bash
# The global CP node: the control plane on SQLite; once it answers, the lab's resources
# (/lab/manifests) applied and a join token per zone and role written to /clab/shared/tokens,
# which every other node waits for.
set -euo pipefail
. /lab/scripts/lib.sh
data=/var/lib/meshgate/global-cp
tokens=/clab/shared/tokens
rm -rf "$tokens" && mkdir -p "$tokens"
meshgate global-cp run --data-dir "$data" --listen 0.0.0.0:5680 --zone-listen 0.0.0.0:5685 \
  --zone-name "$MGMT_IP" &
cp=$!
trap 'kill -TERM "$cp" 2>/dev/null' TERM INT
export MESHGATE_SERVER=http://127.0.0.1:5680 MESHGATE_TOKEN_FILE="$data/admin-token"
wait_for 60 "the global CP's API" curl -sf "$MESHGATE_SERVER/readyz"
meshgate apply -f /lab/manifests/
for zone in eu-west us-east; do
  for role in zone edge ingress proxy; do
    meshgate token create --role "$role" --zone "$zone" --ttl 720h --reusable >"$tokens/.$role-$zone"
    mv "$tokens/.$role-$zone" "$tokens/$role-$zone"
  done
done
touch "$tokens/ready"
status=0
while kill -0 "$cp" 2>/dev/null; do wait "$cp" || status=$?; done
exit "$status"
