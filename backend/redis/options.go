package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// Defaults, as in the original library where it had them.
const (
	DefaultHost             = "localhost"
	DefaultPort             = 6379
	DefaultChangeLogLength  = 1000
	DefaultPingInterval     = time.Second
	DefaultStallTimeout     = 2 * time.Second
	DefaultWaitTimeout      = time.Second
	DefaultSubscriberBuffer = 1024
)

// Options configure a Backend. The zero value (or nil) means defaults; each
// field says its default. Open uses the connection fields; New, which takes a
// client the caller made, ignores them.
type Options struct {
	// Host is the Redis server's host (the original's redisHost).
	// Default: "localhost".
	Host string
	// Port is the server's port (redisPort). Default: 6379.
	Port int
	// DB is the database number (redisDb). Default: 0.
	DB int
	// Username and Password authenticate (ACL user, or requirepass when
	// Username is empty). Default: none.
	Username string
	Password string
	// TLS, if not nil, makes the connection use TLS. Default: plain TCP.
	TLS *tls.Config
	// DialTimeout, ReadTimeout and WriteTimeout bound network operations.
	// Default: go-redis's (5 s, 3 s, 3 s).
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration

	// ChangeLogLength is how many of the latest events the change log of
	// each context keeps (a hash of revision modulo ChangeLogLength, so
	// every instance of a context should use the same length: an instance
	// with another one finds the log of no use and loads snapshots
	// instead). Default: 1000.
	ChangeLogLength int

	// PingInterval is how long a subscription may be idle before it sends
	// a PING; StallTimeout is how long it then waits for any reply before
	// it replaces the connection and reports a loss. Defaults: 1 s and
	// 2 s.
	PingInterval time.Duration
	StallTimeout time.Duration

	// SubscriberBuffer is how many messages a Subscription holds unread
	// (they arrive on a connection shared with the Backend's other
	// Subscriptions, which a slow reader must not hold up); one more
	// overflows it: its unread messages are dropped and it reports a
	// loss. A Context leaves its messages unread while it fetches the
	// values an event left out (a large transaction), so the buffer must
	// hold the context's events of that long. Default: 1024.
	SubscriberBuffer int

	// WaitReplicas turns on the WAIT-for-replicas write mode: every commit,
	// lock acquisition and extension waits until this many replicas have
	// it, or fails with ErrNotReplicated after WaitTimeout. (A release is
	// not waited for: if a failover loses it, the lock only lives on until
	// its TTL.) Acknowledged writes then
	// survive a failover to one of those replicas, at the cost of a
	// replication round trip per write. Default: 0, off (asynchronous
	// replication, as Redis does by default).
	WaitReplicas int
	// WaitTimeout bounds the wait of the WaitReplicas mode. Default: 1 s.
	WaitTimeout time.Duration

	// Switch capabilities off, to run the generic paths (tests, or a
	// Redis-compatible server without Lua). Default: all on.
	DisableAtomicPublish   bool
	DisableLockAwareCommit bool
	DisableChangeLog       bool
	DisableReleaseNotify   bool
	DisableFairLocks       bool
}

// resolved fills in defaults.
func (o *Options) resolved() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Host == "" {
		r.Host = DefaultHost
	}
	if r.Port == 0 {
		r.Port = DefaultPort
	}
	if r.ChangeLogLength <= 0 {
		r.ChangeLogLength = DefaultChangeLogLength
	}
	if r.PingInterval <= 0 {
		r.PingInterval = DefaultPingInterval
	}
	if r.StallTimeout <= 0 {
		r.StallTimeout = DefaultStallTimeout
	}
	if r.WaitTimeout <= 0 {
		r.WaitTimeout = DefaultWaitTimeout
	}
	if r.SubscriberBuffer <= 0 {
		r.SubscriberBuffer = DefaultSubscriberBuffer
	}
	return r
}

func (o Options) validate() error {
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("redis: port %d out of range", o.Port)
	}
	if o.DB < 0 {
		return fmt.Errorf("redis: negative DB %d", o.DB)
	}
	if o.WaitReplicas < 0 {
		return fmt.Errorf("redis: negative WaitReplicas %d", o.WaitReplicas)
	}
	return nil
}

