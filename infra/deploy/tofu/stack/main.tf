# The whole environment. staging and prod are this module with different variables
# (../envs/<env>.tfvars) and state (../envs/<env>.backend.hcl):
#
#   tofu -chdir=infra/deploy/tofu/stack init -backend-config=../envs/prod.backend.hcl
#   tofu -chdir=infra/deploy/tofu/stack plan -var-file=../envs/prod.tfvars
terraform {
  required_version = ">= 1.8"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
  backend "s3" {}
}

provider "aws" {
  region = var.region
  default_tags {
    tags = { Project = "spacemusic", Environment = var.environment, ManagedBy = "opentofu" }
  }
}

locals {
  name = "spacemusic-${var.environment}"
}

module "vpc" {
  source             = "../modules/vpc"
  name               = local.name
  vpc_cidr           = var.vpc_cidr
  zones              = var.zones
  single_nat_gateway = var.single_nat_gateway
}

module "database" {
  source                = "../modules/database"
  name                  = local.name
  vpc_id                = module.vpc.vpc_id
  subnet_ids            = module.vpc.private_subnet_ids
  allowed_cidrs         = module.vpc.private_subnet_cidrs
  instance_class        = var.db_instance_class
  allocated_storage_gb  = var.db_storage_gb
  multi_az              = var.db_multi_az
  backup_retention_days = var.db_backup_retention_days
  deletion_protection   = var.deletion_protection
}

module "kafka" {
  source               = "../modules/kafka"
  name                 = local.name
  vpc_id               = module.vpc.vpc_id
  subnet_ids           = module.vpc.private_subnet_ids
  allowed_cidrs        = module.vpc.private_subnet_cidrs
  broker_instance_type = var.kafka_broker_instance_type
  broker_volume_gb     = var.kafka_broker_volume_gb
}

module "storage" {
  source            = "../modules/storage"
  bucket_name       = "${local.name}-documents"
  access_log_bucket = var.access_log_bucket
}

module "pod_iam" {
  source            = "../modules/pod_iam"
  name              = local.name
  oidc_provider_arn = var.eks_oidc_provider_arn
  oidc_provider_url = var.eks_oidc_provider_url
  namespace         = var.kubernetes_namespace
  service_account   = "${var.helm_release}-spacemusic"
  bucket_arn        = module.storage.bucket_arn
  kms_key_arn       = module.storage.kms_key_arn
}
