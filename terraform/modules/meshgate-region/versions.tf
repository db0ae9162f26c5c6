terraform {
  # 1.9: validation rules that look at other variables (join tokens against the zone and the
  # CA fingerprint). No provider: everything is rendered with Terraform's own functions.
  required_version = ">= 1.9.0"
}
