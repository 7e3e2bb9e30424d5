"""The ops the torch backend declares, kept free of torch so listing them stays cheap.

Each has a converter in ``ops_*.py``; tests check the two agree. Only ops that pass
every applicable ONNX conformance case through ``cpu:0@torch`` are listed.
"""

from hal.ir.schemas import HAL_OPS as ALL_HAL_OPS

OPS = frozenset({
    # elementwise math and logic
    "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sin", "Cos",
    "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Erf", "Sign",
    "Not", "IsNaN", "IsInf", "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum",
    "Mean", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "Where", "Clip", "Identity",
    # activations
    "Relu", "Sigmoid", "Tanh", "Softsign", "Softplus", "Mish", "Elu", "Selu", "LeakyRelu",
    "HardSigmoid", "HardSwish", "ThresholdedRelu", "PRelu", "Celu", "Gelu", "Softmax",
    "LogSoftmax", "Hardmax",
    # matrix products and reductions
    "MatMul", "Gemm", "Einsum", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
    "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp",
    "ArgMax", "ArgMin", "CumSum",
    # convolution, pooling, normalization
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "LpNormalization",
    "LRN", "Dropout",
    # losses (the training graph's)
    "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss",
    # shape and data movement
    "Constant", "Reshape", "Flatten", "Transpose", "Concat", "Squeeze", "Unsqueeze", "Shape",
    "Size", "Gather", "GatherElements", "Slice", "Split", "Expand", "Tile", "Pad", "Cast",
    "CastLike", "ConstantOfShape", "Range", "Trilu", "TopK", "DepthToSpace", "SpaceToDepth",
    "NonZero",
})

#: HAL's own ops (hal.ir.schemas: the fused ops and FakeQuantize), all of which torch runs
HAL_OPS = ALL_HAL_OPS
