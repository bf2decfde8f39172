package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/contextd-go/contextd/broadcaster"
	"github.com/contextd-go/contextd/internal/backoff"
)

// This file multiplexes every Subscription and release watch of a Backend
// over one pub/sub connection per Redis node: on a cluster one per master
// that owns a slot in use, otherwise one. The package documentation
// ("Subscriptions") and docs/design-notes.md describe the design; in short:
//
//   - hub: the Backend's registry of channels and shards, under one mutex.
//   - shard: one pub/sub connection and two goroutines. The reader connects,
//     receives, dispatches and replaces the connection when it breaks or
//     stalls; while a connection is up a watchdog goroutine of its own
//     pings it when idle, closes it when it stalls and runs due retries
//     and ended lingers (the reader never reads with a deadline: one that
//     passed in the middle of a large message would leave the rest of it
//     to be misread as the next reply); the writer sends the commands
//     the others queue (SUBSCRIBE, UNSUBSCRIBE, PING), in queue order, so
//     no caller does network I/O under the hub's mutex.
//   - channel: one subscribed channel and its members (Subscriptions and
//     release watches), each with a sink that takes deliveries. When its
//     last member leaves it lingers, still subscribed, for channelLinger,
//     so that a member joining meanwhile needs no SUBSCRIBE.
//
// Every command sent on a connection is also recorded, in order, in the
// shard's pending list: Redis answers commands in order, so a reply or an
// error is matched to the command it answers, and a refused SUBSCRIBE
// affects only its own channel. Each channel is subscribed with a command
// of its own for that reason (Redis refuses a SUBSCRIBE of several
// channels as a whole).
//
// go-redis's PubSub reconnects and resubscribes by itself after a broken
// connection, in one command for all channels (which a cluster refuses
// with CROSSSLOT when they span slots). A shard therefore uses each PubSub
// for one connection only: when it breaks, the shard closes it and starts
// a new one, subscribing every channel itself.

// pollInterval is how often a connection's watchdog runs (and with it the
// due retries and ended lingers) when nothing is due sooner.
const pollInterval = 200 * time.Millisecond

// channelLinger is how long a channel stays subscribed after its last
// member left. A lock waiter joins its context's :unlock channel for each
// wait and leaves when it gets the turn; under contention its next wait
// comes milliseconds later. Dropping the channel at once cost every wait a
// SUBSCRIBE, an UNSUBSCRIBE and the confirmation round trip the waiter
// sat through; a member that joins a lingering channel finds it live and
// returns at once. A few seconds span any burst of contention, and an
// idle subscription costs the server little and the connection only the
// channel's messages, which no member takes. The reader checks for ended
// lingers at least every pollInterval, so no timer runs per channel.
const channelLinger = 3 * time.Second

// Kinds of command sent on a pub/sub connection.
const (
	opPing = iota
	opSubscribe
	opUnsubscribe
)

// command is one command queued for, or sent on, a shard's connection.
type command struct {
	op int
	ch *channel // nil for opPing
	ps *goredis.PubSub
}

// pubsubClient makes pub/sub connections to one node: a *goredis.Client
// (a node of a cluster or ring) or the Backend's client.
type pubsubClient interface {
	Subscribe(ctx context.Context, channels ...string) *goredis.PubSub
}

// sink takes what a member's channel delivers. Its methods are called with
// the hub's mutex held and must not block.
type sink interface {
	deliver(payload string)
	interrupt() // the channel stopped receiving
	resume()    // it receives again; messages may have been lost
	end()       // the Backend closed
}

// hub is a Backend's pub/sub: channels and the shards they live on.
type hub struct {
	b      *Backend
	ctx    context.Context // ends when the hub closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // every shard's goroutines

	// multiNode: channels are routed to the node that owns them (a cluster
	// or ring client). redirects: the nodes are a cluster's, which answer
	// MOVED for a slot they do not own.
	multiNode, redirects bool

	// linger is how long a channel without members stays subscribed:
	// channelLinger, set before the hub is used (tests shorten it).
	linger time.Duration

	mu       sync.Mutex
	closed   bool
	shards   map[string]*shard // by node address ("" for a single-node client)
	channels map[string]*channel
}

