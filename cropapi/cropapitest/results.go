package cropapitest

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// ossBucket is the bucket name the emulator signs result URLs for, as an OSS
// presigned URL names its bucket in the string to sign.
const ossBucket = "cropq-emulator"

// resultStore holds encoded results in memory until they expire, bounded in
// bytes: when full, the oldest results go first (FIFO, which for equal
// lifetimes is also expiry order).
type resultStore struct {
	maxBytes int64

	mu    sync.Mutex
	order *list.List               // of *storedResult, oldest first
	byKey map[string]*list.Element // object key → element
	bytes int64
}

type storedResult struct {
	key     string
	expires time.Time
	cropped
}

func newResultStore(maxBytes int64) *resultStore {
	return &resultStore{maxBytes: maxBytes, order: list.New(), byKey: map[string]*list.Element{}}
}

// put stores c and returns its OSS-style presigned URL on host.
func (rs *resultStore) put(now time.Time, ttl time.Duration, c cropped, host, accessID string, key []byte) string {
	object := "ai_computing/tmp/" + uuid.NewString() + "." + c.format.Ext
	expires := now.Add(ttl)
	rs.mu.Lock()
	rs.sweepLocked(now)
	for rs.bytes+int64(len(c.data)) > rs.maxBytes && rs.order.Len() > 0 {
		rs.removeLocked(rs.order.Front())
	}
	rs.byKey[object] = rs.order.PushBack(&storedResult{key: object, expires: expires, cropped: c})
	rs.bytes += int64(len(c.data))
	rs.mu.Unlock()

	exp := strconv.FormatInt(expires.Unix(), 10)
	q := "OSSAccessKeyId=" + url.QueryEscape(accessID) +
		"&Expires=" + exp +
		"&Signature=" + url.QueryEscape(ossSignature(key, exp, object))
	// The vendor escapes the object's slashes into one path segment.
	return host + "/oss/" + url.PathEscape(object) + "?" + q
}

// get returns the result stored under object, if it has not been evicted.
func (rs *resultStore) get(object string) (storedResult, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	el, ok := rs.byKey[object]
	if !ok {
		return storedResult{}, false
	}
	return *el.Value.(*storedResult), true
}

// size returns how many results are held and their bytes.
func (rs *resultStore) size() (int, int64) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.order.Len(), rs.bytes
}

// sweepLocked drops expired results from the front; results are put in
// expiry order as long as the TTL does not shrink, and a result left behind
// a longer-lived one is only freed late, never served after its expiry.
func (rs *resultStore) sweepLocked(now time.Time) {
	for el := rs.order.Front(); el != nil; el = rs.order.Front() {
		if el.Value.(*storedResult).expires.After(now) {
			return
		}
		rs.removeLocked(el)
	}
}

func (rs *resultStore) removeLocked(el *list.Element) {
	r := rs.order.Remove(el).(*storedResult)
	delete(rs.byKey, r.key)
	rs.bytes -= int64(len(r.data))
}

// ossSignature is OSS's V1 URL signature: base64(HMAC-SHA1(secret,
// "GET\n\n\n{Expires}\n/{bucket}/{object}")).
func ossSignature(key []byte, expires, object string) string {
	mac := hmac.New(sha1.New, key)
	mac.Write([]byte("GET\n\n\n" + expires + "\n/" + ossBucket + "/" + object))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// handleResult serves a result like OSS serves a presigned object: 403 with
// an XML error when the signature is wrong or the URL has expired, 404 when
// the object is unknown.
func (s *Server) handleResult(w http.ResponseWriter, r *http.Request) {
	object := strings.TrimPrefix(r.URL.Path, "/oss/")
	q := r.URL.Query()
	exp := q.Get("Expires")
	sig := q.Get("Signature")
	expSec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || q.Get("OSSAccessKeyId") != s.ossID ||
		!hmac.Equal([]byte(sig), []byte(ossSignature(s.ossKey, exp, object))) {
		s.countDownload(func(st *Stats) { st.DownloadsExpired++ })
		ossError(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	if !s.cfg.Now().Before(time.Unix(expSec, 0)) {
		s.countDownload(func(st *Stats) { st.DownloadsExpired++ })
		ossError(w, http.StatusForbidden, "AccessDenied", "Request has expired.")
		return
	}
	res, ok := s.results.get(object)
	if !ok {
		ossError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	faults := s.currentFaults()
	w.Header().Set("Content-Type", res.format.ContentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(res.data)))
	w.Header().Set("ETag", `"`+sig[:min(len(sig), 16)]+`"`)
	w.WriteHeader(http.StatusOK)
	if s.roll(faults.PTruncate) {
		_, _ = w.Write(res.data[:len(res.data)/2])
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.countDownload(func(st *Stats) { st.DownloadsTruncated++ })
		// Aborting the handler closes the connection short of Content-Length,
		// which is what a client sees when a download is cut.
		panic(http.ErrAbortHandler)
	}
	if faults.SlowDownload > 0 {
		if !slowWrite(r, w, res.data, faults.SlowDownload) {
			return
		}
	} else if _, err := w.Write(res.data); err != nil {
		return
	}
	s.countDownload(func(st *Stats) { st.Downloads++ })
}

// slowWrite spreads data over d in ten chunks; false if the caller left.
func slowWrite(r *http.Request, w http.ResponseWriter, data []byte, d time.Duration) bool {
	const chunks = 10
	step := (len(data) + chunks - 1) / chunks
	t := time.NewTicker(d / chunks)
	defer t.Stop()
	for off := 0; off < len(data); off += step {
		if _, err := w.Write(data[off:min(off+step, len(data))]); err != nil {
			return false
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		select {
		case <-t.C:
		case <-r.Context().Done():
			return false
		}
	}
	return true
}

func ossError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>` + "\n<Error>\n  <Code>" + code +
		"</Code>\n  <Message>" + msg + "</Message>\n</Error>\n"))
}
