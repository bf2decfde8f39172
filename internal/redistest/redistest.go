package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	envServer  = "CONTEXTD_REDIS_SERVER"
	envRequire = "CONTEXTD_REQUIRE_REDIS"

	confFile   = "redis.conf"
	logFile    = "redis.log"
	outputFile = "output.log" // the process's stdout and stderr

	startAttempts = 5
	startTimeout  = 10 * time.Second
	pollInterval  = 10 * time.Millisecond
	stopTimeout   = 5 * time.Second

	// DefaultRules are the ACL rules of a [User] whose Rules are empty.
	DefaultRules = "~* &* +@all"
)

// Require returns the path of the redis-server binary: the one named by the
// environment variable CONTEXTD_REDIS_SERVER if set, else the one found in
// PATH. Without one the test is skipped with a message saying how to install
// it, or fails if CONTEXTD_REQUIRE_REDIS=1. A CONTEXTD_REDIS_SERVER that names
// no executable always fails the test, since it is a misconfiguration.
func Require(t testing.TB) string {
	t.Helper()
	if name := os.Getenv(envServer); name != "" {
		path, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("redistest: %s=%q is not an executable redis-server: %v", envServer, name, err)
			return ""
		}
		return path
	}
	path, err := exec.LookPath("redis-server")
	if err == nil {
		return path
	}
	msg := "redistest: redis-server not found in PATH; install it with " +
		"\"apt-get install redis-server\" (Debian/Ubuntu) or \"brew install redis\" (macOS), " +
		"or set " + envServer + " to its path. " +
		"With " + envRequire + "=1 this is a failure instead of a skip."
	if os.Getenv(envRequire) == "1" {
		t.Fatal(msg)
	} else {
		t.Skip(msg)
	}
	return ""
}

// Options configure a server started by [Start]. A nil *Options means all
// defaults.
type Options struct {
	// Password is the default user's password (requirepass). Default "": the
	// default user needs no password.
	Password string

	// Users are extra ACL users. Default none.
	Users []User

	// AppendOnly turns on the append-only file with appendfsync always, so a
	// killed server keeps every acknowledged write across [Server.Restart].
	// Default false: no persistence at all (save "", no AOF), so a restarted
	// server is empty.
	AppendOnly bool

	// Args are extra command-line arguments, appended after the config file,
	// e.g. {"--maxmemory", "10mb"}; they override the file and apply again on
	// every Restart. Default none.
	Args []string
}

// User is an ACL user of a server started by [Start].
type User struct {
	// Name is the user name. Required.
	Name string

	// Password is the user's password. Default "": nopass, any password is
	// accepted.
	Password string

	// Rules are ACL rules separated by spaces, e.g. "~app:* +@read".
	// Default "" means [DefaultRules]: all keys, channels and commands.
	Rules string
}

// Server is a redis-server process started by [Start] (or a node of a
// [Cluster] or [Sentinel] set).
type Server struct {
	bin      string
	dir      string
	args     []string // after the config file
	port     int
	extra    []int // further reserved ports (cluster bus)
	password string

	mu   sync.Mutex
	proc *process
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // of Wait, valid once done is closed
}

// Start starts a redis-server on a free port of 127.0.0.1 in a new
// t.TempDir(), waits until it answers PING, and kills it in t.Cleanup. It
// skips or fails the test as [Require] does when there is no redis-server, and
// fails it with the tail of the server's log when the server does not come
// up. opts may be nil.
func Start(t testing.TB, opts *Options) *Server {
	t.Helper()
	bin := Require(t)
	var o Options
	if opts != nil {
		o = *opts
		o.Users = slices.Clone(o.Users)
		o.Args = slices.Clone(o.Args)
	}
	dir := t.TempDir()
	return launchNew(t, bin, dir, o.Password, o.Args, 0, func(port int, _ []int) string {
		return serverConf(dir, port, o, nil)
	})
}

