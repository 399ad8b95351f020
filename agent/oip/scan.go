package oip

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// A few helpers that walk JSON already known to be valid (json.Valid) by
// byte offsets, so that a request is decoded in one pass without
// encoding/json's reflection. They never index out of bounds, valid input
// or not.

// skipValue returns the offset just past the JSON value starting at i.
func skipValue(b []byte, i int) int {
	i = skipWS(b, i)
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// skipString returns the offset just past the string starting at i.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// unquote decodes the JSON string s (with its quotes): plain ASCII
// directly, anything else through encoding/json so both agree.
func unquote(s []byte) (string, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return "", errors.New("not a string")
	}
	for _, c := range s[1 : len(s)-1] {
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			var out string
			err := json.Unmarshal(s, &out)
			return out, err
		}
	}
	return string(s[1 : len(s)-1]), nil
}

// keyBytes is an object key's name: the bytes between the quotes, or
// for a key with escapes, its decoded text.
func keyBytes(s []byte) ([]byte, error) {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return nil, errors.New("not a string")
	}
	for _, c := range s[1 : len(s)-1] {
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			k, err := unquote(s)
			return []byte(k), err
		}
	}
	return s[1 : len(s)-1], nil
}

// fields calls fn with each key and raw value of the object b. A later
// duplicate key is seen again, so the last one wins, as in encoding/json.
// The key is the decoded name's bytes, valid during the call; comparing
// string(key) with constants allocates nothing.
func fields(b []byte, fn func(key, val []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errors.New("want a JSON object")
	}
	i = skipWS(b, i+1)
	for i < len(b) && b[i] != '}' {
		end := skipString(b, i)
		key, err := keyBytes(b[i:end])
		if err != nil {
			return err
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return errors.New("malformed JSON")
		}
		start := skipWS(b, i+1)
		i = skipValue(b, start)
		if err := fn(key, b[start:i]); err != nil {
			return err
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return nil
}

// items calls fn with each raw element of the array b.
func items(b []byte, fn func(i int, val []byte) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return errors.New("want a JSON array")
	}
	i = skipWS(b, i+1)
	for n := 0; i < len(b) && b[i] != ']'; n++ {
		start := i
		i = skipValue(b, i)
		if err := fn(n, b[start:i]); err != nil {
			return err
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return nil
}

func isNull(v []byte) bool { return string(v) == "null" }

// kindOf names the JSON value v, for errors.
func kindOf(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch c := v[0]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	}
	return "a number"
}

// stringField decodes a string value, null as empty.
func stringField(name string, v []byte) (string, error) {
	if isNull(v) {
		return "", nil
	}
	if len(v) == 0 || v[0] != '"' {
		return "", fmt.Errorf("%s: want a string, not %s", name, kindOf(v))
	}
	return unquote(v)
}

// shapeField decodes a shape: an array of integers; null is missing.
func shapeField(v []byte) ([]int64, error) {
	if isNull(v) {
		return nil, nil
	}
	shape := []int64{}
	err := items(v, func(i int, d []byte) error {
		n, err := strconv.ParseInt(string(d), 10, 64)
		if err != nil {
			return fmt.Errorf("shape: dimension %d is %s, not an integer", i, d)
		}
		shape = append(shape, n)
		return nil
	})
	if err != nil && len(v) > 0 && v[0] != '[' {
		return nil, fmt.Errorf("shape: want an array, not %s", kindOf(v))
	}
	return shape, err
}
