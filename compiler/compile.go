// Package compiler is the offline half of controlfn: it reads what users
// already downloaded (a diffusers folder or a single-file checkpoint, one or
// more ControlNets, LoRAs), merges the LoRAs into the weights, casts them to
// fp16 and writes a verified artifact bundle that the function loads at cold
// start.
//
//	checkpoint (compiler/checkpoint) → LoRA merge (compiler/lora)
//	  → fp16 (compiler/quantize) → bundle (artifacts), manifest last
//
// Weights stream through: each tensor is read from the mapped checkpoint,
// merged, cast and written before the next is touched, so compiling never
// holds a second copy of the model.
package compiler

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/controlfn/controlfn/compiler/checkpoint"
	"github.com/controlfn/controlfn/compiler/lora"
	"github.com/controlfn/controlfn/compiler/quantize"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/scheduler"
	"github.com/controlfn/controlfn/kernels/tokenizer"
)

// ToolVersion is recorded in every manifest and enters program hashes, so
// an executable cached by one compiler version is never reused by another.
const ToolVersion = "controlfn-compiler/0.1"

// LoRASpec is one LoRA file with its scale.
type LoRASpec struct {
	Path  string
	Scale float64
}

// Options configure one compile.
type Options struct {
	// Model is a diffusers folder or a single-file .safetensors.
	Model string
	// ControlNets are ControlNet folders or control_*.safetensors files;
	// empty uses those a diffusers pipeline folder ships.
	ControlNets []string
	LoRAs       []LoRASpec
	// LoRALenient turns LoRA keys that match no weight into warnings.
	LoRALenient bool
	// Buckets are the shapes the function will serve.
	Buckets []artifacts.Bucket
	// Out is the bundle folder to create.
	Out       string
	Overwrite bool
	// DType is artifacts.DTypeFloat16 (default) or artifacts.DTypeFloat32.
	DType string
	// ClampOverflow saturates weights beyond fp16's range instead of
	// refusing them.
	ClampOverflow bool
	// Checkpoint options: tokenizer and config folders for single files,
	// diffusers variant.
	Checkpoint checkpoint.Options
	// Log receives progress lines (nil: discarded).
	Log io.Writer
	// Progress, when set, is told how many tensors of a component are
	// written.
	Progress func(component string, done, total int)
}

// Result summarizes a compile.
type Result struct {
	Manifest *artifacts.Manifest
	// Stats per component of the fp16 cast.
	Stats    map[string]quantize.Stats
	Warnings []string
}

type component struct {
	name, kind string
	config     json.RawMessage
	source     nn.Source
	shapes     map[string][]int
	release    func(name string)
	files      []string
	role       string
}

