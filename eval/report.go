package eval

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/controlfn/controlfn/eval/metrics"
	"github.com/controlfn/controlfn/kernels/imageproc"
)

// ReportVersion is the version of the report.json schema.
const ReportVersion = 2

// The files a report is written as.
const (
	ReportJSON     = "report.json"
	ReportMarkdown = "report.md"
	GridPNG        = "grid.png"
)

// Float is a float64 that survives JSON when it is not finite: +Inf (the
// PSNR of identical images), -Inf and NaN are written as the strings
// "+Inf", "-Inf" and "NaN", since encoding/json refuses them as numbers and
// a report must not drop the very value that says "identical" or "broken".
type Float float64

// MarshalJSON writes finite values as numbers, others as strings.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Float) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		switch s {
		case "NaN":
			*f = Float(math.NaN())
		case "+Inf", "Inf":
			*f = Float(math.Inf(1))
		case "-Inf":
			*f = Float(math.Inf(-1))
		default:
			return fmt.Errorf("eval: %q is not a number", s)
		}
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("eval: %s is not a number", b)
	}
	*f = Float(v)
	return nil
}

// Report is the result of an evaluation.
type Report struct {
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Model   ModelInfo `json:"model"`
	// Optimized and Reference describe the two configurations compared.
	Optimized Variant       `json:"optimized"`
	Reference Variant       `json:"reference"`
	Settings  Settings      `json:"settings"`
	Prompts   []string      `json:"prompts"`
	Controls  []ControlInfo `json:"controls"`
	Samples   []Sample      `json:"samples"`
	Summary   Summary       `json:"summary"`

	// rows are the images of the grid, one per sample.
	rows []gridRow
}

// ModelInfo is what was evaluated.
type ModelInfo struct {
	// Path is the checkpoint; empty for the built-in demo model.
	Path string `json:"path"`
	// Demo says the built-in random-weight demo model was used.
	Demo        bool       `json:"demo"`
	ControlNets []string   `json:"controlnets,omitempty"`
	LoRAs       []LoRAInfo `json:"loras,omitempty"`
}

// LoRAInfo is one LoRA merged into both configurations.
type LoRAInfo struct {
	File  string  `json:"file"`
	Scale float64 `json:"scale"`
	// Demo marks the built-in demo LoRA.
	Demo bool `json:"demo,omitempty"`
}

// Variant is one of the two configurations.
type Variant struct {
	Description string `json:"description"`
	// DType is the stored weight dtype of its bundle.
	DType   string `json:"dtype"`
	BuildID string `json:"build_id"`
	// LoRAs counts the LoRA files applied: merged into the bundle (the
	// optimized variant) or unmerged at run time (the reference).
	LoRAs int `json:"loras"`
	// FP16Overflow and FP16Underflow count weights the fp16 cast clamped
	// or flushed to zero (0 for the fp32 reference).
	FP16Overflow  int64 `json:"fp16_overflow"`
	FP16Underflow int64 `json:"fp16_underflow"`
	// CompileSeconds is the compile into a bundle; LoadSeconds opening,
	// verifying and loading it and compiling the programs; GenerateSeconds
	// the mean wall time of one generation.
	CompileSeconds  Float `json:"compile_seconds"`
	LoadSeconds     Float `json:"load_seconds"`
	GenerateSeconds Float `json:"generate_seconds"`
}

// Settings are the generation and metric parameters.
type Settings struct {
	Width             int      `json:"width"`
	Height            int      `json:"height"`
	Steps             int      `json:"steps"`
	Seeds             []uint64 `json:"seeds"`
	GuidanceScale     float64  `json:"guidance_scale"`
	Scheduler         string   `json:"scheduler"`
	NegativePrompt    string   `json:"negative_prompt"`
	ConditioningScale float64  `json:"controlnet_conditioning_scale"`
	Backend           string   `json:"backend"`
	// CannyLow and CannyHigh make the edge map of a generated image.
	CannyLow  int `json:"canny_low"`
	CannyHigh int `json:"canny_high"`
	// EdgeTolerance is the F1 match radius in pixels; EdgeThreshold the
	// grey level from which a control map pixel is an edge.
	EdgeTolerance int `json:"edge_tolerance"`
	EdgeThreshold int `json:"edge_threshold"`
	// SSIM describes the SSIM setting; MSSSIMScales and MSSSIMWeights
	// what MS-SSIM used at this size.
	SSIM          string    `json:"ssim"`
	MSSSIMScales  int       `json:"msssim_scales"`
	MSSSIMWeights []float64 `json:"msssim_weights"`
	// MSSSIMNote says why fewer than five scales were used, if they were.
	MSSSIMNote string `json:"msssim_note,omitempty"`
}

