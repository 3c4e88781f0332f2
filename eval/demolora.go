package eval

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/controlfn/controlfn/kernels/safetensors"
)

// demoLoRARank is the rank of the demo LoRA's modules.
const demoLoRARank = 4

// DemoLoRAScale is the scale the demo LoRA is merged with.
const DemoLoRAScale = 0.8

// demoLoRATargets are the weights the demo LoRA patches, per component
// folder of the demo model and with the key prefix PEFT gives that
// component: the attention projections, which is what real LoRAs train.
var demoLoRATargets = []struct {
	folder, file, prefix string
	match                *regexp.Regexp
}{
	{"unet", "diffusion_pytorch_model.safetensors", "unet.", regexp.MustCompile(`\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$`)},
	{"text_encoder", "model.safetensors", "text_encoder.", regexp.MustCompile(`\.self_attn\.(q|k|v|out)_proj\.weight$`)},
}

// writeDemoLoRA writes a deterministic random PEFT-format LoRA for the
// demo model in modelDir, so that the built-in evaluation exercises the
// LoRA merge as a real one does. Its magnitude is that of the random base
// weights (uniform ±1/√fan-in), so merging changes the picture visibly.
func writeDemoLoRA(path, modelDir string) error {
	var tensors []safetensors.Tensor
	for i, t := range demoLoRATargets {
		f, err := safetensors.Open(filepath.Join(modelDir, t.folder, t.file))
		if err != nil {
			return fmt.Errorf("demo LoRA: %w", err)
		}
		names := f.Names()
		sort.Strings(names)
		for j, name := range names {
			if !t.match.MatchString(name) {
				continue
			}
			info, _ := f.Info(name)
			if len(info.Shape) != 2 {
				continue
			}
			out, in := info.Shape[0], info.Shape[1]
			rng := rand.New(rand.NewPCG(uint64(i+1), uint64(j+1)))
			uniform := func(n int, scale float64) []float32 {
				v := make([]float32, n)
				for k := range v {
					v[k] = float32(scale * (2*rng.Float64() - 1))
				}
				return v
			}
			module := t.prefix + strings.TrimSuffix(name, ".weight")
			// PEFT folds alpha into lora_B, so the merge factor is the scale.
			tensors = append(tensors,
				safetensors.Float32Tensor(module+".lora_A.weight", []int{demoLoRARank, in}, uniform(demoLoRARank*in, 1/math.Sqrt(float64(in)))),
				safetensors.Float32Tensor(module+".lora_B.weight", []int{out, demoLoRARank}, uniform(out*demoLoRARank, 1/math.Sqrt(demoLoRARank))))
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("demo LoRA: %w", err)
		}
	}
	if len(tensors) == 0 {
		return fmt.Errorf("demo LoRA: no attention weights in %s", modelDir)
	}
	if err := safetensors.Write(path, tensors, map[string]string{"format": "pt", "generator": "controlfn eval demo LoRA"}); err != nil {
		return fmt.Errorf("demo LoRA: %w", err)
	}
	return nil
}
