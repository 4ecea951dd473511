package limit

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkByParts is what a gateway did before Check, with the store's other methods:
// count the quotas one by one, giving back those counted when one is used up, then take
// the tokens, giving back the quotas when a bucket is empty.
func checkByParts(m *Memory, quotas []QuotaRequest, reqs []Request, now time.Time, qout []QuotaDecision, out []Decision) (bool, int) {
	ctx := context.Background()
	for i, q := range quotas {
		d, _ := m.AddQuota(ctx, q.PolicyID, q.Key, q.Quota, q.Loc, now, 1)
		qout[i] = d
		if !d.Allowed {
			for j := range i {
				_, _ = m.AddQuota(ctx, quotas[j].PolicyID, quotas[j].Key, quotas[j].Quota, quotas[j].Loc, now, -1)
			}
			return false, i
		}
	}
	ok, _ := m.Take(ctx, reqs, now, out)
	if !ok {
		for _, q := range quotas {
			_, _ = m.AddQuota(ctx, q.PolicyID, q.Key, q.Quota, q.Loc, now, -1)
		}
	}
	return ok, -1
}

// sameDecision compares decisions up to the rounding of a token taken and given back,
// which the one-by-one methods do for a refused call and Check does not.
func sameDecision(a, b Decision) bool {
	near := func(x, y time.Duration) bool { return (x - y).Abs() <= time.Microsecond }
	return a.Allowed == b.Allowed && a.Remaining == b.Remaining && near(a.Reset, b.Reset) && near(a.RetryAfter, b.RetryAfter)
}

// TestCheckAsByParts runs random calls through Check and, on another store, through the
// one-at-a-time methods, and asks both for the same answers and the same state.
func TestCheckAsByParts(t *testing.T) {
	users := []string{"u-1", "u-2", "u-3"}
	ips := []string{"10.0.0.1", "10.0.0.2"}
	paris := mustLoad(t, "Europe/Paris")
	rate := Rate{Events: 2, Per: time.Second}
	call := func(u, ip string) ([]QuotaRequest, []Request) {
		return []QuotaRequest{
				{PolicyID: "s/user-day", Key: u, Quota: Quota{Limit: 60, Period: Day}, Loc: paris},
				{PolicyID: "s/user-month", Key: u, Quota: Quota{Limit: 1000, Period: Month}},
			}, []Request{
				{PolicyID: "s/user", Key: u, Rate: rate, Burst: 3},
				{PolicyID: "s/none", Key: u}, // no limit
				{PolicyID: "s/ip", Key: ip, Rate: Rate{Events: 5, Per: time.Second}},
			}
	}
	a, b := NewMemory(1000), NewMemory(1000)
	rnd := rand.New(rand.NewPCG(1, 2))
	now := t0
	var allowed, byQuota, byRate int
	for step := range 20000 {
		switch r := rnd.IntN(1000); {
		case r < 600:
		case r < 997:
			now = now.Add(time.Duration(rnd.IntN(900)) * time.Millisecond)
		default:
			now = now.Add(time.Duration(rnd.IntN(30)) * time.Hour)
		}
		quotas, reqs := call(users[rnd.IntN(len(users))], ips[rnd.IntN(len(ips))])
		qa, oa := make([]QuotaDecision, len(quotas)), make([]Decision, len(reqs))
		qb, ob := make([]QuotaDecision, len(quotas)), make([]Decision, len(reqs))
		lenBefore := a.Len()
		okA, err := a.Check(context.Background(), quotas, reqs, now, qa, oa)
		if err != nil {
			t.Fatal(err)
		}
		okB, usedUp := checkByParts(b, quotas, reqs, now, qb, ob)
		if okA != okB {
			t.Fatalf("step %d at %v: Check says %v, the methods one by one %v", step, now, okA, okB)
		}
		switch {
		case okA:
			allowed++
			for i := range qa {
				if qa[i] != qb[i] {
					t.Fatalf("step %d: quota %d: Check %+v, AddQuota %+v", step, i, qa[i], qb[i])
				}
			}
			for i := range oa {
				if !sameDecision(oa[i], ob[i]) {
					t.Fatalf("step %d: bucket %d: Check %+v, Take %+v", step, i, oa[i], ob[i])
				}
			}
		case usedUp >= 0:
			byQuota++
			for i := range usedUp {
				if !qa[i].Allowed {
					t.Fatalf("step %d: quota %d refused by Check, %d was the first used up", step, i, usedUp)
				}
			}
			if qa[usedUp].Allowed || !qa[usedUp].ResetsAt.Equal(qb[usedUp].ResetsAt) || qa[usedUp].Limit != qb[usedUp].Limit {
				t.Fatalf("step %d: used-up quota: Check %+v, AddQuota %+v", step, qa[usedUp], qb[usedUp])
			}
		default:
			byRate++
			for i := range oa {
				if !sameDecision(oa[i], ob[i]) {
					t.Fatalf("step %d: refused call, bucket %d: Check %+v, Take %+v", step, i, oa[i], ob[i])
				}
			}
		}
		if !okA && a.Len() != lenBefore {
			t.Fatalf("step %d: a refused call left %d new entries", step, a.Len()-lenBefore)
		}
		// Both stores hold the same usage and tokens for every caller.
		for _, u := range users {
			qs, rs := call(u, ips[0])
			for _, q := range qs {
				ua, _ := a.QuotaUsage(context.Background(), q.PolicyID, q.Key, q.Quota, q.Loc, now)
				ub, _ := b.QuotaUsage(context.Background(), q.PolicyID, q.Key, q.Quota, q.Loc, now)
				if ua.Used != ub.Used || !ua.ResetsAt.Equal(ub.ResetsAt) {
					t.Fatalf("step %d: %s %s: Check's store %+v, the other %+v", step, q.PolicyID, u, ua, ub)
				}
			}
			pa, pb := make([]Decision, len(rs)), make([]Decision, len(rs))
			_ = a.Peek(context.Background(), rs, now, pa)
			_ = b.Peek(context.Background(), rs, now, pb)
			for i := range pa {
				if !sameDecision(pa[i], pb[i]) {
					t.Fatalf("step %d: %s %s: Check's store %+v, the other %+v", step, rs[i].PolicyID, u, pa[i], pb[i])
				}
			}
		}
	}
	if allowed < 1000 || byQuota < 100 || byRate < 500 {
		t.Fatalf("the walk did not reach every case: %d allowed, %d refused by a quota, %d by a rate limit", allowed, byQuota, byRate)
	}
	t.Logf("%d allowed, %d refused by a quota, %d by a rate limit", allowed, byQuota, byRate)
}

