package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/contextd-go/contextd/internal/redistest"
)

func TestMultiInstance(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, ""); err != nil {
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
	bin := filepath.Join(t.TempDir(), "multiinstance")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "-redis", srv.Addr(), "-processes", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("multiinstance -processes 3: %v\n%s", err, out)
	}
	text := string(out)
	for i := 1; i <= 3; i++ {
		for _, want := range []string{
			fmt.Sprintf("member-%d (pid ", i),
			fmt.Sprintf("member-%d saw every member's step", i),
		} {
			if !strings.Contains(text, want) {
				t.Errorf("output lacks %q:\n%s", want, text)
			}
		}
	}
	if !strings.Contains(text, "parent: final job step 3 by member-") {
		t.Errorf("output lacks the final step 3:\n%s", text)
	}
}
