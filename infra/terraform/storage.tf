# The session function's failures go to the webhook function, which force-stops their items
# (destination records). What the webhook function itself fails to process asynchronously (such
# a record, or a schedule run, after Lambda's retries) lands here, so nothing is dropped
# silently: alarm on its depth, inspect, redrive. A message holds the invocation payload, i.e.
# possibly a work item and its short-lived work secret: encrypted at rest, kept a day.
resource "aws_sqs_queue" "failure" {
  # checkov:skip=CKV_AWS_27:Encrypted at rest with SQS-managed keys (sqs_managed_sse_enabled); the check only recognises a KMS key, which would add key grants for Lambda's destination delivery.
  name                       = "${var.name}-session-failures"
  sqs_managed_sse_enabled    = true
  message_retention_seconds  = 86400
  visibility_timeout_seconds = 120
  tags                       = var.tags
}

data "aws_iam_policy_document" "failure_queue" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.failure.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "failure" {
  queue_url = aws_sqs_queue.failure.id
  policy    = data.aws_iam_policy_document.failure_queue.json
}

resource "aws_s3_bucket" "workspace" {
  # checkov:skip=CKV_AWS_18:Access logging would record every snapshot read and write of every session; the bucket is private to the session role. Enable it for your own audit needs.
  # checkov:skip=CKV_AWS_21:Snapshots are short-lived copies of a workspace, replaced every turn and expired by the lifecycle rule; old versions would keep deleted files around.
  # checkov:skip=CKV_AWS_144:Snapshots are disposable (a session works without them); replicating them to another region only spreads workspace contents.
  # checkov:skip=CKV_AWS_145:Encrypted with S3-managed keys (SSE-S3, below); a KMS key would add a key policy and KMS calls to every snapshot for no extra protection inside this account.
  # checkov:skip=CKV2_AWS_62:Nothing consumes snapshot events.
  count         = var.workspace_snapshots ? 1 : 0
  bucket_prefix = "${lower(var.name)}-workspaces-"
  force_destroy = true
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "workspace" {
  count                   = var.workspace_snapshots ? 1 : 0
  bucket                  = aws_s3_bucket.workspace[0].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "workspace" {
  count  = var.workspace_snapshots ? 1 : 0
  bucket = aws_s3_bucket.workspace[0].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "workspace" {
  count  = var.workspace_snapshots ? 1 : 0
  bucket = aws_s3_bucket.workspace[0].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "workspace" {
  count  = var.workspace_snapshots ? 1 : 0
  bucket = aws_s3_bucket.workspace[0].id
  rule {
    id     = "expire-snapshots"
    status = "Enabled"
    filter {}
    expiration {
      days = var.snapshot_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "workspace_bucket" {
  count = var.workspace_snapshots ? 1 : 0
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.workspace[0].arn,
      "${aws_s3_bucket.workspace[0].arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "workspace" {
  count  = var.workspace_snapshots ? 1 : 0
  bucket = aws_s3_bucket.workspace[0].id
  policy = data.aws_iam_policy_document.workspace_bucket[0].json
  # The public access block must exist first, or the policy call races it.
  depends_on = [aws_s3_bucket_public_access_block.workspace]
}
