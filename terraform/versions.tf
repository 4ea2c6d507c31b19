terraform {
  # optional() attributes with defaults and cross-variable validation need 1.9.
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # ip_set_forwarded_ip_config and dynamic rule blocks in aws_wafv2_web_acl are in every 5.x.
      version = ">= 5.0, < 7.0"
    }
  }
}
