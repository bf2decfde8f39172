package backend

import "strings"

// DefaultChannel is the channel a context's events go to unless its options
// name another: HashTag(name) + ":events". The tag makes it land on the
// same Redis Cluster shard as the context's keys, which sharded pub/sub
// needs.
func DefaultChannel(name string) string {
	return HashTag(name) + ":events"
}

// HashTag returns "{contextd:<name>}" with the characters of name that
// could end the tag early or be taken for an escape written as %25 ('%'),
// %7B ('{') and %7D ('}'). Any other byte — ':', NUL, any UTF-8 — stays.
//
// A store that names its keys HashTag(name) + suffix keeps each context's
// keys apart from every other context's, whatever the names: the escaped
// name holds no '}', so the tag ends at its first '}', and two names give
// two tags of which neither is a prefix of the other's keys. A name such
// as "a}:lock:k" cannot reach the keys of context "a". The braces are a
// Redis Cluster hash tag: all keys of one context share a slot.
//
// Names without those three characters keep the form they always had.
func HashTag(name string) string {
	return "{contextd:" + tagEscaper.Replace(name) + "}"
}

var tagEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")
