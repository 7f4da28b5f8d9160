output "role_arn" {
  description = "The chart's serviceAccount.roleArn."
  value       = aws_iam_role.pods.arn
}
