package redistest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/contextd-go/contextd/internal/redistest"
)

// testCtx is a context for one test, bounded so a hung server fails the test
// instead of the whole binary.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func do(t *testing.T, ctx context.Context, s *redistest.Server, args ...string) any {
	t.Helper()
	v, err := s.Do(ctx, args...)
	if err != nil {
		t.Fatalf("%s %v: %v", s.Addr(), args, err)
	}
	return v
}

func wantReply(t *testing.T, ctx context.Context, s *redistest.Server, want any, args ...string) {
	t.Helper()
	if got := do(t, ctx, s, args...); !reflect.DeepEqual(got, want) {
		t.Fatalf("%v = %#v, want %#v", args, got, want)
	}
}

func wantError(t *testing.T, err error, prefix string) {
	t.Helper()
	var rerr redistest.Error
	if !errors.As(err, &rerr) || !strings.HasPrefix(string(rerr), prefix) {
		t.Fatalf("error = %v, want a redistest.Error starting with %q", err, prefix)
	}
}

func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{
		"":          0,
		"123456789": 0x31C3, // the CRC-16/XMODEM check value
		"foo":       12182,
		"bar":       5061,
	} {
		if got := redistest.KeySlot(key); got != want {
			t.Errorf("KeySlot(%q) = %d, want %d", key, got, want)
		}
	}
	for key, same := range map[string]string{
		"{user1000}.following": "user1000",
		"foo{bar}{zap}":        "bar",
		"foo{{bar}}zap":        "{bar",
		"{ctx}":                "ctx",
		"foo{}{bar}":           "foo{}{bar}", // empty tag: the whole key
		"foo{bar":              "foo{bar",    // unclosed: the whole key
	} {
		if got, want := redistest.KeySlot(key), redistest.KeySlot(same); got != want {
			t.Errorf("KeySlot(%q) = %d, want KeySlot(%q) = %d", key, got, same, want)
		}
	}
}