// channel is one subscribed channel of a hub.
type channel struct {
	name    string
	shard   *shard
	members map[*member]struct{}
	// live: confirmed by Redis on the shard's current connection, and
	// every member told so. While not live, members that were live before
	// have been told it is interrupted.
	live bool
	// subGen is the generation of the shard's connection on which a
	// SUBSCRIBE of this channel was queued and not undone; 0 when none.
	subGen uint64
	// retryAt is when to subscribe again after a refusal or a
	// sunsubscribe; zero when no retry is due.
	retryAt time.Time
	pause   backoff.Backoff
	// idleUntil is when a channel whose last member left is unsubscribed
	// (hub.linger after it left); zero while it has members. Only a live
	// channel lingers: whatever makes it stop receiving drops it.
	idleUntil time.Time
}

// member is one user of a channel: a Subscription or a release watch.
type member struct {
	ch   *channel
	sink sink
	// first receives the outcome of the member's first subscription (nil
	// once Redis confirmed it) and is set to nil then; members that joined
	// a live channel never have one.
	first chan error
}

// shard is one pub/sub connection of a hub, to one node.
type shard struct {
	h      *hub
	addr   string
	node   pubsubClient
	ctx    context.Context // ends when the shard stops
	cancel context.CancelFunc
	wake   chan struct{} // the writer has commands to send
	kick   chan struct{} // a member waits: reconnect now rather than after the pause

	// Guarded by h.mu.
	channels  map[*channel]struct{}
	ps        *goredis.PubSub // the current connection; nil between connections
	gen       uint64          // counts connections
	failed    bool            // a command could not be written on ps; the reader replaces it
	outbox    []command       // queued for the writer
	pending   []command       // sent or queued on ps, awaiting their replies, oldest first
	nextRetry time.Time       // earliest retryAt of its channels; zero when none
	// retryWake mirrors nextRetry (Unix nanoseconds, 0 for none) for the
	// reader, which shortens its Receive to be on time.
	retryWake atomic.Int64
	// nextIdle is the earliest idleUntil of its channels (zero when none
	// lingers), mirrored for the reader in idleWake as retryWake mirrors
	// nextRetry.
	nextIdle time.Time
	idleWake atomic.Int64
}

func newHub(b *Backend) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	h := &hub{b: b, ctx: ctx, cancel: cancel, linger: channelLinger, shards: make(map[string]*shard), channels: make(map[string]*channel)}
	switch b.client.(type) {
	case *goredis.ClusterClient:
		h.multiNode, h.redirects = true, true
	case *goredis.Ring:
		h.multiNode = true
	}
	return h
}

// route names the node that serves channel and a client for it.
func (h *hub) route(ctx context.Context, channel string) (string, pubsubClient, error) {
	switch c := h.b.client.(type) {
	case *goredis.ClusterClient:
		node, err := c.MasterForKey(ctx, channel)
		if err != nil {
			return "", nil, err
		}
		return node.Options().Addr, node, nil
	case *goredis.Ring:
		node, err := c.GetShardClientForKey(channel)
		if err != nil {
			return "", nil, err
		}
		return node.Options().Addr, node, nil
	}
	return "", h.b.client, nil
}

// join adds a member with sink k to channel name and returns it once the
// channel is live for it (confirmed by Redis), or an error: ctx's, the
// refusal of the SUBSCRIBE, a failed connection, no confirmation within
// Options.StallTimeout + Options.PingInterval, broadcaster.ErrClosed.
func (h *hub) join(ctx context.Context, name string, k sink) (*member, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h.mu.Lock()
		c, closed := h.channels[name], h.closed
		h.mu.Unlock()
		if closed {
			return nil, broadcaster.ErrClosed
		}
		var addr string
		var node pubsubClient
		if c == nil {
			var err error
			if addr, node, err = h.route(ctx, name); err != nil {
				return nil, err
			}
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, broadcaster.ErrClosed
		}
		c = h.channels[name]
		if c == nil {
			if node == nil {
				h.mu.Unlock() // the channel went while we looked: route it
				continue
			}
			s := h.shardLocked(addr, node)
			c = &channel{name: name, shard: s, members: make(map[*member]struct{}), pause: backoff.New(50*time.Millisecond, 2*time.Second)}
			h.channels[name] = c
			s.channels[c] = struct{}{}
			s.subscribeLocked(c)
		}
		m := &member{ch: c, sink: k}
		c.members[m] = struct{}{}
		c.idleUntil = time.Time{} // if it lingered, it is in use again
		if c.live {
			h.mu.Unlock()
			return m, nil
		}
		first := make(chan error, 1)
		m.first = first
		c.shard.kickLocked()
		h.mu.Unlock()
		if err := h.awaitFirst(ctx, m, first); err != nil {
			return nil, err
		}
		return m, nil
	}
}

