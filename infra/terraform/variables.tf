variable "name" {
  description = "Prefix of every resource name; the functions are <name>-webhook and <name>-session."
  type        = string
  default     = "hands"

  validation {
    condition     = can(regex("^[A-Za-z0-9-]{1,50}$", var.name))
    error_message = "name: letters, digits and hyphens, at most 50 characters (function names are limited to 64)."
  }
}

variable "environment_id" {
  description = "The self-hosted environment to serve (env_...)."
  type        = string

  validation {
    condition     = can(regex("^env_[A-Za-z0-9]+$", var.environment_id))
    error_message = "environment_id: env_ followed by letters and digits."
  }
}

variable "environment_key_secret_arn" {
  description = "ARN of the Secrets Manager secret whose SecretString is the environment key (sk-ant-oat01-...), with its 6-character suffix and no JSON-key suffix (the roles are granted exactly this ARN). Read by both functions at start; never put in their environment."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.environment_key_secret_arn))
    error_message = "environment_key_secret_arn: the ARN of a Secrets Manager secret."
  }
}

variable "webhook_signing_key_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the webhook signing secret(s), whsec_..., space-separated while rotating. Read by the webhook function only."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.webhook_signing_key_secret_arn))
    error_message = "webhook_signing_key_secret_arn: the ARN of a Secrets Manager secret."
  }
}

variable "secrets_kms_key_arn" {
  description = "ARN of the customer-managed KMS key the two secrets are encrypted with; null when they use the AWS-managed key."
  type        = string
  default     = null
}

variable "base_url" {
  description = "The control plane (ANTHROPIC_BASE_URL)."
  type        = string
  default     = "https://api.anthropic.com"

  validation {
    condition     = startswith(var.base_url, "https://")
    error_message = "base_url must be an https:// URL."
  }
}

variable "architecture" {
  description = "arm64 (build with `cargo lambda build --release --arm64`) or x86_64 (without --arm64)."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture: arm64 or x86_64."
  }
}

variable "webhook_bootstrap_path" {
  description = "The webhook function's bootstrap, as built by cargo lambda. Defaults to the workspace's target/lambda/webhook/bootstrap."
  type        = string
  default     = null
}

variable "session_bootstrap_path" {
  description = "The session function's bootstrap, as built by cargo lambda. Defaults to the workspace's target/lambda/session/bootstrap."
  type        = string
  default     = null
}

variable "session_timeout_seconds" {
  description = "Timeout of one session invocation; a longer session continues in a fresh invocation shortly before this deadline."
  type        = number
  default     = 900

  validation {
    condition     = var.session_timeout_seconds >= 60 && var.session_timeout_seconds <= 900
    error_message = "session_timeout_seconds: 60 to 900."
  }
}

variable "session_memory_mb" {
  description = "Memory of the session function; 1769 MB is one full vCPU."
  type        = number
  default     = 1769
}

variable "session_ephemeral_storage_mb" {
  description = "Size of /tmp in the session function, where workspaces live (512 to 10240); a snapshot's archive is written there beside the workspace, so keep HANDS_WORKSPACE_MAX_BYTES (512 MiB by default) at about a quarter of it."
  type        = number
  default     = 2048

  validation {
    condition     = var.session_ephemeral_storage_mb >= 512 && var.session_ephemeral_storage_mb <= 10240
    error_message = "session_ephemeral_storage_mb: 512 to 10240."
  }
}

variable "session_reserved_concurrency" {
  description = "Sessions served at once (reserved concurrency of the session function); -1 reserves nothing."
  type        = number
  default     = -1
}

variable "tenant_isolation" {
  description = "Create the session function with tenant isolation (PER_TENANT): every invoke carries TenantId = session id, so execution environments are never shared between sessions. Changing it replaces the function."
  type        = bool
  default     = false
}

variable "session_max_retries" {
  description = "Lambda's retries of a failed asynchronous session invocation before the item goes to the failure queue (0 to 2)."
  type        = number
  default     = 1
}

variable "session_max_event_age_seconds" {
  description = "An item waiting this long in Lambda's asynchronous queue goes to the failure queue instead of running with a lapsed lease."
  type        = number
  default     = 600
}

variable "workspace_snapshots" {
  description = "Create an S3 bucket for workspace snapshots, restored by continuations and the next turn of a session."
  type        = bool
  default     = true
}

variable "snapshot_retention_days" {
  description = "Workspace snapshots are deleted this many days after their last write."
  type        = number
  default     = 7
}

variable "log_retention_days" {
  description = "Retention of both functions' CloudWatch log groups."
  type        = number
  default     = 30
}

variable "drain_schedule" {
  description = "How often the webhook function drains the queue without a webhook (the backstop)."
  type        = string
  default     = "rate(1 minute)"
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
