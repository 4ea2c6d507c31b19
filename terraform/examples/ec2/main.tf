# Example: the Palisade module plus one EC2 instance running palisade-blocker under systemd.
# The instance gets AWS credentials from its instance profile through IMDSv2 (tokens required),
# installs the .deb, and writes /etc/palisade/blocker.toml from the module's outputs.

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian's official AWS account

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }
}

module "palisade" {
  source = "../.."

  name_prefix              = var.name_prefix
  scope                    = "REGIONAL"
  ipv4_set_count           = var.ipv4_set_count
  ipv6_set_count           = var.ipv6_set_count
  create_web_acl           = true
  web_acl_association_arns = var.protected_resource_arns
  forwarded_ip             = var.forwarded_ip
  create_instance_profile  = true
}

locals {
  secret_parameters = compact([var.nats_creds_parameter, var.admin_token_parameter])
  secret_parameter_arns = [
    for name in local.secret_parameters :
    "arn:${data.aws_partition.current.partition}:ssm:${var.region}:${data.aws_caller_identity.current.account_id}:parameter/${trimprefix(name, "/")}"
  ]
}

# Lets the instance read exactly its two secrets at boot (nothing else in Parameter Store).
data "aws_iam_policy_document" "secrets" {
  count = length(local.secret_parameter_arns) > 0 ? 1 : 0

  statement {
    sid       = "ReadPalisadeSecrets"
    effect    = "Allow"
    actions   = ["ssm:GetParameter"]
    resources = local.secret_parameter_arns
  }
}

resource "aws_iam_role_policy" "secrets" {
  count = length(local.secret_parameter_arns) > 0 ? 1 : 0

  name   = "${var.name_prefix}-boot-secrets"
  role   = module.palisade.role_name
  policy = data.aws_iam_policy_document.secrets[0].json
}

# No inbound rule at all: the admin API listens on 127.0.0.1. Outbound: HTTPS (AWS APIs, the
# package), HTTP (Debian mirrors) and NATS to its servers only.
resource "aws_security_group" "blocker" {
  name        = "${var.name_prefix}-blocker"
  description = "palisade-blocker: no inbound; outbound AWS APIs, packages, NATS"
  vpc_id      = var.vpc_id

  egress {
    description = "AWS APIs (WAFv2, SSM, STS) and the package download"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "Debian package mirrors"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "NATS"
    from_port   = var.nats_port
    to_port     = var.nats_port
    protocol    = "tcp"
    cidr_blocks = var.nats_cidr_blocks
  }
}

resource "aws_instance" "blocker" {
  ami                    = var.ami_id != null ? var.ami_id : data.aws_ami.debian.id
  instance_type          = var.instance_type
  subnet_id              = var.subnet_id
  vpc_security_group_ids = [aws_security_group.blocker.id]
  iam_instance_profile   = module.palisade.instance_profile_name

  # IMDSv2 only: session tokens required, and a hop limit of 1 so containers on the host cannot
  # reach the instance's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 8
    encrypted   = true
  }

  user_data_replace_on_change = true
  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    region                = var.region
    package_url           = var.package_url
    package_sha256        = var.package_sha256
    nats_url              = var.nats_url
    nats_creds_parameter  = var.nats_creds_parameter == null ? "" : var.nats_creds_parameter
    admin_token_parameter = var.admin_token_parameter == null ? "" : var.admin_token_parameter
    ipset_arns            = module.palisade.ip_set_arns
  })

  tags = {
    Name = "${var.name_prefix}-blocker"
  }

  # The secrets policy must exist before the first boot reads the parameters.
  depends_on = [aws_iam_role_policy.secrets]
}