// Compile builds a bundle. On any error nothing is left at opts.Out.
func Compile(opts Options) (*Result, error) {
	if opts.Model == "" || opts.Out == "" {
		return nil, errors.New("compile: a model and an output folder are required")
	}
	if len(opts.Buckets) == 0 {
		return nil, errors.New("compile: at least one shape bucket is required")
	}
	dtype := opts.DType
	if dtype == "" {
		dtype = artifacts.DTypeFloat16
	}
	if dtype != artifacts.DTypeFloat16 && dtype != artifacts.DTypeFloat32 {
		return nil, fmt.Errorf("compile: dtype %q: want %s or %s", dtype, artifacts.DTypeFloat16, artifacts.DTypeFloat32)
	}
	// Commit would refuse an existing bundle anyway; saying so now saves the
	// user the whole conversion of a multi-GB checkpoint first.
	if !opts.Overwrite {
		if _, err := os.Lstat(opts.Out); err == nil {
			return nil, fmt.Errorf("compile: bundle %s: %w; set Overwrite (--overwrite) to replace it", opts.Out, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("compile: bundle %s: %w", opts.Out, err)
		}
	}
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", args...)
		}
	}

	model, err := checkpoint.OpenModel(opts.Model, opts.Checkpoint)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	defer model.Close()
	res := &Result{Stats: map[string]quantize.Stats{}, Warnings: append([]string(nil), model.Warnings...)}

	// Explicit ControlNets replace the ones a pipeline folder ships.
	controlNets := model.ControlNets
	if len(opts.ControlNets) > 0 {
		controlNets = nil
	}
	for _, path := range opts.ControlNets {
		cnOpts := checkpoint.Options{Variant: opts.Checkpoint.Variant, Hints: checkpoint.UNetHints(model.UNetConfig)}
		cn, err := checkpoint.OpenControlNet(path, cnOpts)
		if err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
		defer cn.Close()
		res.Warnings = append(res.Warnings, cn.Warnings...)
		controlNets = append(controlNets, cn)
	}
	if len(controlNets) == 0 {
		return nil, errors.New("compile: no ControlNet: pass --controlnet (the model folder ships none)")
	}
	for i, cn := range controlNets {
		if cn.Config.NumSkips() != model.UNetConfig.NumSkips() || cn.Config.CrossAttentionDim != model.UNetConfig.CrossAttentionDim {
			return nil, fmt.Errorf("compile: ControlNet %d (%s) does not fit the UNet (%d residuals, cross-attention %d; UNet %d, %d): a ControlNet for another base model?",
				i, cn.Path, cn.Config.NumSkips(), cn.Config.CrossAttentionDim, model.UNetConfig.NumSkips(), model.UNetConfig.CrossAttentionDim)
		}
	}

	tok, err := tokenizer.Load(model.TokenizerDir)
	if err != nil {
		return nil, fmt.Errorf("compile: tokenizer: %w", err)
	}
	if int(tok.VocabSize()) > model.TextEncoderConfig.VocabSize {
		return nil, fmt.Errorf("compile: tokenizer has %d tokens, the text encoder embeds %d", tok.VocabSize(), model.TextEncoderConfig.VocabSize)
	}
	if _, err := scheduler.ParseConfig(model.SchedulerConfig); err != nil {
		return nil, fmt.Errorf("compile: scheduler config: %w", err)
	}

	// LoRAs, merged lazily into the UNet and text encoder sources.
	unetSrc := nn.Source(model.UNet.Source)
	teSrc := nn.Source(model.TextEncoder.Source)
	var unetRelease, teRelease func(string)
	var manifestLoRAs []artifacts.LoRA
	if len(opts.LoRAs) > 0 {
		var applied []lora.Applied
		for _, spec := range opts.LoRAs {
			f, err := lora.Load(spec.Path, lora.Options{Lenient: opts.LoRALenient})
			if err != nil {
				return nil, fmt.Errorf("compile: %w", err)
			}
			defer f.Close()
			res.Warnings = append(res.Warnings, f.Warnings()...)
			applied = append(applied, lora.Applied{File: f, Scale: spec.Scale})
			sum, err := hashFile(spec.Path)
			if err != nil {
				return nil, fmt.Errorf("compile: %w", err)
			}
			manifestLoRAs = append(manifestLoRAs, artifacts.LoRA{File: filepath.Base(spec.Path), SHA256: sum, Scale: spec.Scale, Format: string(f.Format())})
		}
		merge := func(c lora.Component, base nn.Source, shapes map[string][]int) (nn.Source, func(string), error) {
			var use []lora.Applied
			for _, a := range applied {
				if len(a.File.For(c)) > 0 {
					use = append(use, a)
				}
			}
			if len(use) == 0 {
				return base, nil, nil
			}
			merged, report, err := lora.Merge(c, base, shapes, use, lora.Options{Lenient: opts.LoRALenient})
			if err != nil {
				return nil, nil, fmt.Errorf("compile: LoRA on %s: %w", c, err)
			}
			res.Warnings = append(res.Warnings, report.Warnings...)
			logf("lora: %d %s modules merged into %d weights", report.Modules, c, len(report.Targets))
			return merged, merged.Release, nil
		}
		if unetSrc, unetRelease, err = merge(lora.UNet, unetSrc, model.UNetConfig.WeightShapes(false)); err != nil {
			return nil, err
		}
		if teSrc, teRelease, err = merge(lora.TextEncoder, teSrc, model.TextEncoderConfig.WeightShapes()); err != nil {
			return nil, err
		}
	}

	comps := []component{
		{name: "text_encoder", kind: artifacts.KindTextEncoder, config: model.TextEncoder.ConfigJSON, source: teSrc,
			shapes: model.TextEncoderConfig.WeightShapes(), release: teRelease, files: model.TextEncoder.Files, role: "text_encoder"},
		{name: "unet", kind: artifacts.KindUNet, config: model.UNet.ConfigJSON, source: unetSrc,
			shapes: model.UNetConfig.WeightShapes(false), release: unetRelease, files: model.UNet.Files, role: "unet"},
		{name: "vae", kind: artifacts.KindVAE, config: model.VAE.ConfigJSON, source: model.VAE.Source,
			shapes: model.VAEConfig.WeightShapes(), files: model.VAE.Files, role: "vae"},
	}
	for i, cn := range controlNets {
		comps = append(comps, component{name: fmt.Sprintf("controlnet.%d", i), kind: artifacts.KindControlNet,
			config: cn.ConfigJSON, source: cn.Source, shapes: cn.Config.WeightShapes(true), files: cn.Files, role: "controlnet"})
	}

	w, err := artifacts.NewWriter(opts.Out)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	w.Overwrite = opts.Overwrite
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()

	m := &artifacts.Manifest{ToolVersion: ToolVersion, DType: dtype, Buckets: opts.Buckets, LoRAs: manifestLoRAs}
	hashed := map[string]bool{}
	for _, c := range comps {
		for _, f := range c.files {
			if hashed[f] {
				continue
			}
			hashed[f] = true
			src, err := sourceEntry(f, c.role)
			if err != nil {
				return nil, fmt.Errorf("compile: %w", err)
			}
			m.Sources = append(m.Sources, src)
		}
	}

	for _, c := range comps {
		entry, stats, err := writeComponent(w, c, dtype, opts, logf)
		if err != nil {
			return nil, fmt.Errorf("compile: %s: %w", c.name, err)
		}
		res.Stats[c.name] = stats
		m.Components = append(m.Components, entry)
	}

	for _, name := range []string{tokenizer.VocabFile, tokenizer.MergesFile, tokenizer.ConfigFile, tokenizer.SpecialTokensFile} {
		data, err := os.ReadFile(filepath.Join(model.TokenizerDir, name))
		if errors.Is(err, os.ErrNotExist) && name != tokenizer.VocabFile && name != tokenizer.MergesFile {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("compile: tokenizer: %w", err)
		}
		if _, err := w.AddBytes(artifacts.TokenizerDir+"/"+name, data); err != nil {
			return nil, fmt.Errorf("compile: %w", err)
		}
	}
	if _, err := w.AddBytes(artifacts.SchedulerConfigPath, model.SchedulerConfig); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	if m.Programs, err = tracePrograms(w, m, logf); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	if err := w.Commit(m); err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	committed = true
	res.Manifest = m
	logf("bundle %s written to %s", m.BuildID, opts.Out)
	return res, nil
}

