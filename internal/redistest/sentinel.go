package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	masterName      = "mymaster"
	sentinelTimeout = 15 * time.Second
)

// Sentinel is a master, one replica and one Sentinel that monitors them,
// started by [StartSentinel].
type Sentinel struct {
	sentinel *Server

	mu      sync.Mutex
	master  *Server
	replica *Server
}

// StartSentinel starts a master, a replica of it (diskless replication), and
// a Sentinel monitoring them as "mymaster" with quorum 1,
// down-after-milliseconds 1000 and failover-timeout 5000. It returns once the
// replica's link to the master is up and the Sentinel reports the master and
// knows the replica. All three are killed in t.Cleanup.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin := Require(t)
	begin := time.Now()
	repl := []string{"repl-diskless-sync yes", "repl-diskless-sync-delay 0"}

	mdir := t.TempDir()
	master := launchNew(t, bin, mdir, "", nil, 0, func(port int, _ []int) string {
		return serverConf(mdir, port, Options{}, repl)
	})
	rdir := t.TempDir()
	replica := launchNew(t, bin, rdir, "", nil, 0, func(port int, _ []int) string {
		return serverConf(rdir, port, Options{}, append(repl, "replicaof 127.0.0.1 "+strconv.Itoa(master.port)))
	})
	ctx, cancel := context.WithTimeout(context.Background(), sentinelTimeout)
	defer cancel()
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		info, err := replica.Info(ctx, "replication")
		if err != nil {
			return false, err
		}
		if st := info["master_link_status"]; st != "up" {
			return false, fmt.Errorf("master_link_status:%s", st)
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("redistest: replica %s did not sync with master %s: %v\n--- master ---\n%s--- replica ---\n%s",
			replica.Addr(), master.Addr(), err, master.LogTail(15), replica.LogTail(15))
	}

	// A replica that reports its link up may still not acknowledge
	// offsets for a while, and WAIT would time out: wait until a write
	// made on the master is acknowledged.
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		conn, err := master.Dial(ctx)
		if err != nil {
			return false, err
		}
		defer conn.Close()
		if _, err := conn.Do(ctx, "SET", "redistest:replicated", "1"); err != nil {
			return false, err
		}
		n, err := conn.Do(ctx, "WAIT", "1", "100")
		if err != nil {
			return false, err
		}
		if n != int64(1) {
			return false, fmt.Errorf("WAIT 1 answered %v", n)
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("redistest: replica %s does not acknowledge writes: %v", replica.Addr(), err)
	}

	sdir := t.TempDir()
	sen := launchNew(t, bin, sdir, "", []string{"--sentinel"}, 0, func(port int, _ []int) string {
		return strings.Join([]string{
			"port " + strconv.Itoa(port),
			"bind 127.0.0.1",
			"protected-mode no",
			"daemonize no",
			"dir " + quote(sdir),
			"logfile " + quote(filepath.Join(sdir, logFile)),
			"sentinel resolve-hostnames no",
			"sentinel monitor " + masterName + " 127.0.0.1 " + strconv.Itoa(master.port) + " 1",
			"sentinel down-after-milliseconds " + masterName + " 1000",
			"sentinel failover-timeout " + masterName + " 5000",
		}, "\n") + "\n"
	})
	s := &Sentinel{sentinel: sen, master: master, replica: replica}
	if err := poll(ctx, s.knows); err != nil {
		t.Fatalf("redistest: sentinel %s not ready: %v\n%s", sen.Addr(), err, sen.LogTail(20))
	}
	t.Logf("redistest: master, replica and sentinel ready in %v", time.Since(begin).Round(time.Millisecond))
	return s
}