// awaitFirst waits for m's first confirmation, which comes on first; on
// failure m has left.
func (h *hub) awaitFirst(ctx context.Context, m *member, first <-chan error) error {
	// Bound the wait even if ctx has no deadline: a stalled server must
	// not hang Initialize forever.
	wait := h.b.opts.StallTimeout + h.b.opts.PingInterval
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case err := <-first:
		return err // on an error, whoever sent it removed m
	case <-ctx.Done():
		h.leave(m)
		return ctx.Err()
	case <-t.C:
		h.leave(m)
		if err := ctx.Err(); err != nil {
			return err
		}
		return fmt.Errorf("no confirmation from Redis within %v", wait)
	}
}

// leave removes m from its channel; when the last member leaves, the
// channel lingers (idleLocked). It is idempotent.
func (h *hub) leave(m *member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	c := m.ch
	if _, ok := c.members[m]; !ok {
		return
	}
	delete(c.members, m)
	if len(c.members) == 0 {
		h.idleLocked(c)
	}
}

// idleLocked keeps c, whose last member left, subscribed for h.linger, so
// that a member joining meanwhile finds it live; the shard's reader drops
// it when the linger ends (lingerDue). A channel not live is dropped at
// once: a member joining it would wait for a SUBSCRIBE anyway.
func (h *hub) idleLocked(c *channel) {
	if !c.live || h.linger <= 0 {
		h.dropLocked(c)
		return
	}
	c.idleUntil = time.Now().Add(h.linger)
	if s := c.shard; s.nextIdle.IsZero() || c.idleUntil.Before(s.nextIdle) {
		s.setNextIdleLocked(c.idleUntil)
	}
}

// dropLocked removes a channel that has no members left. A shard left
// without channels stops, which closes its connection.
func (h *hub) dropLocked(c *channel) {
	if h.channels[c.name] == c {
		delete(h.channels, c.name)
	}
	s := c.shard
	delete(s.channels, c)
	if len(s.channels) == 0 {
		s.stopLocked()
		return
	}
	if c.subGen != 0 && c.subGen == s.gen && s.ps != nil && !s.failed {
		s.sendLocked(command{op: opUnsubscribe, ch: c})
	}
	c.subGen, c.idleUntil = 0, time.Time{}
}

// shardLocked returns the running shard for addr, starting it if needed.
func (h *hub) shardLocked(addr string, node pubsubClient) *shard {
	if s := h.shards[addr]; s != nil {
		return s
	}
	ctx, cancel := context.WithCancel(h.ctx)
	s := &shard{
		h: h, addr: addr, node: node, ctx: ctx, cancel: cancel,
		wake: make(chan struct{}, 1), kick: make(chan struct{}, 1),
		channels: make(map[*channel]struct{}),
	}
	h.shards[addr] = s
	h.wg.Add(2)
	go s.read()
	go s.write()
	return s
}

