package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// NOTIFY's limits (PostgreSQL 15): a payload is text shorter than 8000
// bytes, and a channel name is an identifier of at most 63 bytes.
const (
	maxNotifyPayload = 7999
	maxChannelLen    = 63
)

// pgChannel maps a broadcaster channel to a NOTIFY channel of the schema.
// Channels of different schemas never meet, since the schema is part of
// the name. A channel whose "<schema>:<channel>" fits in 63 bytes of
// printable UTF-8 keeps that readable name; any other is "#" and the hex
// of the first 31 bytes of the SHA-256 of "<schema>:<channel>". A schema
// name starts with a letter or underscore, so the two forms never collide,
// and two long names collide only if SHA-256 does.
func pgChannel(schema, channel string) string {
	full := schema + ":" + channel
	if len(full) <= maxChannelLen && printable(full) {
		return full
	}
	sum := sha256.Sum256([]byte(full))
	return "#" + hex.EncodeToString(sum[:31])
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// unlockChannel is the broadcaster channel of a context's lock releases.
func unlockChannel(name string) string { return "{contextd:" + name + "}:unlock" }

// The NOTIFY payload, text, in one of three forms:
//
//	"i" + base64(message)              the message itself
//	"p" + revision + ":" + base64(ctx)  a committed event too large for
//	                                    NOTIFY, in the change log
//	"m" + id                            a published message too large for
//	                                    NOTIFY, in the messages table
//
// base64 is the standard alphabet with padding, no line breaks.
const (
	noteInline  = 'i'
	notePointer = 'p'
	noteMessage = 'm'
)

// inlineNote returns the inline form of payload, or "" if it is too long.
func inlineNote(payload []byte) string {
	if 1+base64.StdEncoding.EncodedLen(len(payload)) > maxNotifyPayload {
		return ""
	}
	return string(noteInline) + base64.StdEncoding.EncodeToString(payload)
}

// errBadNote marks a NOTIFY payload that is not of our forms, or whose
// pointer leads nowhere: the message is lost.
var errBadNote = errors.New("postgres: unreadable notification")

// resolve returns the message a NOTIFY payload carries, fetching it from
// the database for a pointer.
func (b *Backend) resolve(ctx context.Context, note string) ([]byte, error) {
	if note == "" {
		return nil, errBadNote
	}
	body := note[1:]
	switch note[0] {
	case noteInline:
		p, err := base64.StdEncoding.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errBadNote, err)
		}
		return p, nil
	case notePointer:
		revText, nameText, ok := strings.Cut(body, ":")
		rev, err1 := strconv.ParseInt(revText, 10, 64)
		name, err2 := base64.StdEncoding.DecodeString(nameText)
		if !ok || err1 != nil || err2 != nil {
			return nil, errBadNote
		}
		return b.fetch(ctx, b.sql.fetchEvent, name, rev)
	case noteMessage:
		id, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, errBadNote
		}
		return b.fetch(ctx, b.sql.fetchMessage, id)
	}
	return nil, errBadNote
}

func (b *Backend) fetch(ctx context.Context, sql string, args ...any) ([]byte, error) {
	var p []byte
	err := b.pool.QueryRow(ctx, sql, args...).Scan(&p)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: the stored message is gone", errBadNote)
	}
	if err != nil {
		return nil, wrap(ctx, "fetch a notified message", err)
	}
	return p, nil
}
