# Inputs of one meshgate region (zone). Every rule is a validation block whose message starts
# with the variable's name. IPv4 addresses are dotted quads; a host has exactly one role.

# -- the zone and the global control plane ---------------------------------------------------

variable "zone" {
  description = "The zone (region) name: its Zone resource, and part of every identity and SNI name in it."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.zone))
    error_message = "zone: must be a DNS label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit), got \"${var.zone}\"."
  }
}

variable "zone_description" {
  description = "Free text for the Zone's spec.region (where it is: \"Europe (Paris)\")."
  type        = string
  default     = ""
}

variable "zone_location" {
  description = "Latitude and longitude of the zone: edges use the distance when no RTT is measured yet."
  type = object({
    latitude  = number
    longitude = number
  })
  default = null

  validation {
    condition     = var.zone_location == null || try(abs(var.zone_location.latitude) <= 90 && abs(var.zone_location.longitude) <= 180, false)
    error_message = "zone_location: latitude must be within -90..90 and longitude within -180..180."
  }
}

variable "global_cp_url" {
  description = "The global CP's zone-facing URL (meshgate global-cp run --zone-listen), https://HOST:5685."
  type        = string

  validation {
    condition     = can(regex("^https://([-a-zA-Z0-9.]+|\\[[0-9a-fA-F:.]+\\]):[0-9]{1,5}$", var.global_cp_url))
    error_message = "global_cp_url: must be https://HOST:PORT (the global CP's zone listener, port 5685 by default), got \"${var.global_cp_url}\"."
  }
}

variable "ca_fingerprint" {
  description = "The global CA's fingerprint (sha256:<64 hex>, as in the join tokens' ca_fingerprint claim): every host refuses a token naming another CA. Needed for cloud-init; in a lab the lab's own global CP makes the CA, so it may be null."
  type        = string
  default     = null

  validation {
    condition     = var.ca_fingerprint == null || can(regex("^(?i)sha256:[0-9a-f]{64}$", coalesce(var.ca_fingerprint, "-")))
    error_message = "ca_fingerprint: must be sha256: followed by 64 hex digits (caFingerprint in `meshgate token create -o json`)."
  }

  validation {
    condition     = !var.render_cloud_init || var.ca_fingerprint != null
    error_message = "ca_fingerprint: cloud-init pins the global CA on every host, so it is required when render_cloud_init is true."
  }
}

