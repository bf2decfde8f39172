package pgtest_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/contextd-go/contextd/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestSharedDatabases(t *testing.T) {
	c := pgtest.Shared(t)
	if again := pgtest.Shared(t); again != c {
		t.Fatal("Shared returned a second cluster")
	}
	ctx := t.Context()
	u1, u2 := c.NewDatabase(t), c.NewDatabase(t)
	if u1 == u2 {
		t.Fatalf("two databases with one URL %s", u1)
	}
	conn, err := pgx.Connect(ctx, u1)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	other, err := pgx.Connect(ctx, u2)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(ctx, "SELECT * FROM t"); err == nil {
		t.Error("a table of one database is visible in another")
	}
	var addr string
	if err := conn.QueryRow(ctx, "SELECT inet_server_addr()::text").Scan(&addr); err != nil || !strings.HasPrefix(addr, "127.0.0.1") {
		t.Errorf("server address %q, %v; want loopback", addr, err)
	}
}

func TestTerminateConnections(t *testing.T) {
	c := pgtest.Shared(t)
	ctx := t.Context()
	u := c.NewDatabase(t)
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "victim"
	victim, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(context.Background())
	bystander, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer bystander.Close(context.Background())
	db := cfg.Database
	n, err := c.TerminateConnections(ctx, db, "victim")
	if err != nil || n != 1 {
		t.Fatalf("TerminateConnections = %d, %v; want 1", n, err)
	}
	if _, err := victim.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("the terminated connection still works")
	}
	if _, err := bystander.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("a connection with another application_name was hit: %v", err)
	}
	if n, err := c.CountConnections(ctx, db, "victim"); err != nil || n != 0 {
		t.Errorf("CountConnections after terminating = %d, %v; want 0", n, err)
	}
}

// TestRestartKeepsCommits crashes a private cluster and restarts it: every
// acknowledged commit is still there, and the postmaster is gone in between.
func TestRestartKeepsCommits(t *testing.T) {
	c := pgtest.Start(t)
	ctx := t.Context()
	u := c.URL("postgres")
	if err := c.Exec(ctx, "postgres", "CREATE TABLE kept (x int)"); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := c.Exec(ctx, "postgres", "INSERT INTO kept VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
	}
	pid := postmasterPID(t, c)
	c.Crash()
	if alive(pid) {
		t.Fatalf("postmaster %d still runs after Crash", pid)
	}
	if _, err := pgx.Connect(ctx, u); err == nil {
		t.Fatal("connected to a crashed cluster")
	}
	c.Restart(t)
	if n, err := c.QueryInt(ctx, "postgres", "SELECT count(*) FROM kept"); err != nil || n != 50 {
		t.Fatalf("after crash and restart: %d rows, %v; want 50", n, err)
	}
	c.Stop()
	if alive(postmasterPIDFile(c)) {
		t.Error("postmaster still runs after Stop")
	}
}

func postmasterPID(t *testing.T, c *pgtest.Cluster) int {
	t.Helper()
	pid := postmasterPIDFile(c)
	if pid == 0 || !alive(pid) {
		t.Fatalf("no live postmaster in %s", c.Dir())
	}
	return pid
}

// postmasterPIDFile reads the first line of data/postmaster.pid (0 if
// none).
func postmasterPIDFile(c *pgtest.Cluster) int {
	data, err := os.ReadFile(c.Dir() + "/data/postmaster.pid")
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(data), "\n", 2)[0]))
	return pid
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	// kill -0 also succeeds for a zombie; ps tells them apart.
	out, err := exec.Command("ps", "-o", "stat=", "-p", strconv.Itoa(pid)).Output()
	return err == nil && len(out) > 0 && !strings.HasPrefix(strings.TrimSpace(string(out)), "Z")
}

func TestRequireFindsBinaries(t *testing.T) {
	dir := pgtest.Require(t)
	for _, name := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(dir + "/" + name); err != nil {
			t.Errorf("Require returned %s without %s: %v", dir, name, err)
		}
	}
}
