output "manifest" { value = module.meshgate.manifest }
output "vpc_id" { value = aws_vpc.zone.id }
output "route_table_id" { value = aws_route_table.hosts.id }

output "hosts" {
  value = {
    for name, host in module.meshgate.hosts : name => {
      role       = host.role
      private_ip = aws_instance.host[name].private_ip
      public_ip  = aws_instance.host[name].public_ip
      units      = host.units
    }
  }
}
