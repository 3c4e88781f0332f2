// Package checkpoint is the first stage of the compiler: it presents the
// weights users already downloaded as one nn.Source per component (UNet,
// VAE, text encoder, ControlNets), keyed by diffusers names, together with
// each component's config, so everything downstream (LoRA merging, fp16
// casting, tracing, the bundle writer) sees one naming whatever the source.
//
// Two layouts are read:
//
//   - A diffusers folder (model_index.json, unet/, vae/, text_encoder/,
//     tokenizer/, scheduler/, controlnet/): safetensors weights, the
//     "variant" files (diffusion_pytorch_model.fp16.safetensors) when
//     Options.Variant asks for them, and sharded weights
//     (*.safetensors.index.json).
//   - An original single-file checkpoint (CompVis LDM / A1111
//     .safetensors, as model sites distribute them) and the original
//     ControlNet files (control_*.safetensors, with or without the
//     control_model. prefix). Their keys are mapped to diffusers names as
//     diffusers' own converters do, lazily: the Source holds, per name, the
//     stored key and a byte range, and no tensor data is read or copied
//     until a caller asks for it.
//
// Pickle checkpoints (.ckpt, .bin, .pt, .pth) are refused: unpickling runs
// code stored in the file.
//
// A single file has no configs. They are taken from Options.ConfigDir when
// given, otherwise inferred from the weights (see inferUNet, inferVAE,
// inferCLIP) with Options.Hints or SD1.x/2.x defaults for what the weights
// do not determine (head counts, GroupNorm groups). It has no tokenizer
// either: the caller must name one (Options.TokenizerDir).
//
// Strictness: every weight the config needs must be present with the shape
// kernels/{unet,vae,clip}'s WeightShapes give, and every stored tensor must
// map to one, or the checkpoint is refused with an error naming the file
// and the tensors. The only tensors skipped are those that deliberately map
// to nothing (skippedKey lists them): EMA copies, noise-schedule buffers,
// CLIP's position_ids buffer, OpenCLIP parts SD does not run, and, in a
// ControlNet file that bundles its base model, that model.
package checkpoint

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/controlfn/controlfn/kernels/clip"
	"github.com/controlfn/controlfn/kernels/safetensors"
	"github.com/controlfn/controlfn/kernels/unet"
	"github.com/controlfn/controlfn/kernels/vae"
)

// Options select files and fill in what a checkpoint leaves open.
type Options struct {
	// Variant selects diffusers variant weight files, e.g. "fp16" for
	// diffusion_pytorch_model.fp16.safetensors and model.fp16.safetensors.
	// Empty selects the plain files.
	Variant string
	// ConfigDir gives configs for a single-file checkpoint. For OpenModel
	// it is a diffusers model folder (or any folder laid out like one):
	// unet/config.json, vae/config.json, text_encoder/config.json,
	// scheduler/scheduler_config.json and tokenizer/ are used where
	// present, and a component whose config is absent is inferred. For
	// OpenControlNet it is a diffusers ControlNet folder (config.json).
	// Ignored for diffusers folders, which carry their own.
	ConfigDir string
	// TokenizerDir is a CLIP tokenizer folder (vocab.json, merges.txt). It
	// overrides a diffusers folder's tokenizer/ and is required for a
	// single file unless ConfigDir has a tokenizer/.
	TokenizerDir string
	// Hints fill in what inference cannot read from a single file's
	// weights; unused when the config comes from a file.
	Hints Hints
}

// Layout is a checkpoint's on-disk form.
type Layout int

const (
	// Diffusers is a diffusers model or ControlNet folder.
	Diffusers Layout = iota + 1
	// SingleFile is an original LDM / A1111 / cldm single .safetensors.
	SingleFile
)

