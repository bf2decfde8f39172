package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	envBin     = "CONTEXTD_POSTGRES_BIN"
	envRequire = "CONTEXTD_REQUIRE_POSTGRES"

	logFile = "postgres.log"

	startAttempts = 5
	startTimeout  = 30 * time.Second
	stopTimeout   = 10 * time.Second
	pollInterval  = 20 * time.Millisecond

	// User is the superuser of every cluster; it needs no password.
	User = "postgres"
)

// debianBinGlob is where Debian's postgresql packages put initdb; a
// variable for tests.
var debianBinGlob = "/usr/lib/postgresql/*/bin"

// InstallHint says how to get PostgreSQL where it is missing.
const InstallHint = `install it with "apt-get install postgresql" (Debian/Ubuntu) or "brew install postgresql" (macOS), ` +
	"or set " + envBin + " to the directory holding initdb and postgres"

// Require returns the directory holding initdb and postgres, or skips the
// test (fails it with CONTEXTD_REQUIRE_POSTGRES=1) when there is none. A
// CONTEXTD_POSTGRES_BIN that does not hold both always fails the test.
func Require(t testing.TB) string {
	t.Helper()
	dir, err := binDir()
	if err == nil {
		return dir
	}
	if os.Getenv(envBin) != "" {
		t.Fatalf("pgtest: %v", err)
		return ""
	}
	msg := "pgtest: PostgreSQL not found (" + err.Error() + "); " + InstallHint +
		". With " + envRequire + "=1 this is a failure instead of a skip."
	if os.Getenv(envRequire) == "1" {
		t.Fatal(msg)
	} else {
		t.Skip(msg)
	}
	return ""
}

// binDir finds the directory of initdb and postgres, as the package
// documentation says.
func binDir() (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			fi, err := os.Stat(filepath.Join(dir, name))
			if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(envBin); dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("%s=%q does not hold executable initdb and postgres", envBin, dir)
		}
		return dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil && has(filepath.Dir(real)) {
			return filepath.Dir(real), nil
		}
		if has(filepath.Dir(p)) {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob(debianBinGlob)
	// Newest major version first: /usr/lib/postgresql/<n>/bin.
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", errors.New("no initdb in PATH or " + debianBinGlob)
}

// Cluster is a running (or stopped) PostgreSQL cluster of a test.
type Cluster struct {
	bin  string
	dir  string // owns data/, the socket and the log
	port int
	cred *syscall.Credential

	mu   sync.Mutex
	proc *process

	dbSeq atomic.Uint64
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// template is the initdb'd data directory every cluster copies.
var template struct {
	once sync.Once
	dir  string
	err  error
}

var shared struct {
	mu      sync.Mutex
	cluster *Cluster
	err     error
}

// Shared returns the test binary's shared cluster, starting it on first
// use. Tests sharing it take a database each (NewDatabase) and must not stop
// it; TestMain stops it with StopShared.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	bin := Require(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.err == nil {
		shared.cluster, shared.err = start(bin)
	}
	if shared.err != nil {
		t.Fatalf("pgtest: starting the shared cluster: %v", shared.err)
	}
	return shared.cluster
}

// StopShared stops the shared cluster, if it was started, and removes its
// directory and the template. Call it from TestMain after m.Run.
func StopShared() {
	shared.mu.Lock()
	c := shared.cluster
	shared.cluster = nil
	shared.mu.Unlock()
	if c != nil {
		c.Stop()
		_ = os.RemoveAll(c.dir)
	}
	if template.dir != "" {
		_ = os.RemoveAll(template.dir)
	}
}

// Main runs the tests, stops the shared cluster and returns the exit code:
// for a TestMain that needs nothing else, os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	StopShared()
	return code
}

// Start starts a private cluster for test t, stopped and removed in
// t.Cleanup. Use it where a test stops, crashes or restarts the server.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin := Require(t)
	c, err := start(bin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		c.Stop()
		_ = os.RemoveAll(c.dir)
	})
	return c
}

