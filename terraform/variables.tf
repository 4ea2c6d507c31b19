variable "name_prefix" {
  description = "Prefix of every name this module creates (IP sets, web ACL, rule group, IAM role, instance profile). Letters, digits, '-' and '_' only, at most 32 characters so that \"<prefix>-blocker\" stays within IAM's 64-character role name limit."
  type        = string
  default     = "palisade"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,32}$", var.name_prefix))
    error_message = "name_prefix must be 1-32 characters of letters, digits, '-' and '_'."
  }
}

variable "scope" {
  description = "WAFv2 scope of the IP sets, web ACL and rule group: REGIONAL (ALB, API Gateway, AppSync, Cognito, App Runner, Verified Access) or CLOUDFRONT. CLOUDFRONT resources must be created with an AWS provider in us-east-1, and their ARNs contain 'global'."
  type        = string
  default     = "REGIONAL"

  validation {
    condition     = contains(["REGIONAL", "CLOUDFRONT"], var.scope)
    error_message = "scope must be REGIONAL or CLOUDFRONT."
  }
}

variable "ipv4_set_count" {
  description = "Number of IPv4 IP sets. One WAFv2 IP set holds at most 10,000 CIDRs; the blocker fills them in order and spills into the next. 0 disables IPv4 blocking."
  type        = number
  default     = 1

  validation {
    condition     = var.ipv4_set_count >= 0 && var.ipv4_set_count <= 50 && floor(var.ipv4_set_count) == var.ipv4_set_count
    error_message = "ipv4_set_count must be a whole number from 0 to 50 (a web ACL references at most 50 IP sets)."
  }
}

variable "ipv6_set_count" {
  description = "Number of IPv6 IP sets (10,000 CIDRs each). 0 disables IPv6 blocking."
  type        = number
  default     = 1

  validation {
    condition     = var.ipv6_set_count >= 0 && var.ipv6_set_count <= 50 && floor(var.ipv6_set_count) == var.ipv6_set_count
    error_message = "ipv6_set_count must be a whole number from 0 to 50."
  }

  validation {
    condition     = var.ipv4_set_count + var.ipv6_set_count >= 1 && var.ipv4_set_count + var.ipv6_set_count <= 50
    error_message = "ipv4_set_count + ipv6_set_count must be between 1 and 50 (a web ACL or rule group references at most 50 IP sets)."
  }
}

variable "create_web_acl" {
  description = "Create a web ACL whose rules block requests from the IP sets (default action allow). Leave false to reference the IP sets from an existing web ACL, for example through the rule group (create_rule_group)."
  type        = bool
  default     = false
}

variable "create_rule_group" {
  description = "Create a rule group with the block rules, to add to an existing web ACL (e.g. one managed by Firewall Manager or another team) with a rule_group_reference_statement."
  type        = bool
  default     = false
}

variable "rule_group_capacity" {
  description = "WCU capacity of the rule group. An IP set reference costs 1 WCU per rule, one rule per IP set. Capacity cannot change after creation, so the default leaves room for the 50-set maximum."
  type        = number
  default     = 50

  validation {
    condition     = var.rule_group_capacity >= var.ipv4_set_count + var.ipv6_set_count
    error_message = "rule_group_capacity must be at least ipv4_set_count + ipv6_set_count (one WCU per IP set rule)."
  }
}

variable "rule_priority" {
  description = "Priority of the first block rule in the created web ACL or rule group; the rule for the next IP set gets the next number. Lower runs first: keep it ahead of rules that allow traffic."
  type        = number
  default     = 0

  validation {
    condition     = var.rule_priority >= 0 && floor(var.rule_priority) == var.rule_priority
    error_message = "rule_priority must be a non-negative whole number."
  }
}

variable "forwarded_ip" {
  description = "Match the client address from a header instead of the connection's source address, for resources behind a proxy or CDN (WAFv2 ip_set_forwarded_ip_config). null matches the source address. position LAST takes the address the nearest proxy appended (the one an attacker cannot forge when exactly one trusted proxy sits in front); FIRST and ANY are evadable or over-blocking with spoofed headers. fallback_behavior applies when the header is missing or invalid: MATCH (block) or NO_MATCH (allow)."
  type = object({
    header_name       = optional(string, "X-Forwarded-For")
    position          = optional(string, "LAST")
    fallback_behavior = optional(string, "NO_MATCH")
  })
  default = null

  validation {
    condition     = var.forwarded_ip == null || try(contains(["FIRST", "LAST", "ANY"], var.forwarded_ip.position) && contains(["MATCH", "NO_MATCH"], var.forwarded_ip.fallback_behavior), false)
    error_message = "forwarded_ip.position must be FIRST, LAST or ANY and forwarded_ip.fallback_behavior MATCH or NO_MATCH."
  }
}

variable "web_acl_association_arns" {
  description = "ARNs of regional resources (ALB, API Gateway stage, AppSync API, ...) to associate with the created web ACL. Only with create_web_acl and scope REGIONAL; CloudFront distributions reference the web ACL from the distribution's web_acl_id instead."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.web_acl_association_arns) == 0 || (var.create_web_acl && var.scope == "REGIONAL")
    error_message = "web_acl_association_arns needs create_web_acl = true and scope = REGIONAL."
  }
}

variable "create_instance_profile" {
  description = "Let EC2 assume the blocker role (trust ec2.amazonaws.com) and create an instance profile for it. The blocker then gets credentials from the instance metadata service (IMDSv2)."
  type        = bool
  default     = true
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (arn:aws:iam::<account>:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>). When set, the role also trusts the Kubernetes service account eks_service_account through IRSA (sts:AssumeRoleWithWebIdentity)."
  type        = string
  default     = null

  validation {
    condition     = var.eks_oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.eks_oidc_provider_arn))
    error_message = "eks_oidc_provider_arn must be an IAM OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/<issuer host and path>)."
  }

  validation {
    condition     = var.create_instance_profile || var.eks_oidc_provider_arn != null
    error_message = "Nobody could assume the role: set create_instance_profile = true, eks_oidc_provider_arn, or both."
  }
}

variable "eks_service_account" {
  description = "Kubernetes service account allowed to assume the role through IRSA, as \"<namespace>/<name>\". Must match config/kubernetes/blocker.yaml (namespace palisade, ServiceAccount palisade-blocker)."
  type        = string
  default     = "palisade/palisade-blocker"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", var.eks_service_account))
    error_message = "eks_service_account must be \"<namespace>/<service account name>\" in Kubernetes name syntax."
  }
}

variable "permissions_boundary_arn" {
  description = "ARN of an IAM permissions boundary to attach to the role, for accounts that require one. null attaches none."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every taggable resource the module creates."
  type        = map(string)
  default     = {}
}