// launchNew starts a server in dir on fresh ports, writing the config made by
// conf for them, and retries with new ports when the server fails to bind.
func launchNew(t testing.TB, bin, dir, password string, args []string, extraPorts int, conf func(port int, extra []int) string) *Server {
	t.Helper()
	s := &Server{bin: bin, dir: dir, args: args, password: password}
	var err error
	for attempt := 0; attempt < startAttempts; attempt++ {
		var ports []int
		ports, err = reserve(1 + extraPorts)
		if err != nil {
			break
		}
		s.port, s.extra = ports[0], ports[1:]
		for _, name := range []string{logFile, outputFile} {
			_ = os.Remove(filepath.Join(dir, name))
		}
		if err = os.WriteFile(filepath.Join(dir, confFile), []byte(conf(s.port, s.extra)), 0o644); err != nil {
			releasePorts(ports)
			break
		}
		if err = s.launch(); err == nil {
			t.Cleanup(func() {
				s.Kill()
				releasePorts(ports)
			})
			return s
		}
		releasePorts(ports)
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	t.Fatalf("redistest: starting redis-server in %s: %v\n%s", dir, err, s.LogTail(40))
	return nil
}

// serverConf is the config file of a plain (non-sentinel) server.
func serverConf(dir string, port int, o Options, extra []string) string {
	var b strings.Builder
	line := func(words ...string) {
		b.WriteString(strings.Join(words, " "))
		b.WriteByte('\n')
	}
	line("port", strconv.Itoa(port))
	line("bind", "127.0.0.1")
	line("protected-mode", "no")
	line("daemonize", "no")
	line("dir", quote(dir))
	line("logfile", quote(filepath.Join(dir, logFile)))
	line("enable-debug-command", "yes")
	if o.AppendOnly {
		line("appendonly", "yes")
		line("appendfsync", "always")
	} else {
		line("save", `""`)
		line("appendonly", "no")
	}
	if o.Password != "" {
		line("requirepass", quote(o.Password))
	}
	for _, u := range o.Users {
		pass := "nopass"
		if u.Password != "" {
			pass = quote(">" + u.Password)
		}
		rules := u.Rules
		if rules == "" {
			rules = DefaultRules
		}
		line("user", quote(u.Name), "on", pass, rules)
	}
	for _, l := range extra {
		line(l)
	}
	return b.String()
}

// quote quotes s for a redis config file.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(&b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

var errAddrInUse = errors.New("port already in use")

// launch starts the process with the current config and waits until it is
// ready. On failure the process is gone.
func (s *Server) launch() error {
	out, err := os.OpenFile(filepath.Join(s.dir, outputFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, append([]string{filepath.Join(s.dir, confFile)}, s.args...)...)
	cmd.Dir = s.dir
	// Files, not pipes: exec starts no copying goroutines.
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	err = cmd.Start()
	out.Close()
	if err != nil {
		return err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	if err := s.waitReady(p); err != nil {
		s.Kill()
		return err
	}
	return nil
}

// waitReady polls until the server p answers PING (and is done loading its
// data), p exits, or startTimeout passes.
func (s *Server) waitReady(p *process) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// Stop talking to whatever holds the port once our process has exited.
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-p.done:
			if s.logContains("Address already in use") {
				return fmt.Errorf("%w: %s", errAddrInUse, s.Addr())
			}
			return fmt.Errorf("redis-server exited: %v", p.err)
		default:
		}
		if last = s.ready(ctx, p); last == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-p.done:
		case <-ctx.Done():
			select {
			case <-p.done: // handled at the top of the loop
			default:
				return fmt.Errorf("not ready within %v: %v", startTimeout, last)
			}
		}
	}
}

// ready reports nil if p answers PING on the server's address and is done
// loading.
func (s *Server) ready(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := s.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if v, err := c.Do(ctx, "PING"); err != nil {
		return err
	} else if v != "PONG" {
		return fmt.Errorf("PING answered %v", v)
	}
	info, err := c.info(ctx, "")
	if err != nil {
		return err
	}
	// Another process may have taken the port ours failed to bind.
	if pid := info["process_id"]; pid != strconv.Itoa(p.cmd.Process.Pid) {
		return fmt.Errorf("%s is served by process %s, not by ours (%d)", s.Addr(), pid, p.cmd.Process.Pid)
	}
	if info["loading"] == "1" || info["async_loading"] == "1" {
		return errors.New("still loading")
	}
	return nil
}

