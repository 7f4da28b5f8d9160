# The bundled Terraform ruleset only: the AWS ruleset plugin is downloaded from GitHub
# releases by `tflint --init`, which CI cannot reach (docs/deploy.md, "Not checked offline").
plugin "terraform" {
  enabled = true
  preset  = "all"
}
