package backlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/cropq/cropq/tasks"
)

// TaskEnqueuer feeds crop tasks into asynq with the producers' task
// options. The payload was validated when its request was accepted; it is
// only decoded here, to make sure this version can run it.
type TaskEnqueuer struct {
	Client  *asynq.Client
	Options tasks.Options
}

// Feed enqueues the task of requestID; one that exists already (a repeated
// feed) is not an error.
func (e TaskEnqueuer) Feed(ctx context.Context, requestID string, payload []byte) error {
	p, err := tasks.ParseCropPayload(payload)
	if err != nil {
		return &BadEntryError{Err: err}
	}
	if p.RequestID != requestID {
		return &BadEntryError{Err: fmt.Errorf("entry of %s holds the payload of %s", requestID, p.RequestID)}
	}
	_, err = e.Client.EnqueueContext(ctx, asynq.NewTask(tasks.TypeCrop, payload), tasks.TaskOptions(requestID, e.Options)...)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}
