// Package artifacts is the on-disk contract between the offline compiler and
// the serving function. The compiler writes a bundle once with a Writer; the
// function opens it at cold start with Open (or unpacks a shipped .tar.zst
// with Unpack) and gets either a bundle whose every file matches its manifest
// or an error naming the file that does not. Nothing else in controlfn reads
// or writes the layout directly, so this package imports nothing of ours.
//
// # Layout
//
// A bundle is a directory. Paths in the manifest are slash-separated and
// relative to it; the helpers WeightsPath, ConfigPath and ProgramPath spell
// the conventional names so that the compiler and tools agree on them:
//
//	manifest.json                       written last: its presence marks a complete bundle
//	weights/<component>.safetensors     fp16, LoRA merged
//	configs/<component>.json            the component's diffusers config.json
//	programs/<name>.mlir                StableHLO text of each traced program (see Program)
//	tokenizer/...                       vocab.json, merges.txt, tokenizer configs
//	scheduler_config.json
//	cache/<backend>-<device>/<key>.exec serialized executables, see StoreExecutable
//
// The manifest lists every file except itself and cache/, with size and
// sha256. The cache is outside the manifest on purpose: the function fills
// it after the compiler is gone, and every entry carries its own checksum.
//
// # Decisions
//
// A reader refuses files the manifest does not list (outside cache/) unless
// Options.AllowExtraFiles is set. The extra work is one directory walk; in
// return, deleting a file's entry from the manifest to dodge verification,
// or unpacking two bundles into one directory, is caught rather than served.
//
// Compatibility is by format version major.minor. A minor bump only adds
// optional fields, so readers ignore unknown JSON fields and accept any
// minor; a different major is refused before the rest is decoded.
//
// Packing compresses the whole tar with zstd, tuned for what fp16 weights
// allow: entropy-coded literals save about 10%, match finding nearly
// nothing (see Compression). zstd stores incompressible blocks raw, so
// decoding stays near memory speed on the function; CompressNone writes a
// plain tar, which Unpack also reads.
//
// # Executable cache
//
// The executable cache lets a cold start on a machine that has compiled
// the programs before skip compiling them again. An entry is the bytes
// a backend serialized for one program, stored under CacheKey in
// CacheDir. The function fills it after its first compile; nothing in the
// cache is trusted: an entry that is truncated, corrupt or written for
// another key reads as a miss, and the caller compiles.
//
// Not every backend has anything to store. GoMLX's pure Go backend builds
// its executables in memory and has no serialized form of them, so its
// cache stays empty.
// XLA's PJRT C API can serialize a compiled executable
// (PJRT_Executable_Serialize, PJRT_Executable_DeserializeAndLoad), but
// go-xla v0.4.5 has no Go binding for them yet; these helpers are the place
// those bytes will go. Until then the function can point XLA's own GPU
// caches (compiled kernels, autotuning results; content-keyed by XLA) into
// CacheDir(bundle, "xla", <gpu model>) (function/service.EnableXLACache).
//
// An entry file holds a fixed header and the payload:
//
//	magic   8 bytes  "CFNEXEC1"
//	key    64 bytes  the CacheKey, lower-case hex
//	size    8 bytes  payload length, little-endian
//	sha256 32 bytes  of the payload
//	payload
package artifacts