// fakeTB records Skip and Fatal instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skip(args ...any)                  { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Skipf(format string, args ...any)  { f.skipped = fmt.Sprintf(format, args...) }
func (f *fakeTB) Fatal(args ...any)                 { f.failed = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestRequire(t *testing.T) {
	bin, binErr := exec.LookPath("redis-server")

	t.Setenv("CONTEXTD_REDIS_SERVER", "")
	t.Setenv("CONTEXTD_REQUIRE_REDIS", "")
	t.Setenv("PATH", t.TempDir())

	f := &fakeTB{TB: t}
	if got := redistest.Require(f); got != "" || f.failed != "" {
		t.Fatalf("without redis-server: Require = %q, failed %q", got, f.failed)
	}
	for _, want := range []string{"apt-get install redis-server", "brew install redis", "CONTEXTD_REQUIRE_REDIS=1"} {
		if !strings.Contains(f.skipped, want) {
			t.Errorf("skip message %q does not mention %q", f.skipped, want)
		}
	}

	t.Setenv("CONTEXTD_REQUIRE_REDIS", "1")
	f = &fakeTB{TB: t}
	redistest.Require(f)
	if f.failed == "" || f.skipped != "" {
		t.Errorf("with CONTEXTD_REQUIRE_REDIS=1: failed %q, skipped %q; want a failure", f.failed, f.skipped)
	}

	t.Setenv("CONTEXTD_REQUIRE_REDIS", "")
	t.Setenv("CONTEXTD_REDIS_SERVER", "/nonexistent/redis-server")
	f = &fakeTB{TB: t}
	redistest.Require(f)
	if !strings.Contains(f.failed, "CONTEXTD_REDIS_SERVER") {
		t.Errorf("with a bad CONTEXTD_REDIS_SERVER: failed %q, skipped %q; want a failure naming it", f.failed, f.skipped)
	}

	if binErr == nil {
		t.Setenv("CONTEXTD_REDIS_SERVER", bin)
		f = &fakeTB{TB: t}
		if got := redistest.Require(f); got != bin || f.failed != "" || f.skipped != "" {
			t.Errorf("with CONTEXTD_REDIS_SERVER=%s: Require = %q (failed %q, skipped %q)", bin, got, f.failed, f.skipped)
		}
	}
}

// TestNoLeftovers runs a server through its whole life and checks that no
// goroutine stays behind. It is not parallel, so the count is stable.
func TestNoLeftovers(t *testing.T) {
	redistest.Require(t)
	before := runtime.NumGoroutine()
	t.Run("life", func(t *testing.T) {
		ctx := testCtx(t)
		s := redistest.Start(t, &redistest.Options{AppendOnly: true})
		do(t, ctx, s, "SET", "k", "v")
		s.Kill()
		s.Restart(t)
		s.Stop()
		s.Restart(t)
		wantReply(t, ctx, s, "v", "GET", "k")
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

func TestServer(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redistest.Start(t, nil)

	if want := "127.0.0.1:" + strconv.Itoa(s.Port()); s.Addr() != want {
		t.Errorf("Addr() = %q, want %q", s.Addr(), want)
	}
	if s.Password() != "" {
		t.Errorf("Password() = %q, want none", s.Password())
	}
	wantReply(t, ctx, s, "PONG", "PING")
	wantReply(t, ctx, s, "OK", "SET", "k", "v")
	wantReply(t, ctx, s, "v", "GET", "k")
	wantReply(t, ctx, s, nil, "GET", "missing")
	wantReply(t, ctx, s, int64(1), "INCR", "n")
	wantReply(t, ctx, s, int64(2), "RPUSH", "l", "a", "")
	wantReply(t, ctx, s, []any{"a", ""}, "LRANGE", "l", "0", "-1")
	wantReply(t, ctx, s, []any{}, "LRANGE", "nolist", "0", "-1")
	wantReply(t, ctx, s, "OK", "DEBUG", "SLEEP", "0")
	_, err := s.Do(ctx, "INCR", "l")
	wantError(t, err, "WRONGTYPE")
	_, err = s.Do(ctx, "NOSUCHCOMMAND")
	wantError(t, err, "ERR unknown command")

	info, err := s.Info(ctx, "persistence")
	if err != nil || info["aof_enabled"] != "0" {
		t.Errorf("Info(persistence) = aof_enabled %q, %v; want 0", info["aof_enabled"], err)
	}
	if tail := s.LogTail(5); !strings.Contains(tail, "Ready to accept connections") {
		t.Errorf("LogTail(5) = %q, want the ready line", tail)
	}

	// A Conn keeps state: a transaction, with an error reply inside EXEC's.
	c, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, cmd := range [][]string{{"MULTI"}, {"SET", "t", "1"}, {"INCR", "l"}} {
		if _, err := c.Do(ctx, cmd...); err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
	}
	v, err := c.Do(ctx, "EXEC")
	if a, _ := v.([]any); err != nil || len(a) != 2 || a[0] != "OK" {
		t.Fatalf("EXEC = %#v, %v", v, err)
	} else if _, ok := a[1].(redistest.Error); !ok {
		t.Fatalf("EXEC[1] = %#v, want a redistest.Error", a[1])
	}
}

func TestPauseAndKillClients(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redistest.Start(t, nil)

	if err := s.Pause(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := s.Do(short, "SET", "k", "v")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SET during CLIENT PAUSE: %v, want it blocked until the deadline", err)
	}
	// Once the pause is over, the command runs.
	wantReply(t, ctx, s, "OK", "SET", "k", "v")

	sub, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	wantSub := []any{"subscribe", "ch", int64(1)}
	if v, err := sub.Do(ctx, "SUBSCRIBE", "ch"); err != nil || !reflect.DeepEqual(v, wantSub) {
		t.Fatalf("SUBSCRIBE = %#v, %v", v, err)
	}
	wantReply(t, ctx, s, int64(1), "PUBLISH", "ch", "hello")
	if v, err := sub.Receive(ctx); err != nil || !reflect.DeepEqual(v, []any{"message", "ch", "hello"}) {
		t.Fatalf("Receive = %#v, %v", v, err)
	}
	n, err := s.KillClients(ctx, "pubsub")
	if err != nil || n != 1 {
		t.Fatalf("KillClients(pubsub) = %d, %v; want 1", n, err)
	}
	if v, err := sub.Receive(ctx); err == nil {
		t.Fatalf("Receive on a killed connection = %#v", v)
	}
	if n, err := s.KillClients(ctx, "normal"); err != nil || n != 0 {
		t.Fatalf("KillClients(normal) = %d, %v; want 0 (only its own connection)", n, err)
	}
}

func TestPassword(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const pw = `s3cr3t "quoted" \ # spaced`
	s := redistest.Start(t, &redistest.Options{Password: pw})
	if s.Password() != pw {
		t.Errorf("Password() = %q, want %q", s.Password(), pw)
	}
	wantReply(t, ctx, s, "PONG", "PING")

	// Without AUTH the server refuses.
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "-NOAUTH") {
		t.Fatalf("PING without AUTH = %q, %v; want -NOAUTH", line, err)
	}

	c, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Do(ctx, "AUTH", "wrong")
	wantError(t, err, "WRONGPASS")
}

func TestACLUsers(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redistest.Start(t, &redistest.Options{Users: []redistest.User{
		{Name: "alice", Password: "alice pw"},
		{Name: "bob", Password: "bobpw", Rules: "~bob:* +get +set +acl|whoami"},
		{Name: "carol"},
	}})
	c, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	step := func(want any, args ...string) {
		t.Helper()
		if got, err := c.Do(ctx, args...); err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%v = %#v, %v; want %#v", args, got, err, want)
		}
	}
	step("OK", "AUTH", "alice", "alice pw")
	step("alice", "ACL", "WHOAMI")
	step("OK", "SET", "any", "1")

	step("OK", "AUTH", "bob", "bobpw")
	step("bob", "ACL", "WHOAMI")
	step("OK", "SET", "bob:1", "x")
	_, err = c.Do(ctx, "SET", "other", "x")
	wantError(t, err, "NOPERM")
	_, err = c.Do(ctx, "DEL", "bob:1")
	wantError(t, err, "NOPERM")

	step("OK", "AUTH", "carol", "anything")
	step("carol", "ACL", "WHOAMI")
	_, err = c.Do(ctx, "AUTH", "bob", "wrong")
	wantError(t, err, "WRONGPASS")
}

func TestAppendOnlySurvivesKill(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redistest.Start(t, &redistest.Options{AppendOnly: true, Password: "pw", Args: []string{"--maxmemory", "64mb"}})
	port := s.Port()
	for i := range 50 {
		do(t, ctx, s, "SET", "k"+strconv.Itoa(i), strconv.Itoa(i))
	}
	s.Kill()
	if _, err := s.Do(ctx, "PING"); err == nil {
		t.Fatal("PING after Kill succeeded")
	}
	s.Kill() // again: nothing to do
	s.Restart(t)
	if s.Port() != port {
		t.Fatalf("port %d after Restart, want %d", s.Port(), port)
	}
	for i := range 50 {
		wantReply(t, ctx, s, strconv.Itoa(i), "GET", "k"+strconv.Itoa(i))
	}
	wantReply(t, ctx, s, []any{"maxmemory", strconv.Itoa(64 << 20)}, "CONFIG", "GET", "maxmemory")
}

func TestWithoutAppendOnlyDataIsLost(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redistest.Start(t, nil)
	do(t, ctx, s, "SET", "k", "v")
	s.Kill()
	s.Restart(t)
	wantReply(t, ctx, s, nil, "GET", "k")
}

func TestStop(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redistest.Start(t, &redistest.Options{AppendOnly: true})
	do(t, ctx, s, "SET", "k", "v")
	s.Stop()
	if _, err := s.Do(ctx, "PING"); err == nil {
		t.Fatal("PING after Stop succeeded")
	}
	s.Stop() // again: nothing to do
	s.Restart(t)
	wantReply(t, ctx, s, "v", "GET", "k")
	s.Restart(t) // while running: stops first
	wantReply(t, ctx, s, "v", "GET", "k")

	// Stop gets through a CLIENT PAUSE too.
	if err := s.Pause(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := s.Do(ctx, "PING"); err == nil {
		t.Fatal("PING after Stop succeeded")
	}
}

func TestParallelStarts(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := make(map[int]string)
	t.Run("group", func(t *testing.T) {
		for i := range 6 {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				ctx := testCtx(t)
				s := redistest.Start(t, nil)
				do(t, ctx, s, "SET", "who", t.Name())
				wantReply(t, ctx, s, t.Name(), "GET", "who")
				mu.Lock()
				defer mu.Unlock()
				if other, dup := seen[s.Port()]; dup {
					t.Errorf("port %d given to %s and %s", s.Port(), other, t.Name())
				}
				seen[s.Port()] = t.Name()
			})
		}
	})
}

func TestCluster(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	c := redistest.StartCluster(t, 3)
	nodes, addrs := c.Nodes(), c.Addrs()
	if len(nodes) != 3 || len(addrs) != 3 {
		t.Fatalf("%d nodes, %d addrs; want 3", len(nodes), len(addrs))
	}
	for i, n := range nodes {
		if n.Addr() != addrs[i] {
			t.Errorf("Nodes()[%d].Addr() = %s, Addrs()[%d] = %s", i, n.Addr(), i, addrs[i])
		}
		info, err := n.Info(ctx, "cluster")
		if err != nil || info["cluster_enabled"] != "1" {
			t.Errorf("node %d: cluster_enabled %q, %v", i, info["cluster_enabled"], err)
		}
	}

	used := make(map[int]bool)
	for i := range 30 {
		key := "key" + strconv.Itoa(i)
		slot := redistest.KeySlot(key)
		wantReply(t, ctx, nodes[0], int64(slot), "CLUSTER", "KEYSLOT", key)
		owner, err := c.SlotOwner(ctx, slot)
		if err != nil {
			t.Fatal(err)
		}
		used[owner] = true
		wantReply(t, ctx, nodes[owner], "OK", "SET", key, "v"+key)
		wantReply(t, ctx, nodes[owner], "v"+key, "GET", key)
		_, err = nodes[(owner+1)%3].Do(ctx, "GET", key)
		wantError(t, err, fmt.Sprintf("MOVED %d %s", slot, addrs[owner]))
	}
	if len(used) != 3 {
		t.Errorf("30 keys landed on %d nodes, want 3", len(used))
	}

	// Move a slot with more keys than one MIGRATE batch.
	slot := redistest.KeySlot("{ctx}")
	from, err := c.SlotOwner(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	const keys = 250
	for i := range keys {
		do(t, ctx, nodes[from], "SET", "{ctx}:"+strconv.Itoa(i), strconv.Itoa(i))
	}
	to := (from + 1) % 3
	if err := c.MigrateSlot(ctx, slot, to); err != nil {
		t.Fatal(err)
	}
	if got, err := c.SlotOwner(ctx, slot); err != nil || got != to {
		t.Fatalf("SlotOwner after MigrateSlot = %d, %v; want %d", got, err, to)
	}
	wantReply(t, ctx, nodes[to], int64(keys), "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot))
	wantReply(t, ctx, nodes[from], int64(0), "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot))
	wantReply(t, ctx, nodes[to], "7", "GET", "{ctx}:7")
	_, err = nodes[from].Do(ctx, "GET", "{ctx}:7")
	wantError(t, err, fmt.Sprintf("MOVED %d %s", slot, addrs[to]))
	for i, n := range nodes {
		if _, err := n.Do(ctx, "CLUSTER", "INFO"); err != nil {
			t.Errorf("node %d: %v", i, err)
		}
	}

	if err := c.MigrateSlot(ctx, slot, to); err != nil {
		t.Errorf("MigrateSlot to the owner: %v", err)
	}
	if err := c.MigrateSlot(ctx, redistest.Slots, 0); err == nil {
		t.Error("MigrateSlot of slot 16384 succeeded")
	}
	if err := c.MigrateSlot(ctx, 0, 3); err == nil {
		t.Error("MigrateSlot to node 3 of 3 succeeded")
	}
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := redistest.StartSentinel(t)
	if s.MasterName() != "mymaster" {
		t.Errorf("MasterName() = %q", s.MasterName())
	}
	if s.SentinelAddr() != s.Server().Addr() {
		t.Errorf("SentinelAddr() = %s, Server().Addr() = %s", s.SentinelAddr(), s.Server().Addr())
	}
	master, replica := s.Master(), s.Replica()
	masterAddr := func() string {
		t.Helper()
		v := do(t, ctx, s.Server(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName())
		a, _ := v.([]any)
		if len(a) != 2 {
			t.Fatalf("GET-MASTER-ADDR-BY-NAME = %#v", v)
		}
		return fmt.Sprintf("%v:%v", a[0], a[1])
	}
	if got := masterAddr(); got != master.Addr() {
		t.Fatalf("sentinel reports master %s, want %s", got, master.Addr())
	}

	// A write the replica has acknowledged survives the failover.
	c, err := master.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Do(ctx, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Do(ctx, "WAIT", "1", "5000"); err != nil || v != int64(1) {
		t.Fatalf("WAIT 1 = %#v, %v", v, err)
	}
	wantReply(t, ctx, replica, "v", "GET", "k")
	_, err = replica.Do(ctx, "SET", "k", "w")
	wantError(t, err, "READONLY")

	begin := time.Now()
	if err := s.Failover(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("failover took %v", time.Since(begin).Round(time.Millisecond))
	if s.Master() != replica || s.Replica() != master {
		t.Fatal("Master and Replica did not swap")
	}
	if got := masterAddr(); got != replica.Addr() {
		t.Fatalf("sentinel reports master %s after failover, want %s", got, replica.Addr())
	}
	info, err := replica.Info(ctx, "replication")
	if err != nil || info["role"] != "master" {
		t.Fatalf("new master's role %q, %v", info["role"], err)
	}
	wantReply(t, ctx, replica, "v", "GET", "k")
	wantReply(t, ctx, replica, "OK", "SET", "k", "w")
}
