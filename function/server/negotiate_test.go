package server

import "testing"

func TestNegotiate(t *testing.T) {
	tests := []struct {
		accept []string
		out    output
		ok     bool
	}{
		{nil, outJSON, true},
		{[]string{""}, outJSON, true},
		{[]string{"*/*"}, outJSON, true},
		{[]string{"application/json"}, outJSON, true},
		{[]string{"application/*"}, outJSON, true},
		{[]string{"image/png"}, outPNG, true},
		{[]string{"IMAGE/JPEG"}, outJPEG, true},
		{[]string{"image/*"}, outImage, true},
		{[]string{"image/png, */*"}, outPNG, true},
		{[]string{"text/html", "image/jpeg;q=0.9"}, outJPEG, true},
		{[]string{"image/png;q=0.4, image/jpeg;q=0.5"}, outJPEG, true},
		{[]string{"image/*, image/png;q=0"}, outJPEG, true},
		{[]string{"image/png;q=0.9, application/json"}, outJSON, true},
		{[]string{"image/png;q=2"}, outJSON, true}, // malformed range ignored: no ranges left
		{[]string{"text/html"}, 0, false},
		{[]string{"*/*;q=0"}, 0, false},
		{[]string{"garbage, ,/,*/png"}, outJSON, true},
	}
	for _, tt := range tests {
		out, ok := negotiate(tt.accept)
		if out != tt.out || ok != tt.ok {
			t.Errorf("negotiate(%q) = %v, %v; want %v, %v", tt.accept, out, ok, tt.out, tt.ok)
		}
	}
}
