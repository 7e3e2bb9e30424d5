// Activations fused into the producing kernel. Codes match ACTIVATIONS in lowering.py.
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_CLIP 2
#define ACT_SIGMOID 3
#define ACT_TANH 4
#define ACT_GELU 5
#define ACT_GELU_TANH 6
#define ACT_LEAKY_RELU 7

inline float activate(float x, int act, float p0, float p1)
{
    switch (act) {
    case ACT_RELU: return x > 0.0f ? x : 0.0f;  // builtins can be calls on CPU runtimes
    case ACT_CLIP: x = x < p0 ? p0 : x; return x > p1 ? p1 : x;  // ONNX: min(max(x, lo), hi)
    case ACT_SIGMOID: return 1.0f / (1.0f + exp(-x));
    case ACT_TANH: return tanh(x);
    case ACT_GELU: return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f));
    case ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanh(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case ACT_LEAKY_RELU: return x >= 0.0f ? x : x * p0;
    default: return x;
    }
}

inline float8 activate8(float8 x, int act, float p0, float p1)
{
    if (act == ACT_NONE) return x;
    if (act == ACT_RELU) return x > (float8)(0.0f) ? x : (float8)(0.0f);
    if (act == ACT_CLIP) {
        x = x < (float8)(p0) ? (float8)(p0) : x;
        return x > (float8)(p1) ? (float8)(p1) : x;
    }
    float t[8];
    vstore8(x, 0, t);
    for (int j = 0; j < 8; ++j) t[j] = activate(t[j], act, p0, p1);
    return vload8(0, t);
}
