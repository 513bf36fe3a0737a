package cropapitest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/cropapi/internal/wire"
)

// wireRequest is the body of a crop call; numbers may come as strings.
type wireRequest struct {
	ImageURL     string       `json:"imageUrl"`
	ImageBase64  string       `json:"imageBase64"`
	TargetWidth  wire.FlexInt `json:"targetWidth"`
	TargetHeight wire.FlexInt `json:"targetHeight"`
}

// handleCrop answers one API call, in the order the real service does:
// gateway (key, signature, timestamp), quota, input, content, model.
func (s *Server) handleCrop(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	gwID := newID(12)
	if outcome, msg := s.checkGateway(q); outcome != "" {
		s.count(outcome, 0)
		writeJSON(w, http.StatusOK, wire.Envelope{GatewayCode: wire.FlexString(outcome), Type: cropapi.GatewayTypeISV, Message: msg, GatewayRequestID: gwID})
		return
	}
	if !s.limiter.Allow() {
		if s.cfg.RateLimit429 {
			s.count("http_429", 0)
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, wire.Envelope{GatewayCode: "ApiCallLimit", Type: cropapi.GatewayTypeISV, Message: "The request has exceeded the call limit", GatewayRequestID: gwID})
			return
		}
		s.business(w, gwID, cropapi.CodeRateLimited, "rate limit exceed")
		return
	}
	faults := s.currentFaults()
	// The body is read first: net/http notices a client that hangs up (and
	// cancels r.Context) only once the body has been consumed.
	req, err := s.readRequest(r)
	if d := faults.Latency + s.jitter(faults.LatencyJitter); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if err != nil {
		s.business(w, gwID, cropapi.CodeInvalidInput, "invalid input: "+err.Error())
		return
	}
	if err := s.cfg.Limits.Validate(req); err != nil {
		s.business(w, gwID, cropapi.CodeInvalidInput, "invalid input: "+err.Error())
		return
	}
	if req.ImageBase64 == "" && faults.SensitiveMarker != "" && strings.Contains(req.ImageURL, faults.SensitiveMarker) {
		s.business(w, gwID, cropapi.CodeSensitiveContent, "content has sensitive data, please try other input")
		return
	}
	for _, f := range []struct {
		p    float64
		code int
		msg  string
	}{
		{faults.P500, cropapi.CodeSystemError, "system error"},
		{faults.P501, cropapi.CodeRateLimited, "rate limit exceed"},
		{faults.P801, cropapi.CodeModelFailed, "model failed"},
		{faults.P900, cropapi.CodeInternalURLError, "internal url error"},
		{faults.P1001, cropapi.CodeContentControl, "content control failed, please retry"},
		{faults.P1002, cropapi.CodeRiskFilter, "content risk filter failed, please contact us"},
	} {
		if s.roll(f.p) {
			s.business(w, gwID, f.code, f.msg)
			return
		}
	}

	src, field, err := s.source(r.Context(), req)
	if err != nil {
		var ve *cropapi.ValidationError
		if errors.As(err, &ve) {
			s.business(w, gwID, cropapi.CodeInvalidInput, "invalid input: "+err.Error())
			return
		}
		// The vendor answers a source it cannot fetch with "internal url error".
		s.log.Info("emulator: fetch failed", "field", field, "err", err)
		s.business(w, gwID, cropapi.CodeInternalURLError, "internal url error")
		return
	}
	out, err := s.crop(r.Context(), src, req.TargetWidth, req.TargetHeight)
	if err != nil {
		s.log.Warn("emulator: crop failed", "err", err)
		s.business(w, gwID, cropapi.CodeModelFailed, "model failed")
		return
	}
	url := s.results.put(s.cfg.Now(), s.cfg.ResultTTL, out, hostOf(r), s.ossID, s.ossKey)

	rid := newID(15)
	ok := true
	res := wire.FlexInt(cropapi.CodeSuccess)
	s.count(strconv.Itoa(cropapi.CodeSuccess), 1)
	writeJSON(w, http.StatusOK, wire.Envelope{
		Data: &wire.EnvelopeData{ImageURL: url, Usage: 1, Width: wire.FlexInt(req.TargetWidth), Height: wire.FlexInt(req.TargetHeight),
			Class: "com.aidc.service.api.client.image.dto.ImageGenResponse"},
		RequestID: rid, Success: &ok, ResCode: &res, ResMessage: "success",
		GatewayCode: "0", GatewayRequestID: gwID, TraceID: rid,
	})
}

