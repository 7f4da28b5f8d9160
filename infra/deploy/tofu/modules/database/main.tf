# Managed Postgres (RDS) reachable only from the VPC's private subnets on 5432. The master
# password is generated and kept by RDS in Secrets Manager (never in state or code); the
# chart's `spacemusic-database` Secret is synced from it (External Secrets).
terraform {
  required_version = ">= 1.8"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
}

resource "aws_security_group" "db" {
  name        = "${var.name}-postgres"
  description = "Postgres from the private subnets only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.db.id
  description       = "Postgres from private subnet ${each.value}"
  cidr_ipv4         = each.value
  from_port         = 5432
  to_port           = 5432
  ip_protocol       = "tcp"
}

resource "aws_db_subnet_group" "this" {
  name       = "${var.name}-postgres"
  subnet_ids = var.subnet_ids
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.name}-postgres15"
  family = "postgres15"
  parameter {
    name  = "log_min_duration_statement"
    value = "500"
  }
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_kms_key" "db" {
  description         = "${var.name} Postgres storage"
  enable_key_rotation = true
}

resource "aws_db_instance" "this" {
  identifier                          = "${var.name}-postgres"
  engine                              = "postgres"
  engine_version                      = "15"
  instance_class                      = var.instance_class
  allocated_storage                   = var.allocated_storage_gb
  max_allocated_storage               = var.allocated_storage_gb * 4
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = aws_kms_key.db.arn
  db_name                             = "spacemusic"
  username                            = "spacemusic"
  manage_master_user_password         = true
  iam_database_authentication_enabled = true
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  multi_az                            = var.multi_az
  publicly_accessible                 = false
  backup_retention_period             = var.backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.name}-postgres-final"
  auto_minor_version_upgrade          = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = aws_kms_key.db.arn
  monitoring_interval                 = 0
  enabled_cloudwatch_logs_exports     = ["postgresql"]
}
