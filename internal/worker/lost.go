package worker

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"

	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// RecordOf is the record a producer writes for the request p carries
// (package producer): the seed a record Redis lost is written again from
// (records.Update.Seed), so that the request's record and its batch's
// counts still tell the truth, and the same id submitted again is still
// told apart from another request by its fingerprint.
func RecordOf(p tasks.CropPayload) status.Record {
	digest := ""
	switch {
	case p.Input != nil:
		digest = p.Input.SHA256
	case p.ImageBase64 != "":
		raw, err := base64.StdEncoding.DecodeString(p.ImageBase64)
		if err != nil {
			raw, err = base64.RawStdEncoding.DecodeString(p.ImageBase64)
		}
		if err == nil {
			sum := sha256.Sum256(raw)
			digest = hex.EncodeToString(sum[:])
		}
	}
	r := p.Request
	return status.Record{RequestID: r.RequestID, Params: r.Params.Effective(), Source: p.Source(), SourceURL: r.ImageURL, SourceDigest: digest,
		Fingerprint: r.Fingerprint(digest), CreatedAt: p.EnqueuedAt, Traceparent: p.Traceparent}
}
