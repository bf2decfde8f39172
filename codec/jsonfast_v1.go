//go:build !goexperiment.jsonv2

package codec

// jsonReplacement is what encoding/json writes for each byte of invalid
// UTF-8 in a string: the escape, in its own (v1) encoder.
const jsonReplacement = `\ufffd`
