package checkpoint

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/controlfn/controlfn/compiler/demomodel"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// ldmStore lays a config's weights out under the original key names
// (header only): what an original checkpoint of that architecture holds.
func ldmStore(t *testing.T, shapes map[string][]int, tr translator) *fakeStore {
	t.Helper()
	f := &fakeStore{infos: map[string]safetensors.TensorInfo{}}
	for name, shape := range shapes {
		refs := tr(name)
		if len(refs) == 0 {
			t.Fatalf("no stored name for %s", name)
		}
		n := 1
		for _, d := range shape {
			n *= d
		}
		f.infos[refs[0].key] = safetensors.TensorInfo{Name: refs[0].key, DType: safetensors.F16, Shape: shape, End: int64(2 * n)}
		f.names = append(f.names, refs[0].key)
	}
	sort.Strings(f.names)
	return f
}

// Inference recovers architectures other than the tiny model's from the
// key layout the forward map gives them: per-block layers, attention in
// the last level, linear projections, deeper transformers, SD2 head
// widths, a wider time embedding, and a 3-level VAE with one resnet per
// level.
func TestInferenceRoundTrip(t *testing.T) {
	unets := []string{
		`{"_class_name": "UNet2DConditionModel", "block_out_channels": [64, 128, 128], "layers_per_block": [1, 2, 3],
		  "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
		  "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
		  "cross_attention_dim": 1024, "attention_head_dim": [1, 2, 2], "use_linear_projection": true,
		  "transformer_layers_per_block": [2, 2, 2], "norm_num_groups": 32, "in_channels": 9, "out_channels": 4,
		  "time_embedding_dim": 384}`,
		`{"_class_name": "UNet2DConditionModel", "block_out_channels": [32, 64, 64, 64], "layers_per_block": 2,
		  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
		  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
		  "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32}`,
	}
	for i, js := range unets {
		want, err := unet.ParseConfig([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		hints := Hints{NormNumGroups: want.NormNumGroups}
		if want.CrossAttentionDim != 1024 {
			hints.AttentionHeads = want.AttentionHeads[:1]
		}
		for _, cn := range []bool{false, true} {
			st := ldmStore(t, want.WeightShapes(cn), ruleTranslator(unetRules(&want, "p.", cn)))
			raw, err := inferUNet(fileKeyspace(st), "p.", cn, hints)
			if err != nil {
				t.Fatalf("unet %d (controlnet %v): %v", i, cn, err)
			}
			got, err := unet.ParseConfig(raw)
			if err != nil {
				t.Fatalf("unet %d: %v\n%s", i, err, raw)
			}
			w := want
			if cn {
				w.UpBlockTypes, w.OutChannels = nil, got.OutChannels
			}
			if i == 0 {
				// SD2's rule (64-wide heads) for 64 and 128 channels.
				w.AttentionHeads = []int{1, 2, 2}
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("unet %d (controlnet %v):\n got %+v\nwant %+v", i, cn, got, w)
			}
		}
	}

	want, err := vae.ParseConfig([]byte(`{"block_out_channels": [32, 64, 64], "layers_per_block": 1,
	  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
	  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
	  "latent_channels": 8, "norm_num_groups": 16, "sample_size": 512, "in_channels": 3, "out_channels": 3}`))
	if err != nil {
		t.Fatal(err)
	}
	st := ldmStore(t, want.WeightShapes(), ruleTranslator(vaeRules(&want, "v.")))
	raw, err := inferVAE(fileKeyspace(st), "v.", Hints{VAENormNumGroups: 16})
	if err != nil {
		t.Fatal(err)
	}
	got, err := vae.ParseConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	got.ClassName = ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("vae:\n got %+v\nwant %+v", got, want)
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil || m["_class_name"] != "AutoencoderKL" {
		t.Errorf("vae config %s", raw)
	}
}

// The built-in demo model (a diffusers folder) opens whole.
func TestDemoModel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if err := demomodel.Write(dir); err != nil {
		t.Fatal(err)
	}
	m, err := OpenModel(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		comp Component
		want int
	}{
		{m.UNet, len(m.UNetConfig.WeightShapes(false))},
		{m.VAE, len(m.VAEConfig.WeightShapes())},
		{m.TextEncoder, len(m.TextEncoderConfig.WeightShapes())},
	} {
		if c.comp.Source.Len() != c.want {
			t.Errorf("%s: %d weights, want %d", c.comp.Name, c.comp.Source.Len(), c.want)
		}
	}
	if len(m.ControlNets) != 1 {
		t.Errorf("%d ControlNets", len(m.ControlNets))
	}
	if _, err := os.Stat(filepath.Join(m.TokenizerDir, "vocab.json")); err != nil {
		t.Error(err)
	}
}
