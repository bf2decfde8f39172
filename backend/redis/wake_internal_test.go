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
// like the named form must not be misread), and that a message of
// neither form is reported as such.
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
local next = ARGV[2]
if next == '' then next = false end
wake('wake', '0', ARGV[1], next)
return 1
`)
	cases := []struct{ key, next string }{
		{"k", ""}, {"k", "0123abcd"}, {"\x00k", ""}, {"\x00k", "w"}, {"3:abc", ""},
		{"\x003:abc", ""}, {"k", "a:b"}, {"k:x", "12:x"}, {"ключ", "w"},
	}
	for _, c := range cases {
		if err := script.Run(ctx, client, nil, c.key, c.next).Err(); err != nil {
			t.Fatalf("wake(%q, %q): %v", c.key, c.next, err)
		}
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		key, next, ok := parseWake(m.Payload)
		if !ok || key != c.key || next != c.next {
			t.Errorf("wake(%q, %q) published %q, read back as %q, %q, %v", c.key, c.next, m.Payload, key, next, ok)
		}
	}
	for _, bad := range []string{"\x00", "\x00:k", "\x00x:k", "\x009:k", "\x00-1:k"} {
		if key, next, ok := parseWake(bad); ok {
			t.Errorf("parseWake(%q) = %q, %q, true; want not ok", bad, key, next)
		}
	}
}
