// Activations fused into the producing kernel. The ACT_* codes are not numbered here: the
// program builder passes them as -D defines generated from hal.ir.schemas.ACTIVATIONS.
#ifndef ACT_RELU
#error "ACT_* codes missing: build through hal.backends.opencl.programs, which defines them"
#endif

// ACT_GELU: p0 == 0 is the exact (erf) form, p0 != 0 the tanh approximation.
inline float activate(float x, int act, float p0, float p1)
{
    switch (act) {
    case ACT_RELU: return x > 0.0f ? x : 0.0f;  // builtins can be calls on CPU runtimes
    case ACT_CLIP: x = x < p0 ? p0 : x; return x > p1 ? p1 : x;  // ONNX: min(max(x, lo), hi)
    case ACT_SIGMOID: return 1.0f / (1.0f + exp(-x));
    case ACT_TANH: return tanh(x);
    case ACT_GELU:
        if (p0 != 0.0f)
            return 0.5f * x * (1.0f + tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
        return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f));
    case ACT_LEAKY_RELU: return x >= 0.0f ? x : x * p0;
    default: return x;
    }
}
