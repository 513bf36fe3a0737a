package status

import (
	"time"

	"github.com/cropq/cropq/internal/rediskey"
)

// Defaults of Config. DefaultPrefix is the prefix of every key cropq keeps
// in Redis (CROPQ_KEY_PREFIX), not only the records'.
const (
	DefaultPrefix = string(rediskey.Default)
	DefaultTTL    = 7 * 24 * time.Hour
)

// Config says where records live and how long they are kept. A producer
// (producer.Config.Status) and the fleet's workers must agree on it.
type Config struct {
	// Prefix of every key (default "cropq:"); the record of id lives at
	// Prefix+"status:{"+id+"}", hash-tagged so that it can share a Cluster
	// slot with keys derived from the same id.
	Prefix string
	// TTL of a record from its terminal state (succeeded, failed,
	// canceled), and of a batch's keys from when its last request reached
	// one (default 7 days). A waiting request's record and batch never
	// expire.
	TTL time.Duration
	// HistoryLimit bounds the history kept per record (default 32).
	HistoryLimit int
	// EventsMaxLen bounds the events stream (Prefix+"events"), approximately
	// (default 100,000 entries).
	EventsMaxLen int64
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// EventsKey is the Redis stream every terminal transition is appended to:
// a pipeline reads its crops' outcomes there (XREADGROUP), without polling.
func (c Config) EventsKey() string { return rediskey.Prefix(c.Prefix).OrDefault().Events() }
