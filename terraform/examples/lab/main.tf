# Two regions described with the meshgate-region module, rendered for `meshgate lab` (network
# namespaces on one machine, as root): no provider, local state. What the module renders for
# each host (config files, systemd units) is what the lab nodes run.
#
#   terraform init && terraform apply
#   terraform output -json files | python3 write_files.py out    # the lab directory
#   sudo meshgate lab up out && sudo meshgate lab check out
#
# Each region (R = 1 eu-west, 2 us-east) has a zone CP, an anycast edge, a zone ingress, a
# workload host, an upstream router (BIRD, AS 6500R) and a client. Every host has a /30 to the
# router (10.R.I.2, the router .1); the client LAN is 10.R.6.0/24; the routers peer over
# 10.0.0.0/30. The zone CPs reach the lab's global CP over the management network.

terraform {
  required_version = ">= 1.9.0"
}

locals {
  global_ip = "172.20.20.2"
  vip       = "203.0.113.10"
  hostname  = "web.tf-lab.example"

  # the lab's own settings for every edge: fast probes and announcements; no distance between
  # the lab's regions (RTTs within 20 ms are ties, settled by distance)
  edge_settings = {
    probe       = { interval = 0.5, timeout = 1 }
    announce    = { interval = 0.5 }
    drain       = { deadline = 20 }
    zone_choice = { tie = 0.02 }
  }
  health = { type = "http", path = "/_meshgate/healthz", interval = 1, timeout = 1, rise = 1, fall = 2 }
}

module "eu_west" {
  source = "../../modules/meshgate-region"

  zone              = "eu-west"
  zone_description  = "Europe (Paris)"
  zone_location     = { latitude = 48.86, longitude = 2.35 }
  global_cp_url     = "https://${local.global_ip}:5685"
  render_cloud_init = false # the lab's global CP makes the CA and the tokens when the lab starts
  anycast_prefixes  = ["${local.vip}/32"]
  edge_settings     = local.edge_settings

  zone_cp = { name = "zcp-eu", address = "10.1.2.2" }
  edges = [{
    name      = "edge-eu"
    address   = "10.1.1.2"
    asn       = 65101
    hold_time = 9
    neighbors = [{ address = "10.1.1.1", asn = 65001, description = "rtr-eu" }]
    # identical on every edge of the VIP (or upstream ECMP collapses onto one path)
    communities = ["65000:100"]
  }]
  ingresses = [{ name = "ingress-eu", address = "10.1.3.2" }]
  workloads = [{
    name    = "web-eu-1"
    address = "10.1.4.2"
    services = [
      { name = "web", port = 8080, health = local.health },
      { name = "api", port = 8081, health = local.health },
    ]
  }]

  lab = {
    router  = "rtr-eu"
    client  = "10.1.6.10/24"
    uplinks = [{ interface = "eth9", address = "10.0.0.1/30", peer = "10.0.0.2", peer_asn = 65002, name = "rtr-us" }]
  }
}

module "us_east" {
  source = "../../modules/meshgate-region"

  zone              = "us-east"
  zone_description  = "US (Ashburn)"
  zone_location     = { latitude = 39.04, longitude = -77.49 }
  global_cp_url     = "https://${local.global_ip}:5685"
  render_cloud_init = false
  anycast_prefixes  = ["${local.vip}/32"]
  edge_settings     = local.edge_settings

  zone_cp = { name = "zcp-us", address = "10.2.2.2" }
  edges = [{
    name        = "edge-us"
    address     = "10.2.1.2"
    asn         = 65102
    hold_time   = 9
    neighbors   = [{ address = "10.2.1.1", asn = 65002, description = "rtr-us" }]
    communities = ["65000:100"]
  }]
  ingresses = [{ name = "ingress-us", address = "10.2.3.2" }]
  workloads = [{
    name     = "web-us-1"
    address  = "10.2.4.2"
    services = [{ name = "web", port = 8080, health = local.health }]
  }]

  lab = {
    router  = "rtr-us"
    client  = "10.2.6.10/24"
    uplinks = [{ interface = "eth9", address = "10.0.0.2/30", peer = "10.0.0.1", peer_asn = 65001, name = "rtr-eu" }]
  }
}