// close ends every member (Subscriptions return broadcaster.ErrClosed),
// closes every connection and waits for the shards' goroutines.
func (h *hub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for _, c := range h.channels {
		for m := range c.members {
			if m.first != nil {
				m.first <- broadcaster.ErrClosed
				m.first = nil
			}
			m.sink.end()
		}
	}
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

// interruptLocked marks c as not receiving and tells its members.
func (h *hub) interruptLocked(c *channel) {
	if !c.live {
		return
	}
	c.live = false
	for m := range c.members {
		m.sink.interrupt()
	}
}

// confirmLocked marks c as live: members waiting for their first
// confirmation are let go, the others told that messages may be lost.
func (h *hub) confirmLocked(c *channel) {
	c.retryAt = time.Time{}
	c.pause.Reset()
	if c.live {
		return
	}
	c.live = true
	for m := range c.members {
		if m.first != nil {
			m.first <- nil
			m.first = nil
		} else {
			m.sink.resume()
		}
	}
}

// failFirstLocked fails the members of c still waiting for their first
// confirmation, and drops c if no member is left.
func (h *hub) failFirstLocked(c *channel, err error) {
	for m := range c.members {
		if m.first != nil {
			m.first <- err
			m.first = nil
			delete(c.members, m)
		}
	}
	if len(c.members) == 0 {
		h.dropLocked(c)
	}
}

// reroute routes channels of shard from that wait to be subscribed again
// (after a refusal, a slot migration, a failed connection) to the node
// that owns them now, moving them to its shard if that is another.
func (h *hub) reroute(from *shard, cs []*channel) {
	type dest struct {
		addr string
		node pubsubClient
		err  error
	}
	dests := make([]dest, len(cs))
	for i, c := range cs {
		addr, node, err := h.route(from.ctx, c.name)
		dests[i] = dest{addr, node, err}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	now := time.Now()
	for i, c := range cs {
		if h.channels[c.name] != c || c.shard != from || c.live || c.subGen != 0 {
			continue // it left, moved, or is on its way already
		}
		switch d := dests[i]; {
		case d.err != nil:
			from.retryLocked(c, now)
		case d.addr == from.addr:
			from.subscribeLocked(c)
		default:
			delete(from.channels, c)
			to := h.shardLocked(d.addr, d.node)
			to.channels[c] = struct{}{}
			c.shard, c.retryAt = to, time.Time{}
			to.subscribeLocked(c)
			to.kickLocked()
		}
	}
	if len(from.channels) == 0 {
		from.stopLocked()
	}
}

// subscribeLocked queues a SUBSCRIBE of c on the current connection; with
// none, the next connection subscribes it.
func (s *shard) subscribeLocked(c *channel) {
	c.retryAt = time.Time{}
	if s.ps == nil || s.failed {
		c.subGen = 0
		return
	}
	c.subGen = s.gen
	s.sendLocked(command{op: opSubscribe, ch: c})
}

// sendLocked queues cmd for the writer, on the current connection.
func (s *shard) sendLocked(cmd command) {
	cmd.ps = s.ps
	s.outbox = append(s.outbox, cmd)
	s.pending = append(s.pending, cmd)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *shard) kickLocked() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// stopLocked stops a shard that has no channels: its goroutines end and
// close the connection.
func (s *shard) stopLocked() {
	if s.h.shards[s.addr] == s {
		delete(s.h.shards, s.addr)
	}
	s.cancel()
}

// retryLocked schedules another SUBSCRIBE of c after a pause that grows
// with each failure.
func (s *shard) retryLocked(c *channel, now time.Time) {
	c.subGen = 0
	c.retryAt = now.Add(c.pause.Next())
	if s.nextRetry.IsZero() || c.retryAt.Before(s.nextRetry) {
		s.setNextRetryLocked(c.retryAt)
	}
}

func (s *shard) setNextRetryLocked(t time.Time) {
	s.nextRetry = t
	s.retryWake.Store(wakeAt(t))
}

func (s *shard) setNextIdleLocked(t time.Time) {
	s.nextIdle = t
	s.idleWake.Store(wakeAt(t))
}

// wakeAt is t in Unix nanoseconds, 0 for the zero time.
func wakeAt(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// read is the shard's reader goroutine: it keeps a connection up and
// dispatches what arrives on it, until the shard stops.
func (s *shard) read() {
	defer s.h.wg.Done()
	pause := backoff.New(50*time.Millisecond, 2*time.Second)
	for s.ctx.Err() == nil {
		ps, err := s.connect()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.connectFailed(err)
			s.sleep(pause.Next())
			continue
		}
		opened := time.Now()
		worked := s.receive(ps)
		s.disconnect(ps)
		if worked && time.Since(opened) >= time.Second {
			// It worked for a while: reconnect at once, as go-redis
			// would. A connection that fails again and again, or
			// never answered, waits ever longer.
			pause.Reset()
			continue
		}
		s.sleep(pause.Next())
	}
}

// sleep waits d, or less if a member is waiting to be subscribed or the
// shard stops.
func (s *shard) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.kick:
	case <-s.ctx.Done():
	}
}

// connect opens a new connection (a PING makes go-redis dial it) and
// queues a SUBSCRIBE for every channel of the shard.
func (s *shard) connect() (*goredis.PubSub, error) {
	h := s.h
	ps := s.node.Subscribe(s.ctx) // no channels: it connects on first use
	h.mu.Lock()
	s.pending = []command{{op: opPing, ps: ps}}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, h.b.opts.StallTimeout+h.b.opts.PingInterval)
	err := ps.Ping(ctx)
	cancel()
	if err != nil {
		_ = ps.Close()
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.ctx.Err() != nil {
		_ = ps.Close()
		return nil, s.ctx.Err()
	}
	s.gen++
	s.ps, s.failed = ps, false
	s.setNextRetryLocked(time.Time{})
	for c := range s.channels {
		s.subscribeLocked(c)
	}
	return ps, nil
}

