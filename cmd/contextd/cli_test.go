package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestGetPutDelLs(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	c.want(1, "", "get", "user")
	c.want(0, "revision 1\n", "put", "user", `{"name": "Ann", "age": 31}`)
	c.want(0, `{"name":"Ann","age":31}`+"\n", "get", "user")
	c.want(0, `{"key":"user","value":{"name":"Ann","age":31},"revision":1}`+"\n", "get", "--json", "user")
	// Flags after the arguments, and global flags after the command.
	c.want(0, `{"key":"user","value":{"name":"Ann","age":31},"revision":1}`+"\n", "get", "user", "--json", "--context", c.context)
	c.wantIn(`["from", "stdin"]`+"\n", 0, "revision 2\n", "put", "list", "-")
	c.want(0, "revision 3\n", "put", "--string", "greeting", "hello world")
	c.want(0, `"hello world"`+"\n", "get", "greeting")

	r := c.want(8, "", "put", "bad", "hello")
	if !strings.Contains(r.stderr, "not JSON") {
		t.Errorf("put of a bare word: stderr %q; want it to say the value is not JSON", r.stderr)
	}
	c.want(6, "", "put", "--create", "user", `1`)
	c.want(6, "", "put", "--if-revision", "2", "user", `1`)
	c.want(0, "revision 4\n", "put", "--if-revision", "1", "user", `{"name":"Bob"}`)
	c.want(0, "revision 5\n", "put", "--create", "fresh", `true`)
	c.want(0, "KEY       REVISION  EXPIRES\nfresh     5         -\ngreeting  3         -\nlist      2         -\nuser      4         -\n", "ls")
	c.want(0, "KEY   REVISION  EXPIRES  VALUE\nlist  2         -        [\"from\",\"stdin\"]\n", "ls", "--values", "li")
	c.want(0, `{"key":"fresh","revision":5}`+"\n", "ls", "--json", "f", "--json")
	c.want(0, "deleted 2 of 3 keys at revision 6\n", "del", "fresh", "nope", "list")
	c.want(0, "deleted 0 of 1 keys\n", "del", "fresh")
	c.want(1, "", "get", "fresh")
	// A key with a TTL: ls shows when it expires.
	c.want(0, "revision 7\n", "put", "--ttl", "1h", "temp", "1")
	r = c.want(0, "*", "ls", "--json", "temp")
	if !strings.Contains(r.stdout, `"key":"temp"`) || !strings.Contains(r.stdout, `"expires":`) {
		t.Errorf("ls --json temp after put --ttl 1h: %q; want the key with its expiry", r.stdout)
	}
}

func TestRawAndMsgpack(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	raw := c.with("raw-" + c.context)
	binary := "\x00\x01\xffbytes\n"
	raw.wantIn(binary, 0, "revision 1\n", "--codec", "raw", "put", "blob", "-")
	raw.want(0, binary, "--codec", "raw", "get", "blob")
	raw.want(0, `{"key":"blob","value_base64":"AAH/Ynl0ZXMK","revision":1}`+"\n", "--codec", "raw", "get", "--json", "blob")
	// A context written with raw is refused to the other codecs.
	r := raw.want(5, "", "get", "blob")
	if !strings.Contains(r.stderr, "codec") {
		t.Errorf("get with the wrong codec: stderr %q; want it to name the codec", r.stderr)
	}
	mp := c.with("msgpack-" + c.context)
	mp.want(0, "revision 1\n", "--codec", "msgpack", "put", "v", `{"n": 12345678901, "f": 1.5, "s": "x", "l": [true, null]}`)
	mp.want(0, `{"f":1.5,"l":[true,null],"n":12345678901,"s":"x"}`+"\n", "--codec", "msgpack", "get", "v")
	mp.want(5, "", "--codec", "json", "get", "v")
}

func TestErrors(t *testing.T) {
	t.Parallel()
	c := cli{t: t, url: "redis://" + freeAddr(t) + "/0", context: "x"}
	r := c.want(4, "", "--timeout", "30s", "get", "k")
	if !strings.Contains(r.stderr, "connection refused") {
		t.Errorf("get from a closed port: stderr %q; want it to say the connection was refused", r.stderr)
	}
	for _, u := range []string{"memory:", "http://localhost", "redis://localhost/0?nope=1", "redis+sentinel://localhost:26379", "nourl", "sqlite://host/x.db"} {
		c.url = u
		r := c.want(3, "", "get", "k")
		if r.stderr == "" {
			t.Errorf("get with URL %q: no error message", u)
		}
	}
	c.url = "redis://" + freeAddr(t)
	c.want(2, "", "nosuchcommand")
	c.with("").want(2, "", "get", "k")
	c.want(2, "", "get")
	c.want(2, "", "get", "--nosuchflag", "k")
	c.want(2, "", "--codec", "yaml", "get", "k")
	c.want(0, "*", "help")
}