variable "join_tokens" {
  description = "Join tokens made beforehand with `meshgate token create --role ROLE --zone ZONE --ttl 720h --reusable`, one per role this region has: zone (its zone CP), edge, ingress, proxy (workload hosts). Each is checked against its role, the zone and ca_fingerprint. Required for cloud-init; a lab's global node writes its own (lab.tokens_dir)."
  type = object({
    zone    = optional(string)
    edge    = optional(string)
    ingress = optional(string)
    proxy   = optional(string)
  })
  default   = {}
  sensitive = true

  validation {
    condition     = alltrue([for role, token in var.join_tokens : token == null || can(regex("^mgjt1\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$", coalesce(token, "-")))])
    error_message = "join_tokens: ${join(", ", nonsensitive([for role, token in var.join_tokens : role if !(token == null || can(regex("^mgjt1\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$", coalesce(token, "-"))))]))}: not a join token (mgjt1.<claims>.<signature>, the output of `meshgate token create`)."
  }

  # The claims are the token's second part, base64url without padding.
  validation {
    condition     = alltrue([for role, token in var.join_tokens : token == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).role == role, false)])
    error_message = "join_tokens: ${join(", ", nonsensitive([for role, token in var.join_tokens : role if !(token == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).role == role, false))]))}: the token is for another role (join_tokens.ROLE must be made with --role ROLE)."
  }

  validation {
    condition     = alltrue([for role, token in var.join_tokens : token == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).zone == var.zone, false)])
    error_message = "join_tokens: ${join(", ", nonsensitive([for role, token in var.join_tokens : role if !(token == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).zone == var.zone, false))]))}: the token is for another zone than ${var.zone} (--zone ${var.zone})."
  }

  validation {
    condition     = alltrue([for role, token in var.join_tokens : token == null || var.ca_fingerprint == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).ca_fingerprint == lower(coalesce(var.ca_fingerprint, "-")), false)])
    error_message = "join_tokens: ${join(", ", nonsensitive([for role, token in var.join_tokens : role if !(token == null || var.ca_fingerprint == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).ca_fingerprint == lower(coalesce(var.ca_fingerprint, "-")), false))]))}: the token names another CA than ca_fingerprint (a token of another installation, or the wrong fingerprint)."
  }

  # Every host of a role enrolls with the same token: it must be reusable.
  validation {
    condition     = alltrue([for role, token in var.join_tokens : token == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).reusable, false)])
    error_message = "join_tokens: ${join(", ", nonsensitive([for role, token in var.join_tokens : role if !(token == null || try(jsondecode(base64decode("${replace(replace(split(".", token)[1], "-", "+"), "_", "/")}${substr("===", 0, (4 - length(split(".", token)[1]) % 4) % 4)}")).reusable, false))]))}: the token is single-use; every host of a role (and a reinstalled host) enrolls with it, so make it with --reusable."
  }

  validation {
    condition = !var.render_cloud_init || alltrue([
      var.join_tokens.zone != null,
      length(var.edges) == 0 || var.join_tokens.edge != null,
      length(var.ingresses) == 0 || var.join_tokens.ingress != null,
      length(var.workloads) == 0 || var.join_tokens.proxy != null,
    ])
    error_message = "join_tokens: cloud-init needs a token for every role this region has (missing: ${join(", ", nonsensitive(compact([var.join_tokens.zone == null ? "zone" : "", length(var.edges) > 0 && var.join_tokens.edge == null ? "edge" : "", length(var.ingresses) > 0 && var.join_tokens.ingress == null ? "ingress" : "", length(var.workloads) > 0 && var.join_tokens.proxy == null ? "proxy" : ""])))}): `meshgate token create --role ROLE --zone ${var.zone} --ttl 720h --reusable`, or render_cloud_init = false for a lab."
  }
}

variable "render_cloud_init" {
  description = "Render per-host cloud-init (needs join_tokens and ca_fingerprint). A lab sets false: its nodes read tokens its own global CP writes."
  type        = bool
  default     = true
}

# -- hosts, by role ----------------------------------------------------------------------------

variable "zone_cp" {
  description = "The zone CP host: name, address (where proxies and edges reach it), the port they enroll and get configuration on, and where its read-only zone API listens."
  type = object({
    name       = string
    address    = string
    proxy_port = optional(number, 5682)
    api_listen = optional(string, "127.0.0.1:5681")
  })

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.zone_cp.name))
    error_message = "zone_cp: name must be a DNS label, got \"${var.zone_cp.name}\"."
  }

  validation {
    condition     = try(cidrhost("${var.zone_cp.address}/32", 0) == var.zone_cp.address, false)
    error_message = "zone_cp: address must be an IPv4 address, got \"${var.zone_cp.address}\"."
  }

  validation {
    condition     = floor(var.zone_cp.proxy_port) == var.zone_cp.proxy_port && var.zone_cp.proxy_port >= 1 && var.zone_cp.proxy_port <= 65535
    error_message = "zone_cp: proxy_port must be a port number (1-65535)."
  }

  validation {
    condition     = can(regex("^[0-9.]+:[0-9]{1,5}$", var.zone_cp.api_listen))
    error_message = "zone_cp: api_listen must be IPV4:PORT, got \"${var.zone_cp.api_listen}\"."
  }
}