// Addr returns the server's address, "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

// Password returns the default user's password, "" if none.
func (s *Server) Password() string { return s.password }

// Dir returns the server's working directory, which holds its config, log and
// data files.
func (s *Server) Dir() string { return s.dir }

func (s *Server) running() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

func (s *Server) exited(p *process) {
	s.mu.Lock()
	if s.proc == p {
		s.proc = nil
	}
	s.mu.Unlock()
}

// Kill kills the server with SIGKILL and waits for the process to exit. It
// does nothing if the server is not running.
func (s *Server) Kill() {
	p := s.running()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	s.exited(p)
}

// Stop shuts the server down with SHUTDOWN NOSAVE NOW, or SIGTERM if that is
// refused, and waits for the process to exit (killing it if it takes longer
// than a few seconds). It does nothing if the server is not running. With
// AppendOnly, the data is kept for [Server.Restart].
func (s *Server) Stop() {
	p := s.running()
	if p == nil {
		return
	}
	// SHUTDOWN waits behind a CLIENT PAUSE: give it little time.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := s.Do(ctx, "SHUTDOWN", "NOSAVE", "NOW")
	cancel()
	// A successful SHUTDOWN never replies: the connection just closes.
	var rerr Error
	if err != nil && !errors.As(err, &rerr) && ctx.Err() == nil && waitDone(p, stopTimeout) {
		s.exited(p)
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if waitDone(p, stopTimeout) {
		s.exited(p)
		return
	}
	s.Kill()
}

func waitDone(p *process, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// Restart starts the server again on the same port, in the same directory and
// with the same config, and waits until it answers PING and has loaded its
// data; it stops the server first if it is still running. With AppendOnly the
// data written before a Stop or Kill is there again. Restart fails the test if
// the server does not come up (e.g. because another process took the port
// meanwhile).
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.launch(); err != nil {
		t.Fatalf("redistest: restarting redis-server on %s: %v\n%s", s.Addr(), err, s.LogTail(40))
	}
}

// Do sends one command on a fresh connection (authenticated with the
// password, if any) and returns the reply: a string for simple and bulk
// strings, int64 for integers, []any for arrays, nil for a null reply. An
// error reply is returned as an [Error].
func (s *Server) Do(ctx context.Context, args ...string) (any, error) {
	c, err := s.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(ctx, args...)
}

// Info returns the fields of INFO section (all default sections if section is
// ""), e.g. info["role"].
func (s *Server) Info(ctx context.Context, section string) (map[string]string, error) {
	c, err := s.Dial(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.info(ctx, section)
}

func (c *Conn) info(ctx context.Context, section string) (map[string]string, error) {
	args := []string{"INFO"}
	if section != "" {
		args = append(args, section)
	}
	v, err := c.Do(ctx, args...)
	if err != nil {
		return nil, err
	}
	text, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("redistest: INFO answered %T", v)
	}
	return parseInfo(text), nil
}

func parseInfo(text string) map[string]string {
	m := make(map[string]string)
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimRight(l, "\r")
		if l == "" || l[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = v
		}
	}
	return m
}

// Pause suspends all normal and pub/sub clients (reads and writes) for d
// with CLIENT PAUSE <ms> ALL; d is rounded down to milliseconds, at least 1.
// Commands sent meanwhile wait and run when the pause ends. A pause cannot be
// ended early: on Redis 7.0 CLIENT UNPAUSE waits behind a PAUSE ALL like any
// other command, even on the connection that paused. Stop and Kill still work
// during a pause.
func (s *Server) Pause(ctx context.Context, d time.Duration) error {
	ms := max(d.Milliseconds(), 1)
	_, err := s.Do(ctx, "CLIENT", "PAUSE", strconv.FormatInt(ms, 10), "ALL")
	return err
}

