package clip

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	"github.com/gomlx/gomlx/core/graph"
	"github.com/gomlx/gomlx/core/tensors"
)

// An SD2-style checkpoint, scaled down: exact gelu, fp16 storage, the
// int64 position_ids buffer older transformers saved, one layer more than
// num_hidden_layers uses (OpenCLIP ViT-H has 24, SD2 runs 23), fewer
// tokens than positions, and an eos_token_id that is not the largest id so
// the pooled position must follow the eos rule, not argmax. The reference
// is a plain float64 forward pass written from transformers' CLIPTextModel.
func TestSyntheticGELUCheckpoint(t *testing.T) {
	cfg := DefaultConfig()
	cfg.VocabSize, cfg.HiddenSize, cfg.IntermediateSize = 100, 64, 96
	cfg.NumHiddenLayers, cfg.NumAttentionHeads, cfg.MaxPositionEmbeddings = 3, 4, 16
	cfg.HiddenAct, cfg.EOSTokenID = ActGELU, 50
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	ref := map[string][]float32{} // fp16-rounded values, what the model must see
	var ts []safetensors.Tensor
	add := func(name string, center, spread float64, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = safetensors.HalfToFloat32(safetensors.Float32ToHalf(float32(center + spread*rng.NormFloat64())))
		}
		ref[name] = v
		ts = append(ts, safetensors.Float16Tensor(name, shape, v))
	}
	h, inter := cfg.HiddenSize, cfg.IntermediateSize
	add("text_model.embeddings.token_embedding.weight", 0, 0.5, cfg.VocabSize, h)
	add("text_model.embeddings.position_embedding.weight", 0, 0.5, cfg.MaxPositionEmbeddings, h)
	for l := range cfg.NumHiddenLayers + 1 {
		p := fmt.Sprintf("text_model.encoder.layers.%d.", l)
		for _, proj := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			add(p+"self_attn."+proj+".weight", 0, 0.15, h, h)
			add(p+"self_attn."+proj+".bias", 0, 0.05, h)
		}
		for _, ln := range []string{"layer_norm1", "layer_norm2"} {
			add(p+ln+".weight", 1, 0.1, h)
			add(p+ln+".bias", 0, 0.1, h)
		}
		add(p+"mlp.fc1.weight", 0, 0.15, inter, h)
		add(p+"mlp.fc1.bias", 0, 0.05, inter)
		add(p+"mlp.fc2.weight", 0, 0.15, h, inter)
		add(p+"mlp.fc2.bias", 0, 0.05, h)
	}
	add("text_model.final_layer_norm.weight", 1, 0.1, h)
	add("text_model.final_layer_norm.bias", 0, 0.1, h)
	posIDs := make([]byte, 8*cfg.MaxPositionEmbeddings)
	for i := range cfg.MaxPositionEmbeddings {
		posIDs[8*i] = byte(i)
	}
	ts = append(ts, safetensors.Tensor{Name: PositionIDsBuffer, DType: safetensors.I64, Shape: []int{1, cfg.MaxPositionEmbeddings}, Data: posIDs})

	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := safetensors.Write(path, ts, nil); err != nil {
		t.Fatal(err)
	}
	ckpt, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ckpt.Close()
	b, err := nn.NewBackend("go")
	if err != nil {
		t.Fatal(err)
	}
	w := nn.NewWeights(b, nn.FileSource{File: ckpt}, nn.Widen)

	const batch, tokens = 3, 10
	ids := []int32{
		7, 99, 3, 50, 12, 50, 50, 50, 50, 50, // eos at 3, after a larger id
		98, 1, 2, 3, 4, 5, 6, 7, 8, 9, // no eos: position 0, as torch's argmax of zeros
		0, 50, 99, 99, 99, 99, 99, 99, 99, 99, // eos at 1, padded with another id
	}
	wantPos := []int{3, 0, 1}

	p, err := nn.Compile("clip_synthetic", w, []shapes.Shape{shapes.Make(dtypes.Int32, batch, tokens)},
		func(s nn.Scope, x []*graph.Node) []*graph.Node {
			o := m.Build(s, x[0])
			return []*graph.Node{o.LastHidden, o.Penultimate, o.Pooled}
		})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := run(t, p, tensors.FromFlatDataAndDimensions(ids, batch, tokens))

	hs := referenceForward(cfg, ref, ids, batch, tokens)
	last := referenceLayerNorm(hs[len(hs)-1], ref["text_model.final_layer_norm.weight"], ref["text_model.final_layer_norm.bias"], cfg.LayerNormEps)
	var pooled []float64
	for i, pos := range wantPos {
		off := (i*tokens + pos) * h
		pooled = append(pooled, last[off:off+h]...)
	}
	wantClose(t, "last_hidden_state", got[0], toF32(last))
	wantClose(t, "penultimate", got[1], toF32(hs[len(hs)-2]))
	wantClose(t, "pooled", got[2], toF32(pooled))

	used := w.Used()
	for _, name := range ckpt.Names() {
		extra := name == PositionIDsBuffer || strings.HasPrefix(name, "text_model.encoder.layers.3.")
		if used[name] == extra {
			t.Errorf("%s: used %v", name, used[name])
		}
	}
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// referenceForward returns hidden_states (embeddings, then each layer's
// output), each [batch·tokens·hidden] in float64.
func referenceForward(cfg Config, w map[string][]float32, ids []int32, batch, tokens int) [][]float64 {
	h, heads := cfg.HiddenSize, cfg.NumAttentionHeads
	dh := h / heads
	rows := batch * tokens
	x := make([]float64, rows*h)
	tok, pos := w["text_model.embeddings.token_embedding.weight"], w["text_model.embeddings.position_embedding.weight"]
	for r := range rows {
		for c := range h {
			x[r*h+c] = float64(tok[int(ids[r])*h+c]) + float64(pos[(r%tokens)*h+c])
		}
	}
	hs := [][]float64{x}
	for l := range cfg.NumHiddenLayers {
		p := fmt.Sprintf("text_model.encoder.layers.%d.", l)
		lin := func(in []float64, name string) []float64 {
			return referenceLinear(in, w[p+name+".weight"], w[p+name+".bias"])
		}
		n := referenceLayerNorm(x, w[p+"layer_norm1.weight"], w[p+"layer_norm1.bias"], cfg.LayerNormEps)
		q, k, v := lin(n, "self_attn.q_proj"), lin(n, "self_attn.k_proj"), lin(n, "self_attn.v_proj")
		att := make([]float64, rows*h)
		for b := range batch {
			for hd := range heads {
				for i := range tokens {
					qi := q[(b*tokens+i)*h+hd*dh:][:dh]
					scores := make([]float64, i+1) // causal: keys 0..i
					maxS := math.Inf(-1)
					for j := range scores {
						kj := k[(b*tokens+j)*h+hd*dh:][:dh]
						for d := range dh {
							scores[j] += qi[d] * kj[d]
						}
						scores[j] /= math.Sqrt(float64(dh))
						maxS = math.Max(maxS, scores[j])
					}
					var sum float64
					for j := range scores {
						scores[j] = math.Exp(scores[j] - maxS)
						sum += scores[j]
					}
					out := att[(b*tokens+i)*h+hd*dh:][:dh]
					for j := range scores {
						vj := v[(b*tokens+j)*h+hd*dh:][:dh]
						for d := range dh {
							out[d] += scores[j] / sum * vj[d]
						}
					}
				}
			}
		}
		x = referenceAdd(x, lin(att, "self_attn.out_proj"))
		n = referenceLayerNorm(x, w[p+"layer_norm2.weight"], w[p+"layer_norm2.bias"], cfg.LayerNormEps)
		f := lin(n, "mlp.fc1")
		for i, z := range f {
			if cfg.HiddenAct == ActGELU {
				f[i] = 0.5 * z * (1 + math.Erf(z/math.Sqrt2))
			} else {
				f[i] = z / (1 + math.Exp(-1.702*z))
			}
		}
		x = referenceAdd(x, lin(f, "mlp.fc2"))
		hs = append(hs, x)
	}
	return hs
}

// referenceLinear is PyTorch's Linear: in [rows, n] · weight[out, n]ᵀ + bias.
func referenceLinear(in []float64, weight, bias []float32) []float64 {
	outDim := len(bias)
	inDim := len(weight) / outDim
	rows := len(in) / inDim
	out := make([]float64, rows*outDim)
	for r := range rows {
		for o := range outDim {
			s := float64(bias[o])
			for i := range inDim {
				s += in[r*inDim+i] * float64(weight[o*inDim+i])
			}
			out[r*outDim+o] = s
		}
	}
	return out
}

func referenceLayerNorm(x []float64, weight, bias []float32, eps float64) []float64 {
	h := len(weight)
	out := make([]float64, len(x))
	for r := 0; r < len(x); r += h {
		var mean, variance float64
		for _, v := range x[r : r+h] {
			mean += v
		}
		mean /= float64(h)
		for _, v := range x[r : r+h] {
			variance += (v - mean) * (v - mean)
		}
		variance /= float64(h)
		for c := range h {
			out[r+c] = (x[r+c]-mean)/math.Sqrt(variance+eps)*float64(weight[c]) + float64(bias[c])
		}
	}
	return out
}

func referenceAdd(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}
