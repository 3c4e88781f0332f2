package interp

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

type attrKind int

const (
	intAttr    attrKind = iota + 1 // 1 : i64
	boolAttr                       // true
	arrayAttr                      // array<i64: 1, 2>
	denseAttr                      // dense<...> : tensor<...>
	listAttr                       // [a, b]
	opaqueAttr                     // #stablehlo.dot<...>, #stablehlo<precision DEFAULT>
	stringAttr                     // "text"
)

// attr is one parsed attribute value; kind says which fields are set.
type attr struct {
	kind     attrKind
	i        int64
	b        bool
	elemType string // of an array, or the type after an integer
	ints     []int64
	bools    []bool
	dense    *Tensor
	list     []attr
	name     string // of an opaque attribute: "stablehlo.dot"
	body     string // inside its angle brackets
	str      string
}

// attrs are an op's attributes; each evaluator marks the ones it reads so
// that any other is reported instead of ignored.
type attrs struct {
	m    map[string]attr
	used map[string]bool
}

func newAttrs() *attrs { return &attrs{m: map[string]attr{}, used: map[string]bool{}} }

func (a *attrs) set(key string, v attr) { a.m[key] = v }

func (a *attrs) len() int { return len(a.m) }

func (a *attrs) unused() []string {
	var out []string
	for k := range a.m {
		if !a.used[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// attrReader gives an op builder typed access to its attributes and
// operand types. The first problem is kept in err and later reads return
// zero values, so builders read like a list of fields.
type attrReader struct {
	s   *stmt
	err error
}

func (r *attrReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *attrReader) get(key string, kind attrKind) (attr, bool) {
	v, ok := r.s.attrs.m[key]
	if !ok {
		r.fail("missing attribute %s", key)
		return attr{}, false
	}
	r.s.attrs.used[key] = true
	if v.kind != kind {
		r.fail("attribute %s has an unexpected form", key)
		return attr{}, false
	}
	return v, true
}

// has reports whether an attribute is present.
func (r *attrReader) has(key string) bool {
	_, ok := r.s.attrs.m[key]
	return ok
}

// operands checks the operand count.
func (r *attrReader) operands(n int) bool {
	if len(r.s.operands) != n {
		r.fail("%d operands, want %d", len(r.s.operands), n)
		return false
	}
	return true
}

// int reads "7 : i64".
func (r *attrReader) int(key string) int {
	v, _ := r.get(key, intAttr)
	return int(v.i)
}

// ints reads "array<i64: 1, 2>".
func (r *attrReader) ints(key string) []int {
	v, ok := r.get(key, arrayAttr)
	if ok && v.elemType != "i64" {
		r.fail("attribute %s: array<%s>, want array<i64>", key, v.elemType)
	}
	out := make([]int, len(v.ints))
	for i, x := range v.ints {
		out[i] = int(x)
	}
	return out
}

// bools reads "array<i1: true, false>".
func (r *attrReader) bools(key string) []bool {
	v, ok := r.get(key, arrayAttr)
	if ok && v.elemType != "i1" {
		r.fail("attribute %s: array<%s>, want array<i1>", key, v.elemType)
	}
	return v.bools
}

// bool reads "true" / "false".
func (r *attrReader) bool(key string) bool {
	v, _ := r.get(key, boolAttr)
	return v.b
}

// dense reads "dense<...> : tensor<...>".
func (r *attrReader) dense(key string) *Tensor {
	v, ok := r.get(key, denseAttr)
	if !ok {
		return newTensor(I64, []int{0})
	}
	return v.dense
}

// enum reads "#stablehlo<kind VALUE>" and returns VALUE, which must be one
// of allowed.
func (r *attrReader) enum(key, kind string, allowed ...string) string {
	v, ok := r.get(key, opaqueAttr)
	if !ok {
		return ""
	}
	f := strings.Fields(v.body)
	if v.name != "stablehlo" || len(f) != 2 || f[0] != kind {
		r.fail("attribute %s = #%s<%s>, want #stablehlo<%s ...>", key, v.name, v.body, kind)
		return ""
	}
	if !slices.Contains(allowed, f[1]) {
		r.fail("attribute %s: unsupported %s %s", key, kind, f[1])
	}
	return f[1]
}

// precision accepts precision_config, a list of #stablehlo<precision X>.
// The interpreter always computes at its full precision, which every
// precision setting allows.
func (r *attrReader) precision() {
	const key = "precision_config"
	if !r.has(key) {
		return
	}
	v, ok := r.get(key, listAttr)
	if !ok {
		return
	}
	for _, p := range v.list {
		f := strings.Fields(p.body)
		if p.kind != opaqueAttr || p.name != "stablehlo" || len(f) != 2 || f[0] != "precision" ||
			!slices.Contains([]string{"DEFAULT", "HIGH", "HIGHEST"}, f[1]) {
			r.fail("unsupported precision_config entry #%s<%s>", p.name, p.body)
		}
	}
}

// fields reads a struct-like attribute "#stablehlo.NAME<key = [1, 2],
// key2 = 3>" into lists (an integer becomes a one-element list). Only the
// known keys are accepted; a missing key reads as empty.
func (r *attrReader) fields(key, name string, known ...string) map[string][]int {
	out := map[string][]int{}
	v, ok := r.get(key, opaqueAttr)
	if !ok {
		return out
	}
	if v.name != name {
		r.fail("attribute %s = #%s<...>, want #%s<...>", key, v.name, name)
		return out
	}
	for _, field := range splitTopLevel(v.body) {
		k, val, ok := strings.Cut(field, "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !ok || !slices.Contains(known, k) {
			r.fail("attribute %s: unsupported field %q", key, strings.TrimSpace(field))
			return out
		}
		var list []int
		if strings.HasPrefix(val, "[") && strings.HasSuffix(val, "]") {
			for _, s := range strings.Split(val[1:len(val)-1], ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				n, err := strconv.Atoi(s)
				if err != nil {
					r.fail("attribute %s: field %s: bad integer %q", key, k, s)
				}
				list = append(list, n)
			}
		} else {
			n, err := strconv.Atoi(val)
			if err != nil {
				r.fail("attribute %s: field %s: bad value %q", key, k, val)
			}
			list = []int{n}
		}
		out[k] = list
	}
	return out
}

// splitTopLevel splits "a = [1, 2], b = 3" at the commas outside
// brackets.
func splitTopLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if strings.TrimSpace(s[start:]) != "" {
		out = append(out, s[start:])
	}
	return out
}

// convDims are a convolution's dimension numbers: which axis of the
// input (lhs), kernel (rhs) and output is batch, feature and each spatial
// dimension.
type convDims struct {
	inBatch, inFeature   int
	inSpatial            []int
	kIn, kOut            int
	kSpatial             []int
	outBatch, outFeature int
	outSpatial           []int
}

// convDims reads "#stablehlo.conv<[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]>":
// each list names the role of every axis (a digit is that spatial
// dimension).
func (r *attrReader) convDims(key string) convDims {
	var d convDims
	v, ok := r.get(key, opaqueAttr)
	if !ok {
		return d
	}
	lhs, rest, ok1 := strings.Cut(v.body, "x")
	rhs, out, ok2 := strings.Cut(rest, "->")
	if v.name != "stablehlo.conv" || !ok1 || !ok2 {
		r.fail("attribute %s = #%s<%s>: unsupported form", key, v.name, v.body)
		return d
	}
	roles := func(list string, a, b string, pa, pb *int) []int {
		list = strings.TrimSpace(list)
		if !strings.HasPrefix(list, "[") || !strings.HasSuffix(list, "]") {
			r.fail("attribute %s: bad dimension list %q", key, list)
			return nil
		}
		items := strings.Split(list[1:len(list)-1], ",")
		spatial := make([]int, len(items)-2)
		*pa, *pb = -1, -1
		seen := 0
		for axis, it := range items {
			switch it = strings.TrimSpace(it); it {
			case a:
				*pa = axis
			case b:
				*pb = axis
			default:
				n, err := strconv.Atoi(it)
				if err != nil || n < 0 || n >= len(spatial) {
					r.fail("attribute %s: bad dimension %q in %s", key, it, list)
					return nil
				}
				spatial[n] = axis
				seen++
			}
		}
		if *pa < 0 || *pb < 0 || seen != len(spatial) {
			r.fail("attribute %s: incomplete dimension list %s", key, list)
		}
		return spatial
	}
	d.inSpatial = roles(lhs, "b", "f", &d.inBatch, &d.inFeature)
	d.kSpatial = roles(rhs, "i", "o", &d.kIn, &d.kOut)
	d.outSpatial = roles(out, "b", "f", &d.outBatch, &d.outFeature)
	return d
}
