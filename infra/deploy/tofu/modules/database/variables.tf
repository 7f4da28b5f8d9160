variable "name" {
  description = "Name prefix."
  type        = string
}

variable "vpc_id" {
  description = "VPC for the security group (vpc module output)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the DB subnet group (vpc module output)."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "Who may connect on 5432: the private subnet CIDRs (vpc module output)."
  type        = list(string)
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "allocated_storage_gb" {
  description = "Initial storage; autoscaling may grow it to 4x."
  type        = number
}

variable "multi_az" {
  description = "Standby in a second zone (prod)."
  type        = bool
}

variable "backup_retention_days" {
  description = "Automated backup retention (point-in-time recovery window)."
  type        = number
}

variable "deletion_protection" {
  description = "Refuse deletion (prod)."
  type        = bool
  default     = true
}