// connectFailed fails the members waiting for a first confirmation (as a
// connection of their own would have) and, on a cluster or ring, routes
// the channels anew: their node may be gone.
func (s *shard) connectFailed(err error) {
	h := s.h
	h.mu.Lock()
	var cs []*channel
	for c := range s.channels {
		h.failFirstLocked(c, err)
		if h.channels[c.name] == c {
			cs = append(cs, c)
		}
	}
	h.mu.Unlock()
	if h.multiNode && len(cs) > 0 {
		h.reloadState()
		h.reroute(s, cs)
	}
}

// reloadState makes a cluster client refresh its view of the slots.
func (h *hub) reloadState() {
	if c, ok := h.b.client.(*goredis.ClusterClient); ok {
		c.ReloadState(h.ctx)
	}
}

// disconnect gives up connection ps: every channel is interrupted, and
// will be subscribed on the next connection; lingering ones are dropped.
func (s *shard) disconnect(ps *goredis.PubSub) {
	h := s.h
	h.mu.Lock()
	if s.ps == ps {
		s.ps, s.failed, s.pending, s.outbox = nil, false, nil, nil
		s.setNextRetryLocked(time.Time{})
	}
	for c := range s.channels {
		if len(c.members) == 0 {
			// It lingers: nobody waits for it, so the next
			// connection need not subscribe it. (With no channel
			// left the shard stops, as when a last member leaves.)
			c.subGen = 0
			h.dropLocked(c)
			continue
		}
		h.interruptLocked(c)
		c.subGen, c.retryAt = 0, time.Time{}
	}
	h.mu.Unlock()
	_ = ps.Close()
}

// receive reads connection ps until it must be replaced (broken, stalled,
// out of step with its commands) or the shard stops. It reports whether
// the connection worked: it answered the PING it was opened with.
//
// Each Receive blocks until a whole reply has arrived, with no deadline:
// go-redis keeps a connection whose read timed out, with the part of the
// reply it had read consumed, so a poll deadline that passed in the
// middle of a large message (an event of a large transaction takes
// milliseconds to arrive) made the next Receive misread the rest of it,
// and the connection was replaced, interrupting every channel on it. The
// timed work runs in watch instead, which closes ps to end a Receive when
// the connection is to be replaced.
func (s *shard) receive(ps *goredis.PubSub) (worked bool) {
	var w watchdog
	w.lastTraffic.Store(time.Now().UnixNano())
	w.pingSent.Store(w.lastTraffic.Load()) // connect's PING is outstanding
	ctx, stop := context.WithCancel(s.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.watch(ctx, ps, &w)
	}()
	defer func() {
		stop()
		<-done
	}()
	for {
		msg, err := ps.Receive(s.ctx)
		if s.ctx.Err() != nil || w.replace.Load() {
			return worked
		}
		var refused goredis.Error
		if err != nil && !errors.As(err, &refused) {
			return worked // the connection broke, or watch closed it
		}
		worked = true
		w.lastTraffic.Store(time.Now().UnixNano())
		w.pingSent.Store(0)
		var ok bool
		if err != nil {
			ok = s.refused(ps, refused)
		} else {
			ok = s.handle(ps, msg)
		}
		if !ok {
			return worked
		}
	}
}

// watchdog is what a connection's reader and its watch share.
type watchdog struct {
	lastTraffic atomic.Int64 // Unix nanoseconds of the last reply
	pingSent    atomic.Int64 // of the outstanding watchdog PING; 0 when none
	replace     atomic.Bool  // watch closed the connection to replace it
}

