package redistest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy on a free port of 127.0.0.1 that forwards every
// connection it accepts to a target address, for tests that need network
// faults Redis itself cannot produce: a connection that stays open but
// carries nothing ([Proxy.Stall]), a reply that never arrives
// ([Proxy.StallReplies]) and connections that break all at once
// ([Proxy.Break]).
//
// Held bytes are not dropped: like TCP across a network partition that
// heals, they are delivered in order after [Proxy.Resume], unless their
// connection is closed first. Bytes already being written when Stall is
// called may still arrive.
//
// A Proxy is safe for concurrent use. [StartProxy] closes it in t.Cleanup.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close: ends dials to the target
	cancel context.CancelFunc
	wg     sync.WaitGroup // the accept loop and every connection's pumps

	mu       sync.Mutex
	closed   bool
	accepted int
	links    map[*link]struct{}
	// breaks counts Break calls: a connection accepted before a Break
	// but still dialling the target when it came is closed once set up.
	breaks int
	// held[d] is nil while direction d forwards, else a channel that
	// Resume closes.
	held [2]chan struct{}
	// budget[d], when positive, is how many more bytes direction d
	// forwards before it is held (StallRepliesAfter).
	budget [2]int
}

// The directions of a proxied connection.
const (
	toTarget = 0 // client → target: commands
	toClient = 1 // target → client: replies and messages
)

// link is one proxied connection: the client's side and the target's.
type link struct {
	client, target net.Conn
	once           sync.Once
	done           chan struct{} // closed by close
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		_ = l.client.Close()
		_ = l.target.Close()
	})
}

// proxyDialTimeout bounds a dial of the target.
const proxyDialTimeout = 5 * time.Second

// StartProxy starts a proxy to target ("host:port") and closes it in
// t.Cleanup. The target is dialled anew for every accepted connection; if
// that fails, the accepted connection is closed. It fails the test if no
// port can be had; call it from the test's goroutine.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: starting a proxy to %s: %v", target, err)
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{target: target, ln: ln, ctx: ctx, cancel: cancel, links: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the address clients dial, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Stall stops forwarding bytes in both directions on every current and
// future connection, until Resume. Connections stay open and new ones are
// still accepted, so clients see a peer that takes their bytes and never
// answers.
func (p *Proxy) Stall() { p.hold(toTarget, toClient) }

// StallReplies stops forwarding bytes from the target to the clients only,
// until Resume: commands still reach the target and run, but their replies
// (and pub/sub messages) are held back.
func (p *Proxy) StallReplies() { p.hold(toClient) }

// StallRepliesAfter lets n more bytes from the target through to the
// clients (counted over all connections), then holds that direction as
// StallReplies does, until Resume: a reply or message can be cut at a
// chosen byte, as a slow network cuts a large one.
func (p *Proxy) StallRepliesAfter(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n <= 0 {
		if p.held[toClient] == nil {
			p.held[toClient] = make(chan struct{})
		}
		return
	}
	p.budget[toClient] = n
}

// RepliesHeld reports whether bytes from the target are being held: after
// StallReplies or Stall, or once a StallRepliesAfter budget ran out.
func (p *Proxy) RepliesHeld() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[toClient] != nil
}

func (p *Proxy) hold(dirs ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range dirs {
		if p.held[d] == nil {
			p.held[d] = make(chan struct{})
		}
	}
}

// Resume forwards again in both directions, held bytes first.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for d, ch := range p.held {
		if ch != nil {
			close(ch)
			p.held[d] = nil
		}
		p.budget[d] = 0
	}
}

// Break closes every current connection on both sides, dropping the bytes
// held for them; clients read EOF. The proxy goes on accepting, and a
// stall stays in force for new connections.
func (p *Proxy) Break() {
	p.mu.Lock()
	p.breaks++
	p.mu.Unlock()
	for _, l := range p.current() {
		l.close()
	}
}

// Accepted returns how many connections the proxy has accepted so far,
// closed ones included: a test can await a client's reconnection by it.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Conns returns how many connections are open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

func (p *Proxy) current() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := make([]*link, 0, len(p.links))
	for l := range p.links {
		ls = append(ls, l)
	}
	return ls
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines to end. It is idempotent; StartProxy calls it in
// t.Cleanup.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	_ = p.ln.Close()
	p.Break()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed (a listener on loopback has no other failure worth retrying)
		}
		p.mu.Lock()
		p.accepted++
		breaks := p.breaks
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c, breaks)
	}
}

// serve connects one accepted client to the target and pumps bytes both
// ways until either side closes or the proxy does. breaks is the number of
// Break calls when the client was accepted.
func (p *Proxy) serve(client net.Conn, breaks int) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: proxyDialTimeout}
	target, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	l := &link{client: client, target: target, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed || p.breaks != breaks {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	other := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(other)
		p.pump(l, toClient, client, target)
	}()
	p.pump(l, toTarget, target, client)
	<-other
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// pump copies src to dst in direction dir, waiting while that direction is
// held; when either side fails it closes the whole link.
func (p *Proxy) pump(l *link, dir int, dst, src net.Conn) {
	defer l.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for data := buf[:n]; len(data) > 0; {
			k, ok := p.pass(l, dir, len(data))
			if !ok {
				return
			}
			if _, werr := dst.Write(data[:k]); werr != nil {
				return
			}
			data = data[k:]
		}
		if err != nil {
			return
		}
	}
}

// pass waits until direction dir forwards and returns how many of n
// bytes may go now (fewer when a StallRepliesAfter budget runs out); it
// reports false if the link closed meanwhile.
func (p *Proxy) pass(l *link, dir int, n int) (int, bool) {
	for {
		p.mu.Lock()
		held := p.held[dir]
		if held == nil {
			if b := p.budget[dir]; b > 0 {
				n = min(n, b)
				if p.budget[dir] = b - n; p.budget[dir] == 0 {
					p.held[dir] = make(chan struct{})
				}
			}
			p.mu.Unlock()
			return n, true
		}
		p.mu.Unlock()
		select {
		case <-held:
		case <-l.done:
			return 0, false
		}
	}
}
