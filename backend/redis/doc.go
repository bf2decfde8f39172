// Package redis is the Redis backend of contextd: one type, Backend, that
// implements backend.Store, locker.Locker and broadcaster.Broadcaster on a
// go-redis v9 UniversalClient (a single server, Sentinel, or Cluster), with
// every optional capability:
//
//   - AtomicPublish and LockAwareCommit: a commit is one Lua script that
//     checks the batch's conditions and locks, writes, bumps the revision,
//     appends to the change log and publishes the event — one round trip.
//   - ChangeLog: a hash per context of its last ChangeLogLength events,
//     by revision modulo that length, written by the same script.
//   - ReleaseNotify: a released lock publishes a wake-up for its waiters.
//   - Expiry: puts may carry a TTL; expired keys are deleted by commits
//     of their own (see Expiry below).
//
// # Layout in Redis
//
// All keys of a context share the hash tag {contextd:<name>}, so its scripts
// are legal in Redis Cluster and a context lives on one shard. In the tag,
// '%', '{' and '}' of the name are escaped as %25, %7B and %7D
// (backend.HashTag), so no name can reach another context's keys; other
// names appear as they are:
//
//	{contextd:<name>}:meta        hash: rev, epoch, codec, fence, commit, parent, ticket,
//	                              and wepoch, wcommit: the epoch and the head's commit id
//	                              in their event wire form, valid while wfor is the head's
//	                              commit id; expiring: "1" while the deadline index may
//	                              hold keys
//	{contextd:<name>}:data        hash: key → encoded value
//	{contextd:<name>}:revs        hash: key → "<revision> <commit id>" of the write that last wrote it
//	{contextd:<name>}:ring        hash: revision modulo ChangeLogLength → event (the change log)
//	{contextd:<name>}:expiry      sorted set: key → its deadline, Unix ms by the server's clock
//	{contextd:<name>}:lock:<key>  string: "<token>:<fence>", with a TTL
//	{contextd:<name>}:commit:<id> string: a commit's head, for a minute
//	                              (only for clients that may resend)
//	{contextd:<name>}:queue:<key> sorted set: the key's lock waiters
//	{contextd:<name>}:waiters     hash: lock waiters, with their tickets and deadlines
//	{contextd:<name>}:unlock      channel: lock releases (payload: key, or
//	                              "\x00<length>:<waiter><key>" naming the waiter whose turn it is)
//	{contextd:<name>}:events      channel: change events (the default)
//
// The epoch is a random id created by the first commit when meta has none;
// after Redis lost the data (a restart without persistence, a failover to
// an empty replica) the next commit creates a new one, and every instance
// reloads instead of comparing revisions of two histories.
//
// Releases before the event wire format version 2 kept the change log in a
// stream, {contextd:<name>}:log; it is no longer written or read, and can be
// deleted once every instance runs this release.
//
// # Expiry
//
// Redis 7.0 has no TTL per hash field (HEXPIRE came with 7.4), so each
// context keeps its own deadline index, {contextd:<name>}:expiry: a sorted
// set of the keys that expire, scored by their deadline in Unix
// milliseconds by the Redis server's clock (TIME, read in the script that
// writes the key; replicas and a promoted replica get the same absolute
// deadline, and no client's clock is involved). The commit script keeps it
// in the same step as the write: a put with a TTL sets its key's score, a
// put without TTL and a delete remove it. Before it applies a batch, the
// script deletes the keys whose deadline has passed, by a commit of their
// own (no origin, a delete per key, logged and published like any
// commit); the batch's revision follows, and its conditions see those
// keys gone. A batch refused (a conflict, a lock) writes nothing, the
// expiry included: the next commit or Expire makes it. Expire runs the
// same reap alone, for the instances whose timer for the next deadline
// fires, and returns the next deadline and the server's clock. Load, Get
// and GetMany report each key's deadline (Entry.Expires); a key past its
// deadline still reads until the commit that deletes it, as in every
// store (an expiry takes effect at a revision).
//
// A context that never had a key with a TTL pays nothing on the write
// path: meta's "expiring" field, read with the fields every commit reads,
// tells the script whether the index may hold keys, and it is removed once
// the index is empty. Where it may, each write costs the script a ZRANGE
// (the due keys, which also checks the index's type before anything is
// written) and a ZADD or ZREM: more work inside the one round trip, not
// another round trip. Deadlines are not on the wire (the event format has
// no field for them): receivers learn them from snapshots, the writer from
// its own write.
//
// An instance of a release before expiry neither writes TTLs nor keeps the
// index: during a rolling upgrade, a key that an old instance rewrites
// without TTL keeps the deadline a new instance gave it.
//
// # Subscriptions
//
// A Backend has one pub/sub connection per Redis node, whatever the number
// of its Subscriptions: on a single server or a Sentinel-managed master one,
// on a cluster one per master that owns a channel in use (sharded pub/sub:
// SSUBSCRIBE is routed by slot, and a context's channels carry its hash
// tag), on a ring one per shard. Every Subscription and every release
// watch (WatchRelease, used by lock waiters) of the Backend is a member of
// its channel on that connection: Subscribe sends SUBSCRIBE for a channel
// not subscribed yet and returns once Redis has confirmed it (a member of
// a channel already live returns at once). A channel whose last member
// closed stays subscribed for a few seconds, so that the next lock wait
// on a contended context finds it live; then it is unsubscribed, and a
// connection left without channels closes. A lingering channel is not
// subscribed again after a lost connection. Two Subscriptions of one
// channel (two Contexts of one context name) both get every message. 1,000
// contexts in a process are one connection, not 1,000.
//
// Each connection has a reader goroutine that receives and hands messages
// to the members' queues, and a writer goroutine that sends SUBSCRIBE,
// UNSUBSCRIBE and PING in the order they were queued. Each channel is
// subscribed with a command of its own, and replies are matched to
// commands in order, so a refused SUBSCRIBE (an ACL that forbids the
// channel) fails that Subscribe, or keeps that channel's Subscriptions
// interrupted and tries again with backoff, without touching the others.
//
// What each Subscription is told is what a connection of its own would
// tell it:
//
//   - messages in publish order;
//   - Interrupted as soon as the connection stops receiving: it broke, or
//     the watchdog found it stalled (idle for Options.PingInterval, then no
//     reply to a PING within Options.StallTimeout), or Redis refused or
//     dropped its channel (a sunsubscribe after a slot migration);
//   - Loss once its channel is confirmed again on a new connection (or on
//     the master that owns the slot now), as every resubscription may have
//     missed messages. go-redis's own reconnection is not used: it
//     resubscribes all channels in one command, which a cluster refuses
//     when they span slots, and does not follow moved slots.
//
// A reader that falls behind holds up nobody: each Subscription buffers up
// to Options.SubscriberBuffer unread messages; one more drops them and
// reports a Loss to that Subscription alone. A release watch is woken by a
// release of one of its keys, and once more when it receives again after
// an interruption (a release may have been missed). Backend.Close ends
// every Subscription (Next returns broadcaster.ErrClosed), closes the
// connections and waits for their goroutines.
//
// # Errors
//
// Every method does one job, without retries: the caller (contextd) retries
// where that is safe. redis.Nil becomes backend.ErrNotFound; script refusals
// become backend.ErrConflict, backend.ErrLocked, locker.ErrNotHeld and
// backend.ErrCodecMismatch; damage to contextd's own keys (the deadline
// index included: a key of the wrong type) becomes backend.ErrCorrupt; connection errors are returned wrapped, with
// the go-redis error reachable through errors.As.
package redis
