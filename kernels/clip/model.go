// Package clip is the CLIP text encoder of Stable Diffusion 1.x/2.x as a
// GoMLX graph. In the data flow it sits between the tokenizer and the
// denoiser: token ids [B, T] -> CLIP text encoder (this package) -> prompt
// embeddings [B, T, hidden] that the UNet and ControlNet cross-attend to.
//
// The model is transformers' CLIPTextModel built from its config.json:
// token + position embeddings, pre-LayerNorm transformer layers with a
// causal self-attention mask, and a final LayerNorm. Weights are read by
// transformers' key names (text_model.embeddings..., text_model.encoder.
// layers.N..., text_model.final_layer_norm...), so a diffusers
// text_encoder/model.safetensors binds as stored and a single-file
// checkpoint binds through a key prefix.
package clip

import (
	"fmt"
	"math"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive // graph code reads best unqualified
)

// PositionIDsBuffer is a key older transformers versions saved with the
// weights: the constant arange(max_position_embeddings), an int64 buffer
// rather than a weight. The encoder derives positions itself, so a check for
// unused checkpoint tensors should not count it.
const PositionIDsBuffer = "text_model.embeddings.position_ids"

// Model is a CLIP text encoder of one configuration. It holds no weights:
// its methods trace the graph against a scope that binds them, so one Model
// serves every batch size and weight set.
type Model struct {
	cfg Config
}

// New validates cfg and returns the model it describes.
func New(cfg Config) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Model{cfg: cfg}, nil
}

// Config is the configuration the model was built from.
func (m *Model) Config() Config { return m.cfg }

// Outputs are the tensors CLIPTextModel returns that SD pipelines use.
type Outputs struct {
	// LastHidden is last_hidden_state [B, T, hidden]: the prompt
	// embeddings of SD1.x/2.x.
	LastHidden *Node
	// Penultimate is hidden_states[-2] [B, T, hidden]: the output of the
	// second-to-last layer before the final LayerNorm, what diffusers
	// normalizes for clip_skip=1 (the embedding output when there is
	// only one layer).
	Penultimate *Node
	// Pooled is pooler_output [B, hidden]: LastHidden at each row's EOS.
	Pooled *Node
}

// Build traces the whole encoder on ids [B, T] (int32 or int64, T at most
// max_position_embeddings). s is the checkpoint's root scope: the model
// adds the "text_model." prefix itself.
func (m *Model) Build(s nn.Scope, ids *Node) Outputs {
	hs := m.hiddenStates(s, ids, m.cfg.NumHiddenLayers)
	last := m.finalNorm(s, hs[len(hs)-1])
	return Outputs{
		LastHidden:  last,
		Penultimate: hs[len(hs)-2],
		Pooled:      m.Pooled(last, ids),
	}
}

// PromptEmbeds traces what diffusers' encode_prompt returns for a
// clip_skip: with clipSkip 0 the last_hidden_state, otherwise
// final_layer_norm(hidden_states[-(clipSkip+1)]). The skipped layers are
// not traced at all.
func (m *Model) PromptEmbeds(s nn.Scope, ids *Node, clipSkip int) *Node {
	if clipSkip < 0 || clipSkip > m.cfg.NumHiddenLayers {
		panic(fmt.Errorf("clip: clip_skip %d out of range [0, %d]", clipSkip, m.cfg.NumHiddenLayers))
	}
	hs := m.hiddenStates(s, ids, m.cfg.NumHiddenLayers-clipSkip)
	return m.finalNorm(s, hs[len(hs)-1])
}

// hiddenStates runs the embeddings and the first n layers and returns what
// transformers calls hidden_states: [0] the embeddings, [i] the output of
// layer i-1.
func (m *Model) hiddenStates(s nn.Scope, ids *Node, n int) []*Node {
	x := m.embeddings(s, ids)
	mask := CausalMask(ids.Graph(), ids.Shape().Dimensions[1])
	layers := s.In("text_model", "encoder", "layers")
	hs := make([]*Node, 0, n+1)
	hs = append(hs, x)
	for i := range n {
		x = m.layer(layers.In(i), x, mask)
		hs = append(hs, x)
	}
	return hs
}

