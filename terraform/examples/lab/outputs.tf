locals {
  manifests = {
    "00-services.yaml"     = local.services_manifest
    "10-zone-eu-west.yaml" = module.eu_west.manifest
    "10-zone-us-east.yaml" = module.us_east.manifest
  }
  topology_yaml = "# Rendered by terraform (terraform/examples/lab): `meshgate lab up DIR` (root).\n${yamlencode(local.topology)}"
  checks_yaml   = "# Rendered by terraform (terraform/examples/lab): `meshgate lab check DIR`.\n${yamlencode({ checks = local.checks })}"
}

output "manifests" {
  description = "File name => the resources the lab's global node applies: the services and global service, then each region's manifest (its Zone and Edges)."
  value       = local.manifests
}

# `topology` and `files` are marked sensitive only so that `terraform apply` does not print them
# (they are long: the whole lab directory); `terraform output -json NAME` shows them.

output "topology" {
  description = "The lab's topology.clab.yml (containerlab's format)."
  value       = local.topology_yaml
  sensitive   = true
}

output "files" {
  description = "Every file of the lab directory: path relative to it => content and mode. Write them with `terraform output -json files | python3 write_files.py DIR`."
  sensitive   = true
  value = merge(
    module.eu_west.lab.files,
    module.us_east.lab.files,
    {
      "topology.clab.yml" = { content = local.topology_yaml, mode = "0644" }
      "checks.yml"        = { content = local.checks_yaml, mode = "0644" }
      "lab/global.sh"     = { content = file("${path.module}/global.sh"), mode = "0644" }
    },
    { for name, content in local.manifests : "lab/manifests/${name}" => { content = content, mode = "0644" } },
  )
}
