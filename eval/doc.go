// Package eval is the evaluation tool of controlfn (`controlfn eval`): it
// proves that what the compiler does to a model for serving — merging
// LoRAs into the weights and casting them to fp16 — keeps both the picture
// and the control.
//
// For every prompt × control map × seed it generates twice under the same
// seed: once from the optimized bundle (fp16 weights, LoRAs merged, as
// `controlfn compile` ships it) and once from the reference: an fp32 bundle
// of the base weights with the LoRAs applied unmerged, beside each weight
// in the graph (W·x + s·up·(down·x), as PEFT runs them; nn.Weights.WithLoRAs,
// matched and checked by compiler/lora exactly as the merge is). It then
// reports
//
//   - fidelity of optimized against reference images: PSNR, SSIM and
//     MS-SSIM (package eval/metrics), and the largest and mean absolute
//     difference of the final latents;
//   - control accuracy of each: edge F1, with a pixel tolerance, between
//     the control map and Canny of the generated image (the ControlNet++
//     measure for Canny control), so that any cost of the optimization in
//     control shows as a difference between the two F1s.
//
// The comparison therefore measures both things the compiler does: the
// merge and the fp16 cast.
//
// The control maps are a small built-in set drawn here (circles, boxes,
// lines, a grid: one-pixel white edges on black, what a Canny ControlNet
// is trained on) plus any folder of PNG control maps. Without a model the
// built-in demo model (compiler/demomodel) is written to a temporary
// folder together with a small demo LoRA, so the command runs anywhere;
// its random weights draw noise, so its F1 values say nothing about
// control, only that optimized and reference agree.
//
// The report (report.json, report.md, grid.png: one row per sample,
// control | reference | optimized) is written into the output folder file
// by file through a temporary file and a rename, report.json last, so a
// report.json present is a complete report.
package eval
