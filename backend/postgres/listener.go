package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// listenerAppName is the application_name of the listening connection
// (when the pool's configuration names none), so operators (and tests) can
// tell it from the pool's connections in pg_stat_activity.
const listenerAppName = "contextd listener"

// connectTimeout bounds one attempt to open the listening connection when
// the pool's configuration sets no connect_timeout.
const connectTimeout = 10 * time.Second

// sink receives what the listener hears on one NOTIFY channel. Its methods
// are called with the listener's lock held and must not block or call back
// into the listener.
type sink interface {
	// deliver hands over one notification's payload.
	deliver(note string)
	// interrupted says the connection broke: nothing is heard until
	// resumed.
	interrupted()
	// resumed says the channel is listened to again, on a new connection;
	// notifications sent meanwhile are lost.
	resumed()
	// closedByBackend says the Backend was closed.
	closedByBackend()
}

// listener is the Backend's one listening connection, shared by all its
// subscriptions and release watchers: it LISTENs to a channel while some
// sink wants it and UNLISTENs when the last one leaves. One goroutine owns
// the connection; it waits for notifications and, when asked (kick),
// interrupts the wait to run LISTEN and UNLISTEN. When the connection
// breaks it tells every sink at once (interrupted), reconnects with
// backoff, LISTENs again, and then tells them of the loss (resumed).
type listener struct {
	b *Backend

	mu       sync.Mutex
	channels map[string]*channelState
	running  bool
	closed   bool
	// cancelWait interrupts the goroutine's wait for notifications; set
	// while it waits.
	cancelWait context.CancelFunc
	dirty      bool // channels changed since the goroutine last looked
	stop       context.CancelFunc
	done       chan struct{}
}

type channelState struct {
	sinks     map[sink]struct{}
	listening bool // LISTEN is in effect on the current connection
	// waiters are adds waiting for the LISTEN: nil or an error is sent
	// (buffered, never blocks).
	waiters []chan error
}

func newListener(b *Backend) *listener {
	return &listener{b: b, channels: make(map[string]*channelState)}
}

// add registers s for channel and returns once the channel is listened to,
// so that every notification committed after add returns reaches s. It
// fails if ctx ends first, or if connecting fails; then s is not
// registered.
func (l *listener) add(ctx context.Context, channel string, s sink) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	cs := l.channels[channel]
	if cs == nil {
		cs = &channelState{sinks: make(map[sink]struct{})}
		l.channels[channel] = cs
	}
	cs.sinks[s] = struct{}{}
	if cs.listening {
		l.mu.Unlock()
		return nil
	}
	w := make(chan error, 1)
	cs.waiters = append(cs.waiters, w)
	l.kickLocked()
	l.mu.Unlock()
	select {
	case err := <-w:
		if err != nil {
			l.remove(channel, s)
		}
		return err
	case <-ctx.Done():
		l.remove(channel, s)
		return ctx.Err()
	}
}

// remove unregisters s; the channel is UNLISTENed once no sink wants it.
func (l *listener) remove(channel string, s sink) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := l.channels[channel]
	if cs == nil {
		return
	}
	delete(cs.sinks, s)
	if len(cs.sinks) == 0 {
		l.kickLocked()
	}
}

// kickLocked makes the goroutine look at the channels, starting it if
// needed. l.mu is held.
func (l *listener) kickLocked() {
	l.dirty = true
	if !l.running {
		ctx, cancel := context.WithCancel(context.Background())
		l.running, l.stop, l.done = true, cancel, make(chan struct{})
		go l.run(ctx)
	}
	if l.cancelWait != nil {
		l.cancelWait()
	}
}

// close stops the goroutine, closes the connection and tells every sink.
func (l *listener) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	stop, done := l.stop, l.done
	for _, cs := range l.channels {
		for s := range cs.sinks {
			s.closedByBackend()
		}
		for _, w := range cs.waiters {
			w <- ErrClosed
		}
	}
	l.channels = map[string]*channelState{}
	l.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// run owns the connection until ctx ends.
