package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/contextd-go/contextd/examples/internal/examplebackend"
	"github.com/contextd-go/contextd/internal/redistest"
)

func TestMultiInstance(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, examplebackend.Flags{}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"alpha   holds lock (fencing token 1), sets job to step 1",
		"bravo   holds lock (fencing token 2), sets job to step 2",
		"charlie holds lock (fencing token 3), sets job to step 3",
		"the other two instances see step 3 by charlie",
		"final job: step 3 by charlie",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestProcesses builds the example and runs it as three OS processes on a
// redis-server of the test's own.
func TestProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example; skipped in -short")
	}
	srv := redistest.Start(t, nil)
	checkProcesses(t, 3, "-redis", srv.Addr())
}

// TestProcessesOnSQLite runs the example as two OS processes sharing one
// SQLite database file: each sees the other's write, and the lock passes
// from one to the other.
func TestProcessesOnSQLite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example; skipped in -short")
	}
	checkProcesses(t, 2, "-sqlite", filepath.Join(t.TempDir(), "demo.db"))
}

// checkProcesses builds the example, runs it with -processes n and the
// given backend flag, and checks that every member took its turn and saw
// all the others'.
func checkProcesses(t *testing.T, n int, args ...string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "multiinstance")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	args = append(args, "-processes", fmt.Sprint(n))
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("multiinstance %v: %v\n%s", args, err, out)
	}
	text := string(out)
	for i := 1; i <= n; i++ {
		for _, want := range []string{
			fmt.Sprintf("member-%d (pid ", i),
			fmt.Sprintf("member-%d saw every member's step", i),
		} {
			if !strings.Contains(text, want) {
				t.Errorf("output lacks %q:\n%s", want, text)
			}
		}
	}
	// Each step was made under the lock, and each holder's fencing token
	// is larger than the one before: the lock was handed on n-1 times.
	tokens := make([]uint64, n+1)
	for _, m := range regexp.MustCompile(`fencing token (\d+)\) and set step (\d+)`).FindAllStringSubmatch(text, -1) {
		token, _ := strconv.ParseUint(m[1], 10, 64)
		step, _ := strconv.Atoi(m[2])
		if step < 1 || step > n || tokens[step] != 0 {
			t.Fatalf("step %d twice or out of range:\n%s", step, text)
		}
		tokens[step] = token
	}
	for step := 1; step <= n; step++ {
		if tokens[step] == 0 {
			t.Errorf("no member set step %d:\n%s", step, text)
		} else if step > 1 && tokens[step] <= tokens[step-1] {
			t.Errorf("step %d's fencing token %d is not above step %d's %d:\n%s", step, tokens[step], step-1, tokens[step-1], text)
		}
	}
	if want := fmt.Sprintf("parent: final job step %d by member-", n); !strings.Contains(text, want) {
		t.Errorf("output lacks %q:\n%s", want, text)
	}
}