// knows reports whether the sentinel reports the master and knows the replica
// well enough to promote it.
func (s *Sentinel) knows(ctx context.Context) (bool, error) {
	master, replica := s.Master(), s.Replica()
	addr, err := s.masterAddr(ctx)
	if err != nil {
		return false, err
	}
	if addr != master.Addr() {
		return false, fmt.Errorf("sentinel reports master %s, want %s", addr, master.Addr())
	}
	v, err := s.sentinel.Do(ctx, "SENTINEL", "REPLICAS", masterName)
	if err != nil {
		return false, err
	}
	list, _ := v.([]any)
	for _, r := range list {
		m := pairs(r)
		if m["port"] != strconv.Itoa(replica.port) {
			continue
		}
		if m["flags"] != "slave" || m["master-link-status"] != "ok" || m["runid"] == "" {
			return false, fmt.Errorf("sentinel sees replica %s: flags %q, master-link-status %q", replica.Addr(), m["flags"], m["master-link-status"])
		}
		return true, nil
	}
	return false, fmt.Errorf("sentinel does not know replica %s yet", replica.Addr())
}

// pairs turns a flat [k1, v1, k2, v2, ...] reply into a map.
func pairs(v any) map[string]string {
	a, _ := v.([]any)
	m := make(map[string]string, len(a)/2)
	for i := 0; i+1 < len(a); i += 2 {
		k, _ := a[i].(string)
		val, _ := a[i+1].(string)
		m[k] = val
	}
	return m
}

// masterAddr asks the sentinel for the master's address.
func (s *Sentinel) masterAddr(ctx context.Context) (string, error) {
	v, err := s.sentinel.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", masterName)
	if err != nil {
		return "", err
	}
	a, _ := v.([]any)
	if len(a) != 2 {
		return "", fmt.Errorf("sentinel knows no master %q: %v", masterName, v)
	}
	host, _ := a[0].(string)
	port, _ := a[1].(string)
	return net.JoinHostPort(host, port), nil
}

// MasterName returns the name the Sentinel monitors the master under,
// "mymaster".
func (s *Sentinel) MasterName() string { return masterName }

// SentinelAddr returns the Sentinel's address, "127.0.0.1:port".
func (s *Sentinel) SentinelAddr() string { return s.sentinel.Addr() }

// Server returns the Sentinel process itself, e.g. to send it SENTINEL
// commands with Do, or to kill it.
func (s *Sentinel) Server() *Server { return s.sentinel }

// Master returns the current master: the replica of before, after a
// [Sentinel.Failover].
func (s *Sentinel) Master() *Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.master
}

// Replica returns the current replica: the master of before, after a
// [Sentinel.Failover] (Sentinel turns it into a replica of the new master only
// some seconds later).
func (s *Sentinel) Replica() *Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.replica
}

// Failover makes the Sentinel promote the replica with SENTINEL FAILOVER
// (retrying while the Sentinel has no suitable replica yet) and waits until
// the Sentinel reports the replica's address as the master's and the replica
// reports role:master. Then Master and Replica swap. Give ctx a deadline.
func (s *Sentinel) Failover(ctx context.Context) error {
	s.mu.Lock()
	next := s.replica
	s.mu.Unlock()
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		_, err := s.sentinel.Do(ctx, "SENTINEL", "FAILOVER", masterName)
		var rerr Error
		if errors.As(err, &rerr) && strings.HasPrefix(string(rerr), "NOGOODSLAVE") {
			return false, err
		}
		return true, err
	})
	if err != nil {
		return fmt.Errorf("redistest: SENTINEL FAILOVER: %w", err)
	}
	err = poll(ctx, func(ctx context.Context) (bool, error) {
		addr, err := s.masterAddr(ctx)
		if err != nil {
			return false, err
		}
		if addr != next.Addr() {
			return false, fmt.Errorf("sentinel still reports master %s", addr)
		}
		info, err := next.Info(ctx, "replication")
		if err != nil {
			return false, err
		}
		if info["role"] != "master" {
			return false, fmt.Errorf("%s has role %s", next.Addr(), info["role"])
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("redistest: failover to %s: %w", next.Addr(), err)
	}
	s.mu.Lock()
	s.master, s.replica = s.replica, s.master
	s.mu.Unlock()
	return nil
}
