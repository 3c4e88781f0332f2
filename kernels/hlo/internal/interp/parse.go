package interp

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// Parse reads a module in MLIR's generic op syntax, as go-xla's stablehlo
// builder writes it:
//
//	module @name {
//	  func.func @main(%arg: tensor<2x3xf32>, ...) -> tensor<...> {
//	    %0 = "stablehlo.op"(%arg, ...) ({ ^body(...) : ... }) { attr = ... } : (types) -> type
//	    "stablehlo.return"(%0) : (tensor<...>) -> ()
//	  }
//	}
//
// Every op is checked and prepared here, so an unsupported op, attribute
// or dtype fails Parse with its line, not Run halfway through.
func Parse(text []byte) (m *Module, err error) {
	p := &parser{src: text}
	for i, c := range text {
		if c == '\n' {
			p.newlines = append(p.newlines, i)
		}
	}
	defer func() {
		if r := recover(); r != nil {
			pe, ok := r.(parseError)
			if !ok {
				panic(r)
			}
			m, err = nil, pe.err
		}
	}()
	return p.module(), nil
}

// parseError carries a syntax or validation error out of the recursive
// descent.
type parseError struct{ err error }

type parser struct {
	src      []byte
	pos      int
	newlines []int // offsets of '\n', for line numbers
}

func (p *parser) line() int { return sort.SearchInts(p.newlines, p.pos) + 1 }

func (p *parser) fail(format string, args ...any) {
	panic(parseError{fmt.Errorf("line %d: %s", p.line(), fmt.Sprintf(format, args...))})
}

