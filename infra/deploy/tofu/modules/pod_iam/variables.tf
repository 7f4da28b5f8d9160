variable "name" {
  description = "Role name prefix."
  type        = string
}

variable "oidc_provider_arn" {
  description = "The EKS cluster's IAM OIDC provider ARN."
  type        = string
}

variable "oidc_provider_url" {
  description = "The EKS cluster's OIDC issuer, without https://."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the release."
  type        = string
}

variable "service_account" {
  description = "The chart's ServiceAccount name (<release>-spacemusic)."
  type        = string
}

variable "bucket_arn" {
  description = "Documents bucket (storage module output)."
  type        = string
}

variable "kms_key_arn" {
  description = "The bucket's KMS key (storage module output)."
  type        = string
}
