package records

import "time"

// A batch's report (GET /v1/batches/{id}/report, and the copy written to S3
// when the batch is done) is one ReportLine per request of the batch. The
// lines of finished requests, and of refused manifest lines, are kept in a
// list beside the batch's counts (ReportKey), written as each ends: a batch
// may take longer than its records live, and its report must not lose the
// requests that ended first.

// ReportLine is one request of a batch in its report (one JSON line).
type ReportLine struct {
	RequestID  string    `json:"requestId,omitempty"` // empty for a manifest line refused before it named one
	Line       int64     `json:"line,omitempty"`      // the manifest line, for manifest batches
	State      string    `json:"state"`
	Code       string    `json:"code,omitempty"`
	Message    string    `json:"message,omitempty"`
	Bucket     string    `json:"bucket,omitempty"`
	Key        string    `json:"key,omitempty"`
	ETag       string    `json:"etag,omitempty"`
	Size       int64     `json:"size,omitempty"`
	PaidCalls  int       `json:"paidCalls"`
	ReusedFrom string    `json:"reusedFrom,omitempty"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Fields of a batch's counts hash that are not counts of a state.
const (
	// ReadingField is set while the batch's manifest still has lines to
	// read: a batch is done only when it is absent and no request of the
	// batch is in a non-terminal state.
	ReadingField = "reading"
	// ReportField is where the batch's report is written when it is done
	// ("s3://BUCKET/PREFIX/"), when its producer asked for one.
	ReportField = "report"
)

// ReportKey is the list of the report lines of a tenant's batch's ended
// requests (JSON ReportLine each), in the order they ended.
func (s *Store) ReportKey(tenant, batchID string) string {
	return s.batchKey(tenant, batchID) + ":report"
}
