output "endpoint" {
  description = "host:port of the Postgres instance."
  value       = aws_db_instance.this.endpoint
}

output "master_secret_arn" {
  description = "Secrets Manager secret holding the generated master credentials."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "security_group_id" {
  description = "The database security group."
  value       = aws_security_group.db.id
}
