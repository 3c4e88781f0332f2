package noise

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/safetensors"
)

// goldenDraw is one tensor of noise_ref.safetensors decoded from its name:
// randn_seed<SEED>_<SHAPE> or randn_seed<SEED>_<first|second>_<SHAPE>.
type goldenDraw struct {
	seed  uint64
	order string // "", "first" or "second"
	shape []int
}

func parseGoldenName(name string) (goldenDraw, error) {
	rest, ok := strings.CutPrefix(name, "randn_seed")
	if !ok {
		return goldenDraw{}, fmt.Errorf("tensor %q: missing randn_seed prefix", name)
	}
	parts := strings.Split(rest, "_")
	var d goldenDraw
	switch len(parts) {
	case 2:
	case 3:
		d.order = parts[1]
		if d.order != "first" && d.order != "second" {
			return goldenDraw{}, fmt.Errorf("tensor %q: unknown draw order %q", name, d.order)
		}
	default:
		return goldenDraw{}, fmt.Errorf("tensor %q: want randn_seed<SEED>[_first|_second]_<SHAPE>", name)
	}
	seed, err := strconv.ParseUint(parts[0], 10, 64)
	if err != nil {
		return goldenDraw{}, fmt.Errorf("tensor %q: seed: %w", name, err)
	}
	d.seed = seed
	for _, s := range strings.Split(parts[len(parts)-1], "x") {
		n, err := strconv.Atoi(s)
		if err != nil {
			return goldenDraw{}, fmt.Errorf("tensor %q: shape: %w", name, err)
		}
		d.shape = append(d.shape, n)
	}
	return d, nil
}

func TestParseGoldenName(t *testing.T) {
	tests := []struct {
		name    string
		want    goldenDraw
		wantErr bool
	}{
		{"randn_seed0_1x4x8x8", goldenDraw{0, "", []int{1, 4, 8, 8}}, false},
		{"randn_seed11_5", goldenDraw{11, "", []int{5}}, false},
		{"randn_seed4294967301_1x4x8x8", goldenDraw{4294967301, "", []int{1, 4, 8, 8}}, false},
		{"randn_seed5_second_1x4x8x8", goldenDraw{5, "second", []int{1, 4, 8, 8}}, false},
		{"randn_seed5_third_1x4x8x8", goldenDraw{}, true},
		{"rand_seed5_4", goldenDraw{}, true},
		{"randn_seedx_4", goldenDraw{}, true},
		{"randn_seed1_4xy", goldenDraw{}, true},
	}
	for _, tt := range tests {
		got, err := parseGoldenName(tt.name)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseGoldenName(%q) error = %v, wantErr %v", tt.name, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && (got.seed != tt.want.seed || got.order != tt.want.order || !slices.Equal(got.shape, tt.want.shape)) {
			t.Errorf("parseGoldenName(%q) = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// Every tensor torch drew for noise_ref must come out bit for bit.
func TestRandnGolden(t *testing.T) {
	f, err := safetensors.Open(golden.Path(t, "noise_ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	names := f.Names()
	if len(names) < 10 {
		t.Fatalf("noise_ref has %d tensors, want at least 10", len(names))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			d, err := parseGoldenName(name)
			if err != nil {
				t.Fatal(err)
			}
			raw, info, err := f.Raw(name)
			if err != nil {
				t.Fatal(err)
			}
			if info.DType != safetensors.F32 || !slices.Equal(info.Shape, d.shape) {
				t.Fatalf("stored as %v %v, name says F32 %v", info.DType, info.Shape, d.shape)
			}
			g := NewGenerator(d.seed)
			if d.order == "second" {
				// The pair shares one generator: draw the first tensor.
				g.Randn(d.shape...)
			}
			got := g.Randn(d.shape...)
			if len(raw) != 4*len(got) {
				t.Fatalf("stored %d bytes for %d values", len(raw), len(got))
			}
			mismatches := 0
			for i, v := range got {
				want := math.Float32frombits(leUint32(raw[4*i:]))
				if math.Float32bits(v) != math.Float32bits(want) {
					if mismatches < 5 {
						t.Errorf("value %d = %v (%#08x), want %v (%#08x)",
							i, v, math.Float32bits(v), want, math.Float32bits(want))
					}
					mismatches++
				}
			}
			if mismatches > 0 {
				t.Errorf("%d of %d values differ", mismatches, len(got))
			}
		})
	}
}

func leUint32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
