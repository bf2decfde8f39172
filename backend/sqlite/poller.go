package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"math"
	"sync"
	"time"
	"unicode/utf8"
)

// pollBatch is how many messages one read of the poller takes at most.
const pollBatch = 1024

// maxPollBackoff bounds the pause between attempts while the poller cannot
// read the file.
const maxPollBackoff = time.Second

// poller is the one goroutine per Backend that reads what other
// connections wrote: messages for the Backend's Subscriptions and lock
// releases for its release watchers. It starts with the first
// Subscription or watch and runs until the Backend is closed; while it has
// nothing to serve it waits without polling.
//
// Each turn it asks PRAGMA data_version whether another connection
// committed since the last turn, and reads only then (and when a watched
// lock's expiry has passed). A turn comes every Options.PollInterval, or at
// once when this Backend wrote something a reader of this process waits
// for.
//
// The poller never opens the database's files itself (to look at the
// -wal or -shm file, say): closing any descriptor of a file drops every
// POSIX lock the process holds on it, SQLite's WAL locks among them.
type poller struct {
	b *Backend

	// ctx ends when the Backend is closed; cancel ends it. sctx is ctx
	// without cancellation, for statements: each one is short, the
	// goroutine checks ctx between turns, and a cancellable ctx costs the
	// driver a goroutine per statement to interrupt it.
	ctx    context.Context
	sctx   context.Context
	cancel context.CancelFunc
	// wake holds one pending request for a turn now.
	wake chan struct{}
	// exited is closed when the goroutine returns.
	exited chan struct{}

	mu      sync.Mutex
	running bool
	closed  bool
	pending []*subscription // waiting to be taken in at the next turn
	subs    map[string]map[*subscription]struct{}
	nsubs   int
	watches map[*releaseWatch]struct{}
	rewatch bool // a watch was armed: check the locks at the next turn

	// The rest belongs to the goroutine.
	cursor     int64 // every message up to this id has been dispatched
	failing    bool  // reads fail; the subscriptions were told
	busySince  time.Time
	lastDV     int64
	nextExpiry int64 // ms at which a watched live lock expires
}

func newPoller(b *Backend) *poller {
	ctx, cancel := context.WithCancel(context.Background())
	return &poller{
		b:          b,
		ctx:        ctx,
		sctx:       context.WithoutCancel(ctx),
		cancel:     cancel,
		wake:       make(chan struct{}, 1),
		exited:     make(chan struct{}),
		subs:       make(map[string]map[*subscription]struct{}),
		watches:    make(map[*releaseWatch]struct{}),
		lastDV:     -1,
		nextExpiry: math.MaxInt64,
	}
}

// kick asks for a turn now, without blocking.
func (p *poller) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// startLocked starts the goroutine if it is not running. p.mu must be held.
func (p *poller) startLocked() {
	if !p.running {
		p.running = true
		go p.run()
	}
}

// subscribe hands s to the poller and waits until the poller has taken it
// in, so that it reads every message after s.from for it.
func (p *poller) subscribe(ctx context.Context, s *subscription) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.pending = append(p.pending, s)
	p.startLocked()
	p.mu.Unlock()
	p.kick()
	select {
	case <-s.registered:
		return nil
	case <-ctx.Done():
		_ = s.Close()
		return ctx.Err()
	case <-p.ctx.Done():
		_ = s.Close()
		return ErrClosed
	}
}

// unsubscribe forgets s, whether or not it was taken in yet.
func (p *poller) unsubscribe(s *subscription) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, q := range p.pending {
		if q == s {
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			return
		}
	}
	if set := p.subs[s.channel]; set != nil {
		if _, ok := set[s]; ok {
			delete(set, s)
			p.nsubs--
			if len(set) == 0 {
				delete(p.subs, s.channel)
			}
		}
	}
}

// watch arms w: the next turn checks its locks, and so does every turn
// after a change of the file.
func (p *poller) watch(w *releaseWatch) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.watches[w] = struct{}{}
	p.rewatch = true
	p.startLocked()
	p.mu.Unlock()
	p.kick()
	return nil
}

func (p *poller) unwatch(w *releaseWatch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.watches, w)
}

