output "cloud_init" {
  description = "Host name => its cloud-init user data (#cloud-config; holds its join token). Empty when render_cloud_init is false."
  value       = local.cloud_init
  sensitive   = true
}

output "manifest" {
  description = "The region's resources (its Zone and Edges) as one YAML file for `meshgate apply -f`."
  value       = local.manifest
}

output "hosts" {
  description = "Host name => role (zone-cp, edge, ingress, workload), address and the systemd units cloud-init enables: what a provider needs to make the machines."
  value = {
    for name, host in local.hosts : name => {
      role    = host.role
      address = host.address
      units   = local.host_units[name]
    }
  }
}

output "files" {
  description = "Host name => absolute path => content: the config files and units cloud-init writes (not the environment file or the join token)."
  value       = local.host_files
}

output "lab" {
  description = "With var.lab: the region as `meshgate lab` nodes (containerlab format), their links, and the files they need (path relative to the lab directory => content, mode), plus the router, client and edges' names for checks. Null without var.lab."
  value       = local.lab
}
