package scheduler_test

import (
	"fmt"
	"log"

	"github.com/controlfn/controlfn/kernels/scheduler"
)

// The denoising loop of one generation. The model here is a stand-in; the
// pipeline runs the ControlNet and UNet at each timestep instead.
func Example() {
	cfg, err := scheduler.ParseConfig([]byte(`{
		"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
		"beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
		"set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1}`))
	if err != nil {
		log.Fatal(err)
	}
	s, err := scheduler.New(cfg, scheduler.DDIM, 4)
	if err != nil {
		log.Fatal(err)
	}
	latents := []float32{0.3, -1.2, 0.8, 0.1} // noise from the seed
	for i := range latents {
		latents[i] *= s.InitNoiseSigma()
	}
	for i, t := range s.Timesteps() {
		in, err := s.ScaleModelInput(latents, i)
		if err != nil {
			log.Fatal(err)
		}
		_ = t // the model runs at timestep t (int64 unless s.FloatTimesteps())
		noisePred := in
		if latents, err = s.Step(noisePred, latents, i, nil); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println(s.Timesteps(), s.FloatTimesteps())
	// Output: [751 501 251 1] false
}
