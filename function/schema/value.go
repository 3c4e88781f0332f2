package schema

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// value is one JSON value of the body with the field name errors report.
// raw is syntactically valid JSON without surrounding space (readObject
// checked it).
type value struct {
	field string
	raw   json.RawMessage
}

func (v value) kind() string {
	switch v.raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "a list"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func (v value) typeErr(want string) error {
	return fieldErr(v.field, "must be %s, got %s", want, v.kind())
}

// literal is the raw value for an error message, cut short: a number
// literal can be megabytes long.
func (v value) literal() string {
	const max = 40
	if len(v.raw) > max {
		return string(v.raw[:max]) + "..."
	}
	return string(v.raw)
}

func (v value) string(maxBytes int) (string, error) {
	if v.raw[0] != '"' {
		return "", v.typeErr("a string")
	}
	// encoding/json would silently turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(v.raw) {
		return "", fieldErr(v.field, "is not valid UTF-8")
	}
	var s string
	if err := json.Unmarshal(v.raw, &s); err != nil {
		return "", fieldErr(v.field, "malformed string: %v", err)
	}
	if len(s) > maxBytes {
		return "", fieldErr(v.field, "is %d bytes long, over the limit of %d", len(s), maxBytes)
	}
	return s, nil
}

// enum reads a string that must be one of allowed.
func (v value) enum(allowed ...string) (string, error) {
	if v.raw[0] != '"' {
		return "", v.typeErr("a string")
	}
	s, err := v.string(64)
	if err == nil && slices.Contains(allowed, s) {
		return s, nil
	}
	return "", fieldErr(v.field, "must be one of %s, got %s", strings.Join(allowed, ", "), v.literal())
}

func (v value) bool() (bool, error) {
	switch string(v.raw) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, v.typeErr("a boolean")
}

// int reads an integer literal in [lo, hi]. A number with a fraction or an
// exponent is refused even when integral (512.0, 5e2): strictness keeps
// one spelling per value.
func (v value) int(lo, hi int) (int, error) {
	if v.kind() != "a number" {
		return 0, v.typeErr("an integer")
	}
	x, err := strconv.ParseInt(string(v.raw), 10, 64)
	if err != nil || x < int64(lo) || x > int64(hi) {
		return 0, fieldErr(v.field, "must be an integer from %d to %d, got %s", lo, hi, v.literal())
	}
	return int(x), nil
}

func (v value) uint64() (uint64, error) {
	if v.kind() != "a number" {
		return 0, v.typeErr("an integer")
	}
	x, err := strconv.ParseUint(string(v.raw), 10, 64)
	if err != nil {
		return 0, fieldErr(v.field, "must be an integer from 0 to %d, got %s", uint64(math.MaxUint64), v.literal())
	}
	return x, nil
}

// float reads a number in [lo, hi]. JSON has no NaN or infinity literal,
// but a literal such as 1e999 overflows to infinity; it is refused.
func (v value) float(lo, hi float64) (float64, error) {
	if v.kind() != "a number" {
		return 0, v.typeErr("a number")
	}
	x, err := strconv.ParseFloat(string(v.raw), 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, fieldErr(v.field, "number %s is out of range; must be from %g to %g", v.literal(), lo, hi)
	}
	if x < lo || x > hi {
		return 0, fieldErr(v.field, "must be from %g to %g, got %s", lo, hi, v.literal())
	}
	return x, nil
}

// list returns the elements of a JSON array, named field[i]. It stops
// at more than limit elements, saying why there is a limit: a body of tiny
// elements must not cost an allocation per element.
func (v value) list(limit int, why string) ([]value, error) {
	if v.raw[0] != '[' {
		return nil, v.typeErr("a list")
	}
	dec := json.NewDecoder(bytes.NewReader(v.raw))
	if _, err := dec.Token(); err != nil {
		return nil, syntaxErr(v.field, err)
	}
	var elems []value
	for i := 0; dec.More(); i++ {
		if i == limit {
			return nil, fieldErr(v.field, "too many entries: %s", why)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxErr(v.field, err)
		}
		elems = append(elems, value{field: fmt.Sprintf("%s[%d]", v.field, i), raw: bytes.TrimSpace(raw)})
	}
	return elems, nil
}

// image reads a control image, inline (base64 string) or by reference
// (object), charging inline bytes to budget.
func (v value) image(budget *int) (ControlImage, error) {
	switch v.raw[0] {
	case '"':
		return v.inlineImage(budget)
	case '{':
		return v.objectImage()
	}
	return ControlImage{}, v.typeErr(`a base64 PNG/JPEG string or an object {"key": ...}`)
}

func (v value) inlineImage(budget *int) (ControlImage, error) {
	var s string
	if err := json.Unmarshal(v.raw, &s); err != nil {
		return ControlImage{}, fieldErr(v.field, "malformed string: %v", err)
	}
	if rest, ok := strings.CutPrefix(s, "data:"); ok {
		meta, payload, ok := strings.Cut(rest, ",")
		mediaType, isBase64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isBase64 {
			return ControlImage{}, fieldErr(v.field, `malformed data URL: want "data:image/png;base64,..."`)
		}
		if mediaType != "" && mediaType != "image/png" && mediaType != "image/jpeg" {
			return ControlImage{}, fieldErr(v.field, "data URL media type %.40q: want image/png or image/jpeg", mediaType)
		}
		s = payload
	}
	if s == "" {
		return ControlImage{}, fieldErr(v.field, "is empty: want a base64 PNG or JPEG")
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return ControlImage{}, fieldErr(v.field, "invalid base64 at byte %d", int64(ce))
		}
		return ControlImage{}, fieldErr(v.field, "invalid base64: %v", err)
	}
	if len(data) > *budget {
		return ControlImage{}, fieldErr(v.field, "decoded image is %d bytes; control images may take %d bytes in all", len(data), MaxImageBytes)
	}
	*budget -= len(data)
	format, w, h, err := imageHeader(data)
	if err != nil {
		return ControlImage{}, fieldErr(v.field, "%v", err)
	}
	return ControlImage{Data: data, Format: format, Width: w, Height: h}, nil
}

func (v value) objectImage() (ControlImage, error) {
	m, err := readObject(v.raw, v.field, []string{"bucket", "key"})
	if err != nil {
		return ControlImage{}, err
	}
	var img ControlImage
	if raw, ok := m["key"]; ok && string(raw) != "null" {
		if img.Key, err = (value{v.field + ".key", raw}).string(MaxObjectKeyBytes); err != nil {
			return ControlImage{}, err
		}
	}
	if img.Key == "" {
		return ControlImage{}, fieldErr(v.field+".key", "required: a non-empty object key")
	}
	if raw, ok := m["bucket"]; ok && string(raw) != "null" {
		if img.Bucket, err = (value{v.field + ".bucket", raw}).string(255); err != nil {
			return ControlImage{}, err
		}
	}
	return img, nil
}
