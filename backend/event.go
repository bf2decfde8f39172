package backend

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
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
	// TTL is a put's Op.TTL, for an event that cannot carry Expires: a
	// store that frames the event before it reads its clock. Receivers
	// estimate the deadline from it; the store's own figure comes with
	// the next snapshot. Ignored when Expires is set.
	TTL time.Duration
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
			ch.TTL = op.TTL
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

// The wire format is versioned by its first byte. EncodeEvent writes
// version 2; DecodeEvent reads versions 1 and 2, so instances of this
// release understand the events of the previous one during a rolling
// upgrade (the other way round, an instance of the previous release takes
// a version 2 event for an invalid one and catches up from the store:
// correct, but slower, until every instance runs this release). The Redis
// backend builds version 2 in its commit script, byte for byte as
// EncodeEvent does.
//
// Version 2:
//
//	byte 0       version, 2
//	byte 1       kind, 1 (commit)
//	id           epoch
//	uvarint      revision
//	id           commit id
//	id           parent commit id
//	id           origin
//	changes
//
// Version 1:
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
//	uvarint length + bytes   origin
//	changes
//
// changes, the same in both versions:
//
//	uvarint                  number of changes
//	per change:
//	  byte                   flags: 1 delete, 2 value omitted, 0 put with value;
//	                         a put may add 4 (expires) or 8 (TTL)
//	  uvarint length + bytes key (not empty)
//	  uvarint length + bytes value (only for a put with value)
//	  uvarint                with flag 4: when the key expires, Unix ms by the
//	                         store's clock (Change.Expires); with flag 8: its
//	                         TTL in ms (Change.TTL)
//
// Flags 4 and 8 came after both versions: an instance of a release before
// them takes an event with a TTL for an invalid one and catches up from
// the store (correct, slower); every other event is unchanged.
//
// An id of version 2 is a uvarint t and t>>1 bytes. When t is odd the bytes
// are the id in binary and the id is their lowercase hexadecimal form: ids
// made by contextd and its backends are random hex, so each costs half its
// length on the wire. When t is even the bytes are the id as it is. An id
// that can be written in binary (a non-empty, even number of the
// characters 0-9 and a-f) must be, so every event has one form. Epochs and
// commit ids are at most MaxEpochLen bytes long in either version.
//
// A decoder rejects unknown versions and kinds, so a later version can be
// rolled out by first teaching every instance to read it.
const (
	wireVersion1   = 1
	wireVersion2   = 2
	wireKindCommit = 1

	flagDelete  = 1
	flagOmitted = 2
	flagExpires = 4
	flagTTL     = 8

	// MaxEpochLen is the longest epoch, and commit id, the wire format can
	// carry.
	MaxEpochLen = 255
)

// EncodeEvent returns the wire form of e, version 2. It fails only for an
// epoch or a commit id longer than MaxEpochLen.
func EncodeEvent(e Event) ([]byte, error) {
	if err := checkIDs(e.Head); err != nil {
		return nil, err
	}
	// Sized as the event will be (ids in binary take half their length),
	// not for the worst case: the buffer is the payload every subscriber
	// keeps, and a small event's worst case is one size class larger.
	size := 2 + idSize(e.Epoch) + varintLen(e.Revision) + idSize(e.Commit) + idSize(e.Parent) + idSize(e.Origin) + changesSize(e.Changes)
	buf := make([]byte, 0, size)
	buf = append(buf, wireVersion2, wireKindCommit)
	buf = appendID(buf, e.Epoch)
	buf = binary.AppendUvarint(buf, e.Revision)
	buf = appendID(buf, e.Commit)
	buf = appendID(buf, e.Parent)
	buf = appendID(buf, e.Origin)
	return appendChanges(buf, e.Changes), nil
}

// EncodeEventV1 returns the wire form of e in version 1, the format of the
// previous release, for tests and tools that talk to instances of that
// release. It fails only for an epoch or a commit id longer than
// MaxEpochLen.
func EncodeEventV1(e Event) ([]byte, error) {
	return FrameEvent(e.Head, EncodeEventBody(e.Origin, e.Changes))
}

// FrameEvent puts the version 1 header (version, kind, epoch, revision,
// commit, parent) of head h in front of an event body made by
// EncodeEventBody: for a store that frames version 1 events itself, in SQL
// or a script, where the head is first known. Decoders read version 1 as
// well as 2, so such a store's events are understood; a store built now
// should produce version 2 (EncodeEvent, or the layout above with
// AppendWireID). It fails only for an epoch or a commit id longer than
// MaxEpochLen.
func FrameEvent(h Head, body []byte) ([]byte, error) {
	if err := checkIDs(h); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, 5+len(h.Epoch)+8+len(h.Commit)+len(h.Parent)+len(body))
	buf = append(buf, wireVersion1, wireKindCommit, byte(len(h.Epoch)))
	buf = append(buf, h.Epoch...)
	buf = binary.BigEndian.AppendUint64(buf, h.Revision)
	buf = append(buf, byte(len(h.Commit)))
	buf = append(buf, h.Commit...)
	buf = append(buf, byte(len(h.Parent)))
	buf = append(buf, h.Parent...)
	return append(buf, body...), nil
}

