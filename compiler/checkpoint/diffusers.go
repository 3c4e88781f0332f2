package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/scheduler"
	"github.com/controlfn/controlfn/kernels/vae"
)

// Weight file base names: diffusers models and transformers models.
const (
	diffusersWeights    = "diffusion_pytorch_model"
	transformersWeights = "model"
)

// withVariant inserts a variant before a file name's last extension, as
// diffusers' and transformers' _add_variant do:
// model.safetensors -> model.fp16.safetensors,
// model.safetensors.index.json -> model.safetensors.index.fp16.json.
func withVariant(name, variant string) string {
	if variant == "" {
		return name
	}
	i := strings.LastIndexByte(name, '.')
	return name[:i] + "." + variant + name[i:]
}

// weights are a component's opened weight files.
type weights struct {
	ks    *keyspace
	files []*safetensors.File
	paths []string // index first, then shards, for hashing
}

func (w *weights) close() {
	for _, f := range w.files {
		f.Close()
	}
}

// openWeights finds and opens a component folder's safetensors weights
// (single or sharded, plain or variant).
func openWeights(dir, base, variant string) (*weights, error) {
	single := filepath.Join(dir, withVariant(base+".safetensors", variant))
	if exists(single) {
		f, err := safetensors.Open(single)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
		return &weights{ks: fileKeyspace(f), files: []*safetensors.File{f}, paths: []string{single}}, nil
	}
	index := filepath.Join(dir, withVariant(base+".safetensors.index.json", variant))
	if exists(index) {
		return openShards(index)
	}
	return nil, missingWeights(dir, base, variant, single)
}

// missingWeights explains why no weights were found: pickles only, a
// variant mismatch, or nothing.
func missingWeights(dir, base, variant, want string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	var pickles, others []string
	for _, e := range entries {
		n := e.Name()
		switch {
		case isPickle(n):
			pickles = append(pickles, n)
		case strings.HasPrefix(n, base+".") && strings.HasSuffix(n, ".safetensors"):
			others = append(others, n)
		case strings.HasPrefix(n, base+".safetensors.index") && strings.HasSuffix(n, ".json"):
			others = append(others, n)
		}
	}
	switch {
	case len(others) > 0 && variant == "":
		return fmt.Errorf("%s: no %s; found %s: select a variant (Options.Variant, e.g. \"fp16\")", dir, filepath.Base(want), strings.Join(others, ", "))
	case len(others) > 0:
		return fmt.Errorf("%s: no %s for variant %q; found %s", dir, filepath.Base(want), variant, strings.Join(others, ", "))
	case len(pickles) > 0:
		return pickleError(filepath.Join(dir, pickles[0]))
	}
	return fmt.Errorf("%s: no weights: %s is missing", dir, filepath.Base(want))
}

// shardIndex is a *.safetensors.index.json: which shard holds each tensor.
type shardIndex struct {
	WeightMap map[string]string `json:"weight_map"`
}

