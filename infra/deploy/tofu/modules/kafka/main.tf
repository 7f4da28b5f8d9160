# Managed Kafka (MSK), brokers in the private subnets, reachable from them on 9092.
terraform {
  required_version = ">= 1.8"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
}

resource "aws_security_group" "kafka" {
  name        = "${var.name}-kafka"
  description = "Kafka from the private subnets only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "kafka" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.kafka.id
  description       = "Kafka from private subnet ${each.value}"
  cidr_ipv4         = each.value
  from_port         = 9092
  to_port           = 9092
  ip_protocol       = "tcp"
}

resource "aws_kms_key" "kafka" {
  description         = "${var.name} MSK storage"
  enable_key_rotation = true
}

resource "aws_cloudwatch_log_group" "kafka" {
  name              = "/msk/${var.name}"
  retention_in_days = 365
}

resource "aws_msk_configuration" "this" {
  name           = "${var.name}-kafka"
  kafka_versions = ["3.9.x"]
  # The application creates its topics (`spacemusic topics create`) with these defaults.
  server_properties = <<-PROPERTIES
    auto.create.topics.enable=false
    default.replication.factor=3
    min.insync.replicas=2
    unclean.leader.election.enable=false
  PROPERTIES
}

resource "aws_msk_cluster" "this" {
  cluster_name           = "${var.name}-kafka"
  kafka_version          = "3.9.x"
  number_of_broker_nodes = length(var.subnet_ids)

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.kafka.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.broker_volume_gb
      }
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = aws_kms_key.kafka.arn
    encryption_in_transit {
      # The application's Kafka client speaks plaintext today (infra/settings.py has no
      # TLS/SASL settings); inside the VPC, Linkerd does not cover MSK. TLS between
      # brokers stays on. See docs/deploy.md, "Known gaps".
      client_broker = "TLS_PLAINTEXT"
      in_cluster    = true
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.kafka.name
      }
    }
  }
}
