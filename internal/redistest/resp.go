package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

// Error is an error reply from Redis, e.g. "WRONGTYPE Operation against a key
// holding the wrong kind of value" or "MOVED 3999 127.0.0.1:6381".
type Error string

func (e Error) Error() string { return string(e) }

// Conn is one RESP2 connection to a server, for tests that need a
// connection-bound state (a subscription, a selected user, MULTI, WAIT). A
// Conn is for one goroutine at a time.
type Conn struct {
	nc net.Conn
	r  *bufio.Reader
}

// Dial opens a connection to the server, authenticated with the default
// user's password if it has one.
func (s *Server) Dial(ctx context.Context) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.Addr())
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	c := &Conn{nc: nc, r: bufio.NewReader(nc)}
	if s.password != "" {
		if _, err := c.Do(ctx, "AUTH", s.password); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Do sends one command and reads its reply, as [Server.Do] does. After an
// error that is not an [Error] the connection is broken: close it.
func (c *Conn) Do(ctx context.Context, args ...string) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("redistest: Do without a command")
	}
	if err := c.Write(ctx, args...); err != nil {
		return nil, err
	}
	return c.Receive(ctx)
}

// Write sends one command without reading its reply; see [Conn.Receive].
func (c *Conn) Write(ctx context.Context, args ...string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	defer c.watch(ctx)()
	if _, err := c.nc.Write(appendCommand(nil, args)); err != nil {
		return c.fail(ctx, err)
	}
	return nil
}

// Receive reads one reply, e.g. a message on a subscribed connection. An
// error reply is returned as an [Error].
func (c *Conn) Receive(ctx context.Context) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer c.watch(ctx)()
	v, err := readReply(c.r)
	if err != nil {
		return nil, c.fail(ctx, err)
	}
	if e, ok := v.(Error); ok {
		return nil, e
	}
	return v, nil
}

// watch makes I/O on the connection end with ctx: its deadline becomes the
// connection's, and its cancellation interrupts blocked I/O. Call the result
// when the I/O is done.
func (c *Conn) watch(ctx context.Context) (stop func()) {
	dl, _ := ctx.Deadline() // zero: none
	_ = c.nc.SetDeadline(dl)
	stopFn := context.AfterFunc(ctx, func() {
		_ = c.nc.SetDeadline(time.Unix(1, 0))
	})
	return func() { stopFn() }
}

func (c *Conn) fail(ctx context.Context, err error) error {
	if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline is ctx's: ctx is about to expire, if
		// it has not already.
		<-ctx.Done()
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("redistest: %s: %w: %w", c.nc.RemoteAddr(), cerr, err)
	}
	return fmt.Errorf("redistest: %s: %w", c.nc.RemoteAddr(), err)
}

func appendCommand(b []byte, args []string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, '\r', '\n')
		b = append(b, a...)
		b = append(b, '\r', '\n')
	}
	return b
}

var errProtocol = errors.New("redis protocol error")

// readReply reads one RESP2 reply. An error reply is returned as an Error
// value (so errors inside arrays, e.g. of EXEC, stay in place).
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && line != "" {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: bad line %q", errProtocol, line)
	}
	kind, body := line[0], line[1:len(line)-2]
	switch kind {
	case '+':
		return body, nil
	case '-':
		return Error(body), nil
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: bad integer %q", errProtocol, body)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 {
			return nil, fmt.Errorf("%w: bad bulk length %q", errProtocol, body)
		}
		if n == -1 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		if buf[n] != '\r' || buf[n+1] != '\n' {
			return nil, fmt.Errorf("%w: bulk string not followed by CRLF", errProtocol)
		}
		return string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 {
			return nil, fmt.Errorf("%w: bad array length %q", errProtocol, body)
		}
		if n == -1 {
			return nil, nil
		}
		a := make([]any, n)
		for i := range a {
			if a[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return a, nil
	default:
		return nil, fmt.Errorf("%w: unknown reply type %q", errProtocol, kind)
	}
}
