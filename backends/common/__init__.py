"""What the tracing backends (jax, tf, and whatever comes next) share.

A tracing backend turns a segment into one Python function of framework ops and lets the
framework trace it (``jax.jit``, ``tf.function``). The machinery for that is written once here:

- ``table``: a backend's kernel table (``KernelTable``); its registrations are the backend's
  declared ops, so no op list is kept by hand.
- ``lowering``: the plan of a segment (``lower`` -> ``Plan``): which values are known while
  tracing, which weights are parameters, and the steps.
- ``trace``: the interpreter that runs a plan while the framework traces it (``Trace``);
  a backend subclasses it for its own layout handling.
- ``context``: what a framework plugs in (``Context``): its numpy-like module, casts, the
  low-precision rule, how to compute at trace time.
- ``kernels``: the kernels written once against a context's numpy-like module, and HAL's
  fused ops.
- ``backend``: ``TracingBackend`` (op list from the table, what it claims: ``support``) and
  ``FrameworkBuffer``.
- ``frameworks``: importing a framework lazily and quietly.
- ``training``: a training graph as one pure function of weights, running statistics,
  inputs and a random source (``lower_training``, ``training_function``, ``RandomSource``),
  which each backend differentiates with its own autodiff.

A backend on it keeps only its own: ``framework`` (its import), ``xp`` (the framework as the
numpy-like module), ``context``, ``kernels/`` (what only its framework does well),
``executable`` and the Backend class in ``__init__``.

Nothing here imports a framework: the backends hand theirs in.
"""
