package clip

import (
	"fmt"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// Encoder is the text encoder compiled for one batch size, sequence length
// and clip_skip: token ids in, prompt embeddings out. It is safe for one
// caller at a time, like the nn.Program it wraps.
type Encoder struct {
	model  *Model
	prog   *nn.Program
	batch  int
	tokens int
}

// NewEncoder compiles m on w for ids [batch, tokens] (tokens is 77 for SD)
// returning diffusers' prompt embeddings for clipSkip (0: last_hidden_state).
func NewEncoder(m *Model, w *nn.Weights, batch, tokens, clipSkip int) (*Encoder, error) {
	if batch <= 0 || tokens <= 0 {
		return nil, fmt.Errorf("clip encoder: batch %d and tokens %d must be positive", batch, tokens)
	}
	name := fmt.Sprintf("clip_text_b%d_t%d_skip%d", batch, tokens, clipSkip)
	in := shapes.Make(dtypes.Int32, batch, tokens)
	p, err := nn.Compile(name, w, []shapes.Shape{in}, func(s nn.Scope, x []*graph.Node) []*graph.Node {
		return []*graph.Node{m.PromptEmbeds(s, x[0], clipSkip)}
	})
	if err != nil {
		return nil, fmt.Errorf("clip encoder: %w", err)
	}
	return &Encoder{model: m, prog: p, batch: batch, tokens: tokens}, nil
}

// Encode runs ids (row-major [batch, tokens]) and returns the embeddings
// row-major [batch, tokens, hidden_size].
func (e *Encoder) Encode(ids []int32) ([]float32, error) {
	if len(ids) != e.batch*e.tokens {
		return nil, fmt.Errorf("clip encoder: %d ids, compiled for %d×%d", len(ids), e.batch, e.tokens)
	}
	// Gather does not bounds-check on every backend: an id outside the
	// vocabulary would read another row, or memory, silently.
	vocab := e.model.cfg.VocabSize
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			return nil, fmt.Errorf("clip encoder: id %d at [%d, %d] outside vocab_size %d", id, i/e.tokens, i%e.tokens, vocab)
		}
	}
	outs, err := e.prog.Run(tensors.FromFlatDataAndDimensions(ids, e.batch, e.tokens))
	if err != nil {
		return nil, fmt.Errorf("clip encoder: %w", err)
	}
	defer func() {
		for _, t := range outs {
			_ = t.FinalizeAll() // only frees memory early; the GC does it otherwise
		}
	}()
	out, err := tensors.CopyFlatData[float32](outs[0])
	if err != nil {
		return nil, fmt.Errorf("clip encoder: read output: %w", err)
	}
	return out, nil
}

// Close releases the compiled program.
func (e *Encoder) Close() { e.prog.Close() }

// Program is the compiled encoder program.
func (e *Encoder) Program() *nn.Program { return e.prog }
