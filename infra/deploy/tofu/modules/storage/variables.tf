variable "bucket_name" {
  description = "Globally unique bucket name (S3_BUCKET)."
  type        = string
}

variable "noncurrent_version_days" {
  description = "How long overwritten/deleted object versions are kept."
  type        = number
  default     = 90
}

variable "access_log_bucket" {
  description = "Existing bucket that receives S3 server access logs."
  type        = string
}
