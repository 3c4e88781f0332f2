package artifacts

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseManifest checks that no input makes the parser panic, and that
// whatever it accepts is valid and survives a round trip unchanged.
func FuzzParseManifest(f *testing.F) {
	data, err := validManifest().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if m != nil {
				t.Fatal("ParseManifest returned a manifest with an error")
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted a manifest that does not validate: %v", err)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("re-parsing our own output: %v\n%s", err, out)
		}
		if out2, _ := again.Marshal(); !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the manifest:\n%s\nvs\n%s", out, out2)
		}
	})
}

// writeTinyBundle writes a bundle small enough for fuzz seeds.
func writeTinyBundle(t testing.TB, dir string) {
	t.Helper()
	w, err := NewWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for rel, data := range map[string]string{
		"weights/unet.safetensors": "0123456789abcdef",
		"configs/unet.json":        "{}",
		"tokenizer/vocab.json":     `{"a":1}`,
	} {
		if _, err := w.AddBytes(rel, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	m := sampleManifest()
	m.LoRAs = nil
	m.Components = m.Components[:1]
	m.Programs = nil
	m.Components[0].Bytes = 8
	if err := w.Commit(m); err != nil {
		t.Fatal(err)
	}
}

// FuzzUnpack checks that no archive makes Unpack panic or write outside
// its destination, that a failure leaves nothing behind, and that anything
// it accepts opens as a fully verified bundle.
func FuzzUnpack(f *testing.F) {
	src := filepath.Join(f.TempDir(), "src")
	writeTinyBundle(f, src)
	for _, c := range []Compression{CompressNone, CompressDefault} {
		archive, _ := packBytes(f, src, PackOptions{Compression: c})
		f.Add(archive)
	}
	f.Fuzz(func(t *testing.T, archive []byte) {
		parent := t.TempDir()
		dest := filepath.Join(parent, "sub", "dest")
		b, err := Unpack(bytes.NewReader(archive), dest, UnpackOptions{MaxBytes: 1 << 20, MaxFiles: 64, NoSync: true})
		outside, _ := os.ReadDir(parent)
		if len(outside) > 1 || len(outside) == 1 && outside[0].Name() != "sub" {
			t.Fatalf("Unpack wrote beside its destination: %v", outside)
		}
		if err != nil {
			if b != nil {
				t.Fatal("Unpack returned a bundle with an error")
			}
			if left, _ := os.ReadDir(filepath.Dir(dest)); len(left) != 0 {
				t.Fatalf("failed Unpack left %v", left)
			}
			return
		}
		if _, err := Open(dest, Options{}); err != nil {
			t.Fatalf("Unpack accepted an archive that does not open: %v", err)
		}
		err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !d.Type().IsRegular() {
				err = errors.New(p + " is not a regular file")
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
