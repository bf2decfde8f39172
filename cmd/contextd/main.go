// Command contextd is the operator's tool for contextd contexts: read, write,
// watch and lock keys, list locks, export and import a context, and measure
// a backend.
//
//	contextd [global flags] COMMAND [flags] [args]
//
// The backend is named by a URL (--url, or $CONTEXTD_URL): redis://,
// rediss://, redis+sentinel://, redis+cluster://, postgres://, sqlite:///path
// or file:/path. The context by --context (or $CONTEXTD_CONTEXT). Values
// are JSON with the json (default) and msgpack codecs, bytes with raw.
// docs/cli.md has examples and the exit codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// command is one subcommand.
type command struct {
	name    string
	args    string // the usage line after the name
	summary string
	// run parses its flags on fs (global flags are already defined on
	// it) and does the work.
	run func(ctx context.Context, g *globals, fs *flag.FlagSet, args []string) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// globals are the flags every command takes, before or after its name.
type globals struct {
	url     string
	context string
	codec   string
	json    bool
	timeout time.Duration

	stdin          io.Reader
	stdout, stderr io.Writer
}

// defaultURL is the library's default server, localhost:6379 DB 0.
const defaultURL = "redis://localhost:6379/0"

func (g *globals) define(fs *flag.FlagSet) {
	fs.StringVar(&g.url, "url", g.url, "backend URL (env CONTEXTD_URL): redis://, rediss://, redis+sentinel://, redis+cluster://, postgres://, sqlite:///path")
	fs.StringVar(&g.context, "context", g.context, "context name (env CONTEXTD_CONTEXT)")
	fs.StringVar(&g.codec, "codec", g.codec, "value codec: json, msgpack or raw")
	fs.BoolVar(&g.json, "json", g.json, "print JSON (one object per line) for scripts")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "bound on connecting and on each operation")
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{
		url:     envOr("CONTEXTD_URL", defaultURL),
		context: os.Getenv("CONTEXTD_CONTEXT"),
		codec:   "json",
		timeout: 10 * time.Second,
		stdin:   stdin,
		stdout:  stdout,
		stderr:  stderr,
	}
	fs := flag.NewFlagSet("contextd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	g.define(fs)
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		usage(stderr, fs)
		return exitUsage
	}
	name := fs.Arg(0)
	if name == "help" {
		usage(stdout, fs)
		return exitOK
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "contextd: unknown command %q (run contextd help)\n", name)
		return exitUsage
	}
	sub := flag.NewFlagSet("contextd "+name, flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.Usage = func() {
		fmt.Fprintf(stderr, "usage: contextd %s %s\n\n%s\n\nflags:\n", c.name, c.args, c.summary)
		sub.PrintDefaults()
	}
	err := c.run(ctx, g, sub, fs.Args()[1:])
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	code := exitCode(err)
	var quiet *exitError
	if !errors.As(err, &quiet) || !quiet.quiet {
		fmt.Fprintf(stderr, "contextd %s: %v\n", name, err)
	}
	return code
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: contextd [global flags] COMMAND [flags] [args]\n\ncommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := commands[n]
		fmt.Fprintf(w, "  %s %s\n        %s\n", n, c.args, c.summary)
	}
	fmt.Fprintf(w, "\nglobal flags (also accepted after COMMAND):\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nexit codes: 0 ok, 1 key not found, 2 usage, 3 bad URL, 4 backend unreachable,\n"+
		"5 codec mismatch, 6 condition failed, 7 lock not acquired, 8 invalid value,\n"+
		"9 lock lost, 10 other error, 11 unsupported by the backend;\n"+
		"lock passes its command's exit code through.\n")
}

// parse parses args on fs, which gets the global flags too, allowing flags
// between the positional arguments ("get KEY --json"); "--" ends the flags.
// It returns the positional arguments and, after "--", the rest.
func parse(g *globals, fs *flag.FlagSet, args []string) (pos, rest []string, err error) {
	g.define(fs)
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, flagErr(err)
		}
		// flag.Parse stops at the first non-flag argument, or after "--".
		consumed := len(args) - len(fs.Args())
		dashdash := consumed > 0 && args[consumed-1] == "--"
		args = fs.Args()
		if dashdash {
			return pos, args, nil
		}
		if len(args) == 0 {
			return pos, nil, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// nargs checks the number of positional arguments.
func nargs(fs *flag.FlagSet, pos []string, min, max int) error {
	if len(pos) < min || (max >= 0 && len(pos) > max) {
		fs.Usage()
		return usageErr(fmt.Errorf("wrong number of arguments: %s", strings.Join(quoteAll(pos), " ")))
	}
	return nil
}

func quoteAll(s []string) []string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return q
}