// ControlInfo describes one control map.
type ControlInfo struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	// EdgePixels counts the map's edge pixels; EdgeDensity is their
	// fraction of the image, which sets how much F1 chance alone earns
	// (a denser map is easier to hit by accident).
	EdgePixels  int   `json:"edge_pixels"`
	EdgeDensity Float `json:"edge_density"`
}

// Sample is one prompt × control × seed, generated by both configurations.
type Sample struct {
	ID      string `json:"id"`
	Prompt  int    `json:"prompt"`
	Control string `json:"control"`
	Seed    uint64 `json:"seed"`
	// Fidelity of the optimized image against the reference image.
	PSNR   Float `json:"psnr_db"`
	SSIM   Float `json:"ssim"`
	MSSSIM Float `json:"ms_ssim"`
	// Final latents: largest and mean |optimized − reference|, and the
	// largest |reference| to read them against.
	LatentMaxAbsDiff  Float `json:"latent_max_abs_diff"`
	LatentMeanAbsDiff Float `json:"latent_mean_abs_diff"`
	LatentRefMaxAbs   Float `json:"latent_ref_max_abs"`
	// Control accuracy of each image against the control map.
	EdgeOptimized metrics.EdgeScore `json:"edge_optimized"`
	EdgeReference metrics.EdgeScore `json:"edge_reference"`
	// F1Delta is F1(optimized) − F1(reference).
	F1Delta Float `json:"f1_delta"`
}

// Summary aggregates the samples.
type Summary struct {
	Samples int `json:"samples"`
	// Identical counts samples whose two images are equal pixel for pixel
	// (PSNR +Inf); PSNRMean averages the others (+Inf when all are).
	Identical  int   `json:"identical"`
	PSNRMin    Float `json:"psnr_min_db"`
	PSNRMean   Float `json:"psnr_mean_db"`
	SSIMMin    Float `json:"ssim_min"`
	SSIMMean   Float `json:"ssim_mean"`
	MSSSIMMin  Float `json:"ms_ssim_min"`
	MSSSIMMean Float `json:"ms_ssim_mean"`
	// LatentMaxAbsDiff is the largest over samples; LatentMeanAbsDiff the
	// mean of the per-sample means.
	LatentMaxAbsDiff  Float `json:"latent_max_abs_diff"`
	LatentMeanAbsDiff Float `json:"latent_mean_abs_diff"`
	F1Optimized       Float `json:"f1_optimized_mean"`
	F1Reference       Float `json:"f1_reference_mean"`
	F1DeltaMean       Float `json:"f1_delta_mean"`
	F1DeltaMaxAbs     Float `json:"f1_delta_max_abs"`
}

// gridRow is one row of the grid image.
type gridRow struct{ control, reference, optimized *imageproc.RGB }

// summarize fills r.Summary from r.Samples.
func (r *Report) summarize() {
	s := Summary{Samples: len(r.Samples)}
	if s.Samples == 0 {
		return
	}
	inf := Float(math.Inf(1))
	s.PSNRMin, s.SSIMMin, s.MSSSIMMin = inf, inf, inf
	var psnrSum, ssimSum, msSum, latMean, f1o, f1r, dSum float64
	finite := 0
	for _, x := range r.Samples {
		if math.IsInf(float64(x.PSNR), 1) {
			s.Identical++
		} else {
			psnrSum += float64(x.PSNR)
			finite++
		}
		s.PSNRMin = min(s.PSNRMin, x.PSNR)
		s.SSIMMin = min(s.SSIMMin, x.SSIM)
		s.MSSSIMMin = min(s.MSSSIMMin, x.MSSSIM)
		ssimSum += float64(x.SSIM)
		msSum += float64(x.MSSSIM)
		s.LatentMaxAbsDiff = Float(math.Max(float64(s.LatentMaxAbsDiff), float64(x.LatentMaxAbsDiff)))
		latMean += float64(x.LatentMeanAbsDiff)
		f1o += x.EdgeOptimized.F1
		f1r += x.EdgeReference.F1
		dSum += float64(x.F1Delta)
		s.F1DeltaMaxAbs = max(s.F1DeltaMaxAbs, Float(math.Abs(float64(x.F1Delta))))
	}
	n := float64(s.Samples)
	s.PSNRMean = inf
	if finite > 0 {
		s.PSNRMean = Float(psnrSum / float64(finite))
	}
	s.SSIMMean, s.MSSSIMMean = Float(ssimSum/n), Float(msSum/n)
	s.LatentMeanAbsDiff = Float(latMean / n)
	s.F1Optimized, s.F1Reference, s.F1DeltaMean = Float(f1o/n), Float(f1r/n), Float(dSum/n)
	r.Summary = s
}

