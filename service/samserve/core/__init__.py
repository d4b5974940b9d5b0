"""The numpy core: image decoding, each SAM step (preprocessing, prompt transforms, mask
post-processing, RLE and mask formats, the AMG algorithms) and the cache value codec.
Imports numpy, Pillow and scipy only (and samserve.contract); the gateway and the Triton side
both build on it."""
