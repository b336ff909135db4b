"""Option presets of the Enhanced variants: the same networks with other block options."""
# The lab's two enhancements as option presets: Enhanced = 7x7 kernels, a dilated second conv in
# every encoder block, anti-aliased pooling; Enhanced* ("-glu") adds the GLU activation.
ENHANCED = {"kernel_size": 7, "dilation_rates": (1, 2), "pooling": "blur"}
ENHANCED_GLU = {**ENHANCED, "activation": "glu"}
