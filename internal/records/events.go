package records

import (
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/status"
)

// EventsKey is the Redis stream terminal transitions are appended to.
func (s *Store) EventsKey() string { return s.cfg.EventsKey() }

// eventArgs is the stream entry of a terminal transition.
func (s *Store) eventArgs(rec status.Record) *redis.XAddArgs {
	ev := map[string]any{"requestId": rec.RequestID, "state": string(rec.State), "at": rec.UpdatedAt.Format(time.RFC3339Nano)}
	if rec.BatchID != "" {
		ev["batchId"] = rec.BatchID
	}
	if rec.Stored != nil {
		ev["bucket"], ev["key"] = rec.Stored.Bucket, rec.Stored.Key
	}
	if rec.ErrorCode != "" {
		ev["errorCode"] = rec.ErrorCode
	}
	return &redis.XAddArgs{Stream: s.EventsKey(), MaxLen: s.cfg.EventsMaxLen, Approx: true, Values: ev}
}
