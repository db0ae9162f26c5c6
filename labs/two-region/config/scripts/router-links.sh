# shellcheck shell=bash
# router_links REGION: a region router's interfaces (10.R.I.1 towards node I, the client LAN on
# eth6, the inter-region link on eth9) and a static route to the other region's networks.
router_links() {
  local region=$1 other=$((3 - $1)) i
  for i in 1 2 3 4 5; do link_up "eth$i" "10.$region.$i.1/30"; done
  link_up eth6 "10.$region.6.1/24"
  link_up eth9 "10.0.0.$region/30"
  ip route replace "10.$other.0.0/16" via "10.0.0.$other" dev eth9
  sysctl -qw net.ipv4.ip_forward=1
}
