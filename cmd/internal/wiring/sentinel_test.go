package wiring

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cropq/cropq/cropapi"
	"github.com/cropq/cropq/internal/records"
	"github.com/cropq/cropq/internal/testenv"
	"github.com/cropq/cropq/producer"
	"github.com/cropq/cropq/status"
	"github.com/cropq/cropq/tasks"
)

// A redis-sentinel:// URL gives clients that follow a failover: when the
// primary crashes, requests recorded and enqueued before it are still there,
// on the promoted replica, and new ones go to it, for the go-redis client
// and for asynq's (the web UI's) alike.
func TestRedisSentinelFailover(t *testing.T) {
	ctx := context.Background()
	primary := testenv.Redis(t)
	replica := testenv.RedisReplica(t, primary)
	sentinel := testenv.RedisSentinel(t, "cropq", primary)
	url := fmt.Sprintf("redis-sentinel://%s/0?master=cropq", sentinel.Addr())

	rdb, err := newRedisClient(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr()})
	t.Cleanup(func() { _ = sc.Close() })
	replicaDirect := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	t.Cleanup(func() { _ = replicaDirect.Close() })

	limits := cropapi.Limits{AllowPrivateHosts: true}
	prod := producer.New(rdb, producer.Config{Task: tasks.Options{Limits: limits}})
	t.Cleanup(func() { _ = prod.Close() })
	enqueue := func(id string) {
		t.Helper()
		res := prod.Enqueue(ctx, tasks.Request{RequestID: id, ImageURL: "https://cdn.example.com/" + id + ".jpg", Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}})
		require.NoError(t, res.Err)
		require.Equal(t, producer.Enqueued, res.Outcome)
	}
	enqueue("before")

	// The replica must have the data before it is promoted; WAIT returns
	// once it has acknowledged every write so far.
	require.Eventually(t, func() bool {
		n, err := rdb.Do(ctx, "WAIT", 1, 1000).Int()
		return err == nil && n == 1
	}, 20*time.Second, 50*time.Millisecond, "replica in sync")

	// The sentinel must know the replica (it learns it from INFO on the
	// primary) before the primary fails, or it has nobody to promote.
	require.Eventually(t, func() bool {
		replicas, err := sc.Replicas(ctx, "cropq").Result()
		return err == nil && len(replicas) == 1
	}, 30*time.Second, 100*time.Millisecond, "sentinel knows the replica")

	// The primary crashes; the sentinel sees it down after 1 s and promotes
	// the replica.
	require.NoError(t, primary.Kill())
	require.Eventually(t, func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, "cropq").Result()
		role, rerr := replicaDirect.Do(ctx, "ROLE").Slice()
		return err == nil && rerr == nil && len(addr) == 2 && addr[0]+":"+addr[1] == replica.Addr() && role[0] == "master"
	}, 30*time.Second, 100*time.Millisecond, "the replica is promoted")

	// The same clients, without a restart, now write to the new primary.
	require.Eventually(t, func() bool {
		res := prod.Enqueue(ctx, tasks.Request{RequestID: "after", ImageURL: "https://cdn.example.com/after.jpg", Params: tasks.Params{TargetWidth: 300, TargetHeight: 300}})
		return res.Err == nil && (res.Outcome == producer.Enqueued || res.Outcome == producer.Known)
	}, 30*time.Second, 100*time.Millisecond, "enqueue after the failover")
	for _, id := range []string{"before", "after"} {
		rec, err := prod.Get(ctx, id)
		require.NoError(t, err, id)
		assert.Equal(t, status.Queued, rec.State, id)
		n, err := replicaDirect.Exists(ctx, records.NewStore(replicaDirect, status.Config{}).Key(id)).Result()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, "%s is on the promoted replica", id)
	}

	opt, err := AsynqConnOpt(url)
	require.NoError(t, err)
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { _ = insp.Close() })
	for _, id := range []string{"before", "after"} {
		info, err := insp.GetTaskInfo(tasks.DefaultQueue, id)
		require.NoError(t, err, id)
		assert.Equal(t, asynq.TaskStatePending, info.State, id)
	}
}
