variable "vpc_cidr" {
  description = "The VPC's IPv4 CIDR, a /16 (the plan below assumes it)."
  type        = string
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && try(split("/", var.vpc_cidr)[1] == "16", false)
    error_message = "vpc_cidr must be a valid IPv4 /16."
  }
}

variable "zones" {
  description = "Availability zones to spread subnets over (2 or 3)."
  type        = list(string)
  validation {
    condition     = length(var.zones) >= 2 && length(var.zones) <= 3
    error_message = "Use two or three availability zones."
  }
}
