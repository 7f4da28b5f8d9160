output "bootstrap_brokers" {
  description = "Plaintext bootstrap brokers (KAFKA_BOOTSTRAP_SERVERS)."
  value       = aws_msk_cluster.this.bootstrap_brokers
}

output "cluster_arn" {
  description = "The MSK cluster ARN."
  value       = aws_msk_cluster.this.arn
}
