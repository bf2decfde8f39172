package redistest_test

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/contextd-go/contextd/internal/redistest"
)

// The proxy tests need no redis-server: the target is a listener of the
// test's own, so the test holds both ends of every proxied connection.

// ioTimeout bounds every read that is expected to succeed.
const ioTimeout = 5 * time.Second

// quietPeriod is how long a stalled connection must stay silent. Absence
// of bytes can only be observed by waiting; nothing is awaited with it.
const quietPeriod = 100 * time.Millisecond

// noLeaks fails the test if it leaves goroutines behind. Call it first, so
// its check runs after every other cleanup (the proxy's included).
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// target is a listener that hands the test each connection the proxy makes.
type target struct {
	ln    net.Listener
	conns chan net.Conn
}

func startTarget(t *testing.T) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{ln: ln, conns: make(chan net.Conn, 16)}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		close(tg.conns)
		for c := range tg.conns {
			c.Close()
		}
	})
	return tg
}

// next returns the next connection the proxy made to the target.
func (tg *target) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-tg.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(ioTimeout):
		t.Fatal("the proxy did not connect to the target")
		return nil
	}
}

// dial connects to the proxy and returns the client's end and the target's.
func dial(t *testing.T, p *redistest.Proxy, tg *target) (client, server net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout)
	if err != nil {
		t.Fatalf("dialling the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c, tg.next(t)
}

func send(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// expect reads exactly want from c.
func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("reading %q: got %q, %v", want, buf, err)
	}
	if string(buf) != want {
		t.Fatalf("read %q, want %q", buf, want)
	}
}

// expectQuiet checks that nothing arrives on c for quietPeriod.
func expectQuiet(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(quietPeriod))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a stalled connection delivered %q, %v; want nothing", buf[:n], err)
	}
}

// expectEOF checks that c was closed by the other side.
func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %q, %v; want the connection closed", buf[:n], err)
	}
}

func TestProxyForwardsBothWays(t *testing.T) {
	noLeaks(t)
	tg := startTarget(t)
	p := redistest.StartProxy(t, tg.ln.Addr().String())
	if p.Target() != tg.ln.Addr().String() {
		t.Errorf("Target() = %q, want %q", p.Target(), tg.ln.Addr())
	}
	c1, s1 := dial(t, p, tg)
	c2, s2 := dial(t, p, tg)
	send(t, c1, "PING 1\r\n")
	send(t, c2, "PING 2\r\n")
	expect(t, s1, "PING 1\r\n")
	expect(t, s2, "PING 2\r\n")
	send(t, s1, "+PONG 1\r\n")
	send(t, s2, "+PONG 2\r\n")
	expect(t, c1, "+PONG 1\r\n")
	expect(t, c2, "+PONG 2\r\n")
	if n := p.Conns(); n != 2 {
		t.Errorf("Conns() = %d, want 2", n)
	}
	if n := p.Accepted(); n != 2 {
		t.Errorf("Accepted() = %d, want 2", n)
	}

	// A client that hangs up takes the target's side with it.
	c1.Close()
	expectEOF(t, s1)
	// And the other way round.
	s2.Close()
	expectEOF(t, c2)
}

func TestProxyStallHoldsBytesUntilResume(t *testing.T) {
	noLeaks(t)
	tg := startTarget(t)
	p := redistest.StartProxy(t, tg.ln.Addr().String())
	c1, s1 := dial(t, p, tg)

	p.Stall()
	send(t, c1, "before resume\r\n")
	send(t, s1, "reply before resume\r\n")
	// A connection made during the stall is accepted and stays open, but
	// carries nothing either.
	c2, s2 := dial(t, p, tg)
	send(t, c2, "new conn\r\n")
	send(t, s2, "new reply\r\n")
	expectQuiet(t, s1)
	expectQuiet(t, c1)
	expectQuiet(t, s2)
	expectQuiet(t, c2)
	p.Stall() // stalling twice is fine

	p.Resume()
	expect(t, s1, "before resume\r\n")
	expect(t, c1, "reply before resume\r\n")
	expect(t, s2, "new conn\r\n")
	expect(t, c2, "new reply\r\n")
	send(t, c1, "after\r\n")
	expect(t, s1, "after\r\n")
	p.Resume() // resuming twice is fine
}

func TestProxyStallRepliesPassesCommands(t *testing.T) {
	noLeaks(t)
	tg := startTarget(t)
	p := redistest.StartProxy(t, tg.ln.Addr().String())
	c, s := dial(t, p, tg)

	p.StallReplies()
	send(t, c, "INCR n\r\n")
	expect(t, s, "INCR n\r\n")
	send(t, s, ":1\r\n")
	expectQuiet(t, c)
	p.Resume()
	expect(t, c, ":1\r\n")
}

func TestProxyBreakClosesConnectionsAndDropsHeldBytes(t *testing.T) {
	noLeaks(t)
	tg := startTarget(t)
	p := redistest.StartProxy(t, tg.ln.Addr().String())
	c1, s1 := dial(t, p, tg)
	c2, s2 := dial(t, p, tg)

	p.StallReplies()
	send(t, s1, "held reply\r\n")
	p.Break()
	expectEOF(t, c1)
	expectEOF(t, s1)
	expectEOF(t, c2)
	expectEOF(t, s2)
	p.Resume()

	// The proxy goes on accepting, and nothing held for the broken
	// connections reaches a new one.
	c3, s3 := dial(t, p, tg)
	if n := p.Accepted(); n != 3 {
		t.Errorf("Accepted() = %d, want 3: closed connections count too", n)
	}
	send(t, s3, "fresh\r\n")
	expect(t, c3, "fresh\r\n")
	send(t, c3, "x")
	expect(t, s3, "x")
}

func TestProxyCloseEndsConnectionsEvenWhileStalled(t *testing.T) {
	noLeaks(t)
	tg := startTarget(t)
	p := redistest.StartProxy(t, tg.ln.Addr().String())
	c, s := dial(t, p, tg)
	p.Stall()
	send(t, c, "held")
	send(t, s, "held")
	expectQuiet(t, c)

	p.Close()
	expectEOF(t, c)
	expectEOF(t, s)
	if n := p.Conns(); n != 0 {
		t.Errorf("Conns() after Close = %d, want 0", n)
	}
	if nc, err := net.DialTimeout("tcp", p.Addr(), ioTimeout); err == nil {
		nc.Close()
		t.Error("the proxy still accepts connections after Close")
	}
	p.Close() // idempotent; t.Cleanup calls it again too
}

func TestProxyUnreachableTargetClosesClient(t *testing.T) {
	noLeaks(t)
	// A port nobody listens on: take one, then free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := redistest.StartProxy(t, addr)
	c, err := net.DialTimeout("tcp", p.Addr(), ioTimeout)
	if err != nil {
		t.Fatalf("dialling the proxy: %v", err)
	}
	defer c.Close()
	expectEOF(t, c)
}
