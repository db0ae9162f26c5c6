# What every host of the region runs, rendered once: its meshgate config file(s) and systemd
# unit(s). Cloud-init writes them (cloud_init.tf) and the lab binds the very same files into its
# nodes (lab.tf); only the environment file differs (where the join token is, and whether the CA
# fingerprint is known yet).

locals {
  bin         = "${var.install.dir}/bin/meshgate"
  units_dir   = "/etc/systemd/system"
  fingerprint = var.ca_fingerprint == null ? null : lower(var.ca_fingerprint)
  zone_cp_url = "tls://${var.zone_cp.address}:${var.zone_cp.proxy_port}"
  stop_after  = ceil(var.edge_settings.drain.deadline) + 15 # seconds: the edge's drain, then some

  # one role per host (validated): name => role, address, and the join token role it enrolls with
  hosts = merge(
    { (var.zone_cp.name) = { role = "zone-cp", address = var.zone_cp.address, token_role = "zone" } },
    { for e in var.edges : e.name => { role = "edge", address = e.address, token_role = "edge" } },
    { for i in var.ingresses : i.name => { role = "ingress", address = i.address, token_role = "ingress" } },
    { for w in var.workloads : w.name => { role = "workload", address = w.address, token_role = "proxy" } },
  )

  # each workload service with its proxy's inbound and admin ports (10001/9901 upwards, in order)
  services = {
    for w in var.workloads : w.name => [
      for i, s in w.services : merge(s, {
        proxy   = "${w.name}-${s.name}"
        inbound = coalesce(s.inbound_port, 10001 + i)
        admin   = 9901 + i
      })
    ]
  }

  edge_configs = {
    for e in var.edges : e.name => {
      name  = e.name
      admin = "127.0.0.1:${var.edge_settings.admin_port}"
      probe = {
        interval   = var.edge_settings.probe.interval
        timeout    = var.edge_settings.probe.timeout
        ejectAfter = var.edge_settings.probe.eject_after
      }
      announce = {
        interval  = var.edge_settings.announce.interval
        rise      = var.edge_settings.announce.rise
        fall      = var.edge_settings.announce.fall
        staleness = var.edge_settings.announce.staleness
      }
      drain      = { threshold = var.edge_settings.drain.threshold, deadline = var.edge_settings.drain.deadline }
      zoneChoice = { hysteresis = var.edge_settings.zone_choice.hysteresis, tie = var.edge_settings.zone_choice.tie }
      bgp        = { enabled = true }
    }
  }

  header = "# Rendered by terraform (modules/meshgate-region) for zone ${var.zone}.\n"

  # host => { absolute path => content }: the config files and units (not the env file, not the token)
  host_files = merge(
    {
      (var.zone_cp.name) = {
        "${local.units_dir}/meshgate-zone-cp.service" = templatefile("${path.module}/templates/meshgate-zone-cp.service.tftpl", {
          bin        = local.bin, zone = var.zone, global_url = var.global_cp_url, proxy_port = var.zone_cp.proxy_port,
          api_listen = var.zone_cp.api_listen
        })
      }
    },
    {
      for e in var.edges : e.name => {
        "/etc/meshgate/edge.yaml" = "${local.header}# Edge ${e.name}: its BGP session settings are in its Edge resource (the region manifest).\n${yamlencode(local.edge_configs[e.name])}"
        "${local.units_dir}/meshgate-edge.service" = templatefile("${path.module}/templates/meshgate-edge.service.tftpl", {
          bin            = local.bin, zone = var.zone, name = e.name, zone_cp_url = local.zone_cp_url, prefixes = var.anycast_prefixes,
          drain_deadline = var.edge_settings.drain.deadline, stop_timeout = local.stop_after
        })
      }
    },
    {
      for i in var.ingresses : i.name => {
        "/etc/meshgate/ingress.yaml" = "${local.header}${yamlencode({
          name   = i.name
          listen = { address = "0.0.0.0", port = i.port, advertise = i.address }
          admin  = "127.0.0.1:9901"
        })}"
        "${local.units_dir}/meshgate-ingress.service" = templatefile("${path.module}/templates/meshgate-ingress.service.tftpl", {
          bin = local.bin, zone = var.zone, name = i.name, zone_cp_url = local.zone_cp_url
        })
      }
    },
    {
      for w in var.workloads : w.name => merge(
        {
          "${local.units_dir}/meshgate-proxy@.service" = templatefile("${path.module}/templates/meshgate-proxy@.service.tftpl", {
            bin = local.bin, zone = var.zone, zone_cp_url = local.zone_cp_url
          })
        },
        {
          for s in local.services[w.name] : "/etc/meshgate/proxy-${s.name}.yaml" => "${local.header}${yamlencode({
            name      = s.proxy
            service   = s.name
            inbound   = { address = "0.0.0.0", port = s.inbound, advertise = w.address }
            instances = [{ address = "127.0.0.1", port = s.port }]
            health    = s.health
            admin     = "127.0.0.1:${s.admin}"
          })}"
        },
      )
    },
  )

  # host => the units to enable, in start order
  host_units = merge(
    { (var.zone_cp.name) = ["meshgate-zone-cp.service"] },
    { for e in var.edges : e.name => ["meshgate-edge.service"] },
    { for i in var.ingresses : i.name => ["meshgate-ingress.service"] },
    { for w in var.workloads : w.name => [for s in w.services : "meshgate-proxy@${s.name}.service"] },
  )

  # host => the admin endpoints that say it is ready (the lab's healthchecks)
  readiness = merge(
    { (var.zone_cp.name) = ["http://${replace(split(":", var.zone_cp.api_listen)[0], "0.0.0.0", "127.0.0.1")}:${split(":", var.zone_cp.api_listen)[1]}/readyz"] },
    { for e in var.edges : e.name => ["http://127.0.0.1:${var.edge_settings.admin_port}/readyz"] },
    { for i in var.ingresses : i.name => ["http://127.0.0.1:9901/readyz"] },
    { for w in var.workloads : w.name => [for s in local.services[w.name] : "http://127.0.0.1:${s.admin}/readyz"] },
  )

  # -- the region manifest: its Zone and its Edges, for `meshgate apply -f` -------------------

  labels = { "meshgate.io/managed-by" = "terraform" }
  zone_document = {
    apiVersion = "meshgate/v1alpha1"
    kind       = "Zone"
    metadata   = { name = var.zone, labels = local.labels }
    spec = { for key, value in {
      region   = var.zone_description
      location = var.zone_location
    } : key => value if value != null }
  }
  edge_documents = [
    for e in var.edges : {
      apiVersion = "meshgate/v1alpha1"
      kind       = "Edge"
      metadata   = { name = e.name, labels = local.labels }
      spec = {
        zone = var.zone
        bgp = {
          localASN    = e.asn
          routerID    = coalesce(e.router_id, e.address)
          holdTime    = e.hold_time
          neighbors   = [for n in e.neighbors : { address = n.address, peerASN = n.asn, description = n.description }]
          communities = e.communities
          med         = e.med
        }
      }
    }
  ]
  manifest = join("", concat(
    ["# The resources of zone ${var.zone}, rendered by terraform (modules/meshgate-region):\n# meshgate apply -f FILE (--dry-run to validate it against a global CP first).\n"],
    [for doc in concat([local.zone_document], local.edge_documents) : "---\n${yamlencode(doc)}"],
  ))
}