variable "edges" {
  description = "Anycast edges: name, address, BGP (asn, router_id [default: address], hold_time, neighbors with address and asn, communities, med). Their BGP settings go to the Edge resources of the manifest."
  type = list(object({
    name      = string
    address   = string
    asn       = number
    router_id = optional(string)
    hold_time = optional(number, 90)
    neighbors = list(object({
      address     = string
      asn         = number
      description = optional(string, "")
    }))
    communities = optional(list(string), [])
    med         = optional(number, 0)
  }))
  default = []

  validation {
    condition     = alltrue([for e in var.edges : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", e.name))]) && length(distinct(var.edges[*].name)) == length(var.edges)
    error_message = "edges: names must be distinct DNS labels (each is its Edge resource and its identity), got ${jsonencode(var.edges[*].name)}."
  }

  validation {
    condition     = alltrue([for e in var.edges : try(cidrhost("${e.address}/32", 0) == e.address, false) && (e.router_id == null || try(cidrhost("${coalesce(e.router_id, "-")}/32", 0) == e.router_id && e.router_id != "0.0.0.0", false))])
    error_message = "edges: address and router_id must be IPv4 addresses (router_id not 0.0.0.0)."
  }

  validation {
    condition     = alltrue(flatten([for e in var.edges : [for asn in concat([e.asn], e.neighbors[*].asn) : floor(asn) == asn && asn >= 1 && asn <= 4294967295]]))
    error_message = "edges: every asn (the edge's and its neighbors') must be a whole number from 1 to 4294967295, got ${jsonencode(flatten([for e in var.edges : concat([e.asn], e.neighbors[*].asn)]))}."
  }

  validation {
    condition     = alltrue([for e in var.edges : length(e.neighbors) >= 1 && length(e.neighbors) <= 32 && alltrue([for n in e.neighbors : can(cidrhost("${n.address}/128", 0)) || try(cidrhost("${n.address}/32", 0) == n.address, false)])])
    error_message = "edges: each edge needs 1 to 32 neighbors, each with an IPv4 or IPv6 address."
  }

  validation {
    condition     = alltrue([for e in var.edges : e.hold_time >= 3 && e.hold_time <= 65535 && floor(e.hold_time) == e.hold_time && e.med >= 0 && e.med <= 4294967295])
    error_message = "edges: hold_time must be 3 to 65535 seconds and med 0 to 4294967295."
  }

  validation {
    condition     = alltrue(flatten([for e in var.edges : [for c in e.communities : can(regex("^[0-9]{1,5}:[0-9]{1,5}$|^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$", c))]]))
    error_message = "edges: communities are ASN:VALUE (standard) or A:B:C (large); keep them identical on every edge of a VIP."
  }
}

variable "ingresses" {
  description = "Zone ingress hosts (SNI passthrough for other zones): name, address (advertised to the mesh), port."
  type = list(object({
    name    = string
    address = string
    port    = optional(number, 15443)
  }))
  default = []

  validation {
    condition     = alltrue([for i in var.ingresses : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", i.name)) && try(cidrhost("${i.address}/32", 0) == i.address, false) && i.port >= 1 && i.port <= 65535])
    error_message = "ingresses: each needs a DNS-label name, an IPv4 address and a port (1-65535)."
  }
}

variable "workloads" {
  description = "Workload hosts and the services they run: per service its name (a Service resource), the port its instance listens on (127.0.0.1), the inbound port its local proxy serves mTLS on (default 10001, 10002, ... in order), and the health check."
  type = list(object({
    name    = string
    address = string
    services = list(object({
      name         = string
      port         = number
      inbound_port = optional(number)
      health = optional(object({
        type     = optional(string, "tcp")
        path     = optional(string, "/")
        interval = optional(number, 1)
        timeout  = optional(number, 1)
        rise     = optional(number, 2)
        fall     = optional(number, 2)
      }), {})
    }))
  }))
  default = []

  validation {
    condition     = alltrue([for w in var.workloads : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", w.name)) && try(cidrhost("${w.address}/32", 0) == w.address, false)])
    error_message = "workloads: each needs a DNS-label name and an IPv4 address."
  }

  validation {
    condition = alltrue([for w in var.workloads : length(w.services) >= 1 && length(distinct(w.services[*].name)) == length(w.services) && alltrue([
      for s in w.services : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", s.name)) && length("${w.name}-${s.name}") <= 63
    ])])
    error_message = "workloads: each host runs at least one service, each once, named by a DNS label; its proxy is named HOST-SERVICE, at most 63 characters."
  }

  validation {
    condition = alltrue(flatten([for w in var.workloads : [for s in w.services : [
      for p in compact([tostring(s.port), s.inbound_port == null ? "" : tostring(s.inbound_port)]) : tonumber(p) >= 1 && tonumber(p) <= 65535 && floor(tonumber(p)) == tonumber(p)
    ]]]))
    error_message = "workloads: every port and inbound_port must be a port number (1-65535)."
  }

  validation {
    condition     = alltrue(flatten([for w in var.workloads : [for s in w.services : contains(["tcp", "http"], s.health.type) && s.health.interval > 0 && s.health.timeout > 0 && s.health.rise >= 1 && s.health.fall >= 1]]))
    error_message = "workloads: a service's health.type is tcp or http; interval and timeout above 0; rise and fall at least 1."
  }

  # One role per host: the names below become files, units and lab nodes.
  validation {
    condition     = length(distinct(concat([var.zone_cp.name], var.edges[*].name, var.ingresses[*].name, var.workloads[*].name))) == 1 + length(var.edges) + length(var.ingresses) + length(var.workloads)
    error_message = "workloads: host names must be distinct across zone_cp, edges, ingresses and workloads (one role per host)."
  }
}

variable "anycast_prefixes" {
  description = "IPv4 prefixes of the anycast VIPs the edges serve (your GlobalServices' vips lie in them): put on each edge's lo so the listeners can bind them; the edges announce each VIP as a /32 only while healthy."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.anycast_prefixes : try(cidrhost(p, 0) == split("/", p)[0] && length(split(".", split("/", p)[0])) == 4, false)])
    error_message = "anycast_prefixes: each must be an IPv4 prefix in canonical form (203.0.113.0/24, 203.0.113.10/32), got ${jsonencode(var.anycast_prefixes)}."
  }

  validation {
    condition     = length(var.edges) == 0 || length(var.anycast_prefixes) > 0
    error_message = "anycast_prefixes: edges need at least one (the VIPs they listen on and announce)."
  }
}

# -- how the processes run ------------------------------------------------------------------

variable "edge_settings" {
  description = "The edges' own settings (their config file): admin port, zone probes, announcement hysteresis, drain on stop, zone choice."
  type = object({
    admin_port = optional(number, 9901)
    probe = optional(object({
      interval    = optional(number, 1)
      timeout     = optional(number, 2)
      eject_after = optional(number, 3)
    }), {})
    announce = optional(object({
      interval  = optional(number, 1)
      rise      = optional(number, 2)
      fall      = optional(number, 3)
      staleness = optional(number, 600)
    }), {})
    drain = optional(object({
      threshold = optional(number, 0)
      deadline  = optional(number, 30)
    }), {})
    zone_choice = optional(object({
      hysteresis = optional(number, 0.2)
      tie        = optional(number, 0.002)
    }), {})
  })
  default = {}

  validation {
    condition     = var.edge_settings.drain.deadline >= 0 && var.edge_settings.drain.deadline <= 3600 && var.edge_settings.drain.threshold >= 0
    error_message = "edge_settings: drain.deadline must be 0 to 3600 seconds (the unit's stop timeout is above it) and drain.threshold at least 0."
  }

  validation {
    condition     = var.edge_settings.probe.interval >= 0.05 && var.edge_settings.probe.timeout >= 0.05 && var.edge_settings.announce.interval >= 0.05 && var.edge_settings.announce.rise >= 1 && var.edge_settings.announce.fall >= 1 && var.edge_settings.zone_choice.hysteresis < 1
    error_message = "edge_settings: probe and announce intervals of at least 0.05 s, rise and fall at least 1, zone_choice.hysteresis below 1."
  }

  validation {
    condition     = var.edge_settings.admin_port >= 1 && var.edge_settings.admin_port <= 65535
    error_message = "edge_settings: admin_port must be a port number (1-65535)."
  }
}

variable "install" {
  description = "How cloud-init installs meshgate: the pip requirement (a version, a wheel URL, a git URL), extra pip arguments (--index-url ...), the virtualenv directory, and the Python (3.11 or later) that makes it."
  type = object({
    package  = optional(string, "meshgate")
    pip_args = optional(list(string), [])
    dir      = optional(string, "/opt/meshgate")
    python   = optional(string, "python3")
  })
  default = {}

  validation {
    condition     = can(regex("^/[-_./a-zA-Z0-9]+$", var.install.dir)) && !endswith(var.install.dir, "/")
    error_message = "install: dir must be an absolute path without a trailing slash, got \"${var.install.dir}\"."
  }
}

# -- the lab --------------------------------------------------------------------------------

variable "lab" {
  description = "Render this region for `meshgate lab` as well (output lab): an upstream router standing for your provider's (BIRD; each edge's single neighbor is the router's side of that edge's /30), a client, and uplinks to other regions' routers. Every host gets a /30 link from the router: its address must be one of the two usable addresses of a /30."
  type = object({
    router      = optional(string)
    asn         = optional(number)
    router_id   = optional(string)
    client      = optional(string)
    uplinks     = optional(list(object({ interface = string, address = string, peer = string, peer_asn = number, name = optional(string) })), [])
    global_node = optional(string, "global")
    tokens_dir  = optional(string, "/clab/shared/tokens")
  })
  default = null

  validation {
    condition = var.lab == null || alltrue([for a in concat([var.zone_cp.address], var.edges[*].address, var.ingresses[*].address, var.workloads[*].address) :
    try(cidrhost("${a}/30", 1) == a || cidrhost("${a}/30", 2) == a, false)])
    error_message = "lab: every host gets a /30 link from the region router, so its address must be the first or second usable address of a /30 (10.1.4.2: the router takes 10.1.4.1)."
  }

  validation {
    condition     = var.lab == null || length(distinct([for a in concat([var.zone_cp.address], var.edges[*].address, var.ingresses[*].address, var.workloads[*].address) : cidrhost("${a}/30", 0)])) == 1 + length(var.edges) + length(var.ingresses) + length(var.workloads)
    error_message = "lab: hosts' addresses must lie in distinct /30s (one link each from the router)."
  }

  validation {
    condition = var.lab == null || alltrue([for e in var.edges : length(e.neighbors) == 1 && try(
      e.neighbors[0].address == (cidrhost("${e.address}/30", 1) == e.address ? cidrhost("${e.address}/30", 2) : cidrhost("${e.address}/30", 1)), false)
    ]) && length(distinct(flatten(var.edges[*].neighbors[*].asn))) <= 1
    error_message = "lab: each edge has one neighbor, the router's side of the edge's /30 (10.1.1.1 for 10.1.1.2), and all edges of the region name the same router ASN."
  }

  validation {
    condition     = try(var.lab.client == null, true) ? true : try(cidrhost(var.lab.client, 0) != split("/", var.lab.client)[0] && cidrhost(var.lab.client, 1) != split("/", var.lab.client)[0], false)
    error_message = "lab: client must be ADDRESS/LENGTH on the client LAN, not its network or first address (the router takes that one), e.g. 10.1.6.10/24."
  }

  validation {
    condition     = var.lab == null || try(alltrue([for u in var.lab.uplinks : can(regex("^eth[0-9]+$", u.interface)) && tonumber(substr(u.interface, 3, -1)) > 2 + length(var.edges) + length(var.ingresses) + length(var.workloads) && can(cidrnetmask(u.address)) && cidrhost("${u.peer}/32", 0) == u.peer && u.peer_asn >= 1 && u.peer_asn <= 4294967295]), false)
    error_message = "lab: each uplink needs an interface ethN past the router's links to hosts and client (eth1..eth${2 + length(var.edges) + length(var.ingresses) + length(var.workloads)}), the router's address with its length (10.0.0.1/30), the peer router's address and ASN."
  }

  validation {
    condition     = var.lab == null || try(var.lab.asn != null || length(var.edges) > 0, false)
    error_message = "lab: the router's asn is the edges' neighbor ASN; a region without edges must give lab.asn."
  }
}