// writeComponent streams one component's weights into the bundle.
func writeComponent(w *artifacts.Writer, c component, dtype string, opts Options, logf func(string, ...any)) (artifacts.Component, quantize.Stats, error) {
	var stats quantize.Stats
	names := make([]string, 0, len(c.shapes))
	for name := range c.shapes {
		names = append(names, name)
	}
	sort.Strings(names)
	outDT := safetensors.F16
	if dtype == artifacts.DTypeFloat32 {
		outDT = safetensors.F32
	}
	done := 0
	var bytes int64
	tensors := make([]safetensors.Tensor, 0, len(names))
	for _, name := range names {
		tensors = append(tensors, safetensors.Tensor{Name: name, DType: outDT, Shape: c.shapes[name], Load: func() ([]byte, error) {
			dt, shape, data, err := c.source.Tensor(name)
			if err != nil {
				return nil, err
			}
			if !slices.Equal(shape, c.shapes[name]) {
				return nil, fmt.Errorf("shape %v, the config needs %v", shape, c.shapes[name])
			}
			var out []byte
			var st quantize.Stats
			if outDT == safetensors.F16 {
				out, st, err = quantize.ToHalf(dt, data, opts.ClampOverflow)
			} else {
				var f []float32
				f, err = safetensors.DecodeFloat32(data, dt)
				out = safetensors.Float32Tensor(name, shape, f).Data
			}
			if err != nil {
				return nil, err
			}
			stats.Add(st)
			if c.release != nil {
				c.release(name) // the merged copy is written; let it go
			}
			done++
			bytes += int64(len(out))
			if opts.Progress != nil {
				opts.Progress(c.name, done, len(names))
			}
			return out, nil
		}})
	}
	file, err := w.AddFile(artifacts.WeightsPath(c.name), func(path string) error {
		return safetensors.Write(path, tensors, map[string]string{"format": "pt", "component": c.name})
	})
	if err != nil {
		return artifacts.Component{}, stats, err
	}
	if _, err := w.AddBytes(artifacts.ConfigPath(c.name), c.config); err != nil {
		return artifacts.Component{}, stats, err
	}
	if stats.Overflow > 0 {
		logf("%s: %d values beyond fp16 range clamped (max |x| %g)", c.name, stats.Overflow, stats.MaxAbs)
	}
	logf("%s: %d tensors, %d bytes", c.name, len(names), bytes)
	return artifacts.Component{Name: c.name, Kind: c.kind, Config: artifacts.ConfigPath(c.name), Weights: artifacts.WeightsPath(c.name),
		Tensors: len(names), Bytes: bytes, SHA256: file.SHA256}, stats, nil
}

func sourceEntry(path, role string) (artifacts.Source, error) {
	st, err := os.Stat(path)
	if err != nil {
		return artifacts.Source{}, err
	}
	sum, err := hashFile(path)
	if err != nil {
		return artifacts.Source{}, err
	}
	return artifacts.Source{Path: path, Role: role, Size: st.Size(), SHA256: sum}, nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