func start(bin string) (*Cluster, error) {
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	tmpl, err := templateDir(bin, cred)
	if err != nil {
		return nil, err
	}
	dir, err := newDir(cred)
	if err != nil {
		return nil, err
	}
	if err := copyTree(filepath.Join(tmpl, "data"), filepath.Join(dir, "data"), cred); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("copying the template cluster: %w", err)
	}
	c := &Cluster{bin: bin, dir: dir, cred: cred}
	for attempt := 0; ; attempt++ {
		c.port, err = freePort()
		if err == nil {
			err = c.launch()
		}
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, errAddrInUse) || attempt+1 >= startAttempts {
			tail := c.LogTail(30)
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("starting postgres: %w\n%s", err, tail)
		}
	}
}

// credential returns the credentials of the user postgres when running as
// root (initdb refuses root), nil otherwise.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(User)
	if err != nil {
		return nil, fmt.Errorf("running as root, initdb needs the user %q: %w", User, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q has uid %q, gid %q", User, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// newDir makes a directory under os.TempDir owned by the cluster's user.
// Not t.TempDir: its parent is private to the test binary's user.
func newDir(cred *syscall.Credential) (string, error) {
	dir, err := os.MkdirTemp("", "contextd-pg-")
	if err != nil {
		return "", err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return "", err
		}
	}
	return dir, nil
}

func templateDir(bin string, cred *syscall.Credential) (string, error) {
	template.once.Do(func() {
		dir, err := newDir(cred)
		if err != nil {
			template.err = err
			return
		}
		template.dir = dir
		cmd := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"),
			"-A", "trust", "-U", User, "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
		cmd.Dir = dir
		cmd.SysProcAttr = sysProcAttr(cred)
		if out, err := cmd.CombinedOutput(); err != nil {
			template.err = fmt.Errorf("initdb: %w\n%s", err, out)
		}
	})
	return template.dir, template.err
}

// copyTree copies the directory src to dst (which must not exist) with
// modes, owned by cred's user.
func copyTree(src, dst string, cred *syscall.Credential) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			err = os.Mkdir(to, info.Mode().Perm())
		case d.Type().IsRegular():
			var data []byte
			if data, err = os.ReadFile(path); err == nil {
				err = os.WriteFile(to, data, info.Mode().Perm())
			}
		default:
			return fmt.Errorf("%s: unexpected file type %v", path, d.Type())
		}
		if err == nil && cred != nil {
			err = os.Lchown(to, int(cred.Uid), int(cred.Gid))
		}
		return err
	})
}

var errAddrInUse = errors.New("port already in use")

// launch starts the postmaster and waits until it accepts connections.
func (c *Cluster) launch() error {
	out, err := os.OpenFile(filepath.Join(c.dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if c.cred != nil {
		_ = out.Chown(int(c.cred.Uid), int(c.cred.Gid))
	}
	cmd := exec.Command(filepath.Join(c.bin, "postgres"),
		"-D", filepath.Join(c.dir, "data"),
		"-p", strconv.Itoa(c.port),
		"-k", c.dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=400",
		"-c", "shared_buffers=32MB",
		"-c", "log_min_messages=warning",
		"-c", "logging_collector=off",
	)
	cmd.Dir = c.dir
	// Files, not pipes: exec starts no copying goroutines.
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr(c.cred)
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
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	if err := c.waitReady(p); err != nil {
		c.Kill()
		return err
	}
	return nil
}

func (c *Cluster) waitReady(p *process) error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for {
		select {
		case <-p.done:
			if c.logContains("could not bind") || c.logContains("Address already in use") {
				return fmt.Errorf("%w: %d", errAddrInUse, c.port)
			}
			return fmt.Errorf("postgres exited: %v", p.err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		last = c.ping(ctx, p)
		cancel()
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %v", startTimeout, last)
		}
		select {
		case <-p.done:
		case <-time.After(pollInterval):
		}
	}
}

// ping connects and checks that our process serves the port.
func (c *Cluster) ping(ctx context.Context, p *process) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var dataDir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dataDir); err != nil {
		return err
	}
	if want := filepath.Join(c.dir, "data"); dataDir != want {
		return fmt.Errorf("port %d is served by the cluster in %s, not ours (%s)", c.port, dataDir, want)
	}
	return nil
}

// Port returns the TCP port the cluster listens on (127.0.0.1).
func (c *Cluster) Port() int { return c.port }

// Addr returns "127.0.0.1:port".
func (c *Cluster) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)) }

// Dir returns the cluster's directory (data/, the socket, the log).
func (c *Cluster) Dir() string { return c.dir }