// checkGateway returns the gateway's refusal ("" when the call may pass).
func (s *Server) checkGateway(q map[string][]string) (code, message string) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if get("app_key") != s.cfg.AppKey {
		return "InvalidAppKey", "The app key is invalid or does not exist"
	}
	ts, sign := get("timestamp"), get("sign")
	if sign == "" || ts == "" || get("sign_method") != wire.SignMethod || get("sign_ver") != wire.SignVer ||
		!wire.VerifySignature(s.cfg.AppSecret, ts, sign) {
		return "IncompleteSignature", "The request signature does not conform to platform standards"
	}
	ms, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "InvalidTimestamp", "The timestamp is not a number of milliseconds"
	}
	if skew := s.cfg.Now().Sub(time.UnixMilli(ms)); math.Abs(float64(skew)) > float64(s.cfg.TimestampWindow) {
		return "InvalidTimestamp", fmt.Sprintf("The timestamp is outside the accepted window of %s", s.cfg.TimestampWindow)
	}
	return "", ""
}

// business writes a business-layer failure and counts it (never billed).
func (s *Server) business(w http.ResponseWriter, gwID string, code int, msg string) {
	s.count(strconv.Itoa(code), 0)
	ok := false
	rc := wire.FlexInt(code)
	rid := newID(15)
	writeJSON(w, http.StatusOK, wire.Envelope{Success: &ok, ResCode: &rc, ResMessage: msg, RequestID: rid,
		GatewayCode: "0", GatewayRequestID: gwID, TraceID: rid})
}

// readRequest takes the fields from the JSON body (POST) or the query (GET).
func (s *Server) readRequest(r *http.Request) (cropapi.Request, error) {
	var wr wireRequest
	if r.Method == http.MethodGet {
		q := r.URL.Query()
		wr.ImageURL, wr.ImageBase64 = q.Get("imageUrl"), q.Get("imageBase64")
		for _, f := range []struct {
			name string
			dst  *wire.FlexInt
		}{{"targetWidth", &wr.TargetWidth}, {"targetHeight", &wr.TargetHeight}} {
			if v := q.Get(f.name); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return cropapi.Request{}, fmt.Errorf("%s must be an integer", f.name)
				}
				*f.dst = wire.FlexInt(n)
			}
		}
	} else {
		max := int64(s.cfg.Limits.MaxBase64Len)
		if max <= 0 {
			max = int64(cropapi.DefaultLimits().MaxBase64Len)
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, max+1<<20))
		if err != nil {
			return cropapi.Request{}, fmt.Errorf("body: %w", err)
		}
		if err := json.Unmarshal(body, &wr); err != nil {
			return cropapi.Request{}, fmt.Errorf("body is not the expected JSON: %w", err)
		}
	}
	return cropapi.Request{ImageURL: wr.ImageURL, ImageBase64: wr.ImageBase64, TargetWidth: int(wr.TargetWidth), TargetHeight: int(wr.TargetHeight)}, nil
}

// source returns the image bytes: base64 when given (the API prefers it),
// else the URL's content, bounded in time and size and checked for size.
func (s *Server) source(ctx context.Context, req cropapi.Request) ([]byte, string, error) {
	if req.ImageBase64 != "" {
		b, err := base64.StdEncoding.DecodeString(req.ImageBase64)
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(req.ImageBase64)
		}
		if err != nil {
			return nil, "imageBase64", &cropapi.ValidationError{Field: "imageBase64", Reason: "is not valid base64"}
		}
		return b, "imageBase64", nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, req.ImageURL, nil)
	if err != nil {
		return nil, "imageUrl", err
	}
	resp, err := s.cfg.HTTPClient.Do(hreq)
	if err != nil {
		return nil, "imageUrl", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "imageUrl", fmt.Errorf("imageUrl answered HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, s.cfg.MaxFetchBytes+1))
	if err != nil {
		return nil, "imageUrl", err
	}
	if int64(len(b)) > s.cfg.MaxFetchBytes {
		return nil, "imageUrl", &cropapi.ValidationError{Field: "imageUrl", Reason: fmt.Sprintf("image must be at most %d bytes", s.cfg.MaxFetchBytes)}
	}
	info, err := cropapi.DecodeImageHeader(bytes.NewReader(b))
	if err != nil {
		return nil, "imageUrl", &cropapi.ValidationError{Field: "imageUrl", Reason: err.Error()}
	}
	if err := s.cfg.Limits.CheckImageSize("imageUrl", info); err != nil {
		return nil, "imageUrl", err
	}
	return b, "imageUrl", nil
}