// embeddings looks up token embeddings and adds positions 0..T-1.
func (m *Model) embeddings(s nn.Scope, ids *Node) *Node {
	if ids.Rank() != 2 || !ids.DType().IsInt() {
		panic(fmt.Errorf("clip: input ids must be integer [batch, tokens], got %s", ids.Shape()))
	}
	tokens := ids.Shape().Dimensions[1]
	if tokens > m.cfg.MaxPositionEmbeddings {
		panic(fmt.Errorf("clip: %d tokens exceed max_position_embeddings %d", tokens, m.cfg.MaxPositionEmbeddings))
	}
	e := s.In("text_model", "embeddings")
	tok := m.table(e.In("token_embedding"), m.cfg.VocabSize, "vocab_size")
	pos := m.table(e.In("position_embedding"), m.cfg.MaxPositionEmbeddings, "max_position_embeddings")
	// Rows are gathered in the stored dtype and widened after: widening
	// the fp16 token table first would make a 145 MiB float32 copy of it
	// (SD1.5) on every call.
	x := ConvertDType(Gather(tok, InsertAxes(ids, -1)), dtypes.Float32) // [B, T, hidden]
	return Add(x, InsertAxes(ConvertDType(Slice(pos, AxisRange(0, tokens)), dtypes.Float32), 0))
}

// table binds an embedding table and checks it against the config, so a
// config that does not describe the checkpoint fails with both named.
func (m *Model) table(s nn.Scope, rows int, field string) *Node {
	w := s.StoredWeight("weight", nn.AsStored)
	want := []int{rows, m.cfg.HiddenSize}
	if d := w.Shape().Dimensions; len(d) != 2 || d[0] != want[0] || d[1] != want[1] {
		panic(fmt.Errorf("clip: %s is %v, config (%s, hidden_size) says %v", s.Name("weight"), d, field, want))
	}
	return w
}

// layer is one CLIPEncoderLayer: pre-LN causal self-attention and MLP, each
// with a residual.
func (m *Model) layer(s nn.Scope, x, mask *Node) *Node {
	eps := m.cfg.LayerNormEps
	h := nn.LayerNorm(s.In("layer_norm1"), x, eps)
	a := s.In("self_attn")
	h = nn.Attention(
		nn.Linear(a.In("q_proj"), h),
		nn.Linear(a.In("k_proj"), h),
		nn.Linear(a.In("v_proj"), h),
		m.cfg.NumAttentionHeads, mask)
	x = Add(x, nn.Linear(a.In("out_proj"), h))

	h = nn.LayerNorm(s.In("layer_norm2"), x, eps)
	h = nn.Linear(s.In("mlp", "fc1"), h)
	if d := h.Shape().Dimensions; d[len(d)-1] != m.cfg.IntermediateSize {
		panic(fmt.Errorf("clip: %s gives %d features, config intermediate_size is %d",
			s.Name("mlp.fc1.weight"), d[len(d)-1], m.cfg.IntermediateSize))
	}
	h = nn.Activation(m.cfg.HiddenAct, h)
	return Add(x, nn.Linear(s.In("mlp", "fc2"), h))
}

func (m *Model) finalNorm(s nn.Scope, x *Node) *Node {
	return nn.LayerNorm(s.In("text_model", "final_layer_norm"), x, m.cfg.LayerNormEps)
}

// CausalMask is the additive mask [1, 1, T, T] that stops token i attending
// to tokens after it. Like transformers it adds float32's lowest finite
// value rather than -inf: softmax gives those keys exactly 0 either way, and
// a finite value cannot turn a row into NaN.
func CausalMask(g *Graph, tokens int) *Node {
	sh := shapes.Make(dtypes.Int32, tokens, tokens)
	future := GreaterThan(Iota(g, sh, 1), Iota(g, sh, 0))
	mask := Where(future, Scalar(g, dtypes.Float32, -math.MaxFloat32), ScalarZero(g, dtypes.Float32))
	return Reshape(mask, 1, 1, tokens, tokens)
}

// Pooled picks each row's EOS hidden state from last [B, T, hidden] as
// CLIPTextModel's pooler_output. With the legacy eos_token_id 2 the EOS is
// argmax(ids) (CLIP's EOS has the highest id); otherwise it is the first
// position holding eos_token_id (position 0 when there is none, as torch's
// argmax of all zeros). Ties go to the first position in both rules, as
// torch's argmax.
func (m *Model) Pooled(last, ids *Node) *Node {
	g := ids.Graph()
	var pos *Node // [B] int32
	if m.cfg.EOSTokenID == legacyEOSTokenID {
		pos = ArgMax(ids, -1, dtypes.Int32)
	} else {
		isEOS := Equal(ids, Scalar(g, ids.DType(), m.cfg.EOSTokenID))
		pos = ArgMax(ConvertDType(isEOS, dtypes.Int32), -1, dtypes.Int32)
	}
	batch := ids.Shape().Dimensions[0]
	rows := Iota(g, shapes.Make(dtypes.Int32, batch, 1), 0)
	return Gather(last, Concatenate([]*Node{rows, InsertAxes(pos, -1)}, -1))
}
