package redis_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/internal/redistest"
)

// TestOlderReleaseEventsApply has an instance of the previous release
// publish its commit's event in wire format version 1 (a Backend.Commit
// and a Publish of backend.EncodeEventV1, as that release's script framed
// it): an instance of this release applies it as an event, with no
// catch-up.
func TestOlderReleaseEventsApply(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "upgrade-v1-events"
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	c := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	before := c.Stats()
	var head backend.Head
	for i := 1; i <= 3; i++ {
		bt := backend.Batch{Ops: []backend.Op{{Key: "k", Value: fmt.Appendf(nil, "%d", i)}}, Codec: "json", Origin: "older-release"}
		h, err := b.Commit(ctx, name, bt)
		if err != nil {
			t.Fatal(err)
		}
		p, err := backend.EncodeEventV1(backend.EventFromBatch(h, bt))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, backend.DefaultChannel(name), p); err != nil {
			t.Fatal(err)
		}
		head = h
	}
	waitConverged(t, map[string]int{"k": 3}, head.Revision, c)
	if after := c.Stats(); after != before {
		t.Fatalf("applying version 1 events changed the stats from %+v to %+v; want them applied as events, without a catch-up", before, after)
	}
}

// TestUpgradeFromOlderReleaseState starts from a context as the previous
// release left it: commit ids that are not lowercase hex of even length,
// no wire forms of epoch and commit in meta (wepoch, wcommit, wfor), and
// its change log in a stream. Writes of this release continue its history
// (the script converts the ids it finds), and another instance applies
// their events one by one, with no snapshot after its first.
func TestUpgradeFromOlderReleaseState(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "upgrade-state"
	ctx := faultCtx(t)
	tag := "{contextd:" + name + "}"
	for _, args := range [][]string{
		{"HSET", tag + ":meta", "codec", "json", "epoch", "0a1b2c3d4e5f6789zz", "rev", "3", "commit", "0a1b2c3d4e5f67893", "parent", "0a1b2c3d4e5f67892"},
		{"HSET", tag + ":data", "k", "3", "other", "1"},
		{"HSET", tag + ":revs", "k", "3 0a1b2c3d4e5f67893", "other", "1"},
		{"XADD", tag + ":log", "*", "r", "3", "e", "an event of the older release"},
	} {
		if _, err := srv.Do(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	writer := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	reader := openInstance[int](t, newBackend(t, srv, nil), name, noResync)
	for i := 4; i <= 6; i++ {
		if err := writer.UpdateContext(ctx, "k", i); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, map[string]int{"k": 6, "other": 1}, 6, writer, reader)
	if s := reader.Stats(); s.Snapshots != 1 || s.InvalidEvents != 0 || s.Gaps != 0 {
		t.Fatalf("reader stats %+v; want the first snapshot only, and every event applied", s)
	}
	// The first commit of this release converted the older ids; the next
	// ones read their wire forms from meta.
	if f, err := metaField(ctx, srv, name, "wfor"); err != nil || f == "" {
		t.Fatalf("meta wfor = %q, %v; want the head's commit id", f, err)
	}
	// The reader catches up from the new change log across the upgrade.
	if err := writer.Delete(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, map[string]int{"k": 6}, 7, reader)
}

// TestScriptEventMatchesEncodeEvent checks that the commit script builds
// every event byte for byte as backend.EncodeEvent does (wire format
// version 2): puts carried and omitted, deletes, empty and long values
// (two-byte lengths), revisions past one varint byte, origins in hex and
// not.
func TestScriptEventMatchesEncodeEvent(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, nil)
	const name = "script-event-bytes"
	ctx := faultCtx(t)
	b := newBackend(t, srv, nil)
	channel := backend.DefaultChannel(name)
	long := make([]byte, 300)
	for i := range long {
		long[i] = byte(i)
	}
	batches := []backend.Batch{
		{Ops: []backend.Op{{Key: "k", Value: []byte("v")}}, Origin: "0123456789abcdef", EventValueLimit: 64},
		{Ops: []backend.Op{{Key: "k", Delete: true}}, Origin: "Origin not in hex"},
		{Ops: []backend.Op{{Key: "a", Value: long}, {Key: "b", Value: []byte{}}, {Key: "ключ", Value: []byte("x")}, {Key: "gone", Delete: true}}, Origin: "ab", EventValueLimit: 300},
		{Ops: []backend.Op{{Key: "a", Value: long}, {Key: "b", Value: []byte("fits")}}, Origin: "", EventValueLimit: 10},
	}
	// Puts with a TTL carry their deadline (flag 4), by the server's
	// clock, alone and beside other ops, with values carried or omitted.
	batches = append(batches,
		backend.Batch{Ops: []backend.Op{{Key: "s", Value: []byte("v"), TTL: time.Minute}}, Origin: "0123456789abcdef", EventValueLimit: 64},
		backend.Batch{Ops: []backend.Op{{Key: "s", Value: []byte("v"), TTL: time.Hour}, {Key: "t", Value: long, TTL: 2 * time.Second}, {Key: "u", Value: []byte("w")}, {Key: "gone", Delete: true}}, Origin: "ab", EventValueLimit: 10},
	)
	for i := 0; i < 140; i++ { // revisions past 127
		batches = append(batches, backend.Batch{Ops: []backend.Op{{Key: "n", Value: fmt.Appendf(nil, "%d", i)}}, Origin: "0123456789abcdef", EventValueLimit: 1 << 16})
	}
	for i, bt := range batches {
		bt.Codec = "json"
		before := time.Now()
		h, err := b.CommitAndPublish(ctx, name, bt, channel)
		if err != nil {
			t.Fatal(err)
		}
		after := time.Now()
		got, err := srv.Do(ctx, "HGET", "{contextd:"+name+"}:ring", fmt.Sprint(h.Revision%1000))
		if err != nil {
			t.Fatal(err)
		}
		ev := backend.EventFromBatch(h, bt)
		if gotText, ok := got.(string); ok {
			if sent, err := backend.DecodeEvent([]byte(gotText)); err == nil && len(sent.Changes) == len(ev.Changes) {
				for j, op := range bt.Ops {
					if op.TTL == 0 {
						continue
					}
					// The server's clock, on this machine: within the call.
					exp := sent.Changes[j].Expires
					if exp.Before(before.Add(op.TTL-time.Second)) || exp.After(after.Add(op.TTL+time.Second)) {
						t.Errorf("batch %d: %q expires at %v, want %v after the commit (%v..%v)", i, op.Key, exp, op.TTL, before, after)
					}
					ev.Changes[j].Expires = exp
				}
			}
		}
		want, err := backend.EncodeEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Fatalf("batch %d, revision %d: the script's event\n% x\ndiffers from EncodeEvent's\n% x", i, h.Revision, got, want)
		}
	}
}
