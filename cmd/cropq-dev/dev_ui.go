package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/cmd/internal/wiring"
	"github.com/cropq/cropq/internal/httpapi"
	"github.com/cropq/cropq/internal/localstack"
	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/webui"
	"github.com/cropq/cropq/producer"
)

// devWebUI serves the HTTP API and the web UI for `cropq-dev dev`, behind
// CROPQ_API_TOKENS when set, else behind a token made up for this run
// (the operators' own: it sees every tenant). It returns the base URL and
// the token to type in.
func devWebUI(ctx context.Context, stack *localstack.Stack, cfg wiring.Config, rdb redis.UniversalClient, prod *producer.Producer, log *slog.Logger) (string, string, error) {
	hcfg := cfg.HTTP
	hcfg.Logger = log
	token := ""
	if len(hcfg.Tokens) == 0 {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		token = "dev-" + hex.EncodeToString(b) // 28 characters: above httpapi.MinTokenLength
		hcfg.Tokens = []string{token}
	} else {
		tokens, err := httpapi.ParseTokens(hcfg.Tokens)
		if err != nil {
			return "", "", wiring.EnvContext(err)
		}
		token = tokens[0].Token
	}
	api, err := httpapi.New(prod, hcfg)
	if err != nil {
		return "", "", wiring.EnvContext(err)
	}
	page, err := wiring.NewWebUI(ctx, cfg, rdb, prod, api, metrics.NewRegistry(), log)
	if err != nil {
		return "", "", err
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle(webui.Root, page)
	base, err := stack.Serve(mux)
	return base, token, err
}

// devBatchPage reads the samples' batch through the web UI, as a browser
// would, and checks that it shows every sample.
func devBatchPage(ctx context.Context, base, token, batchID string, want int) (string, error) {
	link := base + webui.Root + "batches/" + batchID
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link, nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth("dev", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("web UI: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("web UI: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("web UI: batch %s answered %s", batchID, resp.Status)
	}
	if got := strings.Count(string(body), `data-state="succeeded"`); got != want {
		return "", fmt.Errorf("web UI: batch %s shows %d succeeded crops, want %d", batchID, got, want)
	}
	return fmt.Sprintf("%s (%d crops)", link, want), nil
}
