output "vpc_id" {
  description = "The VPC's id."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Private subnet ids, in zone order."
  value       = aws_subnet.private[*].id
}

output "private_subnet_cidrs" {
  description = "Private subnet CIDRs (the chart's networkPolicy.privateCidrs)."
  value       = module.plan.private_subnet_cidrs
}