// ws skips white space.
func (p *parser) ws() {
	for p.pos < len(p.src) {
		switch p.src[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) peek(s string) bool {
	p.ws()
	return bytes.HasPrefix(p.src[p.pos:], []byte(s))
}

func (p *parser) accept(s string) bool {
	if p.peek(s) {
		p.pos += len(s)
		return true
	}
	return false
}

func (p *parser) expect(s string) {
	if !p.accept(s) {
		p.fail("expected %q, found %q", s, p.excerpt())
	}
}

func (p *parser) excerpt() string {
	end := min(len(p.src), p.pos+40)
	if i := bytes.IndexByte(p.src[p.pos:end], '\n'); i >= 0 {
		end = p.pos + i
	}
	return string(p.src[p.pos:end])
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '$' || c == '-'
}

// word reads an identifier or a literal token (letters, digits, _ . $ -;
// a leading + for exponents is not needed: numbers use token).
func (p *parser) word() string {
	p.ws()
	start := p.pos
	for p.pos < len(p.src) && isWordByte(p.src[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		p.fail("expected a name, found %q", p.excerpt())
	}
	return string(p.src[start:p.pos])
}

// sigil reads %name, ^name or @name and returns the name.
func (p *parser) sigil(c string) string {
	p.expect(c)
	if p.pos >= len(p.src) || !isWordByte(p.src[p.pos]) {
		p.fail("expected a name after %s", c)
	}
	return p.word()
}

// token reads a scalar literal: a number (1, -2.5e-06, 0x7F800000) or
// true/false.
func (p *parser) token() string {
	p.ws()
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if isWordByte(c) || c == '+' {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		p.fail("expected a literal, found %q", p.excerpt())
	}
	return string(p.src[start:p.pos])
}

func (p *parser) integer() int64 {
	tok := p.token()
	v, err := strconv.ParseInt(tok, 0, 64)
	if err != nil {
		p.fail("expected an integer, found %q", tok)
	}
	return v
}

func (p *parser) module() *Module {
	p.expect("module")
	m := &Module{Name: p.sigil("@")}
	p.expect("{")
	p.expect("func.func")
	if name := p.sigil("@"); name != "main" {
		p.fail("function @%s: only a single @main function is supported", name)
	}
	main := &block{args: p.blockArgs()}
	p.expect("->")
	if p.accept("(") {
		for !p.accept(")") {
			if len(m.results) > 0 {
				p.expect(",")
			}
			m.results = append(m.results, p.tensorType())
			if p.peek("{") {
				p.fail("result attributes are not supported")
			}
		}
	} else {
		m.results = []tensorType{p.tensorType()}
	}
	p.expect("{")
	p.body(main, "func")
	p.expect("}")
	p.expect("}")
	if p.ws(); p.pos != len(p.src) {
		p.fail("unexpected text after the module: %q", p.excerpt())
	}
	if len(main.ret) != len(m.results) {
		p.fail("main returns %d values, declares %d", len(main.ret), len(m.results))
	}
	main.computeLastUse()
	m.main = main
	return m
}

// body reads statements up to the closing brace (not consumed); the last
// one must be a return, whose operands become b.ret.
func (p *parser) body(b *block, what string) {
	for !p.peek("}") {
		if b.ret != nil {
			p.fail("statement after the return of a %s body", what)
		}
		s := p.statement()
		if s.op == "stablehlo.return" || s.op == "func.return" {
			if s.attrs.len() > 0 || len(s.regions) > 0 {
				p.fail("%s with attributes or regions", s.op)
			}
			b.ret = append([]string{}, s.operands...)
			continue
		}
		b.stmts = append(b.stmts, s)
	}
	if b.ret == nil {
		p.fail("%s body has no return", what)
	}
}

// statement reads one op and prepares its evaluator.
func (p *parser) statement() *stmt {
	p.ws()
	s := &stmt{line: p.line(), attrs: newAttrs()}
	var results []string
	if p.peek("%") {
		results = append(results, p.sigil("%"))
		for p.accept(",") {
			results = append(results, p.sigil("%"))
		}
		p.expect("=")
	}
	p.expect(`"`)
	end := bytes.IndexByte(p.src[p.pos:], '"')
	if end < 0 {
		p.fail("unterminated op name")
	}
	s.op = string(p.src[p.pos : p.pos+end])
	p.pos += end + 1

	p.expect("(")
	for !p.accept(")") {
		if len(s.operands) > 0 {
			p.expect(",")
		}
		s.operands = append(s.operands, p.sigil("%"))
	}
	if p.accept("(") {
		for {
			p.expect("{")
			s.regions = append(s.regions, p.region())
			p.expect("}")
			if !p.accept(",") {
				break
			}
		}
		p.expect(")")
	}
	if p.accept("{") {
		for !p.accept("}") {
			if s.attrs.len() > 0 {
				p.expect(",")
			}
			key := p.word()
			p.expect("=")
			if _, dup := s.attrs.m[key]; dup {
				p.fail("attribute %s given twice", key)
			}
			s.attrs.set(key, p.attrValue())
		}
	}
	p.expect(":")
	p.expect("(")
	for !p.accept(")") {
		if len(s.inTypes) > 0 {
			p.expect(",")
		}
		s.inTypes = append(s.inTypes, p.tensorType())
	}
	p.expect("->")
	var outTypes []tensorType
	if p.accept("(") {
		for !p.accept(")") {
			if len(outTypes) > 0 {
				p.expect(",")
			}
			outTypes = append(outTypes, p.tensorType())
		}
	} else {
		outTypes = append(outTypes, p.tensorType())
	}

	if len(s.inTypes) != len(s.operands) {
		p.fail("%s: %d operands but %d operand types", s.op, len(s.operands), len(s.inTypes))
	}
	if len(outTypes) != len(results) {
		p.fail("%s: %d results but %d result types", s.op, len(results), len(outTypes))
	}
	if s.op == "stablehlo.return" || s.op == "func.return" {
		if len(results) != 0 {
			p.fail("%s has results", s.op)
		}
		return s
	}
	if len(results) != 1 {
		p.fail("%s: %d results; only single-result ops are supported", s.op, len(results))
	}
	s.result, s.outType = results[0], outTypes[0]
	build, ok := builders[s.op]
	if !ok {
		p.fail("unsupported op %s", s.op)
	}
	r := &attrReader{s: s}
	s.eval = build(s, r)
	if r.err == nil {
		if left := s.attrs.unused(); len(left) > 0 {
			r.err = fmt.Errorf("unsupported attribute %s", strings.Join(left, ", "))
		}
	}
	if r.err != nil {
		p.fail("%s: %v", s.op, r.err)
	}
	return s
}

// blockArgs reads "(%a: type, ...)", the arguments of @main or a region.
func (p *parser) blockArgs() []blockArg {
	var args []blockArg
	p.expect("(")
	for !p.accept(")") {
		if len(args) > 0 {
			p.expect(",")
		}
		a := blockArg{name: p.sigil("%")}
		p.expect(":")
		a.typ = p.tensorType()
		if p.peek("{") {
			p.fail("argument attributes on %%%s are not supported", a.name)
		}
		args = append(args, a)
	}
	return args
}

// region reads "^label(%a: type, ...) : statements" inside an op's braces.
func (p *parser) region() *block {
	p.sigil("^")
	b := &block{args: p.blockArgs()}
	p.expect(":")
	p.body(b, "region")
	b.computeLastUse()
	return b
}

// tensorType reads tensor<2x3xf32> or tensor<f32>.
func (p *parser) tensorType() tensorType {
	p.expect("tensor<")
	end := bytes.IndexByte(p.src[p.pos:], '>')
	if end < 0 {
		p.fail("unterminated tensor type")
	}
	body := string(p.src[p.pos : p.pos+end])
	parts := strings.Split(body, "x")
	dt, ok := parseDType(parts[len(parts)-1])
	if !ok {
		p.fail("unsupported element type in tensor<%s>", body)
	}
	t := tensorType{dtype: dt, dims: []int{}}
	for _, d := range parts[:len(parts)-1] {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			p.fail("unsupported dimension %q in tensor<%s> (only static shapes)", d, body)
		}
		t.dims = append(t.dims, n)
	}
	p.pos += end + 1
	return t
}

// attrValue reads one attribute value.
func (p *parser) attrValue() attr {
	p.ws()
	switch {
	case p.accept("array<"):
		a := attr{kind: arrayAttr, elemType: p.word()}
		if p.accept(":") {
			for {
				tok := p.token()
				switch {
				case a.elemType == "i1" && (tok == "true" || tok == "false"):
					a.bools = append(a.bools, tok == "true")
				case a.elemType == "i64" || a.elemType == "i32":
					v, err := strconv.ParseInt(tok, 10, 64)
					if err != nil {
						p.fail("bad %s array element %q", a.elemType, tok)
					}
					a.ints = append(a.ints, v)
				default:
					p.fail("unsupported array<%s> element %q", a.elemType, tok)
				}
				if !p.accept(",") {
					break
				}
			}
		}
		p.expect(">")
		return a
	case p.accept("dense<"):
		return attr{kind: denseAttr, dense: p.dense()}
	case p.accept("#"):
		a := attr{kind: opaqueAttr, name: p.word()}
		p.expect("<")
		start, depth := p.pos, 1
		for depth > 0 {
			if p.pos >= len(p.src) {
				p.fail("unterminated #%s<", a.name)
			}
			switch {
			case bytes.HasPrefix(p.src[p.pos:], []byte("->")):
				p.pos++ // an arrow inside, as in #stablehlo.conv<...->...>
			case p.src[p.pos] == '<':
				depth++
			case p.src[p.pos] == '>':
				depth--
			}
			p.pos++
		}
		a.body = string(p.src[start : p.pos-1])
		return a
	case p.accept("["):
		a := attr{kind: listAttr}
		for !p.accept("]") {
			if len(a.list) > 0 {
				p.expect(",")
			}
			a.list = append(a.list, p.attrValue())
		}
		return a
	case p.accept(`"`):
		end := bytes.IndexByte(p.src[p.pos:], '"')
		if end < 0 {
			p.fail("unterminated string")
		}
		a := attr{kind: stringAttr, str: string(p.src[p.pos : p.pos+end])}
		p.pos += end + 1
		return a
	}
	tok := p.token()
	if tok == "true" || tok == "false" {
		return attr{kind: boolAttr, b: tok == "true"}
	}
	typ := ""
	if p.accept(":") {
		typ = p.word()
	}
	if typ == "" || strings.HasPrefix(typ, "i") {
		v, err := strconv.ParseInt(tok, 10, 64)
		if err != nil {
			p.fail("bad integer attribute %q", tok)
		}
		return attr{kind: intAttr, i: v, elemType: typ}
	}
	p.fail("unsupported attribute value %q : %s", tok, typ)
	return attr{}
}

// dense reads the rest of dense<...> : tensor<...>: nested lists of
// literals, or one literal repeated over the whole type (a splat).
func (p *parser) dense() *Tensor {
	var toks []string
	var shape []int // list lengths at each nesting depth, which must agree
	var elems func(depth int)
	elems = func(depth int) {
		if !p.accept("[") {
			toks = append(toks, p.token())
			return
		}
		n := 0
		for !p.accept("]") {
			if n > 0 {
				p.expect(",")
			}
			elems(depth + 1)
			n++
		}
		for len(shape) <= depth {
			shape = append(shape, -1)
		}
		if shape[depth] < 0 {
			shape[depth] = n
		} else if shape[depth] != n {
			p.fail("ragged dense literal")
		}
	}
	if !p.peek(">") {
		elems(0)
	}
	p.expect(">")
	p.expect(":")
	typ := p.tensorType()
	n := numElements(typ.dims)
	switch {
	case len(toks) == 1 && len(shape) == 0:
		toks = slices.Repeat(toks, n) // splat
	case !slices.Equal(shape, typ.dims) || len(toks) != n:
		p.fail("dense literal of shape %v does not match %s", shape, typ)
	}
	t := newTensor(typ.dtype, typ.dims)
	for i, tok := range toks {
		switch {
		case typ.dtype.IsFloat():
			t.F32[i] = p.floatLiteral(tok, typ.dtype)
		case typ.dtype.IsInt():
			v, err := strconv.ParseInt(tok, 0, 64)
			if err != nil {
				p.fail("bad %s literal %q", typ.dtype, tok)
			}
			t.Ints[i] = v
		default:
			if tok != "true" && tok != "false" {
				p.fail("bad i1 literal %q", tok)
			}
			t.Bools[i] = tok == "true"
		}
	}
	t.roundToType()
	return t
}

// floatLiteral reads a decimal float or, as MLIR writes non-finite
// values, the hex bit pattern of the element type.
func (p *parser) floatLiteral(tok string, dt DType) float32 {
	if strings.HasPrefix(tok, "0x") || strings.HasPrefix(tok, "0X") {
		bits, err := strconv.ParseUint(tok[2:], 16, 32)
		if err != nil {
			p.fail("bad hex float %q", tok)
		}
		switch dt {
		case F32:
			return math.Float32frombits(uint32(bits))
		case F16:
			return safetensors.HalfToFloat32(uint16(bits))
		case BF16:
			return safetensors.BF16ToFloat32(uint16(bits))
		}
	}
	v, err := strconv.ParseFloat(tok, 64)
	if err != nil {
		p.fail("bad %s literal %q", dt, tok)
	}
	return float32(v)
}