// Open connects to one Redis server as opts say (nil: localhost:6379, DB 0).
// The connection is made lazily: a server that is down makes the first
// operation fail, not Open. Close the Backend when done.
//
// The client sends its pipelines (a load's MULTI/EXEC, a bulk fetch) on the
// connections of its main pool, not on a pool of their own, which would
// hold another connection with 256 KiB of buffers per Backend.
func Open(opts *Options) (*Backend, error) {
	o := opts.resolved()
	if err := o.validate(); err != nil {
		return nil, err
	}
	copts := &goredis.Options{
		Addr:         net.JoinHostPort(o.Host, strconv.Itoa(o.Port)),
		DB:           o.DB,
		Username:     o.Username,
		Password:     o.Password,
		TLSConfig:    o.TLS,
		DialTimeout:  o.DialTimeout,
		ReadTimeout:  o.ReadTimeout,
		WriteTimeout: o.WriteTimeout,
	}
	return newBackend(goredis.NewClient(safeClientOptions(copts)), true, o, false), nil
}

// safeClientOptions sets what contextd needs of a go-redis client it makes:
//   - no retries: go-redis would send a commit again after a broken
//     connection lost its reply, and a write must happen once (contextd
//     retries only where that is safe);
//   - ctx deadlines bound network reads, so a stalled server cannot hold a
//     call past its ctx.
func safeClientOptions(o *goredis.Options) *goredis.Options {
	o.MaxRetries = -1
	o.ContextTimeoutEnabled = true
	pipelinesOnMainPool(&o.PipelinePoolSize, o.PipelineReadBufferSize, o.PipelineWriteBufferSize)
	return o
}

// pipelinesOnMainPool makes a client contextd makes send its pipelines on
// the connections of its main pool, unless the user chose a pipeline pool
// (its size or its buffers, in a URL). go-redis otherwise dials a second
// set of connections for pipelines, each with 128 KiB read and 128 KiB write
// buffers: a Backend's first Load (a MULTI/EXEC) or bulk fetch would keep
// 256 KiB and a connection per node for the few pipelines contextd sends,
// when a main-pool connection (32 KiB buffers) is idle. Reading a large
// reply through the smaller buffer takes more read calls, not more round
// trips (see BenchmarkInitialize and BenchmarkLargeTransaction).
func pipelinesOnMainPool(size *int, readBuf, writeBuf int) {
	if defaultPipelinePool(*size, readBuf, writeBuf) {
		*size = -1
	}
}

// defaultPipelinePool reports whether go-redis options with these pipeline
// pool fields leave its dedicated pipeline pool at its defaults: the user
// chose neither its size (a negative one switches it off) nor its buffers.
func defaultPipelinePool(size, readBuf, writeBuf int) bool {
	return size == 0 && readBuf == 0 && writeBuf == 0
}

// New makes a Backend on a client the caller owns: a *goredis.Client, a
// *goredis.ClusterClient (sharded pub/sub is used then) or a failover client.
// Closing the Backend does not close the client. The connection fields of
// opts are ignored; opts may be nil.
//
// Make the client with ContextTimeoutEnabled: true, so calls end when their
// ctx does even if the server stalls, and preferably with MaxRetries: -1
// (and, for a ClusterClient, MaxRedirects: -1), as Open does. A client that
// may resend a command after a broken connection — MaxRetries left at 0,
// go-redis's default of 3 retries, or set above 0; for a ClusterClient
// also MaxRedirects left at 0 or set above 0 — is detected: each commit
// then also keeps its result under its id for a minute, so a resend is
// answered with the original result instead of writing twice. That costs
// a read and a write more per commit, and a key per commit for that
// minute.
//
// The client's options are left as they are. If they leave go-redis's
// dedicated pipeline pool at its defaults (a *goredis.Client made without
// PipelinePoolSize, pipeline buffer sizes or a
// StreamingCredentialsProvider), the Backend sends its loads (a
// MULTI/EXEC) on a connection of the main pool, held for the load, instead
// of having that pool dial a connection with 256 KiB of buffers and keep
// it. Its other pipelines (bulk fetches, lock listings, commits with WAIT)
// go through the client, so that go-redis can resend them on another
// connection if theirs breaks.
func New(client goredis.UniversalClient, opts *Options) (*Backend, error) {
	if client == nil {
		return nil, errors.New("redis: New needs a client, got nil")
	}
	o := opts.resolved()
	if err := o.validate(); err != nil {
		return nil, err
	}
	return newBackend(client, false, o, mayResend(client)), nil
}
