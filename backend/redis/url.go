package redis

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ErrBadURL is matched by the error of OpenURL for a URL it cannot use: an
// unknown scheme, a malformed address, an unknown query parameter, or a
// Sentinel URL without master_name.
var ErrBadURL = errors.New("redis: bad URL")

// OpenURL connects as url says. It understands the URLs go-redis parses,
// and picks the kind of client from the scheme or the query:
//
//   - one server: redis://[user:pass@]host[:port][/db][?opt=...], rediss://
//     for TLS, or unix:///path/to/socket (go-redis's ParseURL);
//   - Sentinel: redis+sentinel://[user:pass@]sentinel[:port][/db]?master_name=NAME
//     [&addr=sentinel2:port...] (rediss+sentinel:// for TLS), or a redis://
//     URL with a master_name parameter (go-redis's ParseFailoverURL). The
//     user info authenticates with the Sentinels; the master's own
//     credentials go in the username and password parameters;
//   - Cluster: redis+cluster://[user:pass@]node[:port][?addr=node2:port...]
//     (rediss+cluster:// for TLS), each addr one more seed node (go-redis's
//     ParseClusterURL). Sharded pub/sub is used then.
//
// Other query parameters are go-redis's snake_case option names
// (dial_timeout=2s, pool_size=10, ...); an unknown one is an error. Two of
// them are overridden, because contextd needs them so: max_retries (and
// max_redirects) — a commit must not be sent twice — and
// context_timeout_enabled. DialTimeout, ReadTimeout and WriteTimeout of opts
// override the URL's when set; other options still apply; opts may be nil.
// Unless the URL sets pipeline_pool_size, pipeline_read_buffer_size or
// pipeline_write_buffer_size, pipelines run on the main pool's connections,
// as with Open.
//
// A URL OpenURL cannot use gives an error matching ErrBadURL. The connection
// is made lazily, as with Open. Close the Backend when done.
func OpenURL(url string, opts *Options) (*Backend, error) {
	o := opts.resolved()
	if err := o.validate(); err != nil {
		return nil, err
	}
	client, err := clientFromURL(url, o)
	if err != nil {
		return nil, err
	}
	return newBackend(client, true, o, false), nil
}

// clientFromURL makes the go-redis client a URL describes, with the
// settings contextd needs.
func clientFromURL(raw string, o Options) (goredis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	base, kind, ok := strings.Cut(u.Scheme, "+")
	if !ok {
		kind, base = "", u.Scheme
		if u.Query().Has("master_name") {
			kind = "sentinel"
		}
	}
	if base != "redis" && base != "rediss" && (kind != "" || base != "unix") {
		return nil, fmt.Errorf("%w: scheme %q (want redis, rediss, unix, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster)", ErrBadURL, u.Scheme)
	}
	// go-redis parses plain redis:// and rediss:// URLs only.
	plain := *u
	plain.Scheme = base
	switch kind {
	case "":
		co, err := goredis.ParseURL(plain.String())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		setTimeouts(o, &co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout)
		return goredis.NewClient(safeClientOptions(co)), nil
	case "sentinel":
		fo, err := goredis.ParseFailoverURL(plain.String())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		if fo.MasterName == "" {
			return nil, fmt.Errorf("%w: a Sentinel URL needs the master_name parameter", ErrBadURL)
		}
		setTimeouts(o, &fo.DialTimeout, &fo.ReadTimeout, &fo.WriteTimeout)
		fo.MaxRetries = -1
		fo.ContextTimeoutEnabled = true
		pipelinesOnMainPool(&fo.PipelinePoolSize, fo.PipelineReadBufferSize, fo.PipelineWriteBufferSize)
		return goredis.NewFailoverClient(fo), nil
	case "cluster":
		co, err := goredis.ParseClusterURL(plain.String())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
		}
		setTimeouts(o, &co.DialTimeout, &co.ReadTimeout, &co.WriteTimeout)
		co.MaxRetries = -1
		co.MaxRedirects = -1
		co.ContextTimeoutEnabled = true
		pipelinesOnMainPool(&co.PipelinePoolSize, co.PipelineReadBufferSize, co.PipelineWriteBufferSize)
		return goredis.NewClusterClient(co), nil
	}
	return nil, fmt.Errorf("%w: scheme %q (want redis+sentinel or redis+cluster)", ErrBadURL, u.Scheme)
}

// setTimeouts makes the timeouts set in o override those of a URL.
func setTimeouts(o Options, dial, read, write *time.Duration) {
	if o.DialTimeout > 0 {
		*dial = o.DialTimeout
	}
	if o.ReadTimeout > 0 {
		*read = o.ReadTimeout
	}
	if o.WriteTimeout > 0 {
		*write = o.WriteTimeout
	}
}