// watch is the timed work of connection ps while its reader receives, until
// ctx ends: the watchdog (go-redis's own health check never waits for a
// PONG, so a connection that accepts bytes but forwards nothing would go
// unnoticed), due retries and ended lingers. When ps is to be replaced it
// closes ps, which ends the reader's Receive.
func (s *shard) watch(ctx context.Context, ps *goredis.PubSub, w *watchdog) {
	opts := s.h.b.opts
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		pingSent, lastTraffic := w.pingSent.Load(), w.lastTraffic.Load()
		ok := true
		switch {
		case pingSent != 0 && now.Sub(time.Unix(0, pingSent)) >= opts.StallTimeout:
			ok = false
		case pingSent == 0 && now.Sub(time.Unix(0, lastTraffic)) >= opts.PingInterval:
			w.pingSent.Store(now.UnixNano())
			ok = s.ping(ps)
		}
		if ok {
			s.lingerDue(now)
			ok = s.retryDue(ps, now)
		}
		if !ok {
			w.replace.Store(true)
			_ = ps.Close()
			return
		}
		next := pollInterval
		for _, r := range [...]int64{s.retryWake.Load(), s.idleWake.Load()} {
			if r != 0 {
				next = max(min(next, time.Until(time.Unix(0, r))), time.Millisecond)
			}
		}
		t.Reset(next)
	}
}

// ping queues a watchdog PING; it reports false if ps is to be replaced.
func (s *shard) ping(ps *goredis.PubSub) bool {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.ps != ps || s.failed {
		return false
	}
	s.sendLocked(command{op: opPing})
	return true
}

// popLocked removes the oldest pending command if it is op (on channel
// name, unless a ping) and returns it.
func (s *shard) popLocked(op int, name string) (command, bool) {
	if len(s.pending) == 0 {
		return command{}, false
	}
	cmd := s.pending[0]
	if cmd.op != op || (op != opPing && cmd.ch.name != name) {
		return command{}, false
	}
	s.pending[0] = command{}
	s.pending = s.pending[1:]
	return cmd, true
}

// handle dispatches one message, confirmation or pong from ps. It reports
// false if ps is to be replaced.
func (s *shard) handle(ps *goredis.PubSub, msg any) bool {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.ps != ps || s.failed {
		return false
	}
	switch m := msg.(type) {
	case *goredis.Message:
		if c := h.channels[m.Channel]; c != nil && c.shard == s && c.live {
			for mem := range c.members {
				mem.sink.deliver(m.Payload)
			}
		}
	case *goredis.Subscription:
		switch m.Kind {
		case "subscribe", "ssubscribe":
			cmd, ok := s.popLocked(opSubscribe, m.Channel)
			if !ok {
				return false // out of step: start over
			}
			if c := cmd.ch; h.channels[c.name] == c && c.shard == s && c.subGen == s.gen {
				h.confirmLocked(c)
			}
			// Otherwise its members left (an UNSUBSCRIBE follows) or
			// it moved to another shard.
		case "unsubscribe", "sunsubscribe":
			if _, ok := s.popLocked(opUnsubscribe, m.Channel); ok {
				return true
			}
			// Redis dropped the channel: its slot moved to another
			// shard. go-redis does not follow; subscribe anew, where
			// the slot lives now.
			if c := h.channels[m.Channel]; c != nil && c.shard == s && c.subGen == s.gen {
				if len(c.members) == 0 {
					// It lingered: nobody needs it back.
					c.subGen = 0
					h.dropLocked(c)
					return true
				}
				h.interruptLocked(c)
				h.reloadState()
				s.retryLocked(c, time.Now())
			}
		}
	case *goredis.Pong:
		if _, ok := s.popLocked(opPing, ""); !ok {
			return false
		}
	}
	return true
}

// refused handles an error reply on ps: it answers the oldest pending
// command. A refused SUBSCRIBE fails the members waiting for their first
// confirmation and is tried again later for the others, who stay
// interrupted. It reports false if ps is to be replaced.
func (s *shard) refused(ps *goredis.PubSub, rerr goredis.Error) bool {
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.ps != ps || s.failed || len(s.pending) == 0 {
		return false
	}
	cmd := s.pending[0]
	s.pending[0] = command{}
	s.pending = s.pending[1:]
	msg := rerr.Error()
	if strings.HasPrefix(msg, "READONLY") || s.movedHere(msg) {
		// go-redis reconnected underneath on this error; start over.
		return false
	}
	c := cmd.ch
	if cmd.op != opSubscribe || h.channels[c.name] != c || c.shard != s || c.subGen != s.gen {
		return true
	}
	now := time.Now()
	if h.redirects && isRedirect(msg) {
		// The slot is elsewhere (or moving): route again shortly. Members
		// waiting for a first confirmation keep waiting.
		h.reloadState()
		s.retryLocked(c, now)
		return true
	}
	c.subGen = 0 // refused: nothing to unsubscribe
	h.failFirstLocked(c, rerr)
	if h.channels[c.name] == c {
		s.retryLocked(c, now)
	}
	return true
}

