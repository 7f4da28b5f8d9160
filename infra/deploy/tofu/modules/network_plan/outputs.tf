output "public_subnet_cidrs" {
  description = "One public /24 per zone, in zone order."
  value       = local.public_cidrs
}

output "private_subnet_cidrs" {
  description = "One private /20 per zone, in zone order."
  value       = local.private_cidrs
}

output "zones" {
  description = "The zones, in the order of the subnet lists."
  value       = var.zones
}
