# Two meshgate regions on AWS bare-metal instances (one zone CP, edge, ingress and workload host
# per region), each host's user data the module's cloud-init. Validated offline, never applied
# here: read README.md first (EC2 does not accept BGP announcements of your own prefixes).

module "eu_west" {
  source    = "./aws-region"
  providers = { aws = aws.eu }

  zone             = "eu-west"
  zone_description = "Europe (Paris)"
  zone_location    = { latitude = 48.86, longitude = 2.35 }
  vpc_cidr         = "10.1.0.0/16"
  peer_vpc_cidr    = "10.2.0.0/16"
  global_cp_url    = var.global_cp_url
  ca_fingerprint   = var.ca_fingerprint
  join_tokens      = var.join_tokens.eu_west
  anycast_prefixes = var.anycast_prefixes
  edge_bgp         = var.edge_bgp.eu_west
  instance_type    = var.instance_type
  key_name         = var.key_name
  admin_cidrs      = var.admin_cidrs
  meshgate_package = var.meshgate_package
}

module "us_east" {
  source    = "./aws-region"
  providers = { aws = aws.us }

  zone             = "us-east"
  zone_description = "US (Ashburn)"
  zone_location    = { latitude = 39.04, longitude = -77.49 }
  vpc_cidr         = "10.2.0.0/16"
  peer_vpc_cidr    = "10.1.0.0/16"
  global_cp_url    = var.global_cp_url
  ca_fingerprint   = var.ca_fingerprint
  join_tokens      = var.join_tokens.us_east
  anycast_prefixes = var.anycast_prefixes
  edge_bgp         = var.edge_bgp.us_east
  instance_type    = var.instance_type
  key_name         = var.key_name
  admin_cidrs      = var.admin_cidrs
  meshgate_package = var.meshgate_package
}

# The edges of one region reach the other region's ingress at its private address: peer the VPCs.
resource "aws_vpc_peering_connection" "regions" {
  provider    = aws.eu
  vpc_id      = module.eu_west.vpc_id
  peer_vpc_id = module.us_east.vpc_id
  peer_region = var.aws_regions.us_east
  tags        = { Name = "meshgate eu-west <-> us-east" }
}

resource "aws_vpc_peering_connection_accepter" "regions" {
  provider                  = aws.us
  vpc_peering_connection_id = aws_vpc_peering_connection.regions.id
  auto_accept               = true
}

resource "aws_route" "eu_to_us" {
  provider                  = aws.eu
  route_table_id            = module.eu_west.route_table_id
  destination_cidr_block    = "10.2.0.0/16"
  vpc_peering_connection_id = aws_vpc_peering_connection.regions.id
}

resource "aws_route" "us_to_eu" {
  provider                  = aws.us
  route_table_id            = module.us_east.route_table_id
  destination_cidr_block    = "10.1.0.0/16"
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.regions.id
}