// KillClients closes every client connection of the type typ ("normal",
// "pubsub", "replica" or "master") with CLIENT KILL TYPE, except its own, and
// returns how many it closed.
func (s *Server) KillClients(ctx context.Context, typ string) (int, error) {
	v, err := s.Do(ctx, "CLIENT", "KILL", "TYPE", typ)
	if err != nil {
		return 0, err
	}
	n, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("redistest: CLIENT KILL answered %v", v)
	}
	return int(n), nil
}

// KillNamedClients closes the connections of type typ (pubsub, normal)
// whose client name is name, and returns how many it closed. Tests that
// share one server name their clients, so a fault hits only their own.
func (s *Server) KillNamedClients(ctx context.Context, typ, name string) (int, error) {
	v, err := s.Do(ctx, "CLIENT", "LIST", "TYPE", typ)
	if err != nil {
		return 0, err
	}
	list, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("redistest: CLIENT LIST answered %v", v)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		var id, cname string
		for _, f := range strings.Fields(line) {
			switch {
			case strings.HasPrefix(f, "id="):
				id = f[len("id="):]
			case strings.HasPrefix(f, "name="):
				cname = f[len("name="):]
			}
		}
		if id == "" || cname != name {
			continue
		}
		if _, err := s.Do(ctx, "CLIENT", "KILL", "ID", id); err != nil {
			if strings.Contains(err.Error(), "No such client") {
				continue // it went away by itself
			}
			return killed, err
		}
		killed++
	}
	return killed, nil
}

// LogTail returns the last n lines of the server's log file, followed by the
// last n lines of its stdout and stderr if it wrote any (e.g. a config error).
func (s *Server) LogTail(n int) string {
	var b strings.Builder
	if data, err := os.ReadFile(filepath.Join(s.dir, logFile)); err == nil {
		b.WriteString(tail(data, n))
	}
	if data, err := os.ReadFile(filepath.Join(s.dir, outputFile)); err == nil && len(bytes.TrimSpace(data)) > 0 {
		b.WriteString("--- stdout/stderr ---\n")
		b.WriteString(tail(data, n))
	}
	return b.String()
}

func tail(data []byte, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(string(data), "\n"), "\n")
	if n >= 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "") + "\n"
}

func (s *Server) logContains(substr string) bool {
	for _, name := range []string{logFile, outputFile} {
		if data, err := os.ReadFile(filepath.Join(s.dir, name)); err == nil && bytes.Contains(data, []byte(substr)) {
			return true
		}
	}
	return false
}

// ports are the ports handed out to live servers of this process, so parallel
// tests never get the same one.
var ports struct {
	sync.Mutex
	used map[int]bool
}

// reserve is reservePorts; tests replace it to hand out a taken port.
var reserve = reservePorts

// reservePorts finds n distinct free ports on 127.0.0.1. Another process can
// still take them before the server binds; launchNew retries then.
func reservePorts(n int) ([]int, error) {
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = make(map[int]bool)
	}
	var got []int
	for tries := 0; len(got) < n; tries++ {
		var l net.Listener
		err := errors.New("gave up")
		if tries < 100 {
			l, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			for _, p := range got {
				delete(ports.used, p)
			}
			return nil, fmt.Errorf("redistest: finding a free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !ports.used[p] {
			ports.used[p] = true
			got = append(got, p)
		}
	}
	return got, nil
}

func releasePorts(ps []int) {
	ports.Lock()
	defer ports.Unlock()
	for _, p := range ps {
		delete(ports.used, p)
	}
}

// poll calls f every pollInterval until it reports done, and returns f's
// error then; when ctx ends first it returns ctx's error with f's last error.
func poll(ctx context.Context, f func(ctx context.Context) (done bool, err error)) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done, err := f(ctx)
		if done {
			return err
		}
		select {
		case <-ctx.Done():
			if err == nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}