func (l Layout) String() string {
	switch l {
	case Diffusers:
		return "diffusers"
	case SingleFile:
		return "single-file"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

// Component is one network's weights and config.
type Component struct {
	// Name is "unet", "vae", "text_encoder" or "controlnet".
	Name string
	// Source serves the weights by diffusers name.
	Source *Source
	// ConfigJSON is the diffusers/transformers config.json: the file's
	// bytes, or the inferred config for a single file.
	ConfigJSON json.RawMessage
	// Inferred reports that ConfigJSON was derived from the weights.
	Inferred bool
	// Files lists the files the weights and config were read from, for
	// the bundle manifest's source hashes.
	Files []string
}

// Model is a Stable Diffusion checkpoint opened for compilation.
type Model struct {
	Path   string
	Layout Layout

	UNet        Component
	VAE         Component
	TextEncoder Component

	UNetConfig        unet.Config
	VAEConfig         vae.Config
	TextEncoderConfig clip.Config

	// ControlNets are those a diffusers pipeline folder ships
	// (controlnet/, or controlnet, controlnet_1, ... for a
	// MultiControlNetModel); a single file has none.
	ControlNets []*ControlNet

	// TokenizerDir holds vocab.json and merges.txt.
	TokenizerDir string
	// SchedulerConfig is scheduler_config.json; SchedulerFile is where it
	// came from, empty when it is the SD default (a single file without
	// ConfigDir).
	SchedulerConfig json.RawMessage
	SchedulerFile   string

	// Warnings name assumptions made for a single file (inferred values
	// the weights do not determine).
	Warnings []string

	files []*safetensors.File
}

// Close releases the memory-mapped files; Sources are unusable afterwards.
func (m *Model) Close() error {
	var errs []error
	for _, c := range m.ControlNets {
		errs = append(errs, c.Close())
	}
	for _, f := range m.files {
		errs = append(errs, f.Close())
	}
	m.ControlNets, m.files = nil, nil
	return errors.Join(errs...)
}

// ControlNet is a ControlNetModel opened for compilation.
type ControlNet struct {
	Component
	Path   string
	Layout Layout
	Config unet.Config
	// Warnings name assumptions made for an inferred config.
	Warnings []string

	files []*safetensors.File
}

// Close releases the memory-mapped files; Source is unusable afterwards.
func (c *ControlNet) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	c.files = nil
	return errors.Join(errs...)
}

// pickleExts are PyTorch pickle checkpoint extensions.
var pickleExts = map[string]bool{".ckpt": true, ".bin": true, ".pt": true, ".pth": true, ".pkl": true}

func isPickle(path string) bool { return pickleExts[strings.ToLower(filepath.Ext(path))] }

func pickleError(path string) error {
	return fmt.Errorf("%s: refusing a pickle checkpoint: loading .ckpt/.bin/.pt/.pth files runs code stored in them, and controlfn executes nothing from a checkpoint; convert it to .safetensors first (for example with diffusers' conversion scripts or safetensors' convert tool, in an isolated environment) and pass that", path)
}

// checkVariant keeps a variant a plain file-name part: it is spliced into
// weight file names.
func checkVariant(v string) error {
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("checkpoint: variant %q: want letters, digits, '_' or '-'", v)
		}
	}
	return nil
}

// OpenModel opens a Stable Diffusion checkpoint: a diffusers folder or a
// single-file .safetensors.
func OpenModel(path string, opts Options) (*Model, error) {
	if err := checkVariant(opts.Variant); err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if st.IsDir() {
		return openDiffusersModel(path, opts)
	}
	f, err := openFile(path, "a checkpoint", "a diffusers folder")
	if err != nil {
		return nil, err
	}
	m, err := openSingleFileModel(f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	m.files = append(m.files, f)
	return m, nil
}

// OpenControlNet opens a ControlNet: a diffusers ControlNet folder or an
// original control_*.safetensors.
func OpenControlNet(path string, opts Options) (*ControlNet, error) {
	if err := checkVariant(opts.Variant); err != nil {
		return nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if st.IsDir() {
		return openDiffusersControlNet(path, opts)
	}
	f, err := openFile(path, "a ControlNet", "a diffusers ControlNet folder")
	if err != nil {
		return nil, err
	}
	c, err := openSingleFileControlNet(f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	c.files = append(c.files, f)
	return c, nil
}

// openFile maps a single-file checkpoint after refusing pickles and
// anything that is not safetensors; what and folder name the expected kind
// in the error.
func openFile(path, what, folder string) (*safetensors.File, error) {
	if isPickle(path) {
		return nil, pickleError(path)
	}
	if strings.ToLower(filepath.Ext(path)) != ".safetensors" {
		return nil, fmt.Errorf("%s: not %s controlfn reads: want %s or a .safetensors file", path, what, folder)
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return f, nil
}

// checkTokenizer verifies a CLIP tokenizer folder has its two files.
func checkTokenizer(dir string) error {
	for _, f := range []string{"vocab.json", "merges.txt"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			return fmt.Errorf("tokenizer %s: %w", dir, err)
		}
		if st.IsDir() {
			return fmt.Errorf("tokenizer %s: %s is a directory", dir, f)
		}
	}
	return nil
}

// readFile reads a small config file, naming it in errors.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return b, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
