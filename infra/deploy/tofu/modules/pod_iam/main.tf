# The pods' IAM role (IRSA): assumable only by the chart's ServiceAccount, allowed only the
# bucket's document objects (termsheets/, receipts/: models/documents.py) and its KMS key.
terraform {
  required_version = ">= 1.8"
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.80" }
  }
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${var.oidc_provider_url}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "pods" {
  name               = "${var.name}-pods"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "pods" {
  statement {
    sid       = "Documents"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${var.bucket_arn}/termsheets/*", "${var.bucket_arn}/receipts/*"]
  }
  statement {
    # HeadBucket at start-up (DocumentStore.ensure_bucket) needs ListBucket; the bucket
    # itself is made here, so the pods never get CreateBucket.
    sid       = "HeadBucket"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }
  statement {
    sid       = "BucketKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

resource "aws_iam_role_policy" "pods" {
  name   = "documents"
  role   = aws_iam_role.pods.id
  policy = data.aws_iam_policy_document.pods.json
}
