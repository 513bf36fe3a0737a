package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/rediskey"
	"github.com/cropq/cropq/status"
)

// Issue 24's budget, through real processes: acme may pay for 30 calls a
// day and submits 50; exactly 30 are paid, the other 20 wait queued with
// reason budget (record, batch, `cropq status --budget`) while globex's
// batch runs untouched. The period then rolls over (the workers' budget
// clock moved a day on) and the 20 run.
func TestABudgetCapsATenantsPaidCallsAndItsWorkWaits(t *testing.T) {
	s := newStack(t, stackOptions{})
	apiAddr := freeAddr(t)
	tok := map[string]string{"acme": "acme-budget-token-0123456789", "globex": "globex-budget-token-0123456789"}
	s.env = append(s.env, "CROPQ_QUOTA_RATE=20", "CROPQ_TENANT_BUDGETS=acme=30/day",
		"CROPQ_API_TOKENS=acme:"+tok["acme"]+",globex:"+tok["globex"], "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")

	submit := func(tenant, batch string, n int) []string {
		var items, ids []string
		for i := range n {
			id := fmt.Sprintf("%s-%03d", batch, i)
			ids = append(ids, id)
			// Each its own URL: no two requests share a crop.
			img := fmt.Sprintf("%s/%s?v=%s", s.images, firstImage(t), id)
			items = append(items, fmt.Sprintf(`{"requestId":%q,"imageUrl":%q,"targetWidth":300,"targetHeight":300,"batchId":%q}`, id, img, batch))
		}
		code, _, b := apiDo(t, "POST", base+"/v1/crops/batch", tok[tenant], `{"items":[`+strings.Join(items, ",")+`]}`)
		require.Equal(t, 202, code, "%s", b)
		return ids
	}
	acme := submit("acme", "cat-acme", 50)
	globex := submit("globex", "cat-gx", 20)
	s.startWorker()
	s.startWorker()

	s.awaitAll(t, globex, 2*time.Minute)
	st := records.NewStore(s.rdb, status.Config{})
	ctx := context.Background()
	// acme's 30 are paid and stored; its other 20 are all queued (none
	// running, none failed): waiting, not failing.
	var waiting []string
	require.Eventually(t, func() bool {
		succeeded, queued := 0, []string{}
		for _, id := range acme {
			rec, err := st.Get(ctx, id)
			if err != nil {
				return false
			}
			switch rec.State {
			case status.Succeeded:
				succeeded++
			case status.Queued:
				queued = append(queued, id)
			}
		}
		waiting = queued
		return succeeded == 30 && len(queued) == 20
	}, 2*time.Minute, 100*time.Millisecond, "acme: 30 succeeded and 20 queued")
	assert.Equal(t, int64(50), s.stats().Calls["200"], "30 of acme's and globex's 20: exactly")
	gx, err := st.BatchCounts(ctx, "globex", "cat-gx")
	require.NoError(t, err)
	assert.Equal(t, map[status.State]int64{status.Succeeded: 20}, gx, "globex unaffected")

	// Why they wait, where a producer and an operator look.
	code, _, b := apiDo(t, "GET", base+"/v1/crops/"+waiting[0], tok["acme"], "")
	require.Equal(t, 200, code, "%s", b)
	var rec struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	require.NoError(t, json.Unmarshal(b, &rec), "%s", b)
	assert.Equal(t, "queued", rec.State)
	assert.Equal(t, "budget", rec.Reason, "%s", b)
	code, _, b = apiDo(t, "GET", base+"/v1/batches/cat-acme", tok["acme"], "")
	require.Equal(t, 200, code, "%s", b)
	var batch struct {
		Reason    string     `json:"reason"`
		ResumesAt *time.Time `json:"resumesAt"`
		Remaining int64      `json:"remaining"`
	}
	require.NoError(t, json.Unmarshal(b, &batch), "%s", b)
	assert.Equal(t, "budget", batch.Reason, "%s", b)
	assert.Equal(t, int64(20), batch.Remaining)
	require.NotNil(t, batch.ResumesAt, "%s", b)
	tomorrow := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	assert.Equal(t, tomorrow, batch.ResumesAt.UTC(), "the next UTC day")
	out, err := s.cropq("status", "--budget")
	require.NoError(t, err)
	assert.Regexp(t, `acme\s+30\s+30\s+day\s+`+tomorrow.Format(time.RFC3339)+`\s+\(spent: work waits\)`, out)
	out, err = s.cropq("status", waiting[1])
	require.NoError(t, err)
	assert.Contains(t, out, "waiting for budget")

	// The next day: the workers' budget clock moves on, and the 20 run.
	for _, p := range s.procs {
		if p.name == "worker" {
			p.stop()
		}
	}
	s.startWorker("CROPQ_BUDGET_CLOCK_OFFSET=24h")
	s.startWorker("CROPQ_BUDGET_CLOCK_OFFSET=24h")
	s.awaitAll(t, acme, 2*time.Minute)
	var paid int
	for _, id := range acme {
		rec, err := st.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, status.Succeeded, rec.State, id)
		paid += rec.PaidCalls
	}
	assert.Equal(t, 50, paid, "one paid call per request of acme's, over two periods")
	assert.Equal(t, int64(70), s.stats().Calls["200"])
	today, err := s.rdb.Get(ctx, rediskey.Default.Budget("acme", "d"+time.Now().UTC().Format("20060102"))).Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(30), today, "the first period's count stayed at its cap")
}
