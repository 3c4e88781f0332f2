package demomodel

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/tokenizer"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// The demo model must be a complete diffusers folder whose configs our
// kernels accept and whose weights match them exactly.
func TestWriteDemoModel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if err := Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"unet", "controlnet"} {
		cfg, err := unet.LoadConfig(filepath.Join(dir, c, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		golden.AssertCheckpointShapes(t, filepath.Join(dir, c, "diffusion_pytorch_model.safetensors"), cfg.WeightShapes(c == "controlnet"))
	}
	vcfg, err := vae.LoadConfig(filepath.Join(dir, "vae", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	golden.AssertCheckpointShapes(t, filepath.Join(dir, "vae", "diffusion_pytorch_model.safetensors"), vcfg.WeightShapes())
	tcfg, err := clip.LoadConfig(filepath.Join(dir, "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	golden.AssertCheckpointShapes(t, filepath.Join(dir, "text_encoder", "model.safetensors"), tcfg.WeightShapes())
	for _, f := range []string{"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt", ControlImageName} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	// Deterministic: a second write gives identical weights.
	dir2 := filepath.Join(t.TempDir(), "demo")
	if err := Write(dir2); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "unet", "diffusion_pytorch_model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(dir2, "unet", "diffusion_pytorch_model.safetensors"))
	if string(a) != string(b) {
		t.Error("demo weights differ between two writes")
	}
	if err := Write(dir); err == nil {
		t.Error("writing over an existing folder succeeded")
	}
}

func TestVocabulary(t *testing.T) {
	vocab, merges := vocabulary()
	if len(merges) == 0 || vocab[bos] != len(vocab)-2 || vocab[eos] != len(vocab)-1 {
		t.Fatalf("vocab %d entries, bos %d eos %d, %d merges", len(vocab), vocab[bos], vocab[eos], len(merges))
	}
	if vocab["photo</w>"] == 0 || vocab["!"] != 0 {
		t.Errorf("unexpected ids: photo</w>=%d !=%d", vocab["photo</w>"], vocab["!"])
	}
}

// The demo vocabulary must load in our CLIP tokenizer and merge the demo
// words into single tokens.
func TestDemoTokenizer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	if err := Write(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	vocab, _ := vocabulary()
	ids := tok.Encode("A photo of a red cube")
	want := []int32{int32(vocab["a</w>"]), int32(vocab["photo</w>"]), int32(vocab["of</w>"]), int32(vocab["a</w>"]), int32(vocab["red</w>"]), int32(vocab["cube</w>"])}
	if !slices.Equal(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
	if tok.BOS() != int32(vocab[bos]) || tok.EOS() != int32(vocab[eos]) {
		t.Errorf("specials %d %d", tok.BOS(), tok.EOS())
	}
}