func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
	}()
	backoff := 50 * time.Millisecond
	broken := false // sinks were told interrupted and are owed resumed
	for ctx.Err() == nil {
		if conn == nil {
			c, err := l.connect(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				l.failWaiters(err)
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			conn, backoff = c, 50*time.Millisecond
		}
		if err := l.sync(ctx, conn); err != nil {
			if ctx.Err() != nil {
				return
			}
			conn = l.broke(conn, &broken)
			continue
		}
		if broken {
			// Every channel is listened to again: what was sent while
			// the connection was down is lost.
			broken = false
			l.mu.Lock()
			for _, cs := range l.channels {
				for s := range cs.sinks {
					s.resumed()
				}
			}
			l.mu.Unlock()
		}
		l.mu.Lock()
		if l.dirty {
			l.mu.Unlock()
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, l.b.opts.PingInterval)
		l.cancelWait = cancel
		l.mu.Unlock()
		n, err := conn.WaitForNotification(wctx)
		l.mu.Lock()
		l.cancelWait = nil
		l.mu.Unlock()
		timedOut := errors.Is(wctx.Err(), context.DeadlineExceeded)
		cancel()
		switch {
		case n != nil:
			l.dispatch(n)
		case ctx.Err() != nil:
			return
		case conn.IsClosed():
			conn = l.broke(conn, &broken)
		case timedOut:
			// Idle for a ping interval: make sure the connection still
			// answers.
			pctx, cancel := context.WithTimeout(ctx, l.b.opts.StallTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				conn = l.broke(conn, &broken)
			}
		case err != nil && !pgconn.Timeout(err) && !errors.Is(err, context.Canceled):
			conn = l.broke(conn, &broken)
		}
		// Otherwise the wait was interrupted by a kick: look again.
	}
}

// connect opens the listening connection with the pool's settings.
func (l *listener) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg := l.b.pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = make(map[string]string)
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = listenerAppName
	}
	// A cancelled wait for notifications must leave the connection
	// usable: interrupt the read with a deadline, never with a cancel
	// request.
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	timeout := cfg.ConnectTimeout
	if timeout <= 0 {
		timeout = connectTimeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return pgx.ConnectConfig(cctx, cfg)
}

// sync LISTENs to the channels sinks want and UNLISTENs from those nobody
// wants, then answers the waiters. It fails only if the connection does.
func (l *listener) sync(ctx context.Context, conn *pgx.Conn) error {
	l.mu.Lock()
	l.dirty = false
	var listen, unlisten []string
	for name, cs := range l.channels {
		switch {
		case len(cs.sinks) == 0 && cs.listening:
			// Marked before the UNLISTEN runs, so a sink added meanwhile
			// waits for a new LISTEN instead of trusting this one.
			cs.listening = false
			unlisten = append(unlisten, name)
		case len(cs.sinks) == 0:
			delete(l.channels, name)
		case !cs.listening:
			listen = append(listen, name)
		}
	}
	l.mu.Unlock()
	if len(listen) == 0 && len(unlisten) == 0 {
		return nil
	}
	var sql strings.Builder
	for _, name := range listen {
		sql.WriteString(listenSQL(name))
	}
	for _, name := range unlisten {
		sql.WriteString(unlistenSQL(name))
	}
	sctx, cancel := context.WithTimeout(ctx, l.b.opts.StallTimeout)
	_, err := conn.Exec(sctx, sql.String())
	cancel()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range listen {
		if cs := l.channels[name]; cs != nil {
			cs.listening = true
			for _, w := range cs.waiters {
				w <- nil
			}
			cs.waiters = nil
		}
	}
	for _, name := range unlisten {
		if cs := l.channels[name]; cs != nil && len(cs.sinks) == 0 {
			delete(l.channels, name)
		}
	}
	return nil
}

// broke closes a connection that failed and tells every sink that
// nothing is heard until it is replaced.
func (l *listener) broke(conn *pgx.Conn, broken *bool) *pgx.Conn {
	cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_ = conn.Close(cctx)
	cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cs := range l.channels {
		cs.listening = false
		for s := range cs.sinks {
			s.interrupted()
		}
	}
	*broken = true
	return nil
}

// failWaiters answers the adds waiting for a LISTEN with a connection
// error; their sinks are removed by add.
func (l *listener) failWaiters(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cs := range l.channels {
		for _, w := range cs.waiters {
			w <- err
		}
		cs.waiters = nil
	}
}

// dispatch hands a notification to the sinks of its channel.
func (l *listener) dispatch(n *pgconn.Notification) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cs := l.channels[n.Channel]; cs != nil && cs.listening {
		for s := range cs.sinks {
			s.deliver(n.Payload)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
