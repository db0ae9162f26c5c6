variable "aws_regions" {
  description = "The AWS regions of the two zones."
  type = object({
    eu_west = optional(string, "eu-west-3")
    us_east = optional(string, "us-east-1")
  })
  default = {}
}

variable "global_cp_url" {
  description = "The global CP's zone-facing URL (it runs before this: https://HOST:5685), reachable from both regions."
  type        = string
}

variable "ca_fingerprint" {
  description = "The global CA's fingerprint (caFingerprint in `meshgate token create -o json`)."
  type        = string
}

variable "join_tokens" {
  description = "Per zone, the join tokens made with `meshgate token create --role ROLE --zone ZONE --ttl 720h --reusable` (roles zone, edge, ingress, proxy)."
  type = object({
    eu_west = object({ zone = string, edge = string, ingress = string, proxy = string })
    us_east = object({ zone = string, edge = string, ingress = string, proxy = string })
  })
  sensitive = true
}

variable "anycast_prefixes" {
  description = "Your anycast prefixes (VIPs of your global services lie in them), the same in both regions."
  type        = list(string)
}

variable "edge_bgp" {
  description = "Per zone, the edge's ASN and its BGP neighbors: the routers of a network that accepts your prefixes from your hosts (EC2 itself does not; see README)."
  type = object({
    eu_west = object({ asn = number, neighbors = list(object({ address = string, asn = number })) })
    us_east = object({ asn = number, neighbors = list(object({ address = string, asn = number })) })
  })
}

variable "instance_type" {
  description = "The bare-metal instance type of every host."
  type        = string
  default     = "m6i.metal"
}

variable "key_name" {
  description = "An EC2 key pair for SSH as the image's default user (null: none)."
  type        = string
  default     = null
}

variable "admin_cidrs" {
  description = "Where SSH is allowed from."
  type        = list(string)
  default     = []
}

variable "meshgate_package" {
  description = "What pip installs on every host: a version from your index, a wheel URL, a git URL."
  type        = string
  default     = "meshgate"
}