// shut stops the goroutine and closes every subscription.
func (p *poller) shut() {
	p.mu.Lock()
	p.closed = true
	running := p.running
	p.mu.Unlock()
	p.cancel()
	if running {
		<-p.exited
	}
	p.mu.Lock()
	var subs []*subscription
	subs = append(subs, p.pending...)
	for _, set := range p.subs {
		for s := range set {
			subs = append(subs, s)
		}
	}
	p.pending, p.subs, p.nsubs = nil, nil, 0
	p.mu.Unlock()
	for _, s := range subs {
		s.shut()
	}
}

func (p *poller) run() {
	defer close(p.exited)
	var conn *dbConn
	closeConn := func() {
		if conn != nil {
			conn.close()
			conn = nil
		}
	}
	defer closeConn()
	timer := time.NewTimer(p.b.opts.PollInterval)
	defer timer.Stop()
	pause := p.b.opts.PollInterval
	for {
		p.mu.Lock()
		idle := p.nsubs == 0 && len(p.pending) == 0 && len(p.watches) == 0
		p.mu.Unlock()
		if idle {
			select {
			case <-p.wake:
			case <-p.ctx.Done():
				return
			}
		} else {
			select {
			case <-p.wake:
			case <-timer.C:
			case <-p.ctx.Done():
				return
			}
		}
		var err error
		if conn == nil {
			if conn, err = p.b.r.open(p.ctx); err == nil {
				p.lastDV = -1
			}
		}
		if err == nil {
			err = p.turn(conn)
		}
		switch {
		case p.ctx.Err() != nil:
			return
		case err == nil:
			p.busySince = time.Time{}
			pause = p.b.opts.PollInterval
			if p.failing {
				p.failing = false
				p.each(func(s *subscription) { s.resume() })
			}
		case isBusy(err) && (p.busySince.IsZero() || time.Since(p.busySince) < p.b.opts.BusyTimeout):
			// Another connection holds a lock readers wait for (WAL
			// recovery, rarely): nothing was read, try at the next turn.
			if p.busySince.IsZero() {
				p.busySince = time.Now()
			}
		default:
			// The file cannot be read: tell the subscriptions at once,
			// start over on a new connection, and report a loss once
			// reads work again.
			if !p.failing {
				p.failing = true
				p.each(func(s *subscription) { s.interrupt() })
			}
			closeConn()
			pause = min(2*pause, maxPollBackoff)
		}
		timer.Reset(pause)
	}
}

// each calls f for every taken-in subscription, with p.mu held.
func (p *poller) each(f func(*subscription)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, set := range p.subs {
		for s := range set {
			f(s)
		}
	}
}

// turn takes in waiting subscriptions, then reads messages and checks
// watched locks if the file changed.
func (p *poller) turn(conn *dbConn) error {
	p.mu.Lock()
	admitted := p.admitLocked()
	channels := make([]string, 0, len(p.subs))
	for ch := range p.subs {
		channels = append(channels, ch)
	}
	haveWatches := len(p.watches) > 0
	rewatch := p.rewatch
	p.rewatch = false
	p.mu.Unlock()

	now := time.Now()
	expired := haveWatches && now.UnixMilli() >= p.nextExpiry
	var dv int64
	if err := conn.scan(p.sctx, sqlDataVersion, nil, &dv); err != nil {
		p.setRewatch(rewatch)
		return err
	}
	changed := dv != p.lastDV
	// A turn without subscriptions may have taken in a data_version
	// without reading the messages behind it; newcomers need them.
	if len(channels) > 0 && (changed || admitted) {
		if err := p.readMessages(conn, channels); err != nil {
			p.setRewatch(rewatch)
			return err
		}
	}
	if haveWatches && (changed || rewatch || expired) {
		if err := p.checkLocks(conn, time.Now().UnixMilli()); err != nil {
			p.setRewatch(rewatch)
			return err
		}
	}
	p.lastDV = dv
	return nil
}

// setRewatch keeps a pending lock check for the next turn after a failed
// one.
func (p *poller) setRewatch(rewatch bool) {
	if rewatch {
		p.mu.Lock()
		p.rewatch = true
		p.mu.Unlock()
	}
}

