# One zone on AWS: what ../main.tf passes for each region (see its variables for the meaning).

variable "zone" { type = string }
variable "zone_description" { type = string }
variable "zone_location" { type = object({ latitude = number, longitude = number }) }
variable "vpc_cidr" { type = string }
variable "peer_vpc_cidr" { type = string }
variable "global_cp_url" { type = string }
variable "ca_fingerprint" { type = string }
variable "anycast_prefixes" { type = list(string) }
variable "instance_type" { type = string }
variable "key_name" { type = string }
variable "admin_cidrs" { type = list(string) }
variable "meshgate_package" { type = string }

variable "join_tokens" {
  type      = object({ zone = string, edge = string, ingress = string, proxy = string })
  sensitive = true
}

variable "edge_bgp" {
  type = object({ asn = number, neighbors = list(object({ address = string, asn = number })) })
}
