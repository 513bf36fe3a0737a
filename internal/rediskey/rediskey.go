// Package rediskey names every Redis key cropq writes or reads, in this one
// file (as asynq's internal/base does for asynq's): a key's layout is part
// of the data a deployment already holds, so it is changed here or nowhere,
// and TestKeys pins each one to the letter.
//
// cropq's own keys start with a Prefix (CROPQ_KEY_PREFIX, default
// "cropq:"). A part in braces is a Cluster hash tag: the keys that one
// script or transaction touches together share it, so they share a slot.
package rediskey

import (
	"strings"
	"time"
)

// Prefix starts every key of cropq's own; its methods name the keys under it.
type Prefix string

// Default is the prefix of a fleet that sets none.
const Default Prefix = "cropq:"

// OrDefault is p, or Default when p is empty (a zero Config).
func (p Prefix) OrDefault() Prefix {
	if p == "" {
		return Default
	}
	return p
}

// Status is the record of a request (package records): JSON, tagged by the
// request id.
func (p Prefix) Status(requestID string) string { return string(p) + "status:{" + requestID + "}" }

// StatusPattern matches every record (a SCAN or KEYS pattern).
func (p Prefix) StatusPattern() string { return p.Status("*") }

// RequestIDOf is the request id of a record's key (Status), and whether it
// is one.
func (p Prefix) RequestIDOf(key string) (string, bool) {
	open := p.Status("")
	id, ok := strings.CutPrefix(key, open[:len(open)-1])
	if !ok || !strings.HasSuffix(id, "}") {
		return "", false
	}
	return id[:len(id)-1], true
}

// Events is the stream every terminal transition is appended to.
func (p Prefix) Events() string { return string(p) + "events" }

// Batch is the hash of a batch's counts and fields. tenant is "" for the
// default tenant, whose batches keep the key they had before tenants
// existed; another tenant's batch is tagged "tenant/batchID" (batch ids are
// the tenant's own). The batch's other keys (below) share its tag.
func (p Prefix) Batch(tenant, batchID string) string {
	if tenant == "" {
		return string(p) + "batch:{" + batchID + "}"
	}
	return string(p) + "batch:{" + tenant + "/" + batchID + "}"
}

// BatchIDs is the list of a batch's request ids, in the order they came.
func (p Prefix) BatchIDs(tenant, batchID string) string { return p.Batch(tenant, batchID) + ":ids" }

// BatchState is the bitmap of a batch's requests (by place in BatchIDs)
// that are in state.
func (p Prefix) BatchState(tenant, batchID, state string) string {
	return p.Batch(tenant, batchID) + ":" + state
}

// BatchPaid counts the paid calls of a batch's finished requests.
func (p Prefix) BatchPaid(tenant, batchID string) string { return p.Batch(tenant, batchID) + ":paid" }

// BatchReport is the list of a batch's report lines.
func (p Prefix) BatchReport(tenant, batchID string) string {
	return p.Batch(tenant, batchID) + ":report"
}

// Batches is the registry of batches, scored by creation time.
func (p Prefix) Batches() string { return string(p) + "batches" }

// Failures counts the failures of the hour of t (UTC), per minute and code.
func (p Prefix) Failures(t time.Time) string {
	return string(p) + "failures:" + t.UTC().Format("2006010215")
}

// ReportsDue is the set of batches whose report is still to be written.
func (p Prefix) ReportsDue() string { return string(p) + "reports:due" }

// Manifests is the set of batches whose manifest is being read.
func (p Prefix) Manifests() string { return string(p) + "manifests" }

// Failed is the index of failed requests.
func (p Prefix) Failed() string { return string(p) + "failed" }

// Replays is the list of the last replays of failed requests.
func (p Prefix) Replays() string { return p.Failed() + ":replays" }

// MigratedWaitingTTL marks the one-off migration that removed the TTL of
// waiting records as done.
func (p Prefix) MigratedWaitingTTL() string { return string(p) + "migrated:waiting-ttl" }

// CropLeases is the sorted set of crop leases (package lease): an
// attempt's hold on its crop, scored by its deadline.
func (p Prefix) CropLeases() string { return string(p) + "leases" }

// DedupEntry is the result stored for a crop key (package dedup).
func (p Prefix) DedupEntry(cropKey string) string { return string(p) + "dedup:{" + cropKey + "}" }

// DedupClaim is the claim on a crop key of the request paying for its
// result (a Lock). It keeps its historic name ":lease".
func (p Prefix) DedupClaim(cropKey string) string { return p.DedupEntry(cropKey) + ":lease" }

// DedupSaved counts the paid calls saved, by reason.
func (p Prefix) DedupSaved() string { return string(p) + "dedup:saved" }

// DedupRef is what a concealed reference to a request (package dedup's
// "ref/…") stands for.
func (p Prefix) DedupRef(ref string) string { return string(p) + "dedup:" + ref }

// QuotaState is an account's adaptive rate (package quota).
func (p Prefix) QuotaState(account string) string { return string(p) + "quota:{" + account + "}:state" }

// QuotaGCRA is an account's GCRA limiter; go-redis/redis_rate stores it
// under its own "rate:" before this.
func (p Prefix) QuotaGCRA(account string) string { return string(p) + "quota:{" + account + "}:gcra" }

// QuotaUsage counts an account's calls on the day of t (UTC).
func (p Prefix) QuotaUsage(account string, t time.Time) string {
	return string(p) + "quota:{" + account + "}:usage:" + t.UTC().Format("20060102")
}

// Backlog is the list of a (lane, tenant)'s waiting requests (package
// backlog), one Cluster slot each.
func (p Prefix) Backlog(lane, tenant string) string {
	return string(p) + "backlog:{" + lane + ":" + tenant + "}"
}

// BacklogActive is the set of backlog lists that may hold entries.
func (p Prefix) BacklogActive() string { return string(p) + "backlog:active" }

// BacklogUnreadable keeps the backlog entries that could not be read.
func (p Prefix) BacklogUnreadable() string { return string(p) + "backlog:unreadable" }

// FeederLock is the backlog feeder's leadership lock (a Lock): its holder
// is the fleet's one feeder.
func (p Prefix) FeederLock() string { return string(p) + "backlog:feeder" }

// Budget counts a tenant's paid calls in the period stamped stamp (package
// budget).
func (p Prefix) Budget(tenant, stamp string) string {
	return string(p) + "budget:{" + tenant + "}:" + stamp
}

// Writable is the tiny key a process writes at startup to learn whether
// Redis takes writes.
func (p Prefix) Writable(host string) string { return string(p) + "writable:" + host }

// Asynq's keys, which cropq reads but never writes. asynq (v0.26) names
// them in its internal/base, which cannot be imported, so they are named
// again here: the feeder reads the lengths of a queue's pending and active
// lists and its retry set, which is cheaper than asynq's Inspector (that
// samples memory). An asynq that moved them would starve the feeder's
// window: the backlog tests read them through these functions.

// AsynqPending is the list of queue's tasks ready to run.
func AsynqPending(queue string) string { return asynqQueue(queue) + "pending" }

// AsynqActive is the list of queue's running tasks.
func AsynqActive(queue string) string { return asynqQueue(queue) + "active" }

// AsynqRetry is the set of queue's tasks waiting to be retried.
func AsynqRetry(queue string) string { return asynqQueue(queue) + "retry" }

// AsynqTask is the hash of one of queue's tasks.
func AsynqTask(queue, taskID string) string { return asynqQueue(queue) + "t:" + taskID }

func asynqQueue(queue string) string { return "asynq:{" + queue + "}:" }