locals {
  regions = [module.eu_west.lab, module.us_east.lab]

  # What the operator defines at the global CP, beside the regions' manifests: the services and
  # the anycast global service every edge serves.
  services = [
    {
      apiVersion = "meshgate/v1alpha1"
      kind       = "Service"
      metadata   = { name = "web", labels = { app = "web" } }
      spec       = { ports = [{ name = "http", port = 8080, protocol = "http" }] }
    },
    {
      apiVersion = "meshgate/v1alpha1"
      kind       = "Service"
      metadata   = { name = "api", labels = { app = "api" } }
      spec       = { ports = [{ name = "http", port = 8081, protocol = "http" }] }
    },
    {
      apiVersion = "meshgate/v1alpha1"
      kind       = "GlobalService"
      metadata   = { name = "web", labels = { app = "web" } }
      spec = {
        service   = "web"
        hostnames = [local.hostname]
        vips      = [local.vip]
        ports     = [{ name = "http", port = 80, protocol = "http", targetPort = "http" }]
        zones     = [for r in local.regions : { zone = r.zone }]
      }
    },
  ]
  services_manifest = join("", concat(
    ["# The lab's services and its anycast global service (terraform/examples/lab).\n"],
    [for doc in local.services : "---\n${yamlencode(doc)}"],
  ))

  global_node = {
    global = {
      "mgmt-ipv4" = local.global_ip
      cmd         = "bash /lab/global.sh"
      # ZONES: the zones it makes join tokens for; the CLI inside the node finds the global CP
      env = {
        MGMT_IP             = local.global_ip
        ZONES               = join(" ", [for r in local.regions : r.zone])
        MESHGATE_SERVER     = "http://127.0.0.1:5680"
        MESHGATE_TOKEN_FILE = "/var/lib/meshgate/global-cp/admin-token"
      }
      binds  = ["lab:/lab:ro", "__clabDir__:/clab", "__clabNodeDir__:/var/lib/meshgate"]
      labels = { role = "global-cp" }
      healthcheck = {
        test           = ["CMD-SHELL", "test -f /clab/shared/tokens/ready && curl -sf http://127.0.0.1:5680/readyz"]
        "start-period" = 1
        interval       = 1
        timeout        = 5
        retries        = 90
      }
    }
  }

  topology = {
    name = "tf-lab"
    mgmt = { network = "meshgate-tf-lab", "ipv4-subnet" = "172.20.20.0/24" }
    topology = {
      defaults = { kind = "linux", image = "meshgate:lab" }
      nodes    = merge(local.global_node, module.eu_west.lab.nodes, module.us_east.lab.nodes)
      links = concat(
        module.eu_west.lab.links,
        module.us_east.lab.links,
        [{ endpoints = ["${module.eu_west.lab.router}:eth9", "${module.us_east.lab.router}:eth9"] }],
      )
    }
  }

  checks = concat(flatten([
    for r in local.regions : [
      {
        name     = "${r.router} routes the VIP to its own edge"
        deadline = "60s"
        route    = { node = r.router, prefix = "${local.vip}/32", via = r.edges[*].address }
      },
      [for e in r.edges : {
        name     = "${e.name} announces the VIP (ExaBGP acked, session up)"
        deadline = "30s"
        metric = {
          node   = e.name, url = "http://127.0.0.1:9901/metrics", name = "meshgate_edge_vip_announced",
          labels = { vip = local.vip }, op = "==", value = 1
        }
      }],
      [for e in r.edges : [for other in local.regions : {
        name     = "${e.name} reaches zone ${other.zone} over mTLS"
        deadline = "30s"
        metric = {
          node   = e.name, url = "http://127.0.0.1:9901/metrics", name = "meshgate_edge_zone_reachable",
          labels = { service = "web", zone = other.zone }, op = "==", value = 1
        }
      } if other.zone != r.zone]],
      {
        name     = "${r.client} is served by ${r.edges[0].name} from ${r.zone}"
        deadline = "30s"
        http = {
          node    = r.client, url = "http://${local.vip}/", host = local.hostname, status = 200,
          headers = { "x-meshgate-edge" = r.edges[0].name, "x-meshgate-zone" = r.zone }
        }
      },
    ]
  ]), local.extra_checks)
  extra_checks = [
    {
      name     = "the api proxy of web-eu-1 registered with its zone (a second meshgate-proxy@ instance)"
      deadline = "30s"
      command = {
        node   = "zcp-eu", argv = ["curl", "-sf", "http://127.0.0.1:5681/api/v1/dataplanes"], exit = 0,
        stdout = "\"eu-west\\.web-eu-1-api\""
      }
    },
    {
      name     = "an unknown host is refused at the edge"
      deadline = "10s"
      http     = { node = module.eu_west.lab.client, url = "http://${local.vip}/", host = "nobody.example", status = 404 }
    },
  ]
}
