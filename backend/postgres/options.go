package postgres

import (
	"fmt"
	"regexp"
	"time"
)

// Defaults of Options.
const (
	DefaultSchema             = "contextd"
	DefaultChangeLogLength    = 1000
	DefaultSubscriptionBuffer = 4096
	DefaultPingInterval       = time.Second
	DefaultStallTimeout       = 2 * time.Second
)

// Limits of what the backend stores.
const (
	// MaxNameLen is the longest context name, in bytes.
	MaxNameLen = 1024
	// MaxKeyLen is the longest key, in bytes. A context name and a key
	// together must fit in one B-tree index entry (about 2.7 kB).
	MaxKeyLen = 1024
)

// Options configure a Backend. The zero value (or nil) means defaults; each
// field says its default. Connection settings (host, user, TLS, pool size)
// belong in the URL given to Open, or in the pool given to New.
type Options struct {
	// Schema is the PostgreSQL schema that holds the backend's tables.
	// Backends with different schemas on one database share nothing:
	// neither data, nor locks, nor notifications. It must be a plain
	// identifier: a letter or underscore, then letters, digits or
	// underscores, at most 63 bytes. Default: "contextd".
	Schema string

	// ChangeLogLength is about how many events the change log of each
	// context keeps: between this and 15 more (trimmed every 16 commits).
	// Default: 1000.
	ChangeLogLength int

	// SubscriptionBuffer is how many unread messages a Subscription holds;
	// when one more arrives, the unread ones are dropped and Next reports
	// a loss. Default: 4096.
	SubscriptionBuffer int

	// PingInterval is how long the listening connection may be idle
	// before it is pinged; StallTimeout is how long a ping (or a LISTEN)
	// may take before the connection is presumed dead, replaced, and every
	// subscription told of a loss. Defaults: 1 s and 2 s.
	PingInterval time.Duration
	StallTimeout time.Duration

	// Switch capabilities off, to run contextd's generic paths (tests).
	// Default: all on.
	DisableAtomicPublish   bool
	DisableLockAwareCommit bool
	DisableChangeLog       bool
	DisableReleaseNotify   bool
	// DisableExpiry switches key expiry off: Capabilities does not report
	// it, a commit that puts a key with a TTL and Expire fail with an
	// error matching errors.ErrUnsupported. Commits still delete keys
	// that other Backends put with a TTL once they are due.
	DisableExpiry bool
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// resolved fills in defaults.
func (o *Options) resolved() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Schema == "" {
		r.Schema = DefaultSchema
	}
	if r.ChangeLogLength <= 0 {
		r.ChangeLogLength = DefaultChangeLogLength
	}
	if r.SubscriptionBuffer <= 0 {
		r.SubscriptionBuffer = DefaultSubscriptionBuffer
	}
	if r.PingInterval <= 0 {
		r.PingInterval = DefaultPingInterval
	}
	if r.StallTimeout <= 0 {
		r.StallTimeout = DefaultStallTimeout
	}
	return r
}

func (o Options) validate() error {
	if !identifier.MatchString(o.Schema) {
		return fmt.Errorf("postgres: schema name %q is not a plain identifier (a letter or _, then letters, digits or _, at most 63 bytes)", o.Schema)
	}
	return nil
}
