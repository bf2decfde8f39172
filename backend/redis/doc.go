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
//	                              commit id
//	{contextd:<name>}:data        hash: key → encoded value
//	{contextd:<name>}:revs        hash: key → "<revision> <commit id>" of the write that last wrote it
//	{contextd:<name>}:ring        hash: revision modulo ChangeLogLength → event (the change log)
//	{contextd:<name>}:lock:<key>  string: "<token>:<fence>", with a TTL
//	{contextd:<name>}:commit:<id> string: a commit's head, for a minute
//	                              (only for clients that may resend)
//	{contextd:<name>}:queue:<key> sorted set: the key's lock waiters
//	{contextd:<name>}:waiters     hash: lock waiters, with their tickets and deadlines
//	{contextd:<name>}:unlock      channel: lock releases (payload: key)
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
// # Subscriptions
//
// Each Subscription owns one pub/sub connection. It reads with a Receive
// loop rather than go-redis's Channel, because Channel hides reconnects:
// every resubscription after the first is reported as a loss, and a stalled
// connection (no reply to an application-level PING within
// Options.StallTimeout) is replaced and reported too. On a cluster it uses
// sharded pub/sub and resubscribes itself after a slot migration.
//
// # Errors
//
// Every method does one job, without retries: the caller (contextd) retries
// where that is safe. redis.Nil becomes backend.ErrNotFound; script refusals
// become backend.ErrConflict, backend.ErrLocked, locker.ErrNotHeld and
// backend.ErrCodecMismatch; connection errors are returned wrapped, with
// the go-redis error reachable through errors.As.
package redis
