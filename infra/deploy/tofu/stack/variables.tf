variable "environment" {
  description = "staging or prod."
  type        = string
  validation {
    condition     = contains(["staging", "prod"], var.environment)
    error_message = "environment must be staging or prod."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's /16."
  type        = string
}

variable "zones" {
  description = "Availability zones (2 or 3)."
  type        = list(string)
}

variable "single_nat_gateway" {
  description = "One NAT gateway instead of one per zone."
  type        = bool
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "db_storage_gb" {
  description = "RDS initial storage."
  type        = number
}

variable "db_multi_az" {
  description = "RDS standby in a second zone."
  type        = bool
}

variable "db_backup_retention_days" {
  description = "RDS automated backup retention."
  type        = number
}

variable "deletion_protection" {
  description = "Protect the database from deletion."
  type        = bool
}

variable "kafka_broker_instance_type" {
  description = "MSK broker instance type."
  type        = string
}

variable "kafka_broker_volume_gb" {
  description = "MSK storage per broker."
  type        = number
}

variable "access_log_bucket" {
  description = "Existing bucket for S3 access logs."
  type        = string
}

variable "eks_oidc_provider_arn" {
  description = "The EKS cluster's IAM OIDC provider ARN."
  type        = string
}

variable "eks_oidc_provider_url" {
  description = "The EKS cluster's OIDC issuer host/path (no https://)."
  type        = string
}

variable "kubernetes_namespace" {
  description = "Namespace of the Helm release."
  type        = string
  default     = "spacemusic"
}

variable "helm_release" {
  description = "Helm release name (the ServiceAccount is <release>-spacemusic)."
  type        = string
  default     = "sm"
}
