output "instance_id" {
  description = "ID of the blocker instance (aws ssm start-session --target <id> for a shell, if the SSM agent is set up)."
  value       = aws_instance.blocker.id
}

output "ip_set_arns" {
  description = "The IP sets the blocker keeps in sync, IPv4 first."
  value       = module.palisade.ip_set_arns
}

output "web_acl_arn" {
  description = "ARN of the web ACL that blocks them."
  value       = module.palisade.web_acl_arn
}

output "role_arn" {
  description = "ARN of the instance's IAM role."
  value       = module.palisade.role_arn
}
