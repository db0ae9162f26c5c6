terraform {
  required_version = ">= 1.9.0"
  required_providers {
    # offline: the filesystem mirror named in ../../offline.tfrc holds exactly this version
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

provider "aws" {
  alias  = "eu"
  region = var.aws_regions.eu_west
}

provider "aws" {
  alias  = "us"
  region = var.aws_regions.us_east
}