func TestWatch(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	c.want(0, "revision 1\n", "put", "a/1", `1`)
	c.want(0, "revision 2\n", "put", "b/1", `2`)
	c.want(0, "revision 3\n", "put", "a/2", `"two"`)
	c.want(0, "deleted 1 of 1 keys at revision 4\n", "del", "a/1")
	// --from replays the change log after the revision given, filtered by
	// prefix, then marks where live changes begin.
	c.want(0, "3\tPUT\ta/2\t\"two\"\n4\tDEL\ta/1\n", "watch", "--from", "2", "--count", "2", "a/")
	r := c.want(0, "*", "watch", "--json", "--from", "0", "--count", "4")
	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("watch --json line %q: %v", l, err)
		}
		delete(m, "origin")
		got = append(got, m)
	}
	want := `[{"key":"a/1","op":"put","revision":1,"value":1},{"key":"b/1","op":"put","revision":2,"value":2},{"key":"a/2","op":"put","revision":3,"value":"two"},{"key":"a/1","op":"del","revision":4}]`
	if b, _ := json.Marshal(got); string(b) != want {
		t.Errorf("watch --json --from 0 =\n%s\nwant\n%s", b, want)
	}

	// A live watch: wait until it says it watches, then write.
	cmd := c.command(t.Context(), "watch", "a/")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out, errs := lines(t, stdout), lines(t, stderr)
	if l := next(t, errs, "watch's first stderr line"); !strings.HasPrefix(l, "watching context") {
		t.Fatalf("watch said %q first; want \"watching context ...\"", l)
	}
	c.want(0, "revision 5\n", "put", "b/2", `0`) // filtered out
	c.want(0, "revision 6\n", "put", "a/3", `{"x":1}`)
	if l := next(t, out, "live watch"); l != "6\tPUT\ta/3\t{\"x\":1}" {
		t.Errorf("live watch printed %q; want the put of a/3 at revision 6", l)
	}
	// SIGINT ends it normally.
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	for range out {
	}
	for range errs {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("watch after SIGINT: %v; want exit 0", err)
	}
}

func TestLock(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	// The command's exit code passes through; it learns its fence.
	r := c.want(3, "*", "lock", "job", "--", "sh", "-c", `echo "key=$CONTEXTD_LOCK_KEY fence=$CONTEXTD_LOCK_FENCE"; exit 3`)
	if !strings.HasPrefix(r.stdout, "key=job fence=") || strings.TrimSpace(r.stdout) == "key=job fence=" {
		t.Errorf("lock's command printed %q; want the key and a fence", r.stdout)
	}
	c.want(0, "KEY  FENCE  HOLDER  EXPIRES\n", "locks") // released on exit

	// A holder that runs until its stdin closes.
	ctx := t.Context()
	holder := c.command(ctx, "lock", "--ttl", "3s", "job", "--", "sh", "-c", `echo held; read x; echo done`)
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	out := lines(t, stdout)
	if l := next(t, out, "holder"); l != "held" {
		t.Fatalf("holder printed %q; want \"held\"", l)
	}
	c.want(7, "", "lock", "--wait", "300ms", "job", "--", "true")
	r = c.want(0, "*", "locks", "--json")
	var held struct {
		Key     string    `json:"key"`
		Fence   uint64    `json:"fence"`
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &held); err != nil || held.Key != "job" || held.Fence == 0 || held.Token == "" {
		t.Errorf("locks --json while held = %q (%v); want the lock on job with its fence and holder", r.stdout, err)
	}
	stdin.Close()
	if l := next(t, out, "holder"); l != "done" {
		t.Errorf("holder printed %q; want \"done\"", l)
	}
	for range out {
	}
	if err := holder.Wait(); err != nil {
		t.Errorf("holder: %v; want exit 0", err)
	}
	c.want(0, "KEY  FENCE  HOLDER  EXPIRES\n", "locks")
	c.want(0, "ok\n", "lock", "--wait", "30s", "job", "--", "echo", "ok")
}