// admitLocked takes in the waiting subscriptions. A subscription receives
// the messages after both its own start (the head when Subscribe asked)
// and the cursor: messages up to the cursor were dispatched before it was
// taken in, so they were published before Subscribe returned. p.mu must be
// held. It reports whether it took any in.
func (p *poller) admitLocked() bool {
	if len(p.pending) == 0 {
		return false
	}
	first := p.nsubs == 0
	lowest := int64(math.MaxInt64)
	for _, s := range p.pending {
		s.from = max(s.from, p.cursor)
		lowest = min(lowest, s.from)
		set := p.subs[s.channel]
		if set == nil {
			set = make(map[*subscription]struct{})
			p.subs[s.channel] = set
		}
		set[s] = struct{}{}
		p.nsubs++
		if p.failing {
			s.interrupt()
		}
		close(s.registered)
	}
	p.pending = nil
	if first {
		// Nobody needed the messages between the old cursor and the
		// newcomers' start.
		p.cursor = lowest
	}
	return true
}

// message is a row of the message log.
type message struct {
	id      int64
	channel string
	payload []byte
}

// readMessages reads the messages after the cursor, in batches, and
// dispatches each to the subscriptions of its channel that started before
// it. A log trimmed past the cursor makes the subscriptions that started
// before the trim point report a loss.
func (p *poller) readMessages(conn *dbConn, channels []string) error {
	// The channels go to SQL as a JSON array, which cannot carry names
	// that are not UTF-8; then every message is read, and dispatching
	// filters them.
	var filter []byte
	valid := true
	for _, ch := range channels {
		valid = valid && utf8.ValidString(ch)
	}
	if valid {
		filter, _ = json.Marshal(channels) // strings always marshal
	}
	for {
		msgs, trimmed, head, err := p.readBatch(conn, filter)
		if err != nil {
			return err
		}
		p.mu.Lock()
		if trimmed > p.cursor {
			for _, set := range p.subs {
				for s := range set {
					if s.from < trimmed {
						s.lose()
					}
				}
			}
			p.cursor = trimmed
		}
		for _, m := range msgs {
			p.cursor = m.id
			shared := false
			for s := range p.subs[m.channel] {
				if m.id <= s.from {
					continue
				}
				payload := m.payload
				if shared {
					payload = append([]byte(nil), payload...)
				}
				shared = true
				s.push(payload)
			}
		}
		if len(msgs) < pollBatch {
			p.cursor = max(p.cursor, head)
		}
		p.mu.Unlock()
		if len(msgs) < pollBatch {
			return nil
		}
	}
}

// readBatch reads, with one statement (so in one read transaction), where
// the log stands and the next messages after the cursor of the channels
// in filter (a JSON array; nil for every channel).
func (p *poller) readBatch(conn *dbConn, filter []byte) (msgs []message, trimmed, head int64, err error) {
	var f any
	if filter != nil {
		f = string(filter)
	}
	rows, err := conn.query(p.sctx, sqlPoll, p.cursor, f, pollBatch)
	if err != nil {
		return nil, 0, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var id sql.NullInt64
		var channel sql.NullString
		var payload []byte
		if err := rows.Scan(&trimmed, &head, &id, &channel, &payload); err != nil {
			return nil, 0, 0, err
		}
		if !id.Valid {
			continue // the row of an empty read
		}
		if payload == nil {
			payload = []byte{}
		}
		msgs = append(msgs, message{id: id.Int64, channel: channel.String, payload: payload})
	}
	if err := rows.Err(); err != nil {
		return nil, 0, 0, err
	}
	return msgs, trimmed, head, nil
}

// checkLocks wakes the watchers of keys that have no live lock, and notes
// when the earliest watched live lock expires.
func (p *poller) checkLocks(conn *dbConn, now int64) error {
	p.mu.Lock()
	byName := make(map[string][]*releaseWatch)
	for w := range p.watches {
		byName[w.name] = append(byName[w.name], w)
	}
	p.mu.Unlock()
	next := int64(math.MaxInt64)
	for name, ws := range byName {
		live, err := p.liveLocks(conn, name, now)
		if err != nil {
			return err
		}
		for _, w := range ws {
			for k := range w.keys {
				exp, held := live[k]
				if !held {
					w.wake()
					break
				}
				next = min(next, exp+1)
			}
		}
	}
	p.nextExpiry = next
	return nil
}

// liveLocks returns the expiry of every live lock of context name, by key.
func (p *poller) liveLocks(conn *dbConn, name string, now int64) (map[string]int64, error) {
	rows, err := conn.query(p.sctx, sqlLiveLocks, name, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	live := make(map[string]int64)
	for rows.Next() {
		var key string
		var exp int64
		if err := rows.Scan(&key, &exp); err != nil {
			return nil, err
		}
		live[key] = exp
	}
	return live, rows.Err()
}
