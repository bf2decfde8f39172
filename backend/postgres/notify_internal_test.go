package postgres

import (
	"strings"
	"testing"
)

func TestPGChannel(t *testing.T) {
	if got := pgChannel("contextd", "{contextd:users}:events"); got != "contextd:{contextd:users}:events" {
		t.Errorf("a short channel is %q; want it readable, with its schema", got)
	}
	prefix := strings.Repeat("p", 70)
	seen := map[string]string{}
	for _, ch := range []string{
		prefix + "a", prefix + "b", // share their first 70 bytes
		strings.Repeat("q", 63-len("contextd:")), strings.Repeat("q", 64-len("contextd:")), // at and past the limit
		"bad\xffutf8", "nul\x00byte", "new\nline",
	} {
		got := pgChannel("contextd", ch)
		if len(got) > maxChannelLen {
			t.Errorf("channel %q maps to %q, %d bytes; NOTIFY allows %d", ch, got, len(got), maxChannelLen)
		}
		if other, dup := seen[got]; dup {
			t.Errorf("channels %q and %q both map to %q", other, ch, got)
		}
		seen[got] = ch
		if !printable(got) {
			t.Errorf("channel %q maps to %q, which is not printable text", ch, got)
		}
	}
	if pgChannel("a", "x") == pgChannel("b", "x") {
		t.Error("one channel of two schemas maps to one NOTIFY channel")
	}
	long := strings.Repeat("c", 100)
	if pgChannel("a", long) == pgChannel("b", long) {
		t.Error("one long channel of two schemas maps to one NOTIFY channel")
	}
}

func TestInlineNoteLimit(t *testing.T) {
	// The longest payload that fits: 1 + 4*ceil(n/3) <= 7999.
	fits := make([]byte, 5997)
	if n := inlineNote(fits); n == "" || len(n) > maxNotifyPayload {
		t.Errorf("a %d-byte payload: note of %d bytes", len(fits), len(n))
	}
	if n := inlineNote(make([]byte, 6000)); n != "" {
		t.Errorf("a 6000-byte payload was inlined in %d bytes", len(n))
	}
}
