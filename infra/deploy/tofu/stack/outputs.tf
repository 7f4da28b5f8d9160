# What the Helm values need (values-<env>.yaml): see docs/deploy.md.
output "private_subnet_cidrs" {
  description = "networkPolicy.privateCidrs"
  value       = module.vpc.private_subnet_cidrs
}

output "database_endpoint" {
  description = "Host:port for DATABASE_URL (the password is in database_secret_arn)."
  value       = module.database.endpoint
}

output "database_secret_arn" {
  description = "Secrets Manager secret of the generated master credentials."
  value       = module.database.master_secret_arn
}

output "kafka_bootstrap_brokers" {
  description = "config.KAFKA_BOOTSTRAP_SERVERS"
  value       = module.kafka.bootstrap_brokers
}

output "documents_bucket" {
  description = "config.S3_BUCKET"
  value       = module.storage.bucket_name
}

output "pod_role_arn" {
  description = "serviceAccount.roleArn"
  value       = module.pod_iam.role_arn
}
