# `tofu test` for the address plan: no provider, so it runs offline.
variables {
  vpc_cidr = "10.20.0.0/16"
  zones    = ["eu-west-1a", "eu-west-1b"]
}

run "two_zones" {
  command = plan

  assert {
    condition     = output.private_subnet_cidrs == ["10.20.16.0/20", "10.20.32.0/20"]
    error_message = "private subnets must be the /20s after the first"
  }
  assert {
    condition     = output.public_subnet_cidrs == ["10.20.0.0/24", "10.20.1.0/24"]
    error_message = "public subnets must be /24s in the first /20"
  }
}

run "three_zones_do_not_overlap" {
  command = plan

  variables {
    vpc_cidr = "10.30.0.0/16"
    zones    = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  }

  assert {
    condition     = output.private_subnet_cidrs == ["10.30.16.0/20", "10.30.32.0/20", "10.30.48.0/20"]
    error_message = "three private /20s expected"
  }
  assert {
    condition     = output.public_subnet_cidrs == ["10.30.0.0/24", "10.30.1.0/24", "10.30.2.0/24"]
    error_message = "public subnets must stay inside the first /20"
  }
}

run "rejects_a_small_vpc" {
  command = plan

  variables {
    vpc_cidr = "10.20.0.0/20"
  }

  expect_failures = [var.vpc_cidr]
}

run "rejects_one_zone" {
  command = plan

  variables {
    zones = ["eu-west-1a"]
  }

  expect_failures = [var.zones]
}