// parseShardIndex validates an index and returns its weight map and the
// shard file names, sorted. Shard names must be plain file names in the
// index's folder: an index must not reach elsewhere on disk.
func parseShardIndex(data []byte) (map[string]string, []string, error) {
	var idx shardIndex
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&idx); err != nil {
		return nil, nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, nil, errors.New("invalid JSON: data after the object")
	}
	if len(idx.WeightMap) == 0 {
		return nil, nil, errors.New("weight_map is missing or empty")
	}
	seen := map[string]bool{}
	var shards []string
	for name, file := range idx.WeightMap {
		if name == "" {
			return nil, nil, errors.New("weight_map has an empty tensor name")
		}
		if file == "" || file == "." || file == ".." || strings.ContainsAny(file, `/\`) || filepath.Base(file) != file || !strings.HasSuffix(file, ".safetensors") {
			return nil, nil, fmt.Errorf("weight_map[%q] = %q: want a .safetensors file name in the index's folder", name, file)
		}
		if !seen[file] {
			seen[file] = true
			shards = append(shards, file)
		}
	}
	sort.Strings(shards)
	return idx.WeightMap, shards, nil
}

func openShards(index string) (_ *weights, err error) {
	data, err := readFile(index)
	if err != nil {
		return nil, err
	}
	wm, shards, err := parseShardIndex(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", index, err)
	}
	w := &weights{ks: &keyspace{desc: index, where: map[string]store{}}, paths: []string{index}}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	byName := map[string]*safetensors.File{}
	dir := filepath.Dir(index)
	for _, s := range shards {
		p := filepath.Join(dir, s)
		f, err := safetensors.Open(p)
		if err != nil {
			return nil, fmt.Errorf("checkpoint: shard of %s: %w", index, err)
		}
		w.files = append(w.files, f)
		w.paths = append(w.paths, p)
		byName[s] = f
	}
	probs := problems{what: index}
	for name, s := range wm {
		f := byName[s]
		if _, ok := f.Info(name); !ok {
			probs.add("tensor %s is listed in shard %s, which does not hold it", name, s)
			continue
		}
		w.ks.where[name] = f
	}
	for _, s := range shards {
		for _, name := range byName[s].Names() {
			if wm[name] != s {
				probs.add("shard %s holds tensor %s, which the index does not list there", s, name)
			}
		}
	}
	if err := probs.err(); err != nil {
		return nil, err
	}
	w.ks.finish()
	return w, nil
}

// bindFolder binds a diffusers component's weights (diffusers names, as
// stored) and refuses tensors the config has no place for.
func bindFolder(name string, w *weights, expected map[string][]int, tr translator, skip func(string) bool) (*Source, error) {
	used := map[string]bool{}
	src, err := bind(name, w.ks, expected, tr, used)
	if err != nil {
		return nil, err
	}
	probs := problems{what: w.ks.desc}
	for _, k := range w.ks.keys {
		if !used[k] && !skip(k) {
			probs.add("unexpected tensor %s (in %s): not a weight of the configured %s", k, w.ks.fileOf(k), name)
		}
	}
	if err := probs.err(); err != nil {
		return nil, err
	}
	return src, nil
}

func noSkip(string) bool { return false }

// modelIndex reads model_index.json: component name -> [library, class]
// (both null for an absent optional component).
func modelIndex(dir string) (class string, comps map[string][2]*string, err error) {
	p := filepath.Join(dir, "model_index.json")
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf("%s: not a diffusers model folder (no model_index.json)", dir)
	}
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		return "", nil, fmt.Errorf("%s: want a JSON object (%v)", p, err)
	}
	comps = map[string][2]*string{}
	for k, v := range raw {
		if k == "_class_name" {
			if err := json.Unmarshal(v, &class); err != nil {
				return "", nil, fmt.Errorf("%s: _class_name: %w", p, err)
			}
			continue
		}
		if strings.HasPrefix(k, "_") {
			continue
		}
		var pair []*string
		if json.Unmarshal(v, &pair) != nil || len(pair) != 2 {
			continue // a pipeline option such as requires_safety_checker
		}
		comps[k] = [2]*string{pair[0], pair[1]}
	}
	return class, comps, nil
}

func openDiffusersModel(dir string, opts Options) (_ *Model, err error) {
	class, comps, err := modelIndex(dir)
	if err != nil {
		return nil, err
	}
	if strings.Contains(class, "XL") || comps["text_encoder_2"][1] != nil {
		return nil, fmt.Errorf("%s: %s is an SDXL pipeline; controlfn builds Stable Diffusion 1.x/2.x only", dir, class)
	}
	for _, c := range []string{"unet", "vae", "text_encoder", "tokenizer", "scheduler"} {
		if comps[c][1] == nil {
			return nil, fmt.Errorf("%s: model_index.json lists no %s component", dir, c)
		}
		if st, err := os.Stat(filepath.Join(dir, c)); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%s: missing component %s: no %s/ folder", dir, c, c)
		}
	}
	m := &Model{Path: dir, Layout: Diffusers}
	defer func() {
		if err != nil {
			m.Close()
		}
	}()

	// UNet.
	cfgPath := filepath.Join(dir, "unet", "config.json")
	raw, err := readFile(cfgPath)
	if err != nil {
		return nil, err
	}
	if m.UNetConfig, err = parseUNetConfig(raw, cfgPath, dir, false); err != nil {
		return nil, err
	}
	w, err := openWeights(filepath.Join(dir, "unet"), diffusersWeights, opts.Variant)
	if err != nil {
		return nil, err
	}
	m.files = append(m.files, w.files...)
	src, err := bindFolder("unet", w, m.UNetConfig.WeightShapes(false), identity, noSkip)
	if err != nil {
		return nil, err
	}
	m.UNet = component("unet", src, raw, cfgPath, w.paths...)

	// VAE.
	cfgPath = filepath.Join(dir, "vae", "config.json")
	if raw, err = readFile(cfgPath); err != nil {
		return nil, err
	}
	if m.VAEConfig, err = vae.ParseConfig(raw); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if w, err = openWeights(filepath.Join(dir, "vae"), diffusersWeights, opts.Variant); err != nil {
		return nil, err
	}
	m.files = append(m.files, w.files...)
	if src, err = bindFolder("vae", w, m.VAEConfig.WeightShapes(), diffusersVAE, noSkip); err != nil {
		return nil, err
	}
	m.VAE = component("vae", src, raw, cfgPath, w.paths...)

	// Text encoder.
	cfgPath = filepath.Join(dir, "text_encoder", "config.json")
	if raw, err = readFile(cfgPath); err != nil {
		return nil, err
	}
	if m.TextEncoderConfig, err = clip.ParseConfig(raw); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if w, err = openWeights(filepath.Join(dir, "text_encoder"), transformersWeights, opts.Variant); err != nil {
		return nil, err
	}
	m.files = append(m.files, w.files...)
	// Older transformers saved the constant position_ids buffer.
	skipPos := func(k string) bool { return k == "text_model.embeddings.position_ids" }
	if src, err = bindFolder("text_encoder", w, m.TextEncoderConfig.WeightShapes(), identity, skipPos); err != nil {
		return nil, err
	}
	m.TextEncoder = component("text_encoder", src, raw, cfgPath, w.paths...)

	// Tokenizer and scheduler.
	m.TokenizerDir = filepath.Join(dir, "tokenizer")
	if opts.TokenizerDir != "" {
		m.TokenizerDir = opts.TokenizerDir
	}
	if err := checkTokenizer(m.TokenizerDir); err != nil {
		return nil, err
	}
	m.SchedulerFile = filepath.Join(dir, "scheduler", "scheduler_config.json")
	if m.SchedulerConfig, err = readFile(m.SchedulerFile); err != nil {
		return nil, err
	}
	if _, err := scheduler.ParseConfig(m.SchedulerConfig); err != nil {
		return nil, fmt.Errorf("%s: %w", m.SchedulerFile, err)
	}

	// ControlNets the pipeline ships.
	if cls := comps["controlnet"][1]; cls != nil {
		folders := []string{"controlnet"}
		if *cls == "MultiControlNetModel" {
			for i := 1; exists(filepath.Join(dir, fmt.Sprintf("controlnet_%d", i))); i++ {
				folders = append(folders, fmt.Sprintf("controlnet_%d", i))
			}
		}
		for _, f := range folders {
			c, err := openDiffusersControlNet(filepath.Join(dir, f), opts)
			if err != nil {
				return nil, err
			}
			m.ControlNets = append(m.ControlNets, c)
		}
	}
	return m, nil
}

func openDiffusersControlNet(dir string, opts Options) (*ControlNet, error) {
	cfgPath := filepath.Join(dir, "config.json")
	if !exists(cfgPath) {
		return nil, fmt.Errorf("%s: not a diffusers ControlNet folder (no config.json)", dir)
	}
	raw, err := readFile(cfgPath)
	if err != nil {
		return nil, err
	}
	cfg, err := parseUNetConfig(raw, cfgPath, dir, true)
	if err != nil {
		return nil, err
	}
	w, err := openWeights(dir, diffusersWeights, opts.Variant)
	if err != nil {
		return nil, err
	}
	src, err := bindFolder("controlnet", w, cfg.WeightShapes(true), identity, noSkip)
	if err != nil {
		w.close()
		return nil, err
	}
	return &ControlNet{Component: component("controlnet", src, raw, cfgPath, w.paths...), Path: dir, Layout: Diffusers, Config: cfg, files: w.files}, nil
}
