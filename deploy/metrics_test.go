// Package deploy holds the deployment files; this test keeps the dashboard
// and the alert rules in step with the metrics cropq exports.
package deploy_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/cropq/cropq/internal/metrics"
	"github.com/cropq/cropq/internal/testenv"
)

// exported lists the metric names cropq's processes export.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	var collectors []prometheus.Collector
	reg := registerer{add: func(c prometheus.Collector) { collectors = append(collectors, c) }}
	metrics.NewPipeline(reg, nil)
	metrics.RegisterQuota(reg, nil)
	metrics.RegisterBacklog(reg, nil, nil)
	metrics.RegisterClockSkew(reg, nil)
	metrics.RegisterRedisWritable(reg, nil)
	metrics.RegisterBudgets(reg, nil)
	// asynq's collector describes itself by collecting: it needs a Redis
	// with a queue in it.
	srv := testenv.Redis(t)
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr()})
	t.Cleanup(func() { _ = client.Close() })
	_, err := client.Enqueue(asynq.NewTask("x", nil), asynq.Queue("crops"))
	require.NoError(t, err)
	insp := asynq.NewInspector(asynq.RedisClientOpt{Addr: srv.Addr()})
	t.Cleanup(func() { _ = insp.Close() })
	metrics.RegisterQueues(reg, insp)
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range collectors {
			c.Describe(ch)
		}
		close(ch)
	}()
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	require.NotEmpty(t, names)
	return names
}

// registerer keeps what is registered, to describe it.
type registerer struct{ add func(prometheus.Collector) }

func (r registerer) Register(c prometheus.Collector) error { r.add(c); return nil }
func (r registerer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.add(c)
	}
}
func (r registerer) Unregister(prometheus.Collector) bool { return false }

var metricRef = regexp.MustCompile(`\b(?:cropq|asynq)_[a-z_]+`)

func checkExprs(t *testing.T, where string, exprs []string, names map[string]bool) {
	t.Helper()
	require.NotEmpty(t, exprs, where)
	for _, e := range exprs {
		for _, ref := range metricRef.FindAllString(e, -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(ref, "_bucket"), "_sum"), "_count")
			assert.True(t, names[base], "%s: %q uses %s, which cropq does not export", where, e, ref)
		}
	}
}

func TestDashboardUsesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("grafana/cropq-dashboard.json")
	require.NoError(t, err)
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &dash))
	var exprs []string
	for _, p := range dash.Panels {
		require.NotEmpty(t, p.Targets, p.Title)
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	checkExprs(t, "dashboard", exprs, exported(t))
}

func TestAlertRulesUseExportedMetrics(t *testing.T) {
	b, err := os.ReadFile("prometheus/alerts.yml")
	require.NoError(t, err)
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
				For   string `yaml:"for"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	require.NoError(t, yaml.Unmarshal(b, &rules))
	var exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert)
			require.NotEmpty(t, r.For, r.Alert)
			exprs = append(exprs, r.Expr)
		}
	}
	checkExprs(t, "alerts", exprs, exported(t))
}
