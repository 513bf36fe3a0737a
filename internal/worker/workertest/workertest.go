// Package workertest holds in-memory fakes of everything package worker's
// Handler consumes — the cropping API, object storage, the status store,
// claim-checked inputs, callbacks, the shared quota, crop leases and the
// result-reuse index — so that the handler's decisions can be tested in
// milliseconds, without redis-server or MinIO (River's rivertest is the
// model). Each fake is safe for concurrent use, counts what it was asked,
// and can be told to refuse the way its real counterpart does (with the
// same error types, so that worker.Decide classifies them alike).
//
// The fakes are models, not proof: the suites that run the handler against
// real servers (worker's *_integration_test.go, cmd/cropq's end-to-end
// tests) remain the proof that the real parts behave as these do.
package workertest

import (
	"time"

	"github.com/cropq/cropq/internal/worker"
)

// The fakes stand in for these.
var (
	_ worker.Cropper      = (*Cropper)(nil)
	_ worker.Copier       = (*Copier)(nil)
	_ worker.StoredCopier = (*Copier)(nil)
	_ worker.StatusStore  = (*Statuses)(nil)
	_ worker.Inputs       = (*Inputs)(nil)
	_ worker.Notifier     = (*Notifier)(nil)
	_ worker.Quota        = (*Quota)(nil)
	_ worker.Leases       = (*Leases)(nil)
	_ worker.Dedup        = (*Dedup)(nil)
)

// Fakes is one of each fake, wired together.
type Fakes struct {
	Cropper  *Cropper
	Copier   *Copier
	Statuses *Statuses
	Inputs   *Inputs
	Notifier *Notifier
	Quota    *Quota
	Leases   *Leases
	Dedup    *Dedup
}

// New returns fresh fakes.
func New() *Fakes {
	return &Fakes{
		Cropper:  &Cropper{},
		Copier:   NewCopier(),
		Statuses: NewStatuses(),
		Inputs:   NewInputs(),
		Notifier: &Notifier{},
		Quota:    &Quota{},
		Leases:   NewLeases(),
		Dedup:    NewDedup(),
	}
}

// Config is a HandlerConfig using every fake (set a field to nil to run
// without that part), with waits shortened to milliseconds: the storage
// gate, coalescing and checkpoint retries give up at once instead of after
// seconds.
func (f *Fakes) Config() worker.HandlerConfig {
	return worker.HandlerConfig{
		Inputs:               f.Inputs,
		Notifier:             f.Notifier,
		Quota:                f.Quota,
		Leases:               f.Leases,
		Dedup:                f.Dedup,
		Reuse:                f.Copier,
		StatusTimeout:        time.Second,
		StorageCheckInterval: time.Millisecond,
		StorageMaxWait:       3 * time.Millisecond,
		PersistFor:           time.Millisecond,
		CoalesceWait:         time.Millisecond,
		CoalescePoll:         time.Millisecond,
		CoalesceDelay:        time.Second,
	}
}

// Handler returns a handler of the fakes' Cropper, Copier and Statuses with
// cfg (usually f.Config(), adjusted).
func (f *Fakes) Handler(cfg worker.HandlerConfig) *worker.Handler {
	return worker.NewHandler(f.Cropper, f.Copier, f.Statuses, cfg)
}
