package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/contextd-go/contextd/backend"
	"github.com/contextd-go/contextd/backend/postgres"
	"github.com/contextd-go/contextd/backend/redis"
	"github.com/contextd-go/contextd/backend/sqlite"
	"github.com/contextd-go/contextd/codec"
	"github.com/contextd-go/contextd/codec/msgpack"
	"github.com/contextd-go/contextd/contextd"
)

// dialTimeout bounds connecting to a server, so that a server that is down
// fails a command fast instead of after the whole --timeout.
const dialTimeout = 2 * time.Second

// openBackend opens the backend url names. ctx bounds connecting for the
// backends that connect in Open (PostgreSQL, SQLite); Redis connects on
// first use.
func openBackend(ctx context.Context, rawURL string) (backend.Backend, func() error, error) {
	scheme, _, ok := strings.Cut(rawURL, ":")
	if !ok || scheme == "" {
		return nil, nil, withCode(exitBadURL, fmt.Errorf("%q is not a URL: want redis://HOST:PORT/DB, postgres://..., or sqlite:///PATH", rawURL))
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster":
		b, err := redis.OpenURL(rawURL, &redis.Options{DialTimeout: min(dialTimeout, timeoutOf(ctx))})
		if err != nil {
			return nil, nil, withCode(exitBadURL, err)
		}
		return b, b.Close, nil
	case "postgres", "postgresql":
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		b, err := postgres.Open(dctx, rawURL, nil)
		if err != nil {
			if strings.Contains(err.Error(), "parse URL") {
				return nil, nil, withCode(exitBadURL, err)
			}
			return nil, nil, withCode(exitUnreachable, err)
		}
		return b, b.Close, nil
	case "sqlite", "file":
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, nil, withCode(exitBadURL, err)
		}
		path := u.Path
		if path == "" {
			path = u.Opaque
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, nil, withCode(exitBadURL, fmt.Errorf("%q: a SQLite URL names a local file: sqlite:///abs/path or sqlite:rel/path", rawURL))
		}
		if path == "" || u.RawQuery != "" {
			return nil, nil, withCode(exitBadURL, fmt.Errorf("%q: want sqlite:///PATH (or file:PATH) without query parameters", rawURL))
		}
		b, err := sqlite.Open(ctx, path, nil)
		if err != nil {
			return nil, nil, err
		}
		return b, b.Close, nil
	case "memory", "mem":
		return nil, nil, withCode(exitBadURL, errors.New("the memory backend lives inside one process, so a command-line tool cannot share it: use redis://, postgres:// or sqlite:///path"))
	}
	return nil, nil, withCode(exitBadURL, fmt.Errorf("unknown backend scheme %q: want redis, rediss, redis+sentinel, redis+cluster, postgres, sqlite or file", scheme))
}

// timeoutOf is the time left before ctx's deadline, or a long time.
func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return time.Hour
}

// codecOf returns the codec named by --codec.
func codecOf(name string) (codec.Codec, error) {
	switch name {
	case "json":
		return codec.JSON, nil
	case "msgpack":
		return msgpack.Codec, nil
	case "raw":
		return codec.Raw, nil
	}
	return nil, usageErr(fmt.Errorf("unknown codec %q: want json, msgpack or raw", name))
}

// session is an initialized Context on an open backend.
type session struct {
	g      *globals
	b      backend.Backend
	cx     *contextd.Context[value]
	closeB func() error
	// loaded is how long opening and initializing took.
	loaded time.Duration
}

// open opens the backend and initializes the context, within --timeout.
func (g *globals) open(ctx context.Context) (*session, error) {
	return g.openContext(ctx, g.context)
}

func (g *globals) openContext(ctx context.Context, name string) (*session, error) {
	if name == "" {
		return nil, usageErr(errors.New("no context: give --context NAME or set CONTEXTD_CONTEXT"))
	}
	c, err := codecOf(g.codec)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	b, closeB, err := openBackend(octx, g.url)
	if err != nil {
		return nil, err
	}
	cx, err := contextd.New[value](b, name, &contextd.Options{Codec: c})
	if err != nil {
		_ = closeB()
		return nil, err
	}
	if err := cx.Initialize(octx); err != nil {
		_ = cx.Close()
		_ = closeB()
		if errors.Is(err, contextd.ErrCodecMismatch) {
			return nil, withCode(exitCodec, fmt.Errorf("%w (give the context's codec with --codec)", err))
		}
		if exitCode(err) == exitOther && octx.Err() != nil {
			return nil, withCode(exitUnreachable, fmt.Errorf("%s did not answer within %v: %w", redact(g.url), g.timeout, err))
		}
		return nil, err
	}
	return &session{g: g, b: b, cx: cx, closeB: closeB, loaded: time.Since(start)}, nil
}

// Close closes the context, then the backend.
func (s *session) Close() error {
	return errors.Join(s.cx.Close(), s.closeB())
}

// redact hides a URL's password.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// opCtx bounds one operation by --timeout.
func (g *globals) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, g.timeout)
}
