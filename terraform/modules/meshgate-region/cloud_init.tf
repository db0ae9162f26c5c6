# Per-host cloud-init (#cloud-config): a `meshgate` system user, Python and iproute2, the
# rendered files (written after the user exists: defer), meshgate in a virtualenv, and the
# host's units enabled and started. Runs once, on the first boot.

locals {
  token_path = "/etc/meshgate/join-token"

  cloud_init = !var.render_cloud_init ? {} : {
    for name, host in local.hosts : name => "#cloud-config\n${yamlencode({
      users = [
        "default",
        {
          name           = "meshgate"
          system         = true
          homedir        = "/var/lib/meshgate"
          shell          = "/usr/sbin/nologin"
          lock_passwd    = true
          no_create_home = true
        },
      ]
      package_update = true
      packages       = ["python3", "python3-venv", "iproute2", "ca-certificates"]
      write_files = concat(
        [for path, content in local.host_files[name] : {
          path        = path
          content     = content
          owner       = "root:root"
          permissions = "0644"
          defer       = true
        }],
        [
          {
            path = "/etc/meshgate/meshgate.env"
            content = templatefile("${path.module}/templates/meshgate.env.tftpl", {
              token_file = local.token_path, fingerprint = local.fingerprint
            })
            owner       = "root:root"
            permissions = "0644"
            defer       = true
          },
          {
            path        = local.token_path
            content     = "${var.join_tokens[host.token_role]}\n"
            owner       = "root:meshgate"
            permissions = "0640"
            defer       = true
          },
        ],
      )
      runcmd = [
        [var.install.python, "-m", "venv", var.install.dir],
        concat(["${var.install.dir}/bin/pip", "install", "--quiet"], var.install.pip_args, [var.install.package]),
        ["systemctl", "daemon-reload"],
        concat(["systemctl", "enable", "--now"], local.host_units[name]),
      ]
    })}"
  }
}
