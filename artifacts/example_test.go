package artifacts_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/controlfn/controlfn/artifacts"
	"github.com/google/uuid"
)

// The compiler's side: write the files, then commit the manifest. The
// function's side: open (verifying every file) and find a component.
func Example() {
	parent, err := os.MkdirTemp("", "bundles")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(parent)
	dir := filepath.Join(parent, "sd15-canny")

	w, err := artifacts.NewWriter(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Abort() // a no-op once committed
	if _, err := w.AddBytes(artifacts.ConfigPath("unet"), []byte(`{"sample_size": 64}`)); err != nil {
		log.Fatal(err)
	}
	// A weights writer streams into the bundle; size and sha256 are taken
	// on the way.
	if _, err := w.AddStream(artifacts.WeightsPath("unet"), func(dst io.Writer) error {
		_, err := io.Copy(dst, bytes.NewReader(make([]byte, 3<<20)))
		return err
	}); err != nil {
		log.Fatal(err)
	}
	// The compiler traces each program once and stores its StableHLO.
	if _, err := w.AddBytes(artifacts.ProgramPath("vae_decoder_b2_64x64"), []byte("module @vae_decoder_b2_64x64 {}\n")); err != nil {
		log.Fatal(err)
	}
	bucket := artifacts.Bucket{Width: 512, Height: 512, Batch: 2}
	err = w.Commit(&artifacts.Manifest{
		BuildID:     uuid.MustParse("9b2f6a2e-3d1c-4c55-9a0e-0c1d2e3f4a5b"),
		Created:     time.Date(2025, 11, 27, 12, 0, 0, 0, time.UTC),
		ToolVersion: "controlfn 0.1.0",
		DType:       artifacts.DTypeFloat16,
		Sources: []artifacts.Source{{
			Path: "/models/v1-5-pruned-emaonly.safetensors", Role: "checkpoint",
			Size: 4265146304, SHA256: "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
		}},
		Buckets: []artifacts.Bucket{bucket},
		Components: []artifacts.Component{{
			Name: "unet", Kind: artifacts.KindUNet,
			Config: artifacts.ConfigPath("unet"), Weights: artifacts.WeightsPath("unet"),
			Tensors: 686, Bytes: 3<<20 - 4096,
		}},
		Programs: []artifacts.Program{{Name: "vae_decoder_b2_64x64", Buckets: []artifacts.Bucket{bucket}, File: artifacts.ProgramPath("vae_decoder_b2_64x64")}},
	})
	if err != nil {
		log.Fatal(err)
	}

	b, err := artifacts.Open(dir, artifacts.Options{})
	if err != nil {
		log.Fatal(err)
	}
	unet, err := b.Component("unet")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(filepath.Base(b.Path(unet.Weights)))
	fmt.Print(b.Manifest.Summary())
	// Output:
	// unet.safetensors
	// build    9b2f6a2e-3d1c-4c55-9a0e-0c1d2e3f4a5b
	// format   1.1
	// created  2025-11-27T12:00:00Z
	// tool     controlfn 0.1.0
	// dtype    float16
	// buckets  512x512x2 (width x height x batch)
	// size     3.0 MiB in 3 files
	// components (1):
	//   unet  unet  686 tensors  3.0 MiB  weights/unet.safetensors
	// programs (1, StableHLO):
	//   vae_decoder_b2_64x64  programs/vae_decoder_b2_64x64.mlir  32 B  sha256 0150267c6890  buckets 512x512x2
	// sources (1):
	//   checkpoint  /models/v1-5-pruned-emaonly.safetensors  4.0 GiB  sha256 6ce0161689b3
	// loras: none
}

// The function's cache: a miss for any reason means compile and store.
func ExampleLoadExecutable() {
	bundleDir, err := os.MkdirTemp("", "bundle")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(bundleDir)
	dir := artifacts.CacheDir(bundleDir, "xla", "cuda:0")
	key := artifacts.CacheKey("5f0c3b1de2a94c7e", "xla", "cuda:0")

	exe, err := artifacts.LoadExecutable(dir, key)
	if err != nil {
		fmt.Println("miss; compiling")
		exe = []byte("serialized executable")
		if err := artifacts.StoreExecutable(dir, key, exe); err != nil {
			log.Print(err) // only a future compile is lost
		}
	}
	exe, err = artifacts.LoadExecutable(dir, key)
	fmt.Printf("%s, %v\n", exe, err)
	// Output:
	// miss; compiling
	// serialized executable, <nil>
}
