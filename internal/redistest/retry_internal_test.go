package redistest

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestStartRetriesTakenPort hands Start a port another socket holds and
// checks that it starts the server on a new one.
func TestStartRetriesTakenPort(t *testing.T) {
	Require(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port

	calls := 0
	reserve = func(n int) ([]int, error) {
		calls++
		if calls == 1 {
			return []int{taken}, nil
		}
		return reservePorts(n)
	}
	t.Cleanup(func() { reserve = reservePorts })

	s := Start(t, nil)
	if calls != 2 || s.Port() == taken {
		t.Fatalf("%d reservations, port %d (taken: %d); want a second reservation and another port", calls, s.Port(), taken)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := s.Do(ctx, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING = %v, %v", v, err)
	}
}
