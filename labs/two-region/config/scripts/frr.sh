#!/usr/bin/env bash
# A region router on FRR 8 (zebra + bgpd with /lab/$NODE/*.conf); sockets in the node's private
# /run/frr: `meshgate lab exec DIR $NODE -- vtysh --vty_socket /run/frr -c 'show ip bgp'`.
set -euo pipefail
. /lab/scripts/lib.sh
. /lab/scripts/router-links.sh
router_links "$REGION"
mkdir -p /run/frr
common="-z /run/frr/zserv.api --vty_socket /run/frr -P 0 -u root -g frrvty"
supervise "/usr/lib/frr/zebra -f /lab/$NODE/zebra.conf -i /run/frr/zebra.pid $common" \
  "/usr/lib/frr/bgpd -f /lab/$NODE/bgpd.conf -i /run/frr/bgpd.pid $common"
