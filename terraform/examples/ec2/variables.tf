variable "region" {
  description = "AWS region of the instance, the IP sets and the web ACL (REGIONAL scope)."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every name created (IP sets, web ACL, role, instance, security group)."
  type        = string
  default     = "palisade"
}

variable "vpc_id" {
  description = "VPC of the blocker instance (its security group is created there)."
  type        = string
}

variable "subnet_id" {
  description = "Subnet of the blocker instance: a private subnet with a NAT gateway or VPC endpoints for WAFv2, SSM and the package download; the instance needs no inbound traffic."
  type        = string
}

variable "instance_type" {
  description = "EC2 instance type (x86_64: the package is built for amd64). The blocker needs little: t3.small holds a million tracked clients."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "AMI to boot (Debian 12 or another Debian-based amd64 image with systemd and apt). null picks the newest official Debian 12 AMI."
  type        = string
  default     = null
}

variable "package_url" {
  description = "HTTPS URL of the palisade-blocker .deb built with cargo-deb (docs/install.md), e.g. an object in your release bucket or a presigned URL."
  type        = string

  validation {
    condition     = startswith(var.package_url, "https://")
    error_message = "package_url must be an https:// URL."
  }
}

variable "package_sha256" {
  description = "SHA-256 of the .deb at package_url (sha256sum output); user data refuses to install a package that does not match."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.package_sha256))
    error_message = "package_sha256 must be 64 lowercase hex digits."
  }
}

variable "nats_url" {
  description = "NATS server URL(s) the blocker consumes reports from, e.g. tls://nats.internal.example:4222 (comma separated for a cluster)."
  type        = string

  validation {
    condition     = can(regex("^(nats|tls)://[^\\s\"'\\\\]+$", var.nats_url))
    error_message = "nats_url must be nats://host:port or tls://host:port (no spaces or quotes: it is written into the TOML configuration)."
  }
}

variable "nats_cidr_blocks" {
  description = "CIDR blocks of the NATS servers: the security group allows outbound connections to them on nats_port only."
  type        = list(string)
}

variable "nats_port" {
  description = "TCP port of the NATS servers."
  type        = number
  default     = 4222
}

variable "nats_creds_parameter" {
  description = "Name of an SSM Parameter Store SecureString holding the blocker's NATS .creds file (encrypted with the aws/ssm key). null: NATS without credentials (test setups only). The instance role may read exactly this parameter."
  type        = string
  default     = null
}

variable "admin_token_parameter" {
  description = "Name of an SSM Parameter Store SecureString holding the bearer token of the blocker's admin API (POST/DELETE /v1/blocks). null leaves manual block and release disabled."
  type        = string
  default     = null
}

variable "ipv4_set_count" {
  description = "Number of IPv4 IP sets (10,000 CIDRs each)."
  type        = number
  default     = 1
}

variable "ipv6_set_count" {
  description = "Number of IPv6 IP sets (10,000 CIDRs each)."
  type        = number
  default     = 1
}

variable "protected_resource_arns" {
  description = "ARNs of the load balancers (or other regional resources) the created web ACL protects."
  type        = list(string)
  default     = []
}

variable "forwarded_ip" {
  description = "Passed to the module: match the client address from X-Forwarded-For (set when a CDN or proxy sits in front of the load balancer). null matches the source address."
  type = object({
    header_name       = optional(string, "X-Forwarded-For")
    position          = optional(string, "LAST")
    fallback_behavior = optional(string, "NO_MATCH")
  })
  default = null
}
