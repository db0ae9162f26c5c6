#!/usr/bin/env bash
# The lab's global CP node (not part of a region: in a real deployment it exists before
# Terraform runs). It applies the lab's resources (/lab/manifests: the global services and each
# region's manifest), then writes a reusable join token per zone and role, and the CA
# fingerprint they name, to /clab/shared/tokens, where the regions' nodes read them.
set -euo pipefail
data=/var/lib/meshgate/global-cp
tokens=/clab/shared/tokens
mkdir -p "$tokens"
rm -f "$tokens"/*
meshgate global-cp run --data-dir "$data" --listen 0.0.0.0:5680 --zone-listen 0.0.0.0:5685 \
  --zone-name "$MGMT_IP" &
cp=$!
trap 'kill -TERM "$cp" 2>/dev/null' TERM INT
export MESHGATE_SERVER=http://127.0.0.1:5680 MESHGATE_TOKEN_FILE="$data/admin-token"
n=0
until curl -sf "$MESHGATE_SERVER/readyz" >/dev/null 2>&1; do
  n=$((n + 1))
  if [ "$n" -ge 600 ]; then echo "global.sh: the global CP did not get ready" >&2; exit 1; fi
  sleep 0.1
done
meshgate apply -f /lab/manifests/
for zone in $ZONES; do
  for role in zone edge ingress proxy; do
    meshgate token create --role "$role" --zone "$zone" --ttl 720h --reusable >"$tokens/.$role-$zone"
    mv "$tokens/.$role-$zone" "$tokens/$role-$zone"
  done
done
python3 -c 'import sys; from meshgate.pki.join_tokens import read_unverified as r
print(r(open(sys.argv[1]).read().strip()).ca_fingerprint)' "$tokens/zone-${ZONES%% *}" >"$tokens/.ca-fingerprint"
mv "$tokens/.ca-fingerprint" "$tokens/ca-fingerprint"
touch "$tokens/ready"
status=0
while kill -0 "$cp" 2>/dev/null; do wait "$cp" || status=$?; done
exit "$status"
