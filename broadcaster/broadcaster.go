// Package broadcaster defines how contextd instances tell each other about
// changes: a Broadcaster publishes opaque payloads on named channels and a
// Subscription reads them back in publish order.
//
// The one promise that matters beyond ordering is honesty about loss: a
// Subscription MUST report (with a Message whose Loss field is set) every
// point at which messages may have been dropped — a reconnect, a buffer
// overflow, a stalled connection that had to be replaced. contextd reloads
// its state on that signal, so a Broadcaster may be lossy, but never silently.
// A Subscription that knows when it stops receiving says so at once
// (Interrupted), so readers that must not serve stale state can stop.
//
// Implementations live in the backend packages (backend/memory,
// backend/redis). This package never imports them.
package broadcaster

import (
	"context"
	"errors"
)

// ErrClosed is returned by Subscription.Next after the Subscription was
// closed, and by a Broadcaster that was closed.
var ErrClosed = errors.New("broadcaster: closed")

// Broadcaster publishes payloads to every live Subscription of a channel.
//
// Implementations must be safe for concurrent use. Publish does one job: it
// does not retry; a failed Publish returns the raw cause wrapped with %w.
type Broadcaster interface {
	// Publish sends payload to every current subscriber of channel.
	// The payload must not be modified after Publish returns.
	Publish(ctx context.Context, channel string, payload []byte) error

	// Subscribe returns a Subscription that is already live: every message
	// published after Subscribe returns is delivered (or, if it cannot be,
	// reported as a loss). Subscribe must not return before the backend has
	// confirmed the subscription.
	Subscribe(ctx context.Context, channel string) (Subscription, error)
}

// Subscription delivers the messages of one channel in publish order.
//
// Next is called from one goroutine at a time; Close may be called from any
// goroutine, also while Next blocks, and makes Next return ErrClosed.
type Subscription interface {
	// Next blocks until a message or a loss signal is available, ctx is
	// done (it returns ctx.Err()), or the Subscription is closed (it returns
	// ErrClosed). A transient failure of the underlying connection is not
	// an error: the Subscription reconnects by itself and then reports a
	// Message with Loss set.
	Next(ctx context.Context) (Message, error)

	// Close ends the subscription and releases its resources. It is
	// idempotent.
	Close() error
}

// Message is one delivery of a Subscription.
type Message struct {
	// Payload is the published payload. It is nil when Loss is set.
	// The receiver owns it.
	Payload []byte

	// Loss reports that messages published before this point may not have
	// been delivered (reconnect, overflow, stall), and that the
	// subscription receives again. The receiver should reload whatever
	// state the lost messages would have updated.
	Loss bool

	// Interrupted reports that the subscription has stopped receiving (its
	// connection broke or stalled) and is trying to recover; a Message with
	// Loss follows once it receives again. Until then the receiver's state
	// may fall behind without further notice. A Subscription that cannot
	// tell (an in-process one never is) need not send it.
	Interrupted bool
}
