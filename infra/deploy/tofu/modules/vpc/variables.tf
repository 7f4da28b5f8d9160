variable "name" {
  description = "Name prefix, e.g. spacemusic-prod."
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
  description = "One NAT gateway for all zones (cheaper, staging) instead of one per zone."
  type        = bool
  default     = false
}
