output "manifests" {
  description = "Zone name => its resources (Zone, Edges) for `meshgate apply -f` at the global CP."
  value = {
    "eu-west" = module.eu_west.manifest
    "us-east" = module.us_east.manifest
  }
}

output "hosts" {
  description = "Zone name => host name => role, private and public address."
  value = {
    "eu-west" = module.eu_west.hosts
    "us-east" = module.us_east.hosts
  }
}
