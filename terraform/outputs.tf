output "ipv4_ip_set_arns" {
  description = "ARNs of the IPv4 IP sets, in fill order (the blocker spills from one into the next)."
  value       = aws_wafv2_ip_set.ipv4[*].arn
}

output "ipv6_ip_set_arns" {
  description = "ARNs of the IPv6 IP sets, in fill order."
  value       = aws_wafv2_ip_set.ipv6[*].arn
}

output "ip_set_arns" {
  description = "Every IP set ARN, IPv4 first: the blocker's [provider.aws] ipset_arns (or PALISADE_IPSET_ARNS, comma separated)."
  value       = local.ip_set_arns
}

output "web_acl_arn" {
  description = "ARN of the created web ACL, or null when create_web_acl is false."
  value       = one(aws_wafv2_web_acl.this[*].arn)
}

output "rule_group_arn" {
  description = "ARN of the created rule group, or null when create_rule_group is false."
  value       = one(aws_wafv2_rule_group.this[*].arn)
}

output "role_arn" {
  description = "ARN of the blocker's IAM role (for the eks.amazonaws.com/role-arn annotation on the palisade-blocker ServiceAccount with IRSA)."
  value       = aws_iam_role.blocker.arn
}

output "role_name" {
  description = "Name of the blocker's IAM role."
  value       = aws_iam_role.blocker.name
}

output "instance_profile_name" {
  description = "Name of the EC2 instance profile (aws_instance.iam_instance_profile), or null when create_instance_profile is false."
  value       = one(aws_iam_instance_profile.blocker[*].name)
}

output "instance_profile_arn" {
  description = "ARN of the EC2 instance profile, or null when create_instance_profile is false."
  value       = one(aws_iam_instance_profile.blocker[*].arn)
}

output "blocker_policy_json" {
  description = "The role's permission policy document (wafv2:GetIPSet and wafv2:UpdateIPSet on the IP set ARNs only), for review or for attaching elsewhere."
  value       = data.aws_iam_policy_document.blocker.json
}
