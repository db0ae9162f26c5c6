# A VPC with one public subnet, a security group per role, and a bare-metal instance per host at
# a fixed private address (the module renders configs that name those addresses), its user data
# the module's cloud-init for that host.

locals {
  subnet = cidrsubnet(var.vpc_cidr, 8, 1)
  short  = split("-", var.zone)[0] # eu, us: host names edge-eu, zcp-eu, ...
  addresses = {
    "zcp-${local.short}"     = cidrhost(local.subnet, 10)
    "edge-${local.short}"    = cidrhost(local.subnet, 20)
    "ingress-${local.short}" = cidrhost(local.subnet, 30)
    "web-${local.short}-1"   = cidrhost(local.subnet, 40)
  }
}

module "meshgate" {
  source = "../../../modules/meshgate-region"

  zone             = var.zone
  zone_description = var.zone_description
  zone_location    = var.zone_location
  global_cp_url    = var.global_cp_url
  ca_fingerprint   = var.ca_fingerprint
  join_tokens      = var.join_tokens
  anycast_prefixes = var.anycast_prefixes
  install          = { package = var.meshgate_package }

  zone_cp = { name = "zcp-${local.short}", address = local.addresses["zcp-${local.short}"] }
  edges = [{
    name      = "edge-${local.short}"
    address   = local.addresses["edge-${local.short}"]
    asn       = var.edge_bgp.asn
    neighbors = [for n in var.edge_bgp.neighbors : { address = n.address, asn = n.asn }]
  }]
  ingresses = [{ name = "ingress-${local.short}", address = local.addresses["ingress-${local.short}"] }]
  workloads = [{
    name     = "web-${local.short}-1"
    address  = local.addresses["web-${local.short}-1"]
    services = [{ name = "web", port = 8080, health = { type = "http", path = "/healthz" } }]
  }]
}

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

resource "aws_vpc" "zone" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  tags                 = { Name = "meshgate-${var.zone}" }
}

resource "aws_internet_gateway" "zone" {
  vpc_id = aws_vpc.zone.id
  tags   = { Name = "meshgate-${var.zone}" }
}

resource "aws_subnet" "hosts" {
  vpc_id                  = aws_vpc.zone.id
  cidr_block              = local.subnet
  map_public_ip_on_launch = true # cloud-init installs packages and meshgate from the internet
  tags                    = { Name = "meshgate-${var.zone}-hosts" }
}

resource "aws_route_table" "hosts" {
  vpc_id = aws_vpc.zone.id
  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.zone.id
  }
  tags = { Name = "meshgate-${var.zone}" }
}

resource "aws_route_table_association" "hosts" {
  subnet_id      = aws_subnet.hosts.id
  route_table_id = aws_route_table.hosts.id
}

resource "aws_security_group" "hosts" {
  name        = "meshgate-${var.zone}"
  description = "meshgate hosts of zone ${var.zone}"
  vpc_id      = aws_vpc.zone.id

  ingress {
    description = "proxies and edges enroll and get configuration (zone CP); local proxies' mTLS inbound"
    from_port   = 5682
    to_port     = 5682
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
  ingress {
    description = "local proxies' mTLS inbound (10001 upwards), from this zone's edges and proxies"
    from_port   = 10001
    to_port     = 10099
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }
  ingress {
    description = "the zone ingress (mTLS, SNI passthrough), from both zones"
    from_port   = 15443
    to_port     = 15443
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr, var.peer_vpc_cidr]
  }
  ingress {
    description = "public HTTP and HTTPS on the edges"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  ingress {
    description = "public HTTPS on the edges"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  ingress {
    description = "BGP from the edges' neighbors"
    from_port   = 179
    to_port     = 179
    protocol    = "tcp"
    cidr_blocks = [for n in var.edge_bgp.neighbors : "${n.address}/32"]
  }
  dynamic "ingress" {
    for_each = length(var.admin_cidrs) > 0 ? [1] : []
    content {
      description = "SSH"
      from_port   = 22
      to_port     = 22
      protocol    = "tcp"
      cidr_blocks = var.admin_cidrs
    }
  }
  egress {
    description = "the global CP, package mirrors, PyPI"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "host" {
  for_each = module.meshgate.hosts

  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_type
  subnet_id              = aws_subnet.hosts.id
  private_ip             = each.value.address
  vpc_security_group_ids = [aws_security_group.hosts.id]
  key_name               = var.key_name
  # an edge receives traffic for the anycast VIPs, which are not the instance's own addresses
  source_dest_check           = each.value.role != "edge"
  user_data_base64            = base64gzip(module.meshgate.cloud_init[each.key])
  user_data_replace_on_change = true

  metadata_options {
    http_tokens = "required"
  }
  root_block_device {
    volume_size = 20
    encrypted   = true
  }
  tags = { Name = each.key, "meshgate:zone" = var.zone, "meshgate:role" = each.value.role }
}
