# Palisade's AWS side: the IP sets the blocker keeps in sync, optionally a web ACL or a rule group
# that blocks them, and the least-privilege role the blocker runs as (EC2 instance profile and/or
# EKS IRSA).

locals {
  ipv4_set_names = [for i in range(var.ipv4_set_count) : format("%s-ipv4-%02d", var.name_prefix, i + 1)]
  ipv6_set_names = [for i in range(var.ipv6_set_count) : format("%s-ipv6-%02d", var.name_prefix, i + 1)]

  # Every IP set, IPv4 first, with a stable name for its block rule and its CloudWatch metric.
  ip_sets = concat(
    [for i, set in aws_wafv2_ip_set.ipv4 : { name = local.ipv4_set_names[i], arn = set.arn }],
    [for i, set in aws_wafv2_ip_set.ipv6 : { name = local.ipv6_set_names[i], arn = set.arn }],
  )
  ip_set_arns = [for set in local.ip_sets : set.arn]

  # "oidc.eks.<region>.amazonaws.com/id/<id>": the issuer host and path that prefix the IRSA claims.
  eks_oidc_issuer = var.eks_oidc_provider_arn == null ? null : element(split("oidc-provider/", var.eks_oidc_provider_arn), 1)
}

# --- IP sets ---------------------------------------------------------------------------------------
# Created empty: palisade-blocker owns the addresses at runtime. ignore_changes keeps `terraform
# apply` from resetting them (without it every plan would remove every blocked address).

resource "aws_wafv2_ip_set" "ipv4" {
  count = var.ipv4_set_count

  name               = local.ipv4_set_names[count.index]
  description        = "Palisade runtime blocks (IPv4), managed by palisade-blocker"
  scope              = var.scope
  ip_address_version = "IPV4"
  addresses          = []
  tags               = var.tags

  lifecycle {
    ignore_changes = [addresses]
  }
}

resource "aws_wafv2_ip_set" "ipv6" {
  count = var.ipv6_set_count

  name               = local.ipv6_set_names[count.index]
  description        = "Palisade runtime blocks (IPv6), managed by palisade-blocker"
  scope              = var.scope
  ip_address_version = "IPV6"
  addresses          = []
  tags               = var.tags

  lifecycle {
    ignore_changes = [addresses]
  }
}

# --- Web ACL (optional) ----------------------------------------------------------------------------
# One block rule per IP set (1 WCU each): no OR statement, so one set works like fifty, and each
# set gets its own CloudWatch metric.

resource "aws_wafv2_web_acl" "this" {
  count = var.create_web_acl ? 1 : 0

  name        = var.name_prefix
  description = "Blocks the addresses palisade-blocker decided to block"
  scope       = var.scope
  tags        = var.tags

  default_action {
    allow {}
  }

  dynamic "rule" {
    for_each = local.ip_sets
    content {
      name     = "${rule.value.name}-block"
      priority = var.rule_priority + rule.key

      action {
        block {}
      }

      statement {
        ip_set_reference_statement {
          arn = rule.value.arn

          dynamic "ip_set_forwarded_ip_config" {
            for_each = var.forwarded_ip == null ? [] : [var.forwarded_ip]
            content {
              header_name       = ip_set_forwarded_ip_config.value.header_name
              position          = ip_set_forwarded_ip_config.value.position
              fallback_behavior = ip_set_forwarded_ip_config.value.fallback_behavior
            }
          }
        }
      }

      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = "${rule.value.name}-block"
        sampled_requests_enabled   = true
      }
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = var.name_prefix
    sampled_requests_enabled   = true
  }
}

# count, not for_each: the ARNs of load balancers created in the same apply are unknown at plan
# time, their number is not.
resource "aws_wafv2_web_acl_association" "this" {
  count = length(var.web_acl_association_arns)

  resource_arn = var.web_acl_association_arns[count.index]
  web_acl_arn  = aws_wafv2_web_acl.this[0].arn
}

