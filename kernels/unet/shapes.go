package unet

import "fmt"

// WeightShapes lists every weight a UNet (or, with controlNet, a
// ControlNet) built from cfg reads, with its PyTorch shape. The compiler
// checks checkpoints against it before tracing, and benchmarks make
// random-weight models of real sizes from it.
func (c *Config) WeightShapes(controlNet bool) map[string][]int {
	w := map[string][]int{}
	linear := func(name string, in, out int, bias bool) {
		w[name+".weight"] = []int{out, in}
		if bias {
			w[name+".bias"] = []int{out}
		}
	}
	conv := func(name string, in, out, k int) {
		w[name+".weight"] = []int{out, in, k, k}
		w[name+".bias"] = []int{out}
	}
	norm := func(name string, ch int) {
		w[name+".weight"] = []int{ch}
		w[name+".bias"] = []int{ch}
	}
	c0 := c.BlockOutChannels[0]
	temb := c.TimeEmbeddingDim
	linear("time_embedding.linear_1", c0, temb, true)
	linear("time_embedding.linear_2", temb, temb, true)
	conv("conv_in", c.InChannels, c0, c.ConvInKernel)

	resnet := func(p string, in, out int) {
		norm(p+".norm1", in)
		conv(p+".conv1", in, out, 3)
		linear(p+".time_emb_proj", temb, out, true)
		norm(p+".norm2", out)
		conv(p+".conv2", out, out, 3)
		if in != out {
			conv(p+".conv_shortcut", in, out, 1)
		}
	}
	transformer := func(p string, ch, layers int) {
		norm(p+".norm", ch)
		if c.UseLinearProjection {
			linear(p+".proj_in", ch, ch, true)
			linear(p+".proj_out", ch, ch, true)
		} else {
			conv(p+".proj_in", ch, ch, 1)
			conv(p+".proj_out", ch, ch, 1)
		}
		for l := 0; l < layers; l++ {
			b := fmt.Sprintf("%s.transformer_blocks.%d", p, l)
			for _, a := range []string{"attn1", "attn2"} {
				kv := ch
				if a == "attn2" {
					kv = c.CrossAttentionDim
				}
				linear(b+"."+a+".to_q", ch, ch, false)
				linear(b+"."+a+".to_k", kv, ch, false)
				linear(b+"."+a+".to_v", kv, ch, false)
				linear(b+"."+a+".to_out.0", ch, ch, true)
			}
			for _, n := range []string{"norm1", "norm2", "norm3"} {
				norm(b+"."+n, ch)
			}
			linear(b+".ff.net.0.proj", ch, 8*ch, true)
			linear(b+".ff.net.2", 4*ch, ch, true)
		}
	}

	// Encoder, tracking skip widths for the decoder and the zero convs.
	skips := []int{c0}
	ch := c0
	for i, typ := range c.DownBlockTypes {
		out := c.BlockOutChannels[i]
		for j := 0; j < c.LayersPerBlock[i]; j++ {
			p := fmt.Sprintf("down_blocks.%d", i)
			resnet(fmt.Sprintf("%s.resnets.%d", p, j), ch, out)
			ch = out
			if typ == "CrossAttnDownBlock2D" {
				transformer(fmt.Sprintf("%s.attentions.%d", p, j), ch, c.TransformerLayers[i])
			}
			skips = append(skips, ch)
		}
		if i < len(c.DownBlockTypes)-1 {
			conv(fmt.Sprintf("down_blocks.%d.downsamplers.0.conv", i), ch, ch, 3)
			skips = append(skips, ch)
		}
	}
	last := len(c.BlockOutChannels) - 1
	resnet("mid_block.resnets.0", ch, ch)
	transformer("mid_block.attentions.0", ch, c.TransformerLayers[last])
	resnet("mid_block.resnets.1", ch, ch)

	if controlNet {
		cond := c.ConditioningEmbeddingOutChannels
		conv("controlnet_cond_embedding.conv_in", c.ConditioningChannels, cond[0], 3)
		for i := 0; i < len(cond)-1; i++ {
			conv(fmt.Sprintf("controlnet_cond_embedding.blocks.%d", 2*i), cond[i], cond[i], 3)
			conv(fmt.Sprintf("controlnet_cond_embedding.blocks.%d", 2*i+1), cond[i], cond[i+1], 3)
		}
		conv("controlnet_cond_embedding.conv_out", cond[len(cond)-1], c0, 3)
		for i, sk := range skips {
			conv(fmt.Sprintf("controlnet_down_blocks.%d", i), sk, sk, 1)
		}
		conv("controlnet_mid_block", ch, ch, 1)
		return w
	}

	n := len(c.UpBlockTypes)
	for i, typ := range c.UpBlockTypes {
		rev := n - 1 - i
		out := c.BlockOutChannels[rev]
		for j := 0; j < c.LayersPerBlock[rev]+1; j++ {
			skip := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			p := fmt.Sprintf("up_blocks.%d", i)
			resnet(fmt.Sprintf("%s.resnets.%d", p, j), ch+skip, out)
			ch = out
			if typ == "CrossAttnUpBlock2D" {
				transformer(fmt.Sprintf("%s.attentions.%d", p, j), ch, c.TransformerLayers[rev])
			}
		}
		if i < n-1 {
			conv(fmt.Sprintf("up_blocks.%d.upsamplers.0.conv", i), ch, ch, 3)
		}
	}
	norm("conv_norm_out", ch)
	conv("conv_out", ch, c.OutChannels, c.ConvOutKernel)
	return w
}