// EncodeEventBody returns the body of a version 1 event: everything after
// the parent commit id (see FrameEvent).
func EncodeEventBody(origin string, changes []Change) []byte {
	buf := make([]byte, 0, binary.MaxVarintLen64+len(origin)+binary.MaxVarintLen64+changesSize(changes))
	buf = appendString(buf, origin)
	return appendChanges(buf, changes)
}

func checkIDs(h Head) error {
	for _, id := range []struct{ what, s string }{{"epoch", h.Epoch}, {"commit id", h.Commit}, {"parent id", h.Parent}} {
		if len(id.s) > MaxEpochLen {
			return fmt.Errorf("backend: %s of %d bytes is longer than %d", id.what, len(id.s), MaxEpochLen)
		}
	}
	return nil
}

// changesSize is the most appendChanges adds for changes: exact but for
// the expiry, counted at its longest.
func changesSize(changes []Change) int {
	size := varintLen(uint64(len(changes)))
	for _, ch := range changes {
		size += 1 + varintLen(uint64(len(ch.Key))) + len(ch.Key) + varintLen(uint64(len(ch.Value))) + len(ch.Value) + binary.MaxVarintLen64
	}
	return size
}

// idSize is the length of id as appendID writes it if id is in hex, as
// ids mostly are (telling would take another pass over it): an id that is
// not takes a larger buffer later.
func idSize(id string) int {
	n := len(id)
	if n > 0 && n%2 == 0 {
		return varintLen(uint64(n/2)<<1|1) + n/2
	}
	return varintLen(uint64(n)<<1) + n
}

func appendChanges(buf []byte, changes []Change) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(changes)))
	for _, ch := range changes {
		switch {
		case ch.Deleted:
			buf = append(buf, flagDelete)
			buf = appendString(buf, ch.Key)
		default:
			var flags byte
			var expiry uint64
			switch {
			case !ch.Expires.IsZero() && ch.Expires.UnixMilli() > 0:
				flags, expiry = flagExpires, uint64(ch.Expires.UnixMilli())
			case ch.TTL > 0:
				flags, expiry = flagTTL, uint64((ch.TTL+time.Millisecond-1)/time.Millisecond)
			}
			if ch.Omitted {
				buf = append(buf, flags|flagOmitted)
				buf = appendString(buf, ch.Key)
			} else {
				buf = append(buf, flags)
				buf = appendString(buf, ch.Key)
				buf = binary.AppendUvarint(buf, uint64(len(ch.Value)))
				buf = append(buf, ch.Value...)
			}
			if flags != 0 {
				buf = binary.AppendUvarint(buf, expiry)
			}
		}
	}
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// AppendWireID appends id as version 2 of the wire format writes it: in
// binary when it is lowercase hex of even length, else as it is. A store
// that builds events itself (the Redis commit script) gets the ids it
// knows in advance from here.
func AppendWireID(buf []byte, id string) []byte {
	return appendID(buf, id)
}

func appendID(buf []byte, id string) []byte {
	if len(id) > 0 && len(id)%2 == 0 {
		// One pass: write the binary form, and fall back to the id as it
		// is at the first character that is not lowercase hex.
		start := len(buf)
		buf = binary.AppendUvarint(buf, uint64(len(id)/2)<<1|1)
		at := len(buf)
		buf = slices.Grow(buf, len(id)/2)[:at+len(id)/2]
		for i, dst := 0, buf[at:]; i < len(dst); i++ {
			hi, lo := hexValue[id[2*i]], hexValue[id[2*i+1]]
			if hi|lo > 15 {
				buf = buf[:start]
				goto raw
			}
			dst[i] = hi<<4 | lo
		}
		return buf
	}
raw:
	buf = binary.AppendUvarint(buf, uint64(len(id))<<1)
	return append(buf, id...)
}

// hexValue maps a lowercase hex digit to its value, anything else to 255.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 255
	}
	for i := 0; i < 16; i++ {
		t[hexDigits[i]] = byte(i)
	}
	return t
}()

