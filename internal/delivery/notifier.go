package delivery

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/internal/tracing"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/webhook"
)

// Notifier enqueues a delivery task for a request's terminal state (the
// worker's and the producer's Notifier): one per request, as the task id
// says, so a second notification of the same state is a no-op.
type Notifier struct {
	Client *asynq.Client
}

func (n Notifier) Notify(ctx context.Context, callbackURL string, rec status.Record) error {
	ev := webhook.Event{RequestID: rec.RequestID, BatchID: rec.BatchID, State: string(rec.State),
		ErrorCode: rec.ErrorCode, ErrorMessage: rec.ErrorMessage, At: rec.UpdatedAt}
	if rec.Stored != nil {
		ev.Bucket, ev.Key = rec.Stored.Bucket, rec.Stored.Key
	}
	task, opts, err := NewTask(callbackURL, ev, Options{Traceparent: tracing.Traceparent(ctx)})
	if err != nil {
		return err
	}
	if _, err := n.Client.EnqueueContext(ctx, task, opts...); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue callback: %w", err)
	}
	return nil
}
