package schema

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
)

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8, 0xff}
)

// imageHeader identifies a PNG or JPEG by its magic bytes and reads the
// size its header declares, without decoding pixels: a cheap check that
// turns "not an image" and decompression bombs into client errors before
// the pipeline spends memory on them. The format is sniffed here rather
// than through image.DecodeConfig so that other decoders linked into the
// binary (GIF, WebP) are never reachable from a request.
func imageHeader(data []byte) (format string, width, height int, err error) {
	var cfg image.Config
	switch {
	case bytes.HasPrefix(data, pngMagic):
		format = FormatPNG
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	case bytes.HasPrefix(data, jpegMagic):
		format = FormatJPEG
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	default:
		return "", 0, 0, errors.New("not a PNG or JPEG image")
	}
	if err != nil {
		return "", 0, 0, fmt.Errorf("unreadable %s header: %v", format, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return "", 0, 0, fmt.Errorf("%s declares %dx%d pixels", format, cfg.Width, cfg.Height)
	}
	// Divide rather than multiply so that a hostile header cannot overflow.
	if cfg.Width > MaxImagePixels || cfg.Height > MaxImagePixels/cfg.Width {
		return "", 0, 0, fmt.Errorf("%s declares %dx%d pixels, over the limit of %d", format, cfg.Width, cfg.Height, MaxImagePixels)
	}
	return format, cfg.Width, cfg.Height, nil
}
