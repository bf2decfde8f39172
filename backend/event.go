package backend

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Event describes one commit: the head it produced and what it changed.
type Event struct {
	Head
	// Origin identifies the instance that wrote it; empty for a commit the
	// store made itself (expiring keys).
	Origin string
	// Time is when the commit was made, by the store's clock; the zero
	// time if the store (or the wire format) does not say.
	Time time.Time
	// Changes lists the written keys in the batch's op order.
	Changes []Change
}

// Change is one key of an Event.
type Change struct {
	Key string
	// Value is the new value of a put that is not Omitted.
	Value []byte
	// Deleted marks a delete.
	Deleted bool
	// Omitted marks a put whose value the event does not carry (it was
	// over the event's value limit); receivers fetch it with Store.Get.
	Omitted bool
	// Expires is when a put key expires (Op.TTL), by the store's clock;
	// the zero time if it does not or is not known.
	Expires time.Time
}

// EventFromBatch returns the event of batch b committed at head h, carrying
// values up to b.EventValueLimit. A store that knows the commit's time sets
// Event.Time, and Change.Expires for ops with a TTL (ExpiresAt).
func EventFromBatch(h Head, b Batch) Event {
	e := Event{Head: h, Origin: b.Origin, Changes: make([]Change, len(b.Ops))}
	budget := b.EventValueLimit
	for i, op := range b.Ops {
		ch := Change{Key: op.Key, Deleted: op.Delete}
		if !op.Delete {
			if len(op.Value) <= budget {
				ch.Value = op.Value
				budget -= len(op.Value)
			} else {
				ch.Omitted = true
			}
		}
		e.Changes[i] = ch
	}
	return e
}

// ExpiresAt sets e.Time to at and the Expires of every put of b (whose
// event e is) that has a TTL.
func (e *Event) ExpiresAt(b Batch, at time.Time) {
	e.Time = at
	for i, op := range b.Ops {
		if !op.Delete && op.TTL > 0 && i < len(e.Changes) {
			e.Changes[i].Expires = at.Add(op.TTL)
		}
	}
}

// The wire format, version 1. All of it is produced by this file, except
// that a store may frame a body made by EncodeEventBody itself (the Redis
// backend does so in Lua, where the new revision is first known):
//
//	byte 0       version, 1
//	byte 1       kind, 1 (commit)
//	byte 2       length n of the epoch, 0..255
//	n bytes      epoch
//	8 bytes      revision, big-endian unsigned
//	byte         length c of the commit id, 0..255
//	c bytes      commit id
//	byte         length p of the parent commit id, 0..255
//	p bytes      parent commit id
//	body:
//	  uvarint length + bytes   origin
//	  uvarint                  number of changes
//	  per change:
//	    byte                   flags: 1 delete, 2 value omitted, 0 put with value
//	    uvarint length + bytes key (not empty)
//	    uvarint length + bytes value (only when flags is 0)
//
// A decoder rejects unknown versions and kinds, so a later version can be
// rolled out by first teaching every instance to read it.
const (
	wireVersion    = 1
	wireKindCommit = 1

	flagDelete  = 1
	flagOmitted = 2

	// MaxEpochLen is the longest epoch, and commit id, the wire format can
	// carry.
	MaxEpochLen = 255
)

// EncodeEvent returns the wire form of e. It fails only for an epoch or a
// commit id longer than MaxEpochLen.
func EncodeEvent(e Event) ([]byte, error) {
	return FrameEvent(e.Head, EncodeEventBody(e.Origin, e.Changes))
}

// EncodeEventBody returns the body of an event: everything after the
// revision.
func EncodeEventBody(origin string, changes []Change) []byte {
	size := binary.MaxVarintLen64*2 + len(origin)
	for _, ch := range changes {
		size += 1 + 2*binary.MaxVarintLen64 + len(ch.Key) + len(ch.Value)
	}
	buf := make([]byte, 0, size)
	buf = appendString(buf, origin)
	buf = binary.AppendUvarint(buf, uint64(len(changes)))
	for _, ch := range changes {
		switch {
		case ch.Deleted:
			buf = append(buf, flagDelete)
			buf = appendString(buf, ch.Key)
		case ch.Omitted:
			buf = append(buf, flagOmitted)
			buf = appendString(buf, ch.Key)
		default:
			buf = append(buf, 0)
			buf = appendString(buf, ch.Key)
			buf = binary.AppendUvarint(buf, uint64(len(ch.Value)))
			buf = append(buf, ch.Value...)
		}
	}
	return buf
}