# --- Rule group (optional) -------------------------------------------------------------------------
# The same rules, for an existing web ACL: reference it with a rule_group_reference_statement and
# `override_action { none {} }` so its block actions apply.

resource "aws_wafv2_rule_group" "this" {
  count = var.create_rule_group ? 1 : 0

  name        = "${var.name_prefix}-blocks"
  description = "Blocks the addresses palisade-blocker decided to block"
  scope       = var.scope
  capacity    = var.rule_group_capacity
  tags        = var.tags

  dynamic "rule" {
    for_each = local.ip_sets
    content {
      name     = "${rule.value.name}-block"
      priority = var.rule_priority + rule.key

      action {
        block {}
      }

      statement {
        ip_set_reference_statement {
          arn = rule.value.arn

          dynamic "ip_set_forwarded_ip_config" {
            for_each = var.forwarded_ip == null ? [] : [var.forwarded_ip]
            content {
              header_name       = ip_set_forwarded_ip_config.value.header_name
              position          = ip_set_forwarded_ip_config.value.position
              fallback_behavior = ip_set_forwarded_ip_config.value.fallback_behavior
            }
          }
        }
      }

      visibility_config {
        cloudwatch_metrics_enabled = true
        metric_name                = "${rule.value.name}-block"
        sampled_requests_enabled   = true
      }
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name_prefix}-blocks"
    sampled_requests_enabled   = true
  }
}

# --- IAM: the blocker's role -----------------------------------------------------------------------

data "aws_iam_policy_document" "assume_role" {
  dynamic "statement" {
    for_each = var.create_instance_profile ? [1] : []
    content {
      sid     = "Ec2InstanceProfile"
      effect  = "Allow"
      actions = ["sts:AssumeRole"]

      principals {
        type        = "Service"
        identifiers = ["ec2.amazonaws.com"]
      }
    }
  }

  dynamic "statement" {
    for_each = var.eks_oidc_provider_arn == null ? [] : [var.eks_oidc_provider_arn]
    content {
      sid     = "EksServiceAccount"
      effect  = "Allow"
      actions = ["sts:AssumeRoleWithWebIdentity"]

      principals {
        type        = "Federated"
        identifiers = [statement.value]
      }

      condition {
        test     = "StringEquals"
        variable = "${local.eks_oidc_issuer}:sub"
        values   = ["system:serviceaccount:${join(":", split("/", var.eks_service_account))}"]
      }

      condition {
        test     = "StringEquals"
        variable = "${local.eks_oidc_issuer}:aud"
        values   = ["sts.amazonaws.com"]
      }
    }
  }
}

# Exactly the two calls the blocker makes, on exactly these IP sets: no List*, no Create/Delete, no
# web ACL access. The blocker never creates or deletes IP sets.
data "aws_iam_policy_document" "blocker" {
  statement {
    sid       = "SyncPalisadeIpSets"
    effect    = "Allow"
    actions   = ["wafv2:GetIPSet", "wafv2:UpdateIPSet"]
    resources = local.ip_set_arns
  }
}

resource "aws_iam_role" "blocker" {
  name                 = "${var.name_prefix}-blocker"
  path                 = "/palisade/"
  description          = "palisade-blocker: reads and updates the Palisade WAFv2 IP sets"
  assume_role_policy   = data.aws_iam_policy_document.assume_role.json
  permissions_boundary = var.permissions_boundary_arn
  max_session_duration = 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "blocker" {
  name   = "${var.name_prefix}-wafv2-ip-sets"
  role   = aws_iam_role.blocker.id
  policy = data.aws_iam_policy_document.blocker.json
}

resource "aws_iam_instance_profile" "blocker" {
  count = var.create_instance_profile ? 1 : 0

  name = "${var.name_prefix}-blocker"
  path = "/palisade/"
  role = aws_iam_role.blocker.name
  tags = var.tags
}