// packable reports whether id is written in binary: a non-empty, even
// number of lowercase hex digits.
func packable(id string) bool {
	if len(id) == 0 || len(id)%2 != 0 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

// DecodeEvent parses a payload of version 1 or 2 of the wire format. Any
// malformed input gives an error matching ErrInvalidEvent; it never panics.
// The returned values do not alias p.
func DecodeEvent(p []byte) (Event, error) {
	var d EventDecoder
	e, err := d.DecodeHead(p)
	if err != nil {
		return Event{}, err
	}
	e.Changes = d.DecodeChanges()
	return e, nil
}

// PeekEvent reads the epoch, revision and origin of an event payload p of
// version 2 without decoding or checking the rest of p: the ids in their
// wire form (AppendWireID), aliasing p. ok is false if p does not start
// like an event of version 2. A receiver uses it to recognise an event it
// needs nothing from (the echo of its own commit, which it has applied)
// before it pays for decoding it; anything it uses from an event must come
// from DecodeEvent or an EventDecoder, which check the whole payload.
func PeekEvent(p []byte) (epoch []byte, revision uint64, origin []byte, ok bool) {
	d := decoder{buf: p}
	if d.byte() != wireVersion2 || d.byte() != wireKindCommit {
		return nil, 0, nil, false
	}
	epoch = d.wireID()
	revision = d.uvarint()
	d.wireID() // commit
	d.wireID() // parent
	origin = d.wireID()
	if d.err != nil {
		return nil, 0, nil, false
	}
	return epoch, revision, origin, true
}

// wireID reads an id of version 2 as it is on the wire, its length
// included.
func (d *decoder) wireID() []byte {
	start := d.off
	t := d.uvarint()
	if d.err != nil || t>>1 > uint64(len(d.buf)-d.off) {
		d.fail("truncated")
		return nil
	}
	d.off += int(t >> 1)
	return d.buf[start:d.off]
}

// EventDecoder decodes a stream of events in two steps, for a receiver
// that can often tell from the head alone that it needs nothing more (an
// event it already has, such as the echo of its own commit): DecodeHead
// checks the whole payload and returns everything but the changes, without
// copying any value; DecodeChanges then decodes the changes of that same
// payload. It also reuses the strings of ids seen in recent events (the
// epoch, the instances' origins, the previous commit as the next one's
// parent), so a steady stream of events allocates only for what is new.
//
// The zero EventDecoder is ready to use. It is not safe for concurrent use.
type EventDecoder struct {
	// ids holds recently decoded ids, replaced by the clock (second
	// chance) rule: an id found again since the hand last passed its slot
	// (its bit in used) is kept, so the epoch and the origins, found in
	// every event, outlive the stream of new commit ids instead of being
	// pushed out by them every few events.
	ids  [8]string
	used uint8
	next int
	// p and body are the payload of the last DecodeHead and the offset
	// of its changes (-1 after a failure).
	p    []byte
	body int
}

// DecodeHead parses payload p like DecodeEvent and returns its event
// without Changes; any malformed part of p, the changes included, gives an
// error matching ErrInvalidEvent. p must stay unchanged until
// DecodeChanges, which returns the changes.
func (dec *EventDecoder) DecodeHead(p []byte) (Event, error) {
	dec.p, dec.body = nil, -1
	d := decoder{buf: p, ids: dec}
	var e Event
	version := d.byte()
	if d.err == nil && version != wireVersion1 && version != wireVersion2 {
		return Event{}, fmt.Errorf("%w: unknown version %d", ErrInvalidEvent, version)
	}
	if k := d.byte(); d.err == nil && k != wireKindCommit {
		return Event{}, fmt.Errorf("%w: unknown kind %d", ErrInvalidEvent, k)
	}
	if version == wireVersion1 {
		e.Epoch = string(d.take(int(d.byte())))
		e.Revision = d.uint64()
		e.Commit = string(d.take(int(d.byte())))
		e.Parent = string(d.take(int(d.byte())))
		e.Origin = string(d.bytes())
	} else {
		e.Epoch = d.id(MaxEpochLen)
		e.Revision = d.uvarint()
		e.Commit = d.id(MaxEpochLen)
		e.Parent = d.id(MaxEpochLen)
		e.Origin = d.id(-1)
	}
	body := d.off
	d.changes(false)
	if d.err != nil {
		return Event{}, d.err
	}
	dec.p, dec.body = p, body
	return e, nil
}

// DecodeChanges returns the changes of the payload that the last
// DecodeHead accepted (nil if it failed, or for an event without changes).
// The values do not alias the payload.
func (dec *EventDecoder) DecodeChanges() []Change {
	if dec.body < 0 || dec.p == nil {
		return nil
	}
	d := decoder{buf: dec.p, off: dec.body}
	return d.changes(true)
}

// changes reads the changes up to the end of the payload; with keep unset
// it only checks them, allocating nothing.
func (d *decoder) changes(keep bool) []Change {
	count := d.uvarint()
	// Each change takes at least two bytes, so a count larger than what is
	// left is a lie; checking it first keeps a hostile count from making us
	// allocate.
	if d.err == nil && count > uint64(len(d.buf)-d.off)/2 {
		d.err = fmt.Errorf("%w: %d changes cannot fit in %d bytes", ErrInvalidEvent, count, len(d.buf)-d.off)
		return nil
	}
	var out []Change
	if keep && d.err == nil && count > 0 {
		out = make([]Change, 0, count)
	}
	for i := uint64(0); i < count && d.err == nil; i++ {
		flags := d.byte()
		key := d.bytes()
		if d.err == nil && len(key) == 0 {
			d.fail("empty key")
		}
		var ch Change
		switch flags &^ (flagExpires | flagTTL) {
		case 0:
			v := d.bytes()
			if keep {
				ch.Value = append([]byte{}, v...)
			}
		case flagDelete:
			ch.Deleted = true
		case flagOmitted:
			ch.Omitted = true
		default:
			d.fail(fmt.Sprintf("unknown change flags %d", flags))
		}
		switch flags & (flagExpires | flagTTL) {
		case 0:
		case flagExpires:
			if ms := d.uvarint(); d.err == nil && !ch.Deleted {
				ch.Expires = time.UnixMilli(int64(min(ms, math.MaxInt64)))
			}
		case flagTTL:
			if ms := d.uvarint(); d.err == nil && !ch.Deleted {
				ch.TTL = time.Duration(min(ms, uint64(math.MaxInt64/int64(time.Millisecond)))) * time.Millisecond
			}
		}
		if d.err == nil && (ch.Deleted && flags&(flagExpires|flagTTL) != 0 || flags&(flagExpires|flagTTL) == flagExpires|flagTTL) {
			d.fail(fmt.Sprintf("unknown change flags %d", flags))
		}
		if keep {
			ch.Key = string(key)
			out = append(out, ch)
		}
	}
	if d.err == nil && d.off != len(d.buf) {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.buf)-d.off))
	}
	if d.err != nil {
		return nil
	}
	return out
}