// FrameEvent puts the header (version, kind, epoch, revision, commit,
// parent) of head h in front of an event body.
func FrameEvent(h Head, body []byte) ([]byte, error) {
	for what, s := range map[string]string{"epoch": h.Epoch, "commit id": h.Commit, "parent id": h.Parent} {
		if len(s) > MaxEpochLen {
			return nil, fmt.Errorf("backend: %s of %d bytes is longer than %d", what, len(s), MaxEpochLen)
		}
	}
	buf := make([]byte, 0, 5+len(h.Epoch)+8+len(h.Commit)+len(h.Parent)+len(body))
	buf = append(buf, wireVersion, wireKindCommit, byte(len(h.Epoch)))
	buf = append(buf, h.Epoch...)
	buf = binary.BigEndian.AppendUint64(buf, h.Revision)
	buf = append(buf, byte(len(h.Commit)))
	buf = append(buf, h.Commit...)
	buf = append(buf, byte(len(h.Parent)))
	buf = append(buf, h.Parent...)
	return append(buf, body...), nil
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// DecodeEvent parses a payload made by EncodeEvent. Any malformed input
// gives an error matching ErrInvalidEvent; it never panics. The returned
// values do not alias p.
func DecodeEvent(p []byte) (Event, error) {
	d := decoder{buf: p}
	var e Event
	if v := d.byte(); d.err == nil && v != wireVersion {
		return Event{}, fmt.Errorf("%w: unknown version %d", ErrInvalidEvent, v)
	}
	if k := d.byte(); d.err == nil && k != wireKindCommit {
		return Event{}, fmt.Errorf("%w: unknown kind %d", ErrInvalidEvent, k)
	}
	e.Epoch = string(d.take(int(d.byte())))
	e.Revision = d.uint64()
	e.Commit = string(d.take(int(d.byte())))
	e.Parent = string(d.take(int(d.byte())))
	e.Origin = string(d.bytes())
	count := d.uvarint()
	// Each change takes at least two bytes, so a count larger than what is
	// left is a lie; checking it first keeps a hostile count from making us
	// allocate.
	if d.err == nil && count > uint64(len(d.buf)-d.off)/2 {
		return Event{}, fmt.Errorf("%w: %d changes cannot fit in %d bytes", ErrInvalidEvent, count, len(d.buf)-d.off)
	}
	if d.err == nil && count > 0 {
		e.Changes = make([]Change, 0, count)
	}
	for i := uint64(0); i < count && d.err == nil; i++ {
		flags := d.byte()
		key := d.bytes()
		if d.err == nil && len(key) == 0 {
			d.fail("empty key")
		}
		ch := Change{Key: string(key)}
		switch flags {
		case 0:
			ch.Value = append([]byte{}, d.bytes()...)
		case flagDelete:
			ch.Deleted = true
		case flagOmitted:
			ch.Omitted = true
		default:
			d.fail(fmt.Sprintf("unknown change flags %d", flags))
		}
		e.Changes = append(e.Changes, ch)
	}
	if d.err == nil && d.off != len(d.buf) {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.buf)-d.off))
	}
	if d.err != nil {
		return Event{}, d.err
	}
	return e, nil
}

// decoder reads the wire format; after the first error every read returns
// zero values, so callers check d.err once per step.
type decoder struct {
	buf []byte
	off int
	err error
}

func (d *decoder) fail(why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", ErrInvalidEvent, why, d.off)
	}
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.buf)-d.off {
		d.fail("truncated")
		return nil
	}
	b := d.buf[d.off : d.off+n]
	d.off += n
	return b
}

func (d *decoder) byte() byte {
	b := d.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *decoder) uint64() uint64 {
	b := d.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf[d.off:])
	// Only the shortest encoding is accepted, so one event has one form.
	if n <= 0 || n != varintLen(v) {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.buf)-d.off) {
		d.fail("truncated")
		return nil
	}
	return d.take(int(n))
}

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