// Write writes the report into dir (created if missing): grid.png,
// report.md, then report.json, each into a temporary file in dir that is
// renamed over its name only once complete, so a reader never sees a
// partial file and a report.json present means the other two are too.
func (r *Report) Write(dir string) error {
	if len(r.rows) != len(r.Samples) {
		return errors.New("eval: report has no images to draw its grid (only a report from Run can be written)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("eval: report: %w", err)
	}
	grid, err := r.gridPNG()
	if err != nil {
		return fmt.Errorf("eval: report grid: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("eval: report: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{GridPNG, grid}, {ReportMarkdown, []byte(r.Markdown())}, {ReportJSON, append(js, '\n')}} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data); err != nil {
			return fmt.Errorf("eval: report: %w", err)
		}
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return nil
}

// gridGap is the width of the separators between grid cells.
const gridGap = 2

// gridPNG tiles each sample's control | reference | optimized into one row.
func (r *Report) gridPNG() ([]byte, error) {
	w, h := r.Settings.Width, r.Settings.Height
	cols, rows := 3, len(r.rows)
	if rows == 0 {
		return nil, errors.New("no samples")
	}
	out := image.NewNRGBA(image.Rect(0, 0, cols*w+(cols+1)*gridGap, rows*h+(rows+1)*gridGap))
	draw.Draw(out, out.Bounds(), &image.Uniform{color.NRGBA{128, 128, 128, 255}}, image.Point{}, draw.Src)
	for i, row := range r.rows {
		for j, m := range []*imageproc.RGB{row.control, row.reference, row.optimized} {
			if m.Width != w || m.Height != h {
				return nil, fmt.Errorf("sample %d: image %dx%d, want %dx%d", i, m.Width, m.Height, w, h)
			}
			at := image.Pt(gridGap+j*(w+gridGap), gridGap+i*(h+gridGap))
			draw.Draw(out, image.Rectangle{Min: at, Max: at.Add(image.Pt(w, h))}, m.Image(), image.Point{}, draw.Src)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Markdown renders the report for people.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	st, sm := r.Settings, r.Summary

	p("# controlfn eval: optimized vs reference\n\n")
	model := "`" + mdEscape(r.Model.Path) + "`"
	if r.Model.Demo {
		model = "built-in demo model (random weights: its images are noise, so F1 values only show that the two configurations agree, not how well a trained model follows control)"
	}
	p("- Model: %s\n", model)
	if len(r.Model.ControlNets) > 0 {
		p("- ControlNets: %s\n", mdEscape(strings.Join(r.Model.ControlNets, ", ")))
	}
	if len(r.Model.LoRAs) == 0 {
		p("- LoRAs: none\n")
	}
	for _, l := range r.Model.LoRAs {
		demo := ""
		if l.Demo {
			demo = " (built-in demo LoRA, random, rank 4)"
		}
		p("- LoRA: `%s` × %g%s\n", mdEscape(l.File), l.Scale, demo)
	}
	p("- Generation: %d×%d, %d steps, %s, guidance %g, conditioning scale %g, seeds %s, backend %s\n",
		st.Width, st.Height, st.Steps, st.Scheduler, st.GuidanceScale, st.ConditioningScale, joinSeeds(st.Seeds), st.Backend)
	if st.NegativePrompt != "" {
		p("- Negative prompt: %s\n", mdEscape(st.NegativePrompt))
	}
	p("- Created: %s\n\n", r.Created.Format(time.RFC3339))

	p("| | optimized | reference |\n|---|---|---|\n")
	p("| configuration | %s | %s |\n", mdEscape(r.Optimized.Description), mdEscape(r.Reference.Description))
	p("| stored weights | %s | %s |\n", r.Optimized.DType, r.Reference.DType)
	p("| bundle build id | %s | %s |\n", r.Optimized.BuildID, r.Reference.BuildID)
	p("| LoRA files (merged in the bundle / unmerged at run time) | %d merged | %d unmerged |\n", r.Optimized.LoRAs, r.Reference.LoRAs)
	p("| fp16 overflow / underflow | %d / %d | %d / %d |\n", r.Optimized.FP16Overflow, r.Optimized.FP16Underflow, r.Reference.FP16Overflow, r.Reference.FP16Underflow)
	p("| compile, load (s) | %.2f, %.2f | %.2f, %.2f |\n", r.Optimized.CompileSeconds, r.Optimized.LoadSeconds, r.Reference.CompileSeconds, r.Reference.LoadSeconds)
	p("| one generation (s) | %.3f | %.3f |\n\n", r.Optimized.GenerateSeconds, r.Reference.GenerateSeconds)

	p("## Summary (%d samples)\n\n| metric | value |\n|---|---|\n", sm.Samples)
	p("| PSNR min / mean | %s / %s dB |\n", fmtDB(sm.PSNRMin), fmtDB(sm.PSNRMean))
	if sm.Identical > 0 {
		p("| identical image pairs | %d |\n", sm.Identical)
	}
	p("| SSIM min / mean | %s / %s |\n", fmt6(sm.SSIMMin), fmt6(sm.SSIMMean))
	p("| MS-SSIM min / mean (%d scales) | %s / %s |\n", st.MSSSIMScales, fmt6(sm.MSSSIMMin), fmt6(sm.MSSSIMMean))
	p("| latent max \\|Δ\\| / mean \\|Δ\\| | %s / %s |\n", fmtG(sm.LatentMaxAbsDiff), fmtG(sm.LatentMeanAbsDiff))
	p("| edge F1 optimized / reference (mean) | %s / %s |\n", fmt4(sm.F1Optimized), fmt4(sm.F1Reference))
	p("| F1 optimized − reference: mean / max \\|Δ\\| | %s / %s |\n\n", fmtSigned(sm.F1DeltaMean), fmt4(sm.F1DeltaMaxAbs))

	p("## Samples\n\n")
	p("| id | prompt | control | seed | PSNR dB | SSIM | MS-SSIM | latent max \\|Δ\\| | latent mean \\|Δ\\| | F1 opt | F1 ref | ΔF1 |\n")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Samples {
		prompt := ""
		if s.Prompt >= 0 && s.Prompt < len(r.Prompts) {
			prompt = r.Prompts[s.Prompt]
		}
		p("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", s.ID, mdEscape(prompt), mdEscape(s.Control), s.Seed,
			fmtDB(s.PSNR), fmt6(s.SSIM), fmt6(s.MSSSIM), fmtG(s.LatentMaxAbsDiff), fmtG(s.LatentMeanAbsDiff),
			fmt4(Float(s.EdgeOptimized.F1)), fmt4(Float(s.EdgeReference.F1)), fmtSigned(s.F1Delta))
	}

	p("\n## Controls\n\n| control | source | edge pixels | edge density |\n|---|---|---|---|\n")
	for _, c := range r.Controls {
		p("| %s | %s | %d | %s |\n", mdEscape(c.Name), mdEscape(c.Source), c.EdgePixels, fmt4(c.EdgeDensity))
	}

	p("\n## Method\n\n")
	p("- **PSNR** = 20·log10(255/√MSE) over every pixel and channel of the optimized image against the reference; identical images are +Inf (reported as such, left out of the mean).\n")
	p("- **SSIM**: Wang et al. 2004, %s; mean over the window positions that fit inside the image (no padding).\n", st.SSIM)
	p("- **MS-SSIM**: Wang et al. 2003, %d scale(s) with weights %v, 2×2 average-pool downsampling, cs at every scale and SSIM at the coarsest; negative terms clamped to 0.", st.MSSSIMScales, roundWeights(st.MSSSIMWeights))
	if st.MSSSIMNote != "" {
		p(" %s", st.MSSSIMNote)
	}
	p("\n- **Latents**: final latents (before the VAE) of the optimized run minus the reference run.\n")
	p("- **Edge F1**: control map pixels ≥ %d are edges; the generated image goes through BT.601 grey and Canny(%d, %d) (OpenCV-exact); a predicted edge pixel is correct when a control edge pixel lies within %d px (Euclidean) and vice versa; F1 = 2PR/(P+R). Edge density is the fraction of map pixels that are edges: the denser the map, the more F1 chance alone earns, so compare F1 between configurations, not across maps.\n",
		st.EdgeThreshold, st.CannyLow, st.CannyHigh, st.EdgeTolerance)

	p("\n## Grid\n\nOne row per sample in the order above; columns: control | reference | optimized.\n\n![control | reference | optimized](%s)\n", GridPNG)
	return b.String()
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "\r", " ").Replace(s)
}

func fmtDB(f Float) string {
	if math.IsInf(float64(f), 1) {
		return "+Inf"
	}
	return fmt.Sprintf("%.2f", float64(f))
}

func fmt4(f Float) string { return fmt.Sprintf("%.4f", float64(f)) }

// fmt6 shows SSIM-like values, which sit a few 1e-5 below 1 when a
// change is invisible.
func fmt6(f Float) string { return fmt.Sprintf("%.6f", float64(f)) }

func fmtG(f Float) string { return fmt.Sprintf("%.3g", float64(f)) }

func fmtSigned(f Float) string { return fmt.Sprintf("%+.4f", float64(f)) }

func joinSeeds(seeds []uint64) string {
	s := make([]string, len(seeds))
	for i, v := range seeds {
		s[i] = strconv.FormatUint(v, 10)
	}
	return strings.Join(s, ",")
}

func roundWeights(w []float64) []float64 {
	out := make([]float64, len(w))
	for i, v := range w {
		out[i] = math.Round(v*1e4) / 1e4
	}
	return out
}
