#!/usr/bin/env bash
# A region router on BIRD 2 (/lab/$NODE/bird.conf); its control socket /run/bird/bird.ctl is
# private to the node: `meshgate lab exec DIR $NODE -- birdc -s /run/bird/bird.ctl show route`.
set -euo pipefail
. /lab/scripts/lib.sh
. /lab/scripts/router-links.sh
router_links "$REGION"
mkdir -p /run/bird
exec bird -f -c "/lab/$NODE/bird.conf" -s /run/bird/bird.ctl -P /run/bird/bird.pid