func TestCheckErrors(t *testing.T) {
	m := NewMemory(100)
	ctx := context.Background()
	q := []QuotaRequest{{PolicyID: "p", Key: "k", Quota: Quota{Limit: 0, Period: Day}}}
	if _, err := m.Check(ctx, q, nil, t0, make([]QuotaDecision, 1), nil); err == nil {
		t.Fatal("a quota of 0: no error")
	}
	q[0].Quota.Limit = 5
	if _, err := m.Check(ctx, q, []Request{userReq("u")}, t0, make([]QuotaDecision, 1), nil); err == nil {
		t.Fatal("no room for the decisions: no error")
	}
	if m.Len() != 0 {
		t.Fatalf("a failed Check kept %d entries", m.Len())
	}
}

// TestCheckManyLimits goes past the limits Check keeps on the stack, with several in one
// shard.
func TestCheckManyLimits(t *testing.T) {
	m := NewMemory(1 << 12)
	var reqs []Request
	for i := range checkInline + 4 {
		reqs = append(reqs, Request{PolicyID: "p" + string(rune('a'+i)), Key: "k", Rate: Rate{Events: 1, Per: time.Minute}})
	}
	out := make([]Decision, len(reqs))
	if ok, err := m.Check(context.Background(), nil, reqs, t0, nil, out); err != nil || !ok {
		t.Fatalf("first call: %v, %v", ok, err)
	}
	if ok, _ := m.Check(context.Background(), nil, reqs, t0, nil, out); ok {
		t.Fatal("second call within the minute: allowed")
	}
	for i := range out {
		if out[i].Allowed || out[i].RetryAfterSeconds() != 60 {
			t.Fatalf("limit %d: %+v, want refused for 60 s", i, out[i])
		}
	}
	if m.Len() != len(reqs) {
		t.Fatalf("%d entries, want %d", m.Len(), len(reqs))
	}
}

// TestCheckConcurrent has many goroutines call for the same caller at once: the quota
// and the bucket allow exactly as many calls as they hold, and refused calls count
// nothing, so the usage left is the number of calls allowed.
func TestCheckConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		quota       int64
		burst       int64
		wantAllowed int64
	}{
		{"quota runs out first", 300, 1000, 300},
		{"bucket runs out first", 1000, 250, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMemory(1000)
			quotas := []QuotaRequest{{PolicyID: "s/user-day", Key: "u-1", Quota: Quota{Limit: tc.quota, Period: Day}}}
			reqs := []Request{
				{PolicyID: "s/user", Key: "u-1", Rate: Rate{Events: 1, Per: 24 * time.Hour}, Burst: tc.burst},
				{PolicyID: "s/ip", Key: "10.0.0.1", Rate: Rate{Events: 1 << 30, Per: time.Second}},
			}
			const goroutines, calls = 8, 200
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range goroutines {
				wg.Go(func() {
					qout, out := make([]QuotaDecision, 1), make([]Decision, 2)
					for range calls {
						ok, err := m.Check(context.Background(), quotas, reqs, t0, qout, out)
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if allowed.Load() != tc.wantAllowed {
				t.Fatalf("%d calls allowed, want %d", allowed.Load(), tc.wantAllowed)
			}
			u, _ := m.QuotaUsage(context.Background(), "s/user-day", "u-1", quotas[0].Quota, nil, t0)
			if u.Used != tc.wantAllowed {
				t.Fatalf("quota used %d, want %d (the calls allowed)", u.Used, tc.wantAllowed)
			}
		})
	}
}
