package redis

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/internal/redistest"
)

// TestLuaWakeRoundTrip checks that what the scripts' wake publishes on the
// unlock channel is read back by parseWake as the same key and waiter,
// whatever bytes the key holds (a key that starts with "\x00" or looks
// like the named form must not be misread), with the revision of a commit
// that hands the turn on to a named waiter, and that a message of none of
// the forms is reported as such.
func TestLuaWakeRoundTrip(t *testing.T) {
	srv := redistest.Start(t, nil)
	client := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ps := client.Subscribe(ctx, "wake")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	script := goredis.NewScript(luaCore + luaLocks + `
local next, rev = ARGV[2], tonumber(ARGV[3])
if next == '' then next = false end
if rev == 0 then rev = nil end
wake('wake', '0', ARGV[1], next, rev)
return 1
`)
	cases := []struct {
		key, next string
		rev       uint64
	}{
		{"k", "", 0}, {"k", "0123abcd", 0}, {"\x00k", "", 0}, {"\x00k", "w", 0}, {"3:abc", "", 0},
		{"\x003:abc", "", 0}, {"k", "a:b", 0}, {"k:x", "12:x", 0}, {"ключ", "w", 0},
		{"k", "0123abcd", 1}, {"\x00=1:k", "w", 42}, {"=3:k", "1:2", 1 << 52}, {"\x00k", "w", 7},
		// Without a named waiter the revision is left out: nobody waits
		// for that turn, and older readers keep reading the message.
		{"k", "", 5},
	}
	for _, c := range cases {
		if err := script.Run(ctx, client, nil, c.key, c.next, c.rev).Err(); err != nil {
			t.Fatalf("wake(%q, %q, %d): %v", c.key, c.next, c.rev, err)
		}
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := c.rev
		if c.next == "" {
			want = 0
		}
		key, next, rev, ok := parseWake(m.Payload)
		if !ok || key != c.key || next != c.next || rev != want {
			t.Errorf("wake(%q, %q, %d) published %q, read back as %q, %q, %d, %v", c.key, c.next, c.rev, m.Payload, key, next, rev, ok)
		}
	}
	for _, bad := range []string{"\x00", "\x00:k", "\x00x:k", "\x009:k", "\x00-1:k", "\x00=", "\x00=:1:wk", "\x00=0:1:wk", "\x00=x:1:wk", "\x00=5:", "\x00=5:9:k"} {
		if key, next, _, ok := parseWake(bad); ok {
			t.Errorf("parseWake(%q) = %q, %q, true; want not ok", bad, key, next)
		}
	}
}