// URL returns the connection URL of database db as the superuser.
func (c *Cluster) URL(db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(User), Host: c.Addr(), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// NewDatabase creates a database of its own for test t and returns its
// URL. The database is dropped (with the connections left to it) when the
// test ends, unless the cluster is down then.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", c.dbSeq.Add(1), sanitize(t.Name()))
	if len(name) > 63 {
		name = name[:63]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if c.running() != nil {
			_ = c.Exec(ctx, "postgres", "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		}
	})
	return c.URL(name)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '_'
	}, s)
}

// Exec runs sql (with args) on a new connection to database db.
func (c *Cluster) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, c.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// QueryInt runs a query that returns one integer, on a new connection to
// database db.
func (c *Cluster) QueryInt(ctx context.Context, db, sql string, args ...any) (int64, error) {
	conn, err := pgx.Connect(ctx, c.URL(db))
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// TerminateConnections ends the client connections to database db (any
// database if db is "") whose application_name is app (any if app is ""),
// except the one it uses itself, with pg_terminate_backend, and waits until
// each of those server processes has exited. It returns how many it ended.
func (c *Cluster) TerminateConnections(ctx context.Context, db, app string) (int, error) {
	n, err := c.QueryInt(ctx, "postgres", `
		SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000))
		FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		  AND ($1 = '' OR datname = $1) AND ($2 = '' OR application_name = $2)`, db, app)
	return int(n), err
}

// CountConnections returns how many client connections to database db
// (any if "") with application_name app (any if "") exist, not counting its
// own.
func (c *Cluster) CountConnections(ctx context.Context, db, app string) (int, error) {
	n, err := c.QueryInt(ctx, "postgres", `
		SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		  AND ($1 = '' OR datname = $1) AND ($2 = '' OR application_name = $2)`, db, app)
	return int(n), err
}

func (c *Cluster) running() *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc
}

func (c *Cluster) exited(p *process) {
	c.mu.Lock()
	if c.proc == p {
		c.proc = nil
	}
	c.mu.Unlock()
}

// Stop shuts the cluster down (fast shutdown: SIGINT, which ends every
// connection and checkpoints) and waits for the postmaster to exit, killing
// it after a few seconds. It does nothing if the cluster is not running.
func (c *Cluster) Stop() { c.signal(syscall.SIGINT) }

// Crash stops the cluster as a crash would (immediate shutdown: SIGQUIT, no
// checkpoint; the next start runs crash recovery) and waits for the
// postmaster to exit. Acknowledged commits survive it.
func (c *Cluster) Crash() { c.signal(syscall.SIGQUIT) }

func (c *Cluster) signal(sig syscall.Signal) {
	p := c.running()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		c.exited(p)
	case <-time.After(stopTimeout):
		c.Kill()
	}
}

// Kill kills the postmaster with SIGKILL and waits for it to exit; its
// backends exit by themselves when they notice. It does nothing if the
// cluster is not running.
func (c *Cluster) Kill() {
	p := c.running()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	c.exited(p)
}

// Restart starts the cluster again on the same port with the same data
// (stopping it first if it runs) and waits until it accepts connections.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop()
	var err error
	for deadline := time.Now().Add(startTimeout); ; {
		// The old postmaster's backends may still hold the port or the
		// shared memory for a moment after a Kill.
		if err = c.launch(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // retrying a start that raced the old server's exit
	}
	t.Fatalf("pgtest: restarting postgres on port %d: %v\n%s", c.port, err, c.LogTail(30))
}

// LogTail returns the last n lines of the server's log.
func (c *Cluster) LogTail(n int) string {
	data, err := os.ReadFile(filepath.Join(c.dir, logFile))
	if err != nil {
		return ""
	}
	lines := strings.SplitAfter(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

func (c *Cluster) logContains(s string) bool {
	data, err := os.ReadFile(filepath.Join(c.dir, logFile))
	return err == nil && strings.Contains(string(data), s)
}

// ports are the ports handed out to live clusters of this process.
var ports struct {
	sync.Mutex
	used map[int]bool
}

// freePort finds a free port on 127.0.0.1; another process may still take
// it before the server binds, and start then tries another.
func freePort() (int, error) {
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = make(map[int]bool)
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !ports.used[p] {
			ports.used[p] = true
			return p, nil
		}
	}
	return 0, errors.New("finding a free port: gave up")
}