// decoder reads the wire format; after the first error every read returns
// zero values, so callers check d.err once per step.
type decoder struct {
	buf []byte
	off int
	err error
	// ids, if set, supplies and keeps the strings of recent ids.
	ids *EventDecoder
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

// id reads an id of version 2, at most limit bytes long once decoded
// (limit < 0: no limit).
func (d *decoder) id(limit int) string {
	t := d.uvarint()
	n := t >> 1
	if d.err == nil && n > uint64(len(d.buf)-d.off) {
		d.fail("truncated")
		return ""
	}
	raw := d.take(int(n))
	if d.err != nil {
		return ""
	}
	if t&1 == 0 {
		if limit >= 0 && len(raw) > limit {
			d.fail("id too long")
			return ""
		}
		if packable(string(raw)) {
			d.fail("id in hex that belongs in binary")
			return ""
		}
		if len(raw) == 0 {
			return ""
		}
		if d.ids != nil {
			for i, s := range d.ids.ids {
				if s == string(raw) {
					d.ids.used |= 1 << i
					return s
				}
			}
		}
		return d.remember(string(raw))
	}
	if n == 0 {
		d.fail("empty binary id")
		return ""
	}
	if limit >= 0 && 2*len(raw) > limit {
		d.fail("id too long")
		return ""
	}
	if d.ids != nil {
		for i, s := range d.ids.ids {
			if isHexOf(s, raw) {
				d.ids.used |= 1 << i
				return s
			}
		}
	}
	s := make([]byte, 2*len(raw))
	for i, b := range raw {
		s[2*i], s[2*i+1] = hexDigits[b>>4], hexDigits[b&15]
	}
	return d.remember(string(s))
}

// remember keeps id among the recent ids, if the decoder keeps any.
func (d *decoder) remember(id string) string {
	if ids := d.ids; ids != nil {
		// The hand clears the bits of the slots it passes: with all of
		// them set it goes round once and takes the slot it started at.
		for ids.used&(1<<ids.next) != 0 {
			ids.used &^= 1 << ids.next
			ids.next = (ids.next + 1) % len(ids.ids)
		}
		ids.ids[ids.next] = id
		ids.next = (ids.next + 1) % len(ids.ids)
	}
	return id
}

// isHexOf reports whether s is the lowercase hexadecimal form of raw.
func isHexOf(s string, raw []byte) bool {
	if len(s) != 2*len(raw) {
		return false
	}
	for i, b := range raw {
		if s[2*i] != hexDigits[b>>4] || s[2*i+1] != hexDigits[b&15] {
			return false
		}
	}
	return true
}

func varintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}
