// Package redistest starts throwaway redis-server processes for the tests of
// the Redis backend: single servers (optionally with a password, ACL users or
// an append-only file), small Redis Clusters, and a master + replica +
// Sentinel set. It also has a tiny RESP2 client ([Server.Do], [Conn]) that
// tests use to seed data and to inject faults (CLIENT KILL, CLIENT PAUSE,
// DEBUG SLEEP, SHUTDOWN, slot migration, failover).
//
// # Finding redis-server
//
// [Require] looks up redis-server in PATH, or takes the binary named by
// CONTEXTD_REDIS_SERVER. Without one the test is skipped with a message that
// says how to install it, unless CONTEXTD_REQUIRE_REDIS=1 (set by CI), where
// it fails. [Start], [StartCluster] and [StartSentinel] call Require
// themselves.
//
// # Lifetime
//
// Every server runs in its own t.TempDir(), listens on 127.0.0.1 only, on a
// free port, with its log in that directory ([Server.LogTail]). t.Cleanup kills
// it and waits for the process to exit, so nothing outlives the test; on
// Linux a server is also killed if the test binary dies without cleaning up.
// Subprocess output goes to files, never pipes, so no goroutine is left
// behind. DEBUG (e.g. DEBUG SLEEP) is enabled, which Redis 7 turns off by
// default.
//
// # Errors
//
// Start*, Restart and the other functions that take a testing.TB fail the
// test (t.Fatal) when something cannot be set up; they must be called from the
// test's own goroutine. Methods that take a context.Context return errors: a
// Redis error reply is an [Error], network failures are wrapped with %w, and a
// cancelled or expired context stays errors.Is-able.
//
// # Concurrency
//
// Start, StartCluster and StartSentinel may be called from parallel tests: the
// ports handed out are tracked per process, and a server that loses its port
// to another process is started again on a new one. Do, Dial and the other
// client methods may be used from many goroutines; a [Conn] is for one
// goroutine at a time. Stop, Kill and Restart of one server are not meant to
// race each other.
package redistest