// movedHere reports a MOVED error that names the node of the connection
// itself, on which go-redis reconnects.
func (s *shard) movedHere(msg string) bool {
	f := strings.Fields(msg)
	return len(f) == 3 && f[0] == "MOVED" && f[2] == s.addr
}

// isRedirect reports a cluster's answer that a slot is served elsewhere
// or in motion.
func isRedirect(msg string) bool {
	for _, p := range []string{"MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// retryDue subscribes again the channels whose retry is due; it reports
// false if it finds ps is to be replaced (a failed write also closes ps,
// which ends the reader's Receive).
func (s *shard) retryDue(ps *goredis.PubSub, now time.Time) bool {
	if r := s.retryWake.Load(); r == 0 || now.UnixNano() < r {
		return true // nothing due: spare the mutex on every message
	}
	h := s.h
	h.mu.Lock()
	if s.ps != ps || s.failed {
		h.mu.Unlock()
		return false
	}
	if s.nextRetry.IsZero() || now.Before(s.nextRetry) {
		h.mu.Unlock()
		return true
	}
	var due []*channel
	var next time.Time
	for c := range s.channels {
		switch {
		case c.retryAt.IsZero():
		case !now.Before(c.retryAt):
			c.retryAt = time.Time{}
			due = append(due, c)
		case next.IsZero() || c.retryAt.Before(next):
			next = c.retryAt
		}
	}
	s.setNextRetryLocked(next)
	if !h.multiNode {
		for _, c := range due {
			s.subscribeLocked(c)
		}
		h.mu.Unlock()
		return true
	}
	h.mu.Unlock()
	h.reroute(s, due)
	return true
}

// lingerDue drops the channels whose linger ended (no member joined them
// again); the last one's UNSUBSCRIBE is sent as a leave's was before. A
// shard left without channels stops.
func (s *shard) lingerDue(now time.Time) {
	if r := s.idleWake.Load(); r == 0 || now.UnixNano() < r {
		return // nothing due: spare the mutex on every message
	}
	h := s.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.nextIdle.IsZero() || now.Before(s.nextIdle) {
		return
	}
	var next time.Time
	for c := range s.channels {
		switch {
		case len(c.members) > 0 || c.idleUntil.IsZero():
		case !now.Before(c.idleUntil):
			h.dropLocked(c)
		case next.IsZero() || c.idleUntil.Before(next):
			next = c.idleUntil
		}
	}
	s.setNextIdleLocked(next)
}

// write is the shard's writer goroutine: it sends queued commands in
// order. A command that cannot be written marks its connection failed and
// closes it, so that the reader replaces it. When the shard stops it
// closes the current connection, which ends the reader's Receive.
func (s *shard) write() {
	defer s.h.wg.Done()
	h := s.h
	for {
		select {
		case <-s.ctx.Done():
			h.mu.Lock()
			ps := s.ps
			h.mu.Unlock()
			if ps != nil {
				_ = ps.Close()
			}
			return
		case <-s.wake:
		}
		h.mu.Lock()
		batch := s.outbox
		s.outbox = nil
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(s.ctx, h.b.opts.StallTimeout)
		var failed *goredis.PubSub
		for _, cmd := range batch {
			if cmd.ps == failed {
				continue
			}
			if err := s.send(ctx, cmd); err != nil {
				failed = cmd.ps
				h.mu.Lock()
				if s.ps == cmd.ps {
					s.failed = true
				}
				h.mu.Unlock()
				_ = cmd.ps.Close()
			}
		}
		cancel()
	}
}

// send writes one command; go-redis's PubSub lets it write while the
// reader receives.
func (s *shard) send(ctx context.Context, cmd command) error {
	sharded := s.h.redirects
	switch {
	case cmd.op == opPing:
		return cmd.ps.Ping(ctx)
	case cmd.op == opSubscribe && sharded:
		return cmd.ps.SSubscribe(ctx, cmd.ch.name)
	case cmd.op == opSubscribe:
		return cmd.ps.Subscribe(ctx, cmd.ch.name)
	case sharded:
		return cmd.ps.SUnsubscribe(ctx, cmd.ch.name)
	default:
		return cmd.ps.Unsubscribe(ctx, cmd.ch.name)
	}
}
