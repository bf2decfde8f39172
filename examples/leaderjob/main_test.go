package main

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/examples/internal/examplebackend"
	"github.com/contextd-go/contextd/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestLeaderJob(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{}); err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out.String())
}

// TestLeaderJobRedis runs the example on a redis-server of its own, twice:
// the second run finds the first one's report and fencing counter.
func TestLeaderJobRedis(t *testing.T) {
	srv := redistest.Start(t, nil)
	for range 2 {
		var out bytes.Buffer
		if err := run(&out, examplebackend.Flags{Redis: srv.Addr()}); err != nil {
			t.Fatal(err)
		}
		checkOutput(t, out.String())
	}
}

var (
	stalls = regexp.MustCompile(`^zulu    leads \(token (\d+)\), computes run 1, then stalls: its lock is not renewed$`)
	leads  = regexp.MustCompile(`^(alpha|bravo|charlie) +leads \(token (\d+)\): run (\d) written and delivered$`)
	final  = regexp.MustCompile(`^final report: run 3 by (alpha|bravo|charlie) \(token (\d+)\)$`)
)

// checkOutput checks that zulu led first and stalled, that each other
// worker then led exactly once, with runs 1 to 3 in order and growing
// tokens, that zulu's late write and delivery were refused, and that the
// final report is the last leader's.
func checkOutput(t *testing.T, text string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("output has %d lines, want 7:\n%s", len(lines), text)
	}
	m := stalls.FindStringSubmatch(lines[0])
	if m == nil {
		t.Fatalf("line 1 = %q, want zulu leading and stalling", lines[0])
	}
	zuluToken := atoi(t, m[1])
	last, led := zuluToken, map[string]bool{}
	var lastLeader string
	for i, line := range lines[1:4] {
		m := leads.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("line %d = %q, want a worker leading", i+2, line)
		}
		name, token, runNo := m[1], atoi(t, m[2]), atoi(t, m[3])
		if led[name] {
			t.Errorf("%s led twice:\n%s", name, text)
		}
		led[name] = true
		if runNo != uint64(i+1) {
			t.Errorf("line %d: run %d, want %d", i+2, runNo, i+1)
		}
		if token <= last {
			t.Errorf("line %d: token %d, want above the previous leader's %d", i+2, token, last)
		}
		last, lastLeader = token, name
	}
	for _, want := range []string{
		"zulu    wakes up: its write of run 1 is refused (lock lost)",
		fmt.Sprintf("zulu    and the sink refuses its output: token %d is older than %d: fenced off", zuluToken, last),
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	m = final.FindStringSubmatch(lines[6])
	if m == nil || m[1] != lastLeader || atoi(t, m[2]) != last {
		t.Errorf("last line = %q, want run 3 by %s (token %d)", lines[6], lastLeader, last)
	}
}

func atoi(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