func TestLockForwardsSignals(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	cmd := c.command(t.Context(), "lock", "job", "--", "sh", "-c", `trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 0.05; done`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := lines(t, stdout)
	if l := next(t, out, "locked command"); l != "ready" {
		t.Fatalf("locked command printed %q; want \"ready\"", l)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if l := next(t, out, "locked command"); l != "got TERM" {
		t.Errorf("locked command printed %q after SIGTERM to contextd; want \"got TERM\"", l)
	}
	for range out {
	}
	err = cmd.Wait()
	if cmd.ProcessState.ExitCode() != 42 {
		t.Errorf("contextd lock exited with %v; want the command's 42", err)
	}
	c.want(0, "KEY  FENCE  HOLDER  EXPIRES\n", "locks")
}

func TestExportImport(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	c.want(0, "revision 1\n", "put", "a", `{"x":1}`)
	c.want(0, "revision 2\n", "put", "b", `[1,2]`)
	export := `{"key":"a","value":{"x":1},"revision":1}` + "\n" + `{"key":"b","value":[1,2],"revision":2}` + "\n"
	c.want(0, export, "export")

	dst := c.with("copy-" + c.context)
	dst.want(0, "revision 1\n", "put", "old", `0`)
	dst.wantIn(export, 0, "imported 2 puts, 0 deletes, 0 skipped as expired at revision 2\n", "import")
	dst.want(0, "0\n", "get", "old")
	// A bad line anywhere refuses the whole import.
	dst.wantIn(`{"key":"a","value":5}`+"\n"+`{"key":"c","value":nope}`+"\n", 8, "", "import")
	dst.wantIn(`{"key":"a","value":5}`+"\n"+`{"key":"a","value":6}`+"\n", 8, "", "import")
	dst.want(0, `{"x":1}`+"\n", "get", "a")
	// --replace deletes what the input lacks, in the same transaction.
	dst.wantIn(export, 0, "dry run: would write 2 puts, 1 deletes, 0 skipped as expired to context \""+dst.context+"\"\n", "import", "--replace", "--dry-run")
	dst.want(0, "0\n", "get", "old")
	file := filepath.Join(t.TempDir(), "export.jsonl")
	if err := os.WriteFile(file, []byte(export), 0o600); err != nil {
		t.Fatal(err)
	}
	dst.want(0, "imported 2 puts, 1 deletes, 0 skipped as expired at revision 3\n", "import", "--replace", file)
	dst.want(1, "", "get", "old")
	dst.want(0, "{\"key\":\"a\",\"value\":{\"x\":1},\"revision\":3}\n{\"key\":\"b\",\"value\":[1,2],\"revision\":3}\n", "export")
	// Raw values: UTF-8 as strings, other bytes in base64, both ways.
	raw := c.with("raw-" + c.context)
	rawExport := `{"key":"bin","value_base64":"AP8="}` + "\n" + `{"key":"text","value":"héllo"}` + "\n"
	raw.wantIn(rawExport, 0, "imported 2 puts, 0 deletes, 0 skipped as expired at revision 1\n", "--codec", "raw", "import")
	raw.want(0, `{"key":"bin","value_base64":"AP8=","revision":1}`+"\n"+`{"key":"text","value":"héllo","revision":1}`+"\n", "--codec", "raw", "export")
}

func TestStats(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	c.want(0, "revision 1\n", "put", "a", `"12345"`)
	r := c.want(0, "*", "stats", "--json")
	var s struct {
		Revision     uint64 `json:"revision"`
		Keys         int    `json:"keys"`
		ValueBytes   int    `json:"value_bytes"`
		Locks        int    `json:"locks"`
		Capabilities string `json:"capabilities"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("stats --json = %q: %v", r.stdout, err)
	}
	if s.Revision != 1 || s.Keys != 1 || s.ValueBytes != 7 || s.Locks != 0 || !strings.Contains(s.Capabilities, "AtomicPublish") {
		t.Errorf("stats = %+v; want revision 1, 1 key of 7 bytes, no locks, Redis's capabilities", s)
	}
}

func TestSQLite(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "ctx.db")
	c := cli{t: t, url: "sqlite://" + path, context: "app"}
	c.want(0, "revision 1\n", "put", "k", `{"v":1}`)
	c.url = "file:" + path // the same file by another spelling
	c.want(0, `{"v":1}`+"\n", "get", "k")
	c.want(0, "ok\n", "lock", "k", "--", "echo", "ok")
	c.want(0, "KEY  FENCE  HOLDER  EXPIRES\n", "locks")
	c.want(0, "1\tPUT\tk\t{\"v\":1}\n", "watch", "--from", "0", "--count", "1")
	c.want(0, `{"key":"k","value":{"v":1},"revision":1}`+"\n", "export")
	c.want(1, "", "get", "nope")
}

func TestBench(t *testing.T) {
	t.Parallel()
	c := redisCLI(t)
	for _, args := range [][]string{
		{"bench", "--duration", "1s", "--writers", "2", "--readers", "1", "--keys", "5"},
		{"bench", "--duration", "1s", "--writers", "2", "--readers", "1", "--contention"},
	} {
		r := c.want(0, "*", args...)
		for _, want := range []string{"p50", "p99.9", "write", "read (fresh)", "propagation"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("contextd %v printed %q; want a table with %q", args, r.stdout, want)
			}
		}
		if args[len(args)-1] == "--contention" && !strings.Contains(r.stdout, "none lost") {
			t.Errorf("contextd %v printed %q; want the counter check to say none lost", args, r.stdout)
		}
	}
	// The bench keys are deleted afterwards.
	c.want(0, "KEY  REVISION  EXPIRES\n", "ls")
}
