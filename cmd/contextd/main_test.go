package main_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/contextd-go/contextd/internal/redistest"
)

// bin is the contextd binary TestMain builds once.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "contextd-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "contextd")
	build := exec.Command("go", "build", "-race", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building contextd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the binary against one backend and context.
type cli struct {
	t       *testing.T
	url     string
	context string
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// command makes an exec.Cmd of the binary with the cli's environment.
func (c cli) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTEXTD_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "CONTEXTD_URL="+c.url, "CONTEXTD_CONTEXT="+c.context)
	return cmd
}

// run runs the binary to its end, with stdin.
func (c cli) run(stdin string, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := c.command(ctx, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("running contextd %v: %v", args, err)
	}
	return r
}

// want runs args and checks the exit code and, if stdout is not "*", the
// output.
func (c cli) want(code int, stdout string, args ...string) result {
	c.t.Helper()
	return c.wantIn("", code, stdout, args...)
}

func (c cli) wantIn(stdin string, code int, stdout string, args ...string) result {
	c.t.Helper()
	r := c.run(stdin, args...)
	if r.code != code || (stdout != "*" && r.stdout != stdout) {
		if stdout == "*" {
			c.t.Fatalf("contextd %s: %v; want exit %d", strings.Join(args, " "), r, code)
		}
		c.t.Fatalf("contextd %s: %v; want exit %d, stdout %q", strings.Join(args, " "), r, code, stdout)
	}
	return r
}

// with returns c for another context.
func (c cli) with(name string) cli {
	c.context = name
	return c
}

func redisCLI(t *testing.T) cli {
	srv := redistest.Start(t, nil)
	return cli{t: t, url: "redis://" + srv.Addr() + "/0", context: "cli-" + strings.ReplaceAll(t.Name(), "/", "-")}
}

// lines reads lines from a process's output as they come.
func lines(t *testing.T, r io.Reader) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// next returns the next line, failing the test after a generous wait.
func next(t *testing.T, ch <-chan string, what string) string {
	t.Helper()
	select {
	case l, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the output ended", what)
		}
		return l
	case <-time.After(time.Minute):
		t.Fatalf("%s: no line within a minute", what)
	}
	return ""
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
