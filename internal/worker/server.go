package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cropq/cropq/tasks"
)

// Defaults of ServerConfig.
const (
	DefaultConcurrency     = 10
	DefaultShutdownTimeout = 25 * time.Second
)

// ServerConfig configures the asynq server. Zero values take defaults.
type ServerConfig struct {
	// Concurrency is the number of tasks processed at once (default 10):
	// crops are network-bound, so more than the CPU count.
	Concurrency int
	// Queues maps queue names to priority weights (default {"crops": 1}).
	Queues map[string]int
	// ShutdownTimeout is how long running tasks get to finish on shutdown
	// before they go back to the queue (default 25s; keep it below the pod's
	// terminationGracePeriodSeconds).
	ShutdownTimeout time.Duration
	// DelayedTaskCheckInterval is how often retry/scheduled tasks are moved
	// back to pending (asynq's default 5s).
	DelayedTaskCheckInterval time.Duration
	// TaskCheckInterval is how long the server waits before looking again
	// when every queue was empty (default asynq's 1s, which idles the
	// workers for a second each time they drain a window faster than the
	// feeder tops it up: work that needs no call does, and the free queue's
	// wiring shortens it).
	TaskCheckInterval time.Duration
	Backoff           Backoff
	Logger            *slog.Logger
	// Handlers serves more task types on the same server (webhook
	// deliveries); their queues must be in Queues.
	Handlers map[string]asynq.Handler
}

// Server runs a Handler under asynq.
type Server struct {
	draining atomic.Bool
	srv      *asynq.Server
	mux      *asynq.ServeMux
	log      *slog.Logger
}

// NewServer returns a server for h on rdb, which the caller owns and closes.
func NewServer(rdb redis.UniversalClient, cfg ServerConfig, h *Handler) *Server {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if len(cfg.Queues) == 0 {
		cfg.Queues = map[string]int{tasks.DefaultQueue: 1}
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   cfg.Queues,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		TaskCheckInterval:        cfg.TaskCheckInterval,
		IsFailure:                IsFailure,
		RetryDelayFunc:           cfg.Backoff.Delay,
		Logger:                   asynqLogger{log.With("component", "asynq")},
	})
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeCrop, h)
	for typ, extra := range cfg.Handlers {
		mux.Handle(typ, extra)
	}
	return &Server{srv: srv, mux: mux, log: log}
}

// Run processes tasks until ctx is done, then stops fetching and waits up to
// the shutdown timeout for running tasks (the rest go back to the queue).
func (s *Server) Run(ctx context.Context) error {
	if err := s.srv.Start(s.mux); err != nil {
		return fmt.Errorf("worker: start: %w", err)
	}
	s.log.Info("worker: started")
	<-ctx.Done()
	s.draining.Store(true)
	s.log.Info("worker: draining")
	s.srv.Shutdown()
	s.log.Info("worker: stopped")
	return nil
}

// Draining reports whether Run is shutting down (readiness turns false).
func (s *Server) Draining() bool { return s.draining.Load() }

// asynqLogger routes asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
