package clip

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// fixture is the golden text encoder: its model, weights and references.
type fixture struct {
	model   *Model
	ckpt    *safetensors.File
	weights *nn.Weights
	ref     *safetensors.File
	ids     []int64
	batch   int
	tokens  int
}

func openFixture(t *testing.T) *fixture {
	t.Helper()
	cfg, err := LoadConfig(golden.Path(t, "tiny-sd15", "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ckpt := golden.Open(t, "tiny-sd15", "text_encoder", "model.safetensors")
	ref := golden.Open(t, "text_encoder_ref.safetensors")
	ids, dims, err := ref.Int64s("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	if len(dims) != 2 {
		t.Fatalf("input_ids has shape %v, want [batch, tokens]", dims)
	}
	b, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		model:   m,
		ckpt:    ckpt,
		weights: nn.NewWeights(b, nn.FileSource{File: ckpt}, nn.Widen),
		ref:     ref,
		ids:     ids,
		batch:   dims[0],
		tokens:  dims[1],
	}
}

func (f *fixture) ids32() []int32 {
	out := make([]int32, len(f.ids))
	for i, id := range f.ids {
		out[i] = int32(id)
	}
	return out
}

// wantClose checks the parity rule: max |got-want| <= 1e-4·max(1, max|want|).
func wantClose(t *testing.T, name string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, reference has %d", name, len(got), len(want))
	}
	var maxRef, maxDiff float64
	worst := 0
	for i := range want {
		maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > maxDiff || math.IsNaN(d) {
			maxDiff, worst = d, i
		}
	}
	tol := 1e-4 * math.Max(1, maxRef)
	if !(maxDiff <= tol) {
		t.Errorf("%s: max |diff| %.3g at %d (got %g, want %g) exceeds %.3g", name, maxDiff, worst, got[worst], want[worst], tol)
	} else {
		t.Logf("%s: max |diff| %.3g (tolerance %.3g)", name, maxDiff, tol)
	}
}

