package tracing

import "go.opentelemetry.io/otel/attribute"

type attributeKV = attribute.KeyValue

// Attribute keys: the messaging semantic conventions' where they apply,
// cropq's own (cropq.*) for what they do not cover.
const (
	serviceNameKey    = attribute.Key("service.name")
	MessagingSystem   = attribute.Key("messaging.system")
	MessagingOp       = attribute.Key("messaging.operation.type")
	MessagingOpName   = attribute.Key("messaging.operation.name")
	MessagingDest     = attribute.Key("messaging.destination.name")
	MessagingID       = attribute.Key("messaging.message.id")
	MessagingBatchLen = attribute.Key("messaging.batch.message_count")
	ErrorType         = attribute.Key("error.type")

	Attempt      = attribute.Key("cropq.attempt")
	Rescue       = attribute.Key("cropq.rescue")
	RescueFrom   = attribute.Key("cropq.rescue.from")
	Tenant       = attribute.Key("cropq.tenant")
	Batch        = attribute.Key("cropq.batch_id")
	TaskID       = attribute.Key("cropq.task_id")
	Outcome      = attribute.Key("cropq.outcome")
	VendorReqID  = attribute.Key("cropq.vendor.request_id")
	VendorCode   = attribute.Key("cropq.vendor.res_code")
	VendorTrace  = attribute.Key("cropq.vendor.trace_id")
	ReusedFrom   = attribute.Key("cropq.reused_from")
	Checkpointed = attribute.Key("cropq.checkpoint_reused")
	Bucket       = attribute.Key("cropq.s3.bucket")
	Key          = attribute.Key("cropq.s3.key")
	Size         = attribute.Key("cropq.s3.size")
	WebhookURL   = attribute.Key("cropq.webhook.url") // without its query (internal/redact)
)

// SystemValue is messaging.system: asynq over Redis has no registered
// value, so the conventions' advice (a custom value) is followed.
const SystemValue = "asynq"
