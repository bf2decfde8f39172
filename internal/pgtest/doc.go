// Package pgtest starts throwaway PostgreSQL clusters for the tests of the
// PostgreSQL backend, and injects the faults those tests need (server stop,
// crash and restart, terminated connections).
//
// # Finding PostgreSQL
//
// [Require] looks for a directory holding both initdb and postgres: the one
// named by CONTEXTD_POSTGRES_BIN, else the directory of the initdb found in
// PATH (symlinks resolved), else the newest /usr/lib/postgresql/<version>/bin
// (where Debian installs them; its /usr/bin has no initdb). Without one the
// test is skipped with a message that says how to install it, unless
// CONTEXTD_REQUIRE_POSTGRES=1 (set by CI), where it fails.
//
// # Clusters
//
// initdb runs once per test binary (about 2 s), into a template directory;
// every cluster is a copy of that template in a directory of its own under
// os.TempDir, started as `postgres -D DIR/data -p PORT -k DIR -c
// listen_addresses=127.0.0.1` on a free loopback port, with trust
// authentication for the user postgres, fsync off and max_connections 400.
// synchronous_commit stays on, so a crashed server (SIGKILL or SIGQUIT of the
// postmaster) keeps every acknowledged commit: fsync only matters when the
// operating system crashes.
//
// [Shared] returns the one cluster of the test binary, started on first use;
// tests keep apart by taking a database each ([Cluster.NewDatabase]).
// [TestMain] must stop it: call [StopShared] after m.Run (or use [Main]).
// [Start] starts a private cluster for a test that stops or restarts it.
//
// initdb refuses to run as root. When the tests run as root, initdb and
// postgres run as the user postgres: the process is started with that user's
// credentials directly (the effect of `runuser -u postgres --`, without a
// runuser process in between), and the cluster's directory is owned by
// postgres.
//
// # Lifetime
//
// The postmaster is a direct child of the test binary (not daemonised by
// pg_ctl), so on Linux the kernel kills it if the binary dies without
// cleaning up (a test timeout); its backends exit when they notice the
// postmaster is gone. t.Cleanup stops a private cluster and removes its
// directory; StopShared does so for the shared one.
//
// # Errors
//
// Functions that take a testing.TB fail the test when something cannot be
// set up, and must be called from the test's goroutine. Methods that take a
// context.Context return errors instead.
package pgtest
