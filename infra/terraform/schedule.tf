# Webhooks are only wake-ups and the sender drops a delivery after 3 failed attempts: the
# webhook function drains on a schedule too (and logs items that hold a lease without
# heartbeating). It recognises EventBridge's "Scheduled Event" payload.
resource "aws_cloudwatch_event_rule" "backstop" {
  name                = "${var.name}-backstop"
  description         = "hands backstop drain"
  schedule_expression = var.drain_schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "backstop" {
  rule = aws_cloudwatch_event_rule.backstop.name
  arn  = aws_lambda_function.webhook.arn
}

resource "aws_lambda_permission" "backstop" {
  statement_id  = "BackstopSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.webhook.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.backstop.arn
}
