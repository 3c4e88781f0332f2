package vae

import "fmt"

// WeightShapes lists every weight the encoder and decoder read, with its
// PyTorch shape: the compiler checks checkpoints against it and benchmarks
// and the demo model make random-weight VAEs from it.
func (c Config) WeightShapes() map[string][]int {
	w := map[string][]int{}
	conv := func(name string, in, out, k int) {
		w[name+".weight"] = []int{out, in, k, k}
		w[name+".bias"] = []int{out}
	}
	norm := func(name string, ch int) {
		w[name+".weight"] = []int{ch}
		w[name+".bias"] = []int{ch}
	}
	linear := func(name string, in, out int) {
		w[name+".weight"] = []int{out, in}
		w[name+".bias"] = []int{out}
	}
	resnet := func(p string, in, out int) {
		norm(p+".norm1", in)
		conv(p+".conv1", in, out, 3)
		norm(p+".norm2", out)
		conv(p+".conv2", out, out, 3)
		if in != out {
			conv(p+".conv_shortcut", in, out, 1)
		}
	}
	mid := func(p string, ch int) {
		resnet(p+".resnets.0", ch, ch)
		if c.MidBlockAddAttention {
			norm(p+".attentions.0.group_norm", ch)
			for _, n := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
				linear(p+".attentions.0."+n, ch, ch)
			}
		}
		resnet(p+".resnets.1", ch, ch)
	}
	n := len(c.BlockOutChannels)
	l := c.LatentChannels

	ch := c.BlockOutChannels[0]
	conv("encoder.conv_in", c.InChannels, ch, 3)
	for i, out := range c.BlockOutChannels {
		for j := 0; j < c.LayersPerBlock; j++ {
			resnet(fmt.Sprintf("encoder.down_blocks.%d.resnets.%d", i, j), ch, out)
			ch = out
		}
		if i < n-1 {
			conv(fmt.Sprintf("encoder.down_blocks.%d.downsamplers.0.conv", i), ch, ch, 3)
		}
	}
	mid("encoder.mid_block", ch)
	norm("encoder.conv_norm_out", ch)
	conv("encoder.conv_out", ch, 2*l, 3)
	if c.UseQuantConv {
		conv("quant_conv", 2*l, 2*l, 1)
	}

	if c.UsePostQuantConv {
		conv("post_quant_conv", l, l, 1)
	}
	ch = c.BlockOutChannels[n-1]
	conv("decoder.conv_in", l, ch, 3)
	mid("decoder.mid_block", ch)
	for i := 0; i < n; i++ {
		out := c.BlockOutChannels[n-1-i]
		for j := 0; j < c.LayersPerBlock+1; j++ {
			resnet(fmt.Sprintf("decoder.up_blocks.%d.resnets.%d", i, j), ch, out)
			ch = out
		}
		if i < n-1 {
			conv(fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.conv", i), ch, ch, 3)
		}
	}
	norm("decoder.conv_norm_out", ch)
	conv("decoder.conv_out", ch, c.OutChannels, 3)
	return w
}
