package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/status"
)

// The attack of issue 21 (item 8): acme sends everything urgent, through
// the HTTP API with its own token, ahead of globex's normal batch. Lanes
// stay strict only within acme's urgent share of the quota (a quarter of
// 8/s at equal weights: 2/s, 2 at once); beyond it acme's requests are
// served as its normal work, and their records say so. globex's batch gets
// half of the calls instead of waiting for all of acme's flood, and
// initech's two urgent requests (within its share) still go first. Counts
// and order, not durations: the worker's clock orders the results.
func TestAnUrgentFloodLeavesOtherTenantsTheirShare(t *testing.T) {
	s := newStack(t, stackOptions{emulatorRate: 10})
	apiAddr, opsAddr := freeAddr(t), freeAddr(t)
	tok := map[string]string{"acme": "acme-e2e-token-0123456789", "globex": "globex-e2e-token-0123456789", "initech": "initech-e2e-token-0123456789"}
	s.env = append(s.env, "CROPQ_QUOTA_RATE=8", "CROPQ_QUOTA_BURST=1", "CROPQ_FEED_LEAD=1s",
		"CROPQ_TENANT_WEIGHTS=acme=1,globex=1", // named in metrics; initech counts as ~other
		"CROPQ_API_TOKENS=acme:"+tok["acme"]+",globex:"+tok["globex"]+",initech:"+tok["initech"], "CROPQ_API_ADDR="+apiAddr)
	s.start("api", "api")
	base := "http://" + apiAddr
	s.awaitHTTP(base + "/healthz")

	img := s.images + "/" + firstImage(t)
	submit := func(tenant, prefix string, n int, priority string) []string {
		var items, ids []string
		for i := range n {
			id := fmt.Sprintf("%s-%03d", prefix, i)
			ids = append(ids, id)
			items = append(items, fmt.Sprintf(`{"requestId":%q,"imageUrl":%q,"targetWidth":300,"targetHeight":300,"priority":%q}`, id, img, priority))
		}
		code, _, b := apiDo(t, "POST", base+"/v1/crops/batch", tok[tenant], `{"items":[`+strings.Join(items, ",")+`]}`)
		require.Equal(t, 202, code, "%s", b)
		return ids
	}
	// All of it waits in the backlog before the worker starts, acme's
	// flood first: the feeder sees it whole, however loaded the machine.
	acme := submit("acme", "flood", 120, "urgent")
	globex := submit("globex", "gx", 20, "normal")
	initech := submit("initech", "in", 2, "urgent")
	s.startWorker("CROPQ_WORKER_ADDR=" + opsAddr)

	s.awaitAll(t, append(append([]string{}, globex...), initech...), 120*time.Second)
	s.awaitAll(t, acme, 120*time.Second)
	all := s.finished(t, append(append(append([]string{}, acme...), globex...), initech...))
	require.Len(t, all, 142, "everything succeeded")

	// How much of acme's flood was done before globex's last request:
	// all 120 if urgent were free for all; about as many as globex's 20
	// at equal shares (acme's urgent share counts against its half).
	lastG := 0
	for i, rec := range all {
		if rec.Tenant == "globex" {
			lastG = i
		}
	}
	acmeBefore := 0
	for _, rec := range all[:lastG] {
		if rec.Tenant == "acme" {
			acmeBefore++
		}
	}
	t.Logf("acme's urgent requests done before globex's last normal one: %d of 120 (globex's 20 were done %d-th of 142)", acmeBefore, lastG+1)
	assert.LessOrEqual(t, acmeBefore, 40, "globex got at least a third of the calls while acme flooded (half, less the window)")

	// initech's urgent requests, within its share, were in the first
	// window (8 tasks) with acme's first two.
	for i, rec := range all {
		if rec.Tenant == "initech" {
			assert.Less(t, i, 12, "initech's %s went first", rec.RequestID)
		}
	}

	// The records say who was served as normal, and the metric agrees.
	demoted := 0
	for _, rec := range all {
		switch {
		case rec.Tenant != "acme":
			assert.Empty(t, rec.ServedAs, "%s was served in its own lane", rec.RequestID)
		case rec.ServedAs != "":
			assert.Equal(t, "normal", rec.ServedAs)
			assert.Equal(t, "urgent", rec.Priority, "the record keeps what was asked")
			demoted++
		}
	}
	for _, id := range acme[:2] {
		assert.Empty(t, s.record(id).ServedAs, "acme's first two fit its burst: its order holds")
	}
	assert.Empty(t, s.record(acme[119]).ServedAs, "alone again once globex was done, acme is served as urgent")
	t.Logf("acme's requests served as normal: %d of 120", demoted)
	assert.Positive(t, demoted)
	assert.LessOrEqual(t, demoted, acmeBefore+12, "demoted only while globex had work (its results, the window and the slots)")

	var some status.Record
	for _, rec := range all {
		if rec.ServedAs != "" {
			some = rec
			break
		}
	}
	require.NotEmpty(t, some.RequestID)
	code, _, b := apiDo(t, "GET", base+"/v1/crops/"+some.RequestID, tok["acme"], "")
	require.Equal(t, 200, code, "%s", b)
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, "normal", got["servedAs"], "the API shows it")

	m := scrape(t, "http://"+opsAddr+"/metrics")
	assert.Equal(t, float64(demoted), m[`cropq_urgent_demoted_total{tenant=acme}`])
	for k := range m {
		if strings.HasPrefix(k, "cropq_urgent_demoted_total") {
			assert.Equal(t, `cropq_urgent_demoted_total{tenant=acme}`, k, "only acme was demoted")
		}
	}
}
