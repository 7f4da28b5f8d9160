# Pure address planning (no provider): one public and one private subnet per zone, carved
# from the VPC CIDR. Kept apart from the vpc module so `tofu test` can check it offline.
terraform {
  required_version = ">= 1.8"
}

locals {
  # The first /20 holds the small public /24s (NAT gateways, load balancers); the private
  # /20s (pods, RDS, MSK) follow it, one per zone, so the two sets never overlap.
  public_cidrs  = [for i, _ in var.zones : cidrsubnet(var.vpc_cidr, 8, i)]
  private_cidrs = [for i, _ in var.zones : cidrsubnet(var.vpc_cidr, 4, i + 1)]
}
