// Device self-test run by probe(): y = a + b.
__kernel void probe_add(__global const float *a, __global const float *b, __global float *y)
{
    const int i = get_global_id(0);
    y[i] = a[i] + b[i];
}
