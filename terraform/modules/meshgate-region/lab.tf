# The region as `meshgate lab` (containerlab's format) nodes: every host a node whose command
# brings up its link and then starts its systemd units from the files rendered in main.tf,
# bound at the paths cloud-init writes them to; an upstream router (BIRD) standing for the
# provider's, with a /30 to each host and BGP to each edge; a client on its own LAN.
#
# Paths in `files` are relative to the lab directory (beside topology.clab.yml):
#   lab/            bound at /lab in every node: host.sh, router.sh, unit-run.py
#   bin/meshgate    bound at <install.dir>/bin: runs this checkout (the lab's "installed" meshgate)
#   nodes/NODE/...  the node's /etc/meshgate, /etc/systemd/system (hosts), /etc/bird (router)

locals {
  lab_enabled = var.lab != null
  lab_router  = local.lab_enabled ? coalesce(var.lab.router, "rtr-${var.zone}") : ""
  lab_client  = local.lab_enabled && try(var.lab.client != null, false) ? "client-${var.zone}" : null
  lab_asn     = local.lab_enabled ? coalesce(var.lab.asn, try(var.edges[0].neighbors[0].asn, null)) : 0

  # hosts in link order: the router's eth1, eth2, ... (zone CP, edges, ingresses, workloads)
  lab_order = concat([var.zone_cp.name], var.edges[*].name, var.ingresses[*].name, var.workloads[*].name)
  lab_links = {
    for i, name in local.lab_order : name => {
      router_if = "eth${i + 1}"
      host      = "${local.hosts[name].address}/30"
      gateway = (cidrhost("${local.hosts[name].address}/30", 1) == local.hosts[name].address
        ? cidrhost("${local.hosts[name].address}/30", 2)
      : cidrhost("${local.hosts[name].address}/30", 1))
    }
  }
  lab_client_if = "eth${length(local.lab_order) + 1}"
  lab_client_gw = local.lab_client == null ? null : cidrhost(var.lab.client, 1)
  lab_tokens    = local.lab_enabled ? var.lab.tokens_dir : ""

  # the lab's units: a workload host also runs the sample workload on each service's port
  lab_units = {
    for name, units in local.host_units : name => concat(
      local.hosts[name].role == "workload" ? [for s in local.services[name] : "meshgate-sample-workload@${s.port}.service"] : [],
      units,
    )
  }
  lab_host_files = {
    for name, files in local.host_files : name => merge(
      files,
      {
        "/etc/meshgate/meshgate.env" = templatefile("${path.module}/templates/meshgate.env.tftpl", {
          token_file = "${local.lab_tokens}/${local.hosts[name].token_role}-${var.zone}", fingerprint = local.fingerprint
        })
      },
      local.hosts[name].role != "workload" ? {} : {
        "${local.units_dir}/meshgate-sample-workload@.service" = templatefile("${path.module}/templates/meshgate-sample-workload@.service.tftpl", {
          bin = local.bin, zone = var.zone, name = name
        })
      },
    )
  }

  lab_host_nodes = !local.lab_enabled ? {} : {
    for name, host in local.hosts : name => {
      cmd = join(" ", concat(
        ["bash /lab/host.sh eth1", local.lab_links[name].host, local.lab_links[name].gateway], local.lab_units[name]
      ))
      env = local.fingerprint != null ? {} : { CA_FINGERPRINT_FILE = "${local.lab_tokens}/ca-fingerprint" }
      binds = [
        "lab:/lab:ro",
        "__clabDir__:/clab",
        "__clabNodeDir__:/var/lib/meshgate",
        "bin:${var.install.dir}/bin:ro",
        "nodes/${name}/etc/meshgate:/etc/meshgate:ro",
        "nodes/${name}/etc/systemd/system:${local.units_dir}:ro",
      ]
      labels = { role = host.role, zone = var.zone }
      healthcheck = {
        test           = ["CMD-SHELL", join(" && ", [for url in local.readiness[name] : "curl -sf ${url} >/dev/null"])]
        "start-period" = 1
        interval       = 1
        timeout        = 5
        retries        = 120
      }
      stages = {
        create = {
          "wait-for" = [{ node = host.role == "zone-cp" ? var.lab.global_node : var.zone_cp.name, stage = "healthy" }]
        }
      }
    }
  }

  lab_router_links = concat(
    [for name in local.lab_order : "${local.lab_links[name].router_if}=${local.lab_links[name].gateway}/30"],
    local.lab_client == null ? [] : ["${local.lab_client_if}=${local.lab_client_gw}/${split("/", var.lab.client)[1]}"],
    local.lab_enabled ? [for u in var.lab.uplinks : "${u.interface}=${u.address}"] : [],
  )

  lab_bird = !local.lab_enabled ? "" : templatefile("${path.module}/templates/bird.conf.tftpl", {
    name      = local.lab_router
    zone      = var.zone
    asn       = local.lab_asn
    router_id = coalesce(var.lab.router_id, local.lab_links[var.zone_cp.name].gateway)
    prefixes  = var.anycast_prefixes
    edges = [for e in var.edges : {
      name = e.name, local = local.lab_links[e.name].gateway, address = e.address, asn = e.asn, hold_time = e.hold_time
    }]
    uplinks = [for u in var.lab.uplinks : {
      name     = coalesce(u.name, "peer-${replace(u.peer, ".", "-")}"), local = split("/", u.address)[0], peer = u.peer,
      peer_asn = u.peer_asn
    }]
  })

  lab = !local.lab_enabled ? null : {
    zone   = var.zone
    router = local.lab_router
    client = local.lab_client
    asn    = local.lab_asn
    edges  = [for e in var.edges : { name = e.name, address = e.address }]
    nodes = merge(
      local.lab_host_nodes,
      {
        (local.lab_router) = {
          cmd    = "bash /lab/router.sh"
          env    = { LINKS = join(" ", local.lab_router_links) }
          binds  = ["lab:/lab:ro", "nodes/${local.lab_router}/etc/bird:/etc/bird:ro"]
          labels = { role = "router", zone = var.zone, daemon = "bird" }
        }
      },
      local.lab_client == null ? {} : {
        (local.lab_client) = {
          labels = { role = "client", zone = var.zone }
          exec = [
            "ip addr add ${var.lab.client} dev eth1",
            "ip link set eth1 up",
            "ip route replace default via ${local.lab_client_gw} dev eth1",
          ]
        }
      },
    )
    links = concat(
      [for name in local.lab_order : { endpoints = ["${local.lab_router}:${local.lab_links[name].router_if}", "${name}:eth1"] }],
      local.lab_client == null ? [] : [{ endpoints = ["${local.lab_router}:${local.lab_client_if}", "${local.lab_client}:eth1"] }],
    )
    files = merge(
      {
        "lab/host.sh"                                  = { content = file("${path.module}/lab/host.sh"), mode = "0644" }
        "lab/router.sh"                                = { content = file("${path.module}/lab/router.sh"), mode = "0644" }
        "lab/unit-run.py"                              = { content = file("${path.module}/lab/unit-run.py"), mode = "0644" }
        "bin/meshgate"                                 = { content = file("${path.module}/lab/meshgate.sh"), mode = "0755" }
        "nodes/${local.lab_router}/etc/bird/bird.conf" = { content = local.lab_bird, mode = "0644" }
      },
      merge([
        for name, files in local.lab_host_files : {
          for file_path, content in files : "nodes/${name}${file_path}" => { content = content, mode = "0644" }
        }
      ]...),
    )
  }
}
