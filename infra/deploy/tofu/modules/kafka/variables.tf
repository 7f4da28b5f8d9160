variable "name" {
  description = "Name prefix."
  type        = string
}

variable "vpc_id" {
  description = "VPC for the security group."
  type        = string
}

variable "subnet_ids" {
  description = "One private subnet per broker zone."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "Who may connect: the private subnet CIDRs."
  type        = list(string)
}

variable "broker_instance_type" {
  description = "MSK broker instance type."
  type        = string
}

variable "broker_volume_gb" {
  description = "EBS volume per broker."
  type        = number
}
