package unet

import (
	"fmt"
	"testing"

	"github.com/controlfn/controlfn/internal/golden"
	"github.com/controlfn/controlfn/kernels/nn"
	"github.com/gomlx/compute"
	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/shapes"
	. "github.com/gomlx/gomlx/core/graph" //nolint:revive
	"github.com/gomlx/gomlx/core/tensors"
)

const refFile = "controlnet_unet_ref.safetensors"

type fixture struct {
	backend  compute.Backend
	unet     *UNet
	cnet     *ControlNet
	unetW    *nn.Weights
	cnetW    *nn.Weights
	unetSrc  nn.FileSource
	cnetSrc  nn.FileSource
	sample   *tensors.Tensor
	ctx      *tensors.Tensor
	cond     *tensors.Tensor
	timestep map[string]*tensors.Tensor
}

func loadModel(t testing.TB, folder string) (Config, nn.FileSource) {
	t.Helper()
	cfg, err := LoadConfig(golden.Path(t, "tiny-sd15", folder, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, nn.FileSource{File: golden.Open(t, "tiny-sd15", folder, "diffusion_pytorch_model.safetensors")}
}

func newFixture(t *testing.T, backendSpec string) *fixture {
	t.Helper()
	b, err := nn.NewBackend(backendSpec)
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{backend: b, timestep: map[string]*tensors.Tensor{}}
	ucfg, usrc := loadModel(t, "unet")
	ccfg, csrc := loadModel(t, "controlnet")
	if fx.unet, err = NewUNet(ucfg); err != nil {
		t.Fatal(err)
	}
	fx.cnet, _ = NewControlNet(ccfg)
	fx.unetSrc, fx.cnetSrc = usrc, csrc
	fx.unetW = nn.NewWeights(b, usrc, nn.Widen)
	fx.cnetW = nn.NewWeights(b, csrc, nn.Widen)
	fx.sample = goldenTensor(t, "sample")
	fx.ctx = goldenTensor(t, "encoder_hidden_states")
	fx.cond = goldenTensor(t, "controlnet_cond")
	its, _, err := golden.Open(t, refFile).Int64s("timestep_t500")
	if err != nil {
		t.Fatal(err)
	}
	fx.timestep["t500"] = tensors.FromScalar(float32(its[0]))
	ts, _ := golden.Float32s(t, refFile, "timestep_t946_42")
	fx.timestep["t946_42"] = tensors.FromScalar(ts[0])
	return fx
}

// stepShape is the step bucket of the golden inputs.
func (fx *fixture) stepShape() StepShape {
	s, c := fx.sample.Shape().Dimensions, fx.cond.Shape().Dimensions
	return StepShape{Batch: s[0], LatentHeight: s[2], LatentWidth: s[3], SeqLen: fx.ctx.Shape().Dimensions[1],
		CondScale: c[2] / s[2], NumControlNet: 1}
}

func goldenTensor(t *testing.T, name string) *tensors.Tensor {
	t.Helper()
	v, shape := golden.Float32s(t, refFile, name)
	return tensors.FromFlatDataAndDimensions(v, shape...)
}

// The UNet int64 timestep 500 reaches the model as the float 500; so does
// a float timestep. Programs take float32 scalars.
func controlNetProgram(t *testing.T, fx *fixture) *nn.Program {
	t.Helper()
	n := fx.cnet.Config.NumSkips()
	in := []shapes.Shape{fx.sample.Shape(), shapes.Make(dtypes.Float32), fx.ctx.Shape(), fx.cond.Shape(), shapes.Make(dtypes.Float32, fx.sample.Shape().Dimensions[0], n+1)}
	p, err := nn.Compile("controlnet", fx.cnetW, in, func(s nn.Scope, x []*Node) []*Node {
		r := fx.cnet.Forward(s, nn.NCHWToNHWC(x[0]), x[1], x[2], nn.NCHWToNHWC(x[3]), x[4])
		out := make([]*Node, 0, n+1)
		for _, d := range r.Down {
			out = append(out, nn.NHWCToNCHW(d))
		}
		return append(out, nn.NHWCToNCHW(r.Mid))
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func unetProgram(t *testing.T, fx *fixture, withResiduals bool, resShapes []shapes.Shape) *nn.Program {
	t.Helper()
	in := []shapes.Shape{fx.sample.Shape(), shapes.Make(dtypes.Float32), fx.ctx.Shape()}
	if withResiduals {
		in = append(in, resShapes...)
	}
	p, err := nn.Compile("unet", fx.unetW, in, func(s nn.Scope, x []*Node) []*Node {
		var res *Residuals
		if withResiduals {
			res = &Residuals{}
			for _, r := range x[3 : len(x)-1] {
				res.Down = append(res.Down, nn.NCHWToNHWC(r))
			}
			res.Mid = nn.NCHWToNHWC(x[len(x)-1])
		}
		return []*Node{nn.NHWCToNCHW(fx.unet.Forward(s, nn.NCHWToNHWC(x[0]), x[1], x[2], res))}
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestControlNetAndUNetParity(t *testing.T) {
	fx := newFixture(t, "go")
	cnet := controlNetProgram(t, fx)
	defer cnet.Close()
	plain := unetProgram(t, fx, false, nil)
	defer plain.Close()
	var withRes *nn.Program
	n := fx.cnet.Config.NumSkips()
	for _, ts := range []string{"t500", "t946_42"} {
		got, err := plain.Run(fx.sample, fx.timestep[ts], fx.ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := golden.Float32s(t, refFile, "unet_"+ts+"_plain")
		golden.AssertClose(t, "unet_"+ts+"_plain", tensors.MustCopyFlatData[float32](got[0]), want, 1e-4)

		for _, scale := range []float32{1.0, 0.5} {
			tag := fmt.Sprintf("%s_scale%s", ts, map[float32]string{1: "1p0", 0.5: "0p5"}[scale])
			rows := make([][]float32, fx.sample.Shape().Dimensions[0])
			for i := range rows {
				rows[i] = UniformScales(n, scale)
			}
			scales := tensors.FromValue(rows)
			res, err := cnet.Run(fx.sample, fx.timestep[ts], fx.ctx, fx.cond, scales)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				name := fmt.Sprintf("controlnet_%s_down_%02d", tag, i)
				want, _ := golden.Float32s(t, refFile, name)
				golden.AssertClose(t, name, tensors.MustCopyFlatData[float32](res[i]), want, 1e-4)
			}
			want, _ := golden.Float32s(t, refFile, "controlnet_"+tag+"_mid")
			golden.AssertClose(t, "controlnet_"+tag+"_mid", tensors.MustCopyFlatData[float32](res[n]), want, 1e-4)

			if withRes == nil {
				var sh []shapes.Shape
				for _, r := range res {
					sh = append(sh, r.Shape())
				}
				withRes = unetProgram(t, fx, true, sh)
				defer withRes.Close()
			}
			args := append([]*tensors.Tensor{fx.sample, fx.timestep[ts], fx.ctx}, res...)
			out, err := withRes.Run(args...)
			if err != nil {
				t.Fatal(err)
			}
			want, _ = golden.Float32s(t, refFile, "unet_"+tag+"_with_residuals")
			golden.AssertClose(t, "unet_"+tag+"_with_residuals", tensors.MustCopyFlatData[float32](out[0]), want, 1e-4)
		}
	}
	// Every checkpoint tensor must have been consumed: an unused one means
	// the graph skipped part of the architecture.
	for _, c := range []struct {
		w   *nn.Weights
		src nn.FileSource
	}{{fx.unetW, fx.unetSrc}, {fx.cnetW, fx.cnetSrc}} {
		used := c.w.Used()
		for _, name := range c.src.Names() {
			if !used[name] {
				t.Errorf("checkpoint tensor %s unused by the graph", name)
			}
		}
	}
}

// TestUNetShippedBackend runs the full tiny ControlNet + UNet as one fused
// step program, several times, on the backend configuration we ship (the
// Go backend's default parallel executor hung on graphs like this one), and
// checks the fused step equals the separate programs.
func TestUNetShippedBackend(t *testing.T) {
	fx := newFixture(t, "")
	sh := fx.stepShape()
	p, err := CompileStep("step", fx.unet, fx.unetW, []*ControlNet{fx.cnet}, []*nn.Weights{fx.cnetW}, sh)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	n := fx.cnet.Config.NumSkips()
	rows := make([][]float32, sh.Batch)
	for i := range rows {
		rows[i] = UniformScales(n, 1)
	}
	scales := tensors.FromValue(rows)
	want, _ := golden.Float32s(t, refFile, "unet_t500_scale1p0_with_residuals")
	for i := 0; i < 3; i++ {
		out, err := p.Run(fx.sample, fx.timestep["t500"], fx.ctx, fx.cond, scales)
		if err != nil {
			t.Fatal(err)
		}
		golden.AssertClose(t, fmt.Sprintf("fused step run %d", i), tensors.MustCopyFlatData[float32](out[0]), want, 1e-4)
	}
}
