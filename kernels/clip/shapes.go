package clip

import "fmt"

// WeightShapes lists every weight the text encoder reads (under
// "text_model."), with its PyTorch shape: the compiler checks checkpoints
// against it and the demo model makes random-weight encoders from it.
func (c Config) WeightShapes() map[string][]int {
	h := c.HiddenSize
	w := map[string][]int{
		"text_model.embeddings.token_embedding.weight":    {c.VocabSize, h},
		"text_model.embeddings.position_embedding.weight": {c.MaxPositionEmbeddings, h},
		"text_model.final_layer_norm.weight":              {h},
		"text_model.final_layer_norm.bias":                {h},
	}
	for i := 0; i < c.NumHiddenLayers; i++ {
		p := fmt.Sprintf("text_model.encoder.layers.%d.", i)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			w[p+"self_attn."+n+".weight"] = []int{h, h}
			w[p+"self_attn."+n+".bias"] = []int{h}
		}
		for _, n := range []string{"layer_norm1", "layer_norm2"} {
			w[p+n+".weight"] = []int{h}
			w[p+n+".bias"] = []int{h}
		}
		w[p+"mlp.fc1.weight"] = []int{c.IntermediateSize, h}
		w[p+"mlp.fc1.bias"] = []int{c.IntermediateSize}
		w[p+"mlp.fc2.weight"] = []int{h, c.IntermediateSize}
		w[p+"mlp.fc2.bias"] = []int{h}
	}
	return w
}