func (f *fixture) golden(t *testing.T, name string) []float32 {
	t.Helper()
	v, _, err := f.ref.Float32s(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func run(t *testing.T, p *nn.Program, in ...*tensors.Tensor) [][]float32 {
	t.Helper()
	outs, err := p.Run(in...)
	if err != nil {
		t.Fatal(err)
	}
	res := make([][]float32, len(outs))
	for i, o := range outs {
		res[i] = tensors.MustCopyFlatData[float32](o)
	}
	return res
}

// The full forward on int64 ids (as the tokenizer reference stores them)
// matches every CLIPTextModel output SD pipelines read, and consumes every
// checkpoint tensor.
func TestGoldenOutputs(t *testing.T) {
	f := openFixture(t)
	in := shapes.Make(dtypes.Int64, f.batch, f.tokens)
	p, err := nn.Compile("clip_text_full", f.weights, []shapes.Shape{in}, func(s nn.Scope, x []*graph.Node) []*graph.Node {
		o := f.model.Build(s, x[0])
		return []*graph.Node{o.LastHidden, o.Penultimate, o.Pooled}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := run(t, p, tensors.FromFlatDataAndDimensions(f.ids, f.batch, f.tokens))
	wantClose(t, "last_hidden_state", got[0], f.golden(t, "last_hidden_state"))
	wantClose(t, "hidden_states_penultimate", got[1], f.golden(t, "hidden_states_penultimate"))
	wantClose(t, "pooler_output", got[2], f.golden(t, "pooler_output"))

	used := f.weights.Used()
	for _, name := range f.ckpt.Names() {
		if !used[name] && name != PositionIDsBuffer {
			t.Errorf("checkpoint tensor %s was not used", name)
		}
	}
}

// The Encoder (int32 ids, the pipeline's path) gives last_hidden_state for
// clip_skip 0 and the final norm of the penultimate state for clip_skip 1,
// as diffusers' encode_prompt does.
func TestEncoderClipSkip(t *testing.T) {
	f := openFixture(t)
	enc, err := NewEncoder(f.model, f.weights, f.batch, f.tokens, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	got, err := enc.Encode(f.ids32())
	if err != nil {
		t.Fatal(err)
	}
	wantClose(t, "clip_skip 0", got, f.golden(t, "last_hidden_state"))

	enc1, err := NewEncoder(f.model, f.weights, f.batch, f.tokens, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer enc1.Close()
	got1, err := enc1.Encode(f.ids32())
	if err != nil {
		t.Fatal(err)
	}
	// The reference: final_layer_norm applied to the golden penultimate
	// state, on its own.
	hidden := f.model.cfg.HiddenSize
	norm, err := nn.Compile("final_norm", f.weights, []shapes.Shape{shapes.Make(dtypes.Float32, f.batch, f.tokens, hidden)},
		func(s nn.Scope, x []*graph.Node) []*graph.Node { return []*graph.Node{f.model.finalNorm(s, x[0])} })
	if err != nil {
		t.Fatal(err)
	}
	defer norm.Close()
	want1 := run(t, norm, tensors.FromFlatDataAndDimensions(f.golden(t, "hidden_states_penultimate"), f.batch, f.tokens, hidden))[0]
	wantClose(t, "clip_skip 1", got1, want1)
}

func TestEncoderRefusesBadIDs(t *testing.T) {
	f := openFixture(t)
	enc, err := NewEncoder(f.model, f.weights, 1, 4, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	vocab := int32(f.model.cfg.VocabSize)
	for _, tc := range []struct {
		ids     []int32
		wantErr string
	}{
		{[]int32{0, 1, 2}, "3 ids"},
		{[]int32{0, 1, vocab, 2}, "vocab_size"},
		{[]int32{0, -1, 1, 2}, "vocab_size"},
	} {
		if _, err := enc.Encode(tc.ids); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("Encode(%v) = %v, want error containing %q", tc.ids, err, tc.wantErr)
		}
	}
	if _, err := enc.Encode([]int32{0, 1, vocab - 1, 2}); err != nil {
		t.Errorf("Encode of valid ids: %v", err)
	}
}

// Tracing errors name what is wrong rather than failing deep in a matmul.
func TestBuildRefuses(t *testing.T) {
	f := openFixture(t)
	cfg := f.model.cfg
	compile := func(m *Model, tokens, clipSkip int) error {
		_, err := NewEncoder(m, f.weights, 1, tokens, clipSkip)
		return err
	}
	if err := compile(f.model, cfg.MaxPositionEmbeddings+1, 0); err == nil || !strings.Contains(err.Error(), "max_position_embeddings") {
		t.Errorf("too many tokens: %v", err)
	}
	if err := compile(f.model, 4, cfg.NumHiddenLayers+1); err == nil || !strings.Contains(err.Error(), "clip_skip") {
		t.Errorf("clip_skip past the layers: %v", err)
	}
	wide := cfg
	wide.HiddenSize *= 2
	m, err := New(wide)
	if err != nil {
		t.Fatal(err)
	}
	if err := compile(m, 4, 0); err == nil || !strings.Contains(err.Error(), "hidden_size") {
		t.Errorf("config wider than checkpoint: %v", err)
	}
	narrow := cfg
	narrow.IntermediateSize++
	if m, err = New(narrow); err != nil {
		t.Fatal(err)
	}
	if err := compile(m, 4, 0); err == nil || !strings.Contains(err.Error(), "intermediate_size") {
		t.Errorf("intermediate_size off by one: %v", err)
	}
	// A checkpoint may hold layers the config leaves unused (OpenCLIP
	// conversions); only a config deeper than the checkpoint must fail.
	next := fmt.Sprintf("text_model.encoder.layers.%d.", cfg.NumHiddenLayers)
	if _, extra := f.ckpt.Info(next + "layer_norm1.weight"); !extra {
		deep := cfg
		deep.NumHiddenLayers++
		if m, err = New(deep); err != nil {
			t.Fatal(err)
		}
		if err := compile(m, 4, 0); err == nil || !strings.Contains(err.Error(), next) {
			t.Errorf("more layers than the checkpoint: %v", err)
		}
	}
}
