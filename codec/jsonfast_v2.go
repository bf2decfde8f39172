//go:build goexperiment.jsonv2

package codec

// jsonReplacement is what encoding/json writes for each byte of invalid
// UTF-8 in a string: U+FFFD itself, when v2 backs it (GOEXPERIMENT=jsonv2).
const jsonReplacement = "\ufffd"
